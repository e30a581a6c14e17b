"""Regression statistics (hitl/evaluation/regression.py): production estimates by domain, verdicts, the
non-inferiority gate on constructed cases, hard cases, reviewer agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from hitl.evaluation import estimates, inference
from hitl.evaluation.regression import (
    BETTER,
    NO_CHANGE,
    NO_ROWS,
    OVERALL,
    WORSE,
    agreement,
    domains,
    gate,
    hard_case_table,
    overall,
    production_table,
)
from hitl.evaluation.report import verdict_text


def _cfg(tmp_path, **gate_kw):
    return make_cfg(tmp_path, labels=["a", "b", "c"], cohorts=["channel"], selection={"strata": ["channel"]},
                    evaluation={"label_groups": {"new": ["c"]}, "per_label": False}, gate=gate_kw)


def _sample(n_voice: int, n_app: int, p_voice: float = 0.1, p_app: float = 0.02) -> pd.DataFrame:
    return pd.DataFrame({"label": (["a", "c"] * n_voice)[:n_voice] + ["b"] * n_app,
                         "channel": ["voice"] * n_voice + ["app"] * n_app,
                         "stratum": ["channel=voice"] * n_voice + ["channel=app"] * n_app, "window": "2026-01-01",
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


def _linearized_by_loops(y, w, strata, domain):
    """The textbook formula, written independently: Hajek ratio and its stratified linearisation variance."""
    total = sum(wi for wi, di in zip(w, domain, strict=True) if di)
    r = sum(wi * yi for wi, yi, di in zip(w, y, domain, strict=True) if di) / total
    var = 0.0
    for h in set(strata):
        u = [(wi * (yi - r) / total if di else 0.0) for wi, yi, di, sh in zip(w, y, domain, strata, strict=True)
             if sh == h]
        if len(u) > 1:
            mean = sum(u) / len(u)
            var += len(u) / (len(u) - 1) * sum((x - mean) ** 2 for x in u)
    return r, var


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
    assert o["n_eff"] == pytest.approx(estimates.kish_n_eff([10] * 10 + [50] * 4))
    w, strata = 1 / s["inclusion_prob"].to_numpy(), list(s["stratum"])
    for (cohort, value), mask in ((("overall", "all"), [True] * 14), (("label_group", "new"), list(s["label"] == "c"))):
        d, var = _linearized_by_loops(chall_wrong.astype(float) - champ_wrong, w, strata, mask)
        row = t.loc[(cohort, value)]
        assert row["delta"] == pytest.approx(d)
        floor = inference.variance_floor(row["n_eff"], cfg.gate.alpha)
        assert row["se"] ** 2 == pytest.approx(max(var, floor))
    v = t.loc[("channel", "voice")]
    assert v["champion"] == pytest.approx(0.4) and v["challenger"] == pytest.approx(0.2)
    assert t.loc[("label_group", "new"), "n"] == 5  # the "c" rows: a domain inside one stratum


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
    assert overall(t)["verdict"] == BETTER and overall(t)["outcome"] == "PASS"
    g = gate(t, cfg)
    assert g.outcome == "PASS" and g.passed and "within the +2.0 pts margin" in g.reasons[0]


def test_gate_fails_when_the_challenger_is_worse_beyond_the_margin(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02)
    s, a, b = _constructed(800, both=80, b=0, c=48)
    t = production_table(s, a, b, cfg)
    o = overall(t)
    assert o["verdict"] == WORSE and o["delta_low"] > 0 and o["delta_high"] > 0.02 and o["outcome"] == "FAIL"
    g = gate(t, cfg)
    assert g.outcome == "FAIL" and any(r.startswith("overall: worse by") for r in g.reasons)


def test_a_rise_that_is_not_significant_but_may_exceed_the_margin_is_inconclusive(tmp_path):
    """+2.5 points on 1,500 traces is not significant, but its upper bound is above a 2-point margin: neither
    PASS (non-inferiority is not shown) nor FAIL (no evidence it is worse)."""
    cfg = _cfg(tmp_path, margin=0.02)
    s, a, b = _constructed(1500, both=100, b=200, c=237)
    t = production_table(s, a, b, cfg)
    o = overall(t)
    assert o["verdict"] == NO_CHANGE and o["delta_high"] > 0.02 and o["outcome"] == "INCONCLUSIVE"
    assert o["labels_needed"] > 0
    assert gate(t, cfg).outcome == "INCONCLUSIVE"


def test_an_unchanged_model_is_never_failed(tmp_path):
    """The issue's case: 400 items in two channels, both models fail 5%, 20 discordant pairs each way."""
    cfg = _cfg(tmp_path)
    s = _sample(200, 200, 0.1, 0.1)
    rng = np.random.default_rng(3)
    champ_wrong, chall_wrong = np.zeros(400, bool), np.zeros(400, bool)
    for part in (np.arange(200), np.arange(200, 400)):
        idx = rng.permutation(part)
        champ_wrong[idx[:10]] = chall_wrong[idx[10:20]] = True
    t = production_table(s, _preds(s, champ_wrong), _preds(s, chall_wrong), cfg)
    assert (overall(t)["b"], overall(t)["c"]) == (20, 20)
    assert not (t["outcome"] == "FAIL").any() and gate(t, cfg).outcome != "FAIL"


def test_the_verdict_and_the_interval_come_from_one_weighted_estimate(tmp_path):
    """The issue's case: chat 200 rows of weight 1 (b=30, c=0), voice 40 rows of weight 20 (b=0, c=5). Raw
    counts say the challenger is better; the weighted estimate may say otherwise: the row must not disagree."""
    cfg = _cfg(tmp_path)
    s = _sample(40, 200, p_voice=1 / 20, p_app=1.0)
    champ_wrong, chall_wrong = np.zeros(240, bool), np.zeros(240, bool)
    chall_wrong[:5] = True  # voice: c = 5
    champ_wrong[40:70] = True  # app (chat): b = 30
    t = production_table(s, _preds(s, champ_wrong), _preds(s, chall_wrong), cfg)
    o = overall(t)
    excludes_zero = o["delta_low"] > 0 or o["delta_high"] < 0
    assert (o["p"] < o["level"]) == excludes_zero
    assert ("better" in verdict_text(o) or "worse" in verdict_text(o)) == excludes_zero


def test_a_small_row_without_discordant_pairs_is_inconclusive_not_passed(tmp_path):
    cfg = _cfg(tmp_path)
    s, a, b = _constructed(40, both=2, b=0, c=0)
    o = overall(production_table(s, a, b, cfg))
    assert o["delta"] == 0 and o["outcome"] == "INCONCLUSIVE" and o["delta_high"] > 0.02
    s, a, b = _constructed(1000, both=20, b=0, c=0)
    assert overall(production_table(s, a, b, cfg))["outcome"] == "PASS"  # 1,000 rows without one: evidence


def test_a_small_inconclusive_cohort_is_listed_and_does_not_block_a_pass(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02)
    big, a, b = _constructed(1200, both=120, b=240, c=0)
    small = pd.DataFrame({"label": ["a"] * 12, "channel": ["voice"] * 12, "stratum": "channel=voice",
                          "window": "2026-01-01", "inclusion_prob": 0.02})
    wrong = np.array([1, 0] * 6, bool)
    s = pd.concat([big, small], ignore_index=True)
    t = production_table(s, a + _preds(small, wrong), b + _preds(small, wrong[::-1]), cfg)
    voice = t.set_index(["cohort", "value"]).loc[("channel", "voice")]
    assert voice["outcome"] == "INCONCLUSIVE" and voice["role"] == "guard"
    g = gate(t, cfg)
    assert g.outcome == "PASS" and any(x.startswith("channel=voice (n=12") for x in g.inconclusive)


def test_a_guard_that_fails_fails_the_release(tmp_path):
    cfg = _cfg(tmp_path, margin=0.02)
    big, a, b = _constructed(2000, both=100, b=150, c=0)
    voice = _sample(600, 0, p_voice=0.5)
    wrong_a, wrong_b = np.zeros(600, bool), np.zeros(600, bool)
    wrong_b[:90] = True  # the challenger breaks 15% of voice
    s = pd.concat([big, voice], ignore_index=True)
    t = production_table(s, a + _preds(voice, wrong_a), b + _preds(voice, wrong_b), cfg)
    row = t.set_index(["cohort", "value"]).loc[("channel", "voice")]
    assert row["outcome"] == "FAIL" and gate(t, cfg).outcome == "FAIL"


def test_an_empty_regression_set_is_inconclusive_and_an_empty_group_has_no_rows(tmp_path):
    cfg = _cfg(tmp_path)
    t = production_table(_sample(0, 0), [], [], cfg)
    assert gate(t, cfg).outcome == "INCONCLUSIVE" and not gate(t, cfg).passed
    s, a, b = _constructed(300, both=10, b=5, c=0)  # no "c" labels: the label group "new" is empty
    row = production_table(s, a, b, cfg).set_index(["cohort", "value"]).loc[("label_group", "new")]
    assert row["outcome"] == NO_ROWS and math.isnan(row["labels_needed"]) and verdict_text(row) == NO_ROWS


def test_labels_needed_would_decide_the_row_at_the_observed_discordance(tmp_path):
    """Replicating the draw to the size asked for (same shares and discordance, change kept at 0) brings the
    upper bound within the margin."""
    cfg = _cfg(tmp_path)
    s, a, b = _constructed(300, both=10, b=15, c=15)
    o = overall(production_table(s, a, b, cfg))
    assert o["outcome"] == "INCONCLUSIVE" and o["labels_needed"] > 0
    k = math.ceil((300 + o["labels_needed"]) / 300)
    big = pd.concat([s] * k, ignore_index=True)
    o2 = overall(production_table(big, a * k, b * k, cfg))
    assert o2["delta_high"] <= cfg.gate.margin and o2["outcome"] == "PASS"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["voice", "app", "email"]), st.sampled_from([0.05, 0.2, 1.0]),
                          st.booleans(), st.booleans(), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=80))
def test_every_row_p_value_interval_and_verdict_agree(tmp_path_factory, rows):
    cfg = make_cfg(tmp_path_factory.mktemp("p"), labels=["a", "b", "c"], cohorts=["channel"],
                   evaluation={"label_groups": {"new": ["c"], "old": ["a", "b"]}, "per_label": True})
    s = pd.DataFrame({"channel": [r[0] for r in rows], "inclusion_prob": [r[1] for r in rows],
                      "label": [r[4] for r in rows], "window": "w", "stratum": [r[0] for r in rows]})
    t = production_table(s, _preds(s, np.array([r[2] for r in rows])), _preds(s, np.array([r[3] for r in rows])),
                         cfg)
    for r in t[t["n"] > 0].itertuples():
        excludes = r.delta_low > 0 or r.delta_high < 0
        assert (r.p < r.level) == excludes, r
        words = verdict_text(r)
        assert ("better" in words or "worse" in words) == excludes, (words, r)
        assert words.startswith("exploratory: ") == (r.cohort == "label")
        assert (r.outcome == "FAIL") == (r.delta_low > 0 and r.delta_high > cfg.gate.margin)
        assert (r.outcome == "PASS") == (r.delta_high <= cfg.gate.margin)


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


def test_labels_needed_for_a_row_without_discordant_pairs_follows_its_floor(tmp_path):
    """No discordant pair yet: the variance floor falls as 1/N^2, so the figure is what growing the draw actually
    needs (enough, and not several times more than enough)."""
    cfg = _cfg(tmp_path)
    s, a, b = _constructed(40, both=2, b=0, c=0)
    o = overall(production_table(s, a, b, cfg))
    assert o["outcome"] == "INCONCLUSIVE" and o["labels_needed"] > 0
    k = math.ceil((40 + o["labels_needed"]) / 40)
    outcomes = {m: overall(production_table(pd.concat([s] * m, ignore_index=True), a * m, b * m, cfg))["outcome"]
                for m in (k, max(1, k // 2))}
    assert outcomes == {k: "PASS", max(1, k // 2): "INCONCLUSIVE"}, (k, outcomes)
