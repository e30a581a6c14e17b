"""Regression statistics (hitl/evaluation/regression.py): production estimates by domain, verdicts, the
non-inferiority gate on constructed cases, hard cases, reviewer agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg
from sklearn.metrics import cohen_kappa_score

from hitl.evaluation import estimates, paired
from hitl.evaluation.regression import (
    BETTER,
    NO_CHANGE,
    OVERALL,
    TOO_SMALL,
    WORSE,
    agreement,
    domains,
    gate,
    hard_case_table,
    overall,
    production_table,
)


def _cfg(tmp_path, **gate_kw):
    return make_cfg(tmp_path, labels=["a", "b", "c"], cohorts=["channel"], selection={"strata": ["channel"]},
                    evaluation={"label_groups": {"new": ["c"]}, "per_label": False}, gate=gate_kw)


def _sample(n_voice: int, n_app: int, p_voice: float = 0.1, p_app: float = 0.02) -> pd.DataFrame:
    return pd.DataFrame({"label": (["a", "c"] * n_voice)[:n_voice] + ["b"] * n_app,
                         "channel": ["voice"] * n_voice + ["app"] * n_app,
                         "inclusion_prob": [p_voice] * n_voice + [p_app] * n_app})


def _preds(sample: pd.DataFrame, wrong: np.ndarray) -> list[str]:
    """The true label where `wrong` is False, another label where it is True."""
    other = {"a": "b", "b": "a", "c": "a"}
    return [other[y] if w else y for y, w in zip(sample["label"], wrong, strict=True)]


def test_domains_cover_overall_cohorts_label_groups_and_labels():
    frame = pd.DataFrame({"label": ["a", "c", "b"], "channel": ["x", "y", "x"]})
    names = [(c, v, list(m)) for c, v, m in domains(frame, ["channel"], {"new": ["c"]}, per_label=True)]
    assert names[0] == (OVERALL, "all", [True, True, True])
    assert ("channel", "x", [True, False, True]) in names and ("label_group", "new", [False, True, False]) in names
    assert ("label", "b", [False, False, True]) in names


def test_production_table_by_hand(tmp_path):
    """Weights 1/p: voice rows weigh 10, app rows 50. Champion fails 4 of 10 voice and 1 of 4 app rows."""
    cfg = _cfg(tmp_path)
    s = _sample(10, 4)
    champ_wrong = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0], bool)
    chall_wrong = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 1] + [1, 0, 0, 0], bool)
    t = production_table(s, _preds(s, champ_wrong), _preds(s, chall_wrong), cfg).set_index(["cohort", "value"])
    o = t.loc[(OVERALL, "all")]
    assert o["n"] == 14
    assert o["champion"] == pytest.approx((4 * 10 + 1 * 50) / (10 * 10 + 4 * 50))
    assert o["challenger"] == pytest.approx((2 * 10 + 1 * 50) / 300)
    assert (o["b"], o["c"]) == (3, 1)
    assert o["p"] == pytest.approx(paired.mcnemar_midp(3, 1))
    assert o["n_eff"] == pytest.approx(estimates.kish_n_eff([10] * 10 + [50] * 4))
    assert o["delta"] == pytest.approx(o["challenger"] - o["champion"])
    v = t.loc[("channel", "voice")]
    assert v["champion"] == pytest.approx(0.4) and v["challenger"] == pytest.approx(0.2)
    assert t.loc[("label_group", "new"), "n"] == 5  # the "c" rows cut across no stratum here
    p_raw = t["p"].to_numpy()
    assert np.allclose(t["p_adjusted"], paired.holm(p_raw))


def _constructed(n: int, both: int, b: int, c: int, seed: int = 0) -> tuple:
    """n app rows: both models fail `both`, only the champion fails `b`, only the challenger fails `c`."""
    s = _sample(0, n)
    idx = np.random.default_rng(seed).permutation(n)
    champ_wrong, chall_wrong = np.zeros(n, bool), np.zeros(n, bool)
    champ_wrong[idx[:both + b]] = True
    chall_wrong[idx[:both]] = True
    chall_wrong[idx[both + b:both + b + c]] = True
    return s, _preds(s, champ_wrong), _preds(s, chall_wrong)


def test_gate_passes_a_clear_improvement(tmp_path):
    cfg = _cfg(tmp_path)
    s, a, b = _constructed(600, both=60, b=120, c=0)
    t = production_table(s, a, b, cfg)
    assert overall(t)["verdict"] == BETTER
    g = gate(t, cfg)
    assert g.passed and "non-inferior" in g.reasons[0]


def test_gate_fails_when_the_challenger_may_be_worse_by_more_than_the_margin(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02)
    s, a, b = _constructed(800, both=80, b=0, c=48)
    t = production_table(s, a, b, cfg)
    o = overall(t)
    assert o["verdict"] == WORSE and o["delta_high"] > 0.02
    g = gate(t, cfg)
    assert not g.passed and any("may be worse" in r for r in g.reasons)


def test_no_significant_rise_is_not_enough_non_inferiority_is_asked(tmp_path):
    """+2.5 points on 1,500 traces is not significant, but its upper bound is above a 2-point margin: the old
    "no significant rise" gate would pass it; non-inferiority does not."""
    cfg = _cfg(tmp_path, margin=0.02)
    s, a, b = _constructed(1500, both=100, b=200, c=237)
    t = production_table(s, a, b, cfg)
    o = overall(t)
    assert o["p_adjusted"] > 0.05 and o["verdict"] == NO_CHANGE
    assert o["delta_high"] > 0.02
    assert not gate(t, cfg).passed


def test_small_samples_are_too_small_to_judge_and_listed(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02, max_detectable_change=0.10)
    s, a, b = _constructed(40, both=8, b=2, c=3)
    t = production_table(s, a, b, cfg)
    o = overall(t)
    assert o["verdict"] == TOO_SMALL and o["mdc"] > 0.10 and o["labels_needed"] > 0
    g = gate(t, cfg)
    assert not g.passed and "overall is too small to judge" in g.reasons[0]
    assert any(x.startswith("overall=all (n=40") for x in g.too_small)


def test_a_too_small_cohort_is_listed_not_passed_silently(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02)
    big, a, b = _constructed(1200, both=120, b=240, c=0)
    small = pd.DataFrame({"label": ["a"] * 12, "channel": ["voice"] * 12, "inclusion_prob": 0.02})
    wrong = np.array([1, 0] * 6, bool)
    s = pd.concat([big, small], ignore_index=True)
    t = production_table(s, a + _preds(small, wrong), b + _preds(small, wrong[::-1]), cfg)
    voice = t.set_index(["cohort", "value"]).loc[("channel", "voice")]
    assert voice["verdict"] == TOO_SMALL
    g = gate(t, cfg)
    assert g.passed and any(x.startswith("channel=voice") for x in g.too_small)


def test_gate_refuses_an_empty_regression_set(tmp_path):
    cfg = _cfg(tmp_path)
    t = production_table(_sample(0, 0), [], [], cfg)
    assert not gate(t, cfg).passed


def test_hard_cases_are_plain_rates_by_reason():
    hard = pd.DataFrame({"label": ["a", "a", "b", "b"], "selection_reason": ["novel", "novel", "uncertain", "novel"]})
    t = hard_case_table(hard, ["b", "b", "b", "a"], ["a", "b", "b", "b"]).set_index(["cohort", "value"])
    assert t.loc[(OVERALL, "all"), "champion"] == pytest.approx(3 / 4)
    assert t.loc[(OVERALL, "all"), "challenger"] == pytest.approx(1 / 4)
    assert t.loc[("selection_reason", "novel"), "n"] == 3


def _annotations(pairs: list[tuple[str, str]], singles: int = 0) -> pd.DataFrame:
    rows, aid = [], 0
    for i, (x, y) in enumerate(pairs):
        for lab in (x, y):
            aid += 1
            rows.append({"annotation_id": aid, "trace_id": f"t{i}", "label": lab})
    for j in range(singles):
        aid += 1
        rows.append({"annotation_id": aid, "trace_id": f"s{j}", "label": "a"})
    return pd.DataFrame(rows)


PAIRS = [("a", "a"), ("a", "b"), ("b", "b"), ("c", "c"), ("a", "a"), ("b", "c"), ("c", "c"), ("b", "b"),
         ("a", "c"), ("b", "b")]


def test_agreement_kappa_matches_sklearn():
    ann = _annotations(PAIRS, singles=5)
    out = agreement(ann.sample(frac=1.0, random_state=3))  # row order must not matter
    first, second = zip(*PAIRS, strict=True)
    assert out["pairs"] == len(PAIRS)
    assert out["kappa"] == pytest.approx(cohen_kappa_score(first, second), abs=1e-12)
    assert out["raw_agreement"] == pytest.approx(7 / 10)


def test_agreement_uses_the_first_two_annotations():
    ann = _annotations([("a", "a"), ("b", "a")])
    ann = pd.concat([ann, pd.DataFrame([{"annotation_id": 99, "trace_id": "t0", "label": "b"}])])
    out = agreement(ann)
    assert out["pairs"] == 2 and out["raw_agreement"] == pytest.approx(0.5)


def test_agreement_without_pairs_or_variety():
    none = agreement(_annotations([], singles=3))
    assert none["pairs"] == 0 and math.isnan(none["kappa"]) and math.isnan(none["raw_agreement"])
    same = agreement(_annotations([("a", "a"), ("a", "a")]))
    assert same["pairs"] == 2 and same["raw_agreement"] == 1.0 and math.isnan(same["kappa"])
