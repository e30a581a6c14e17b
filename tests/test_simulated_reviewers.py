"""Simulated reviewers read ground truth from `simulation.truth_path` for any `files` source."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers_domain import make_cfg

from hitl.sim.reviewers import SimulatedReviewers, load_truth


def test_truth_path_jsonl_parquet_and_folder(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.jsonl").write_text("\n".join(json.dumps({"trace_id": f"x{i}", "label": "card_lost"})
                                                      for i in range(3)) + "\n")
    extra = pd.DataFrame({"trace_id": ["y1"], "label": ["refund_request"], "extra": [1]})
    extra.to_parquet(tmp_path / "t" / "b.parquet")
    cfg = make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "t"), "noise": 0.0})
    truth = load_truth(cfg)
    assert truth == {"x0": "card_lost", "x1": "card_lost", "x2": "card_lost", "y1": "refund_request"}
    one = make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "t" / "b.parquet")})
    assert load_truth(one) == {"y1": "refund_request"}


def test_the_oracle_answers_with_the_truth_and_noise_flips_labels(tmp_path):
    truth = pd.DataFrame({"trace_id": [f"t{i}" for i in range(400)], "label": "card_arrival"})
    truth.to_parquet(tmp_path / "g.parquet")
    exact = SimulatedReviewers(make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "g.parquet"),
                                                              "noise": 0.0}), {})
    exact.truth.update(load_truth(exact.cfg))
    assert {exact._label(f"t{i}") for i in range(400)} == {"card_arrival"}
    noisy = SimulatedReviewers(make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "g.parquet"),
                                                              "noise": 0.2}), load_truth(exact.cfg))
    wrong = sum(noisy._label(f"t{i}") != "card_arrival" for i in range(400))
    assert 50 <= wrong <= 110  # 20% of 400, within Monte-Carlo error
    with pytest.raises(KeyError, match="truth_path"):
        exact._label("unknown-trace")


def test_truth_without_the_needed_columns_is_refused(tmp_path):
    pd.DataFrame({"id": ["a"], "intent": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="needs trace_id and label"):
        load_truth(make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "bad.csv")}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_truth(make_cfg(tmp_path, simulation={"truth_path": str(tmp_path / "missing")}))
