"""Regression statistics and the release gate (hitl/regression.py) on data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from hitl.evaluation.regression import OVERALL, agreement, cohort_table, gate, mcnemar_p, wilson

# ---- wilson / mcnemar ----

@pytest.mark.parametrize(("fails", "n"), [(0, 10), (5, 10), (10, 10), (3, 47), (1, 1), (120, 400)])
def test_wilson_matches_statsmodels(fails, n):
    lo, hi = proportion_confint(fails, n, alpha=0.05, method="wilson")
    assert wilson(fails, n) == pytest.approx((lo, hi), abs=1e-12)


def test_wilson_known_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    lo, hi = wilson(0, 0)
    assert math.isnan(lo) and math.isnan(hi)


def test_mcnemar_matches_statsmodels_exact():
    # paired outcomes: b = champion fails & challenger passes, c = the reverse
    champ = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    chall = np.array([0, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    b, c = int(np.sum(champ & ~chall)), int(np.sum(~champ & chall))
    assert (b, c) == (3, 6)
    expected = mcnemar([[99, b], [c, 99]], exact=True).pvalue  # the diagonal does not enter the exact test
    assert mcnemar_p(champ, chall) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_p(champ, chall) == pytest.approx(binomtest(3, 9, 0.5).pvalue, abs=1e-12)
    assert mcnemar_p(chall, champ) == pytest.approx(expected, abs=1e-12)  # symmetric


def test_mcnemar_known_values():
    none = np.zeros(5, dtype=bool)
    assert mcnemar_p(none, none) == 1.0  # no discordant pairs
    one_way = np.array([True] * 7)
    assert mcnemar_p(~one_way, one_way) == pytest.approx(2 / 2**7)  # 0 vs 7
    champ = np.array([True, False, False, False, False, False, False])
    chall = np.array([False, True, True, True, True, True, True])
    assert mcnemar_p(champ, chall) == pytest.approx(2 * (1 + 7) / 2**7)  # 1 vs 6: p = 0.125


# ---- cohort_table ----

@pytest.fixture
def holdout():
    """8 items: the champion fails two voice items, the challenger fails one web item."""
    return pd.DataFrame({
        "label":   ["a", "a", "b", "b", "a", "b", "a", "b"],
        "channel": ["web", "web", "web", "web", "voice", "voice", "voice", "voice"],
        "tier":    ["free", "pro", "free", "pro", "free", "pro", "free", "pro"],
    })


CHAMPION = ["a", "a", "b", "b", "b", "a", "a", "b"]    # wrong on rows 4, 5
CHALLENGER = ["b", "a", "b", "b", "a", "b", "a", "b"]  # wrong on row 0


def test_cohort_table_by_hand(holdout):
    t = cohort_table(holdout, CHAMPION, CHALLENGER, ["channel", "tier"]).set_index(["cohort", "value"])
    assert list(t.index) == [(OVERALL, "all"), ("channel", "voice"), ("channel", "web"),
                             ("tier", "free"), ("tier", "pro"), ("label", "a"), ("label", "b")]
    expected = {  # (n, champion fail rate, challenger fail rate)
        (OVERALL, "all"): (8, 2 / 8, 1 / 8),
        ("channel", "voice"): (4, 2 / 4, 0.0),
        ("channel", "web"): (4, 0.0, 1 / 4),
        ("tier", "free"): (4, 1 / 4, 1 / 4),   # rows 0, 2, 4, 6: champion row 4, challenger row 0
        ("tier", "pro"): (4, 1 / 4, 0.0),      # rows 1, 3, 5, 7: champion row 5
        ("label", "a"): (4, 1 / 4, 1 / 4),     # rows 0, 1, 4, 6
        ("label", "b"): (4, 1 / 4, 0.0),       # rows 2, 3, 5, 7
    }
    for key, (n, ra, rb) in expected.items():
        row = t.loc[key]
        assert row["n"] == n
        assert row["champion_fail_rate"] == pytest.approx(ra)
        assert row["challenger_fail_rate"] == pytest.approx(rb)
        assert row["delta"] == pytest.approx(rb - ra)
        assert (row["champion_ci_low"], row["champion_ci_high"]) == pytest.approx(wilson(round(ra * n), n))
    assert t.loc[("channel", "voice"), "mcnemar_p"] == pytest.approx(0.5)  # b=2, c=0
    assert t.loc[("tier", "free"), "mcnemar_p"] == pytest.approx(1.0)     # b=1, c=1


def test_cohort_table_identical_models_have_zero_delta(holdout):
    t = cohort_table(holdout, CHAMPION, CHAMPION, ["channel"])
    assert (t["delta"] == 0).all()
    assert (t["mcnemar_p"] == 1.0).all()


# ---- gate ----

def _table(rows: list[tuple[str, str, int, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["cohort", "value", "n", "champion_fail_rate", "challenger_fail_rate",
                                       "mcnemar_p"]).assign(
        delta=lambda d: d["challenger_fail_rate"] - d["champion_fail_rate"])


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, cohorts=["channel"], selection={"stratify_by": "channel"},
                    gate={"max_overall_increase": 0.0, "min_cohort_size": 5})


def test_gate_passes_when_nothing_got_worse(cfg):
    res = gate(_table([(OVERALL, "all", 100, 0.20, 0.15, 0.04),
                       ("channel", "web", 60, 0.10, 0.10, 1.0),
                       ("channel", "voice", 40, 0.35, 0.22, 0.01)]), cfg)
    assert res.passed
    assert res.reasons == ["overall fail rate did not rise; no cohort rose significantly"]


def test_gate_fails_when_overall_rises(cfg):
    res = gate(_table([(OVERALL, "all", 100, 0.20, 0.21, 0.9),
                       ("channel", "web", 100, 0.20, 0.21, 0.9)]), cfg)
    assert not res.passed
    assert len(res.reasons) == 1 and res.reasons[0].startswith("overall fail rate rose 20.0% -> 21.0%")


def test_gate_allows_the_configured_overall_increase(tmp_path):
    cfg = make_cfg(tmp_path, gate={"max_overall_increase": 0.02})
    assert gate(_table([(OVERALL, "all", 100, 0.20, 0.22, 0.5)]), cfg).passed
    assert not gate(_table([(OVERALL, "all", 100, 0.20, 0.23, 0.5)]), cfg).passed


def test_gate_fails_on_a_significant_cohort_rise(cfg):
    res = gate(_table([(OVERALL, "all", 100, 0.30, 0.20, 0.01),
                       ("channel", "web", 80, 0.35, 0.10, 0.001),
                       ("channel", "voice", 20, 0.10, 0.60, 0.002)]), cfg)
    assert not res.passed
    assert len(res.reasons) == 1 and res.reasons[0].startswith("channel=voice fail rate rose significantly")


def test_gate_ignores_insignificant_and_small_cohorts(cfg):
    table = _table([(OVERALL, "all", 100, 0.30, 0.20, 0.01),
                    ("channel", "web", 96, 0.30, 0.15, 0.001),
                    ("channel", "voice", 30, 0.10, 0.20, 0.30),   # rose, but not significantly
                    ("channel", "fax", 4, 0.0, 1.0, 0.01)])       # significant, but below min_cohort_size
    assert gate(table, cfg).passed


def test_gate_on_a_real_cohort_table(tmp_path):
    """Overall better, but 10 of 12 voice items newly fail (exact McNemar p = 0.002)."""
    n_voice, n_web = 12, 30
    holdout = pd.DataFrame({"label": ["a", "b"] * ((n_voice + n_web) // 2),
                            "channel": ["voice"] * n_voice + ["web"] * n_web})
    truth = list(holdout["label"])
    flip = {"a": "b", "b": "a"}
    champion = [flip[y] if n_voice <= i < n_voice + 12 else y for i, y in enumerate(truth)]  # 12 web fails
    challenger = [flip[y] if i < 10 else y for i, y in enumerate(truth)]                     # 10 voice fails
    table = cohort_table(holdout, champion, challenger, ["channel"])
    voice = table[(table["cohort"] == "channel") & (table["value"] == "voice")].iloc[0]
    assert voice["mcnemar_p"] == pytest.approx(2 / 2**10)
    assert table[table["cohort"] == OVERALL].iloc[0]["delta"] < 0

    strict = make_cfg(tmp_path, cohorts=["channel"], gate={"min_cohort_size": 5})
    res = gate(table, strict)
    assert not res.passed and any(r.startswith("channel=voice") for r in res.reasons)
    lenient = make_cfg(tmp_path, cohorts=["channel"], gate={"min_cohort_size": 13})
    assert gate(table, lenient).passed  # the voice cohort (12) is now too small to judge


def test_gate_refuses_an_empty_holdout(cfg):
    table = cohort_table(pd.DataFrame({"label": [], "channel": []}, dtype=str), [], [], ["channel"])
    res = gate(table, cfg)
    assert not res.passed and "empty" in res.reasons[0]


# ---- agreement ----

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
