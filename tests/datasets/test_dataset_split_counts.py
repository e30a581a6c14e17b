"""The dataset version's per-label split counts (the `dataset-version` artifact): every split that exists is
counted; the old artifact counted a `holdout` split that no longer exists, so that figure was always 0."""

from __future__ import annotations

import pandas as pd

from hitl.datasets import splits
from hitl.vocabulary import SPLITS


def _records() -> pd.DataFrame:
    rows = [("card_lost", "train")] * 3 + [("card_lost", "regression")] * 2 + [("refund_request", "hard_case")]
    return pd.DataFrame(rows, columns=["label", "split"])


def test_every_split_is_counted_per_label():
    counts = splits.counts_by_label(_records())
    assert list(counts.columns) == list(SPLITS)
    assert counts.loc["card_lost"].to_dict() == {"train": 3, "hard_case": 0, "regression": 2}
    assert counts.loc["refund_request"].to_dict() == {"train": 0, "hard_case": 1, "regression": 0}
    assert counts.to_numpy().sum() == len(_records())


def test_the_artifact_lines_name_the_real_splits():
    lines = splits.describe_by_label(_records())
    assert lines == ["- card_lost: train 3, hard_case 0, regression 2",
                     "- refund_request: train 0, hard_case 1, regression 0"]
    assert not any("holdout" in line for line in lines)
