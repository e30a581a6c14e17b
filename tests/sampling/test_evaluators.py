"""Automated evaluators (hitl/sampling/evaluators.py) on fixed traces with known verdicts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers_domain import make_cfg

from hitl.sampling.evaluators import EVALUATORS, run_evaluators, summarize, task_completion, uncertainty
from hitl.schemas import EvaluationResult


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, evaluators={"uncertain_quantile": 0.25, "task_completion_threshold": 0.5})


def _traces(rows: list[dict]) -> pd.DataFrame:
    base = {"margin": 0.9, "entropy": 0.1, "output": "Done.", "metadata": json.dumps({"outcome": "resolved"})}
    return pd.DataFrame([{"trace_id": f"t{i}", **base, **r} for i, r in enumerate(rows)])


def test_uncertainty_fails_the_most_uncertain_quantile_of_the_window(cfg):
    traces = _traces([{"margin": m} for m in (0.05, 0.3, 0.5, 0.7, 0.9, 0.95, 0.96, 0.99)])
    res = uncertainty(traces, cfg)
    assert list(res["passed"]) == [False, False, True, True, True, True, True, True]  # top 25% of 1 - margin
    assert list(res["score"]) == pytest.approx([0.95, 0.7, 0.5, 0.3, 0.1, 0.05, 0.04, 0.01])
    assert set(res["evaluator"]) == {"uncertainty"} and set(res["evaluator_version"]) == {"2"}
    assert res["reason"].iloc[0].startswith("1 - margin 0.95 >= window p75")


def test_uncertainty_can_rank_by_entropy(tmp_path):
    cfg = make_cfg(tmp_path, evaluators={"uncertain_quantile": 0.5}, selection={"uncertainty": "entropy"})
    res = uncertainty(_traces([{"entropy": 0.9, "margin": 0.9}, {"entropy": 0.1, "margin": 0.0}]), cfg)
    assert list(res["passed"]) == [False, True]


@pytest.mark.parametrize(
    ("metadata", "output", "score", "passed", "reason_has"),
    [
        ({"outcome": "escalated"}, "Done.", 0.0, False, "'escalated'"),
        ({"outcome": "ESCALATED"}, "Done.", 0.0, False, "'escalated'"),
        ({"outcome": "abandoned"}, "Done.", 0.0, False, "'abandoned'"),
        ({"outcome": "failed"}, "Done.", 0.0, False, "'failed'"),
        ({"outcome": "resolved"}, "Done.", 1.0, True, "'resolved'"),
        ({"outcome": "completed"}, "Done.", 1.0, True, "'completed'"),
        ({"outcome": "resolved"}, "Let me transfer you to a human agent.", 0.2, False, "escalation cue"),
        ({}, "Please hold for a Human Agent.", 0.2, False, "'Human Agent'"),
        ({}, "I'm not sure about that.", 0.2, False, "I'm not sure"),
        ({}, "I've sent a reset link.", 0.7, True, "no outcome recorded"),
        ({"turns": 3}, "", 0.7, True, "no outcome recorded"),
        ({"outcome": "escalated"}, "I will transfer you to a human agent.", 0.0, False, "'escalated'"),
    ],
)
def test_task_completion_known_answers(cfg, metadata, output, score, passed, reason_has):
    res = task_completion(_traces([{"metadata": json.dumps(metadata), "output": output}]), cfg)
    row = res.iloc[0]
    assert row["score"] == pytest.approx(score)
    assert bool(row["passed"]) is passed
    assert reason_has in row["reason"]


def test_task_completion_tolerates_empty_or_unparsable_metadata(cfg):
    res = task_completion(_traces([{"metadata": ""}, {"metadata": "{broken"}]), cfg)
    assert list(res["score"]) == pytest.approx([0.7, 0.7])
    assert res["passed"].all()


def test_task_completion_threshold_is_configurable(tmp_path):
    cfg = make_cfg(tmp_path, evaluators={"task_completion_threshold": 0.8})
    res = task_completion(_traces([{"metadata": "{}"}, {}]), cfg)
    assert list(res["passed"]) == [False, True]  # 0.7 (no outcome) now fails; resolved (1.0) passes


def test_run_evaluators_stacks_all_and_validates(cfg):
    traces = _traces([{"confidence": 0.3}, {}])
    res = run_evaluators(traces, cfg)
    assert len(res) == 2 * len(EVALUATORS)
    assert set(res["evaluator"]) == set(EVALUATORS)
    EvaluationResult.validate(res)
    only = run_evaluators(traces, cfg, ["task_completion"])
    assert set(only["evaluator"]) == {"task_completion"}
    with pytest.raises(ValueError, match="nope"):
        run_evaluators(traces, cfg, ["uncertainty", "nope"])


def test_summarize_flags_outcome_failures_and_joins_every_reason(tmp_path):
    cfg = make_cfg(tmp_path, evaluators={"uncertain_quantile": 0.5})
    traces = _traces([
        {"margin": 0.9},                                                  # passes both
        {"margin": 0.01},                                                 # uncertain only: a model signal
        {"margin": 0.02, "metadata": json.dumps({"outcome": "escalated"})},  # fails both
        {"margin": 0.95, "output": "Let me transfer you to a human agent."},  # cue only
    ])
    out = summarize(traces, run_evaluators(traces, cfg)).set_index("trace_id")
    assert out["flagged"].to_dict() == {"t0": False, "t1": False, "t2": True, "t3": True}
    assert out.loc["t0", "evaluator_reasons"] == "all evaluators passed"
    assert out.loc["t1", "evaluator_reasons"].startswith("uncertainty: 1 - margin 0.99 >= window")
    assert out.loc["t2", "evaluator_reasons"].count("; ") == 1
    assert "uncertainty: " in out.loc["t2", "evaluator_reasons"]
    assert "task_completion: conversation outcome was 'escalated'" in out.loc["t2", "evaluator_reasons"]
    assert out.loc["t3", "evaluator_reasons"].startswith("task_completion: reply contains escalation cue")
    assert list(out.index) == list(traces["trace_id"])  # one row per trace, in trace order
