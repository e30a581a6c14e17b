"""One sampling run's draw and picks (hitl/sampling/selection.py draw_and_select): the random draw's size from
the budget, its seed from the run's windows, late traces at their window's earlier rates, known texts skipped."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers_domain import make_cfg

from hitl.sampling import selection
from hitl.vocabulary import RANDOM


def _cfg(tmp_path, **sel):
    base = {"budget": 40, "random_share": 0.5, "random_annotations": 2, "strata": ["channel"], "seed": 3,
            "min_per_stratum": 0}
    return make_cfg(tmp_path, selection=base | sel, review={"overlap_share": 0.0})


def _evaluated(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    margin = rng.uniform(0, 1, n)
    frame = pd.DataFrame({
        "trace_id": [f"t{i:03d}" for i in range(n)], "input": [f"message number {i}" for i in range(n)],
        "timestamp": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-02T10:00Z"] * (n // 2), utc=True),
        "prediction": rng.choice(["card_lost", "refund_request"], n), "margin": margin, "entropy": 1 - margin,
        "flagged": False, "channel": rng.choice(["app", "web"], n), "evaluator_reasons": ""})
    vectors = rng.normal(size=(n, 8))
    return frame, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_random_draw_size_is_its_budget_share_over_labels_per_item(tmp_path):
    assert selection.random_draw_size(_cfg(tmp_path)) == 10
    assert selection.random_draw_size(_cfg(tmp_path, budget=45, random_share=0.25)) == 5  # int(11.25) // 2
    assert selection.random_draw_size(_cfg(tmp_path, random_share=0.0)) == 0


def test_the_draw_seed_depends_on_the_set_of_windows_not_their_order():
    a = selection.draw_rng(3, ["2026-01-02", "2026-01-01"]).random(3)
    assert np.array_equal(a, selection.draw_rng(3, ["2026-01-01", "2026-01-02"]).random(3))
    assert not np.array_equal(a, selection.draw_rng(4, ["2026-01-01", "2026-01-02"]).random(3))


def test_draw_then_policy_in_windows_and_reproducible(tmp_path):
    cfg, (evaluated, frozen) = _cfg(tmp_path), _evaluated()
    asked: list[str] = []

    def rates(window: str) -> dict[str, float]:
        asked.append(window)
        return {}

    ref = frozen[:10]
    plan = selection.draw_and_select(evaluated, frozen, ref, np.array(["card_lost"] * 10), cfg, "run-x", rates, set)
    assert sorted(asked) == ["2026-01-01", "2026-01-02"]
    assert set(plan.pool["window"]) == {"2026-01-01", "2026-01-02"}
    items = plan.chosen.items
    assert (items["selection_reason"] == RANDOM).sum() == len(plan.drawn.items) == 10
    assert set(plan.drawn.items["trace_id"]) <= set(items["trace_id"])
    assert {r["kind"] for r in plan.drawn.records} == {"main"}
    again = selection.draw_and_select(evaluated, frozen, ref, np.array(["card_lost"] * 10), cfg, "run-x",
                                      lambda w: {}, set)
    assert list(again.chosen.items["trace_id"]) == list(items["trace_id"])


def test_late_traces_are_drawn_at_their_windows_earlier_rates(tmp_path):
    cfg, (evaluated, frozen) = _cfg(tmp_path), _evaluated()
    plan = selection.draw_and_select(evaluated, frozen, frozen[:10], np.array(["card_lost"] * 10), cfg, "run-x",
                                     lambda w: {"app": 1.0, "web": 1.0} if w == "2026-01-01" else {}, set)
    late = [r for r in plan.drawn.records if r["kind"] != "main"]
    assert {r["window"] for r in late} == {"2026-01-01"}
    drawn = plan.drawn.items
    assert (drawn["window"] == "2026-01-01").sum() == (plan.pool["window"] == "2026-01-01").sum()  # rate 1: all


def test_policy_picks_skip_known_texts(tmp_path):
    from hitl.hashing import text_group

    cfg, (evaluated, frozen) = _cfg(tmp_path, random_share=0.0), _evaluated()
    known = {text_group(t) for t in evaluated["input"]}
    plan = selection.draw_and_select(evaluated, frozen, frozen[:10], np.array(["card_lost"] * 10), cfg, "run-x",
                                     lambda w: {}, lambda: known)
    assert plan.chosen.items.empty
    unknown = selection.draw_and_select(evaluated, frozen, frozen[:10], np.array(["card_lost"] * 10), cfg, "run-x",
                                        lambda w: {}, set)
    assert len(unknown.chosen.items)
