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


def _form(trace_ids: list[str]):
    from hitl.review.prefect_api import REVIEW_FORM, PausedRun

    props = {f"item_{i:02d}": {"trace_id": t} for i, t in enumerate(trace_ids, 1)}
    return PausedRun("id", "run", "review-batch", REVIEW_FORM, {"properties": props}, "", "")


def test_labels_do_not_depend_on_the_order_batches_are_answered(tmp_path):
    """Review runs suspend side by side and are resumed in any order: each trace's first and second label
    (and who gives the second) must come out the same."""
    truth = {f"t{i}": "card_arrival" for i in range(60)}
    cfg = make_cfg(tmp_path, simulation={"noise": 0.3})
    a, b, c = _form([f"t{i}" for i in range(0, 30)]), _form([f"t{i}" for i in range(20, 50)]), \
        _form([f"t{i}" for i in range(40, 60)])

    def labels(order) -> dict[tuple[str, int], str]:
        sim, out = SimulatedReviewers(cfg, dict(truth)), {}
        for form in order:
            answer = sim.answer_review(form)
            for field, trace in ((f, p["trace_id"]) for f, p in form.schema["properties"].items()):
                out[trace, len(sim.labelled_by[trace]) - 1] = answer[field]
                assert sim.labelled_by[trace].count(answer["reviewer"]) == 1  # a second label: someone else
        return out

    first, second = labels([a, b, c]), labels([c, b, a])
    assert first == second
    assert 0 < sum(v != "card_arrival" for v in first.values()) < len(first)  # the noise does flip some
