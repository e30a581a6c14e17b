"""Splits by group, never by row, and the leakage guard that runs before every fine-tune.

A text group is every trace whose normalised text is the same (hitl.hashing.text_group): natural repeats
such as "what's my balance" are not leaks, but putting one group on both sides of a split is. Each group
lives in one split, decided in this order:
- `regression`: the group has a member from the representative random draw. The draw's own members are the
  regression set; other members of such a group are held out of training too (they carry no inclusion
  probability, so they are not in the estimate either);
- `hard_case`: a stable hash of the group puts it in the `hard_case_share` of policy picks held out to
  measure the models on the hard (uncertain, novel, flagged) traffic;
- `train`: the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hitl.hashing import stable_fraction, text_group
from hitl.vocabulary import RANDOM, SPLITS


def assign_splits(records: pd.DataFrame, hard_case_share: float) -> pd.Series:
    """`regression`, `hard_case` or `train` for each record (needs text_group and selection_reason)."""
    regression_groups = set(records.loc[records["selection_reason"] == RANDOM, "text_group"])
    hard = records["text_group"].map(lambda g: stable_fraction(g, "hard_case") < hard_case_share)
    split = pd.Series("train", index=records.index)
    split[hard] = "hard_case"
    split[records["text_group"].isin(regression_groups)] = "regression"
    return split


def counts_by_label(records: pd.DataFrame) -> pd.DataFrame:
    """Rows per label (index) in each split (columns: every split in SPLITS, 0 where a label has none)."""
    return (records.groupby(["label", "split"]).size().unstack("split", fill_value=0)
            .reindex(columns=list(SPLITS), fill_value=0))


def describe_by_label(records: pd.DataFrame) -> list[str]:
    """One Markdown list line per label: its rows in each split ("- card_lost: train 3, hard_case 1, ...")."""
    return [f"- {lab}: " + ", ".join(f"{split} {n}" for split, n in row.items())
            for lab, row in counts_by_label(records).iterrows()]


@dataclass(frozen=True)
class LeakageCheck:
    train_rows: int
    regression_rows: int
    shared_ids: list[str]
    shared_texts: list[str]  # training trace ids whose normalised text is in the regression set

    @property
    def passed(self) -> bool:
        return not self.shared_ids and not self.shared_texts

    @property
    def summary(self) -> str:
        if self.passed:
            return (f"passed: none of {self.train_rows} training rows shares a trace id or a normalised text with "
                    f"the {self.regression_rows} regression rows")
        return (f"FAILED: {len(self.shared_ids)} training rows share a trace id and {len(self.shared_texts)} a "
                f"normalised text with the regression set")


class LeakageError(RuntimeError):
    """Training rows overlap the regression set: the fine-tune must not run."""


def check_leakage(train: pd.DataFrame, regression: pd.DataFrame, id_column: str = "trace_id",
                  text_column: str = "text") -> LeakageCheck:
    """Compare training rows with the regression set by trace id and by normalised-text hash."""
    ids = set(regression[id_column].astype(str)) if id_column in regression else set()
    groups = {text_group(t) for t in regression[text_column]}
    train_ids = train[id_column].astype(str) if id_column in train else pd.Series([""] * len(train))
    by_id = sorted(set(train_ids[train_ids.isin(ids)]))
    text_hit = train[text_column].map(text_group).isin(groups).to_numpy()
    by_text = sorted(set(train_ids[text_hit]) - set(by_id))
    return LeakageCheck(len(train), len(regression), by_id, by_text)


def training_rows(records: pd.DataFrame, launch: pd.DataFrame | None) -> tuple[pd.DataFrame, int, LeakageCheck]:
    """What a fine-tune trains on: a version's train split, plus the launch rows as replay (`launch`, or None for
    no replay) minus any whose text is in the regression set. Returns (rows, launch rows left out, the leakage
    check of the rows against the regression set)."""
    train = records.loc[records["split"] == "train", ["trace_id", "text", "label"]]
    regression = records[records["split"] == "regression"]
    held_out = 0
    if launch is not None:
        replay = launch[["text", "label"]].assign(trace_id=[f"launch:{i}" for i in range(len(launch))])
        held = replay["text"].map(text_group).isin(set(regression["text"].map(text_group)))
        held_out = int(held.sum())
        train = pd.concat([train, replay[~held]], ignore_index=True)
    return train.reset_index(drop=True), held_out, check_leakage(train, regression)


def require_no_leakage(check: LeakageCheck) -> None:
    """Stop with the offending ids named."""
    if not check.passed:
        def head(ids: list[str]) -> str:
            return ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")

        raise LeakageError(
            f"Leakage guard stopped the fine-tune: training rows overlap the regression set "
            f"(by trace id: {head(check.shared_ids) or 'none'}; by normalised text: "
            f"{head(check.shared_texts) or 'none'}). The regression set is never trained on: fix the training "
            "rows (e.g. the launch data) and run again."
        )
