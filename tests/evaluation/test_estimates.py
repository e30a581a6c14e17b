"""Weighted rate estimates (hitl/evaluation/estimates.py): hand values, statsmodels, and a design simulation."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from hitl.evaluation.estimates import Estimate, domain_table, hajek_rate, kish_n_eff, wilson_interval
from hitl.sampling.representative import stratified_draw

# ---- wilson / kish / hajek ----

@pytest.mark.parametrize(("fails", "n"), [(0, 10), (5, 10), (10, 10), (3, 47), (1, 1), (120, 400), (2, 35)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_wilson_matches_statsmodels_at_integer_n(fails, n, alpha):
    expected = proportion_confint(fails, n, alpha=alpha, method="wilson")
    assert wilson_interval(fails / n, n, alpha) == pytest.approx(expected, abs=1e-12)


def test_wilson_at_fractional_n_eff():
    lo_9, hi_9 = wilson_interval(0.3, 9.0)
    lo, hi = wilson_interval(0.3, 9.5)
    lo_10, hi_10 = wilson_interval(0.3, 10.0)
    assert lo_9 < lo < lo_10 and hi_10 < hi < hi_9  # narrows continuously as n_eff grows
    assert all(math.isnan(v) for v in wilson_interval(0.3, 0.0))


def test_kish_hand_values():
    assert kish_n_eff([1, 1, 1, 1]) == pytest.approx(4)
    assert kish_n_eff([5, 5]) == pytest.approx(2)
    assert kish_n_eff([1, 2, 3]) == pytest.approx(36 / 14)
    assert kish_n_eff([1, 1, 10]) == pytest.approx(144 / 102)
    assert kish_n_eff([]) == 0.0


def test_hajek_equal_weights_is_the_plain_proportion():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    est = hajek_rate(y, np.full(y.size, 37.5))
    assert est.value == pytest.approx(3 / 12)
    assert (est.n, est.n_eff) == (12, pytest.approx(12))
    assert (est.low, est.high) == pytest.approx(proportion_confint(3, 12, method="wilson"), abs=1e-12)
    assert est.se == pytest.approx(math.sqrt(0.25 * 0.75 / 12))


def test_hajek_unequal_weights():
    est = hajek_rate([1, 0, 0, 1], [1.0, 2.0, 3.0, 4.0])
    assert est.value == pytest.approx((1 + 4) / 10)
    assert est.n_eff == pytest.approx(100 / 30)
    assert (est.low, est.high) == pytest.approx(wilson_interval(0.5, 100 / 30))


def test_hajek_empty_and_invalid():
    est = hajek_rate([], [])
    assert est.n == 0 and math.isnan(est.value) and math.isnan(est.low) and math.isnan(est.se)
    assert math.isnan(Estimate(math.nan, math.nan, math.nan, 0, math.nan).se)
    with pytest.raises(ValueError):
        hajek_rate([0, 2], [1, 1])
    with pytest.raises(ValueError):
        hajek_rate([0, 1], [1, 0])


def test_domain_table_hand_values():
    sample = pd.DataFrame({
        "fail": [True, False, False, True, False, True],
        "w": [2.0, 2.0, 2.0, 5.0, 5.0, 1.0],
        "channel": ["web", "web", "web", "voice", "voice", "app"],
        "intent": ["refund", "other", "refund", "other", "refund", "other"],  # a label-defined domain
        "month": [1, 1, 2, 2, 2, 10],
    })
    table = domain_table(sample, "fail", "w", ["channel", "intent", "month"])
    expected = [  # cohort, value, n, sum w, sum w*y, sum w^2
        ("overall", "all", 6, 17, 8, 63),
        ("channel", "app", 1, 1, 1, 1),
        ("channel", "voice", 2, 10, 5, 50),
        ("channel", "web", 3, 6, 2, 12),
        ("intent", "other", 3, 8, 6, 30),
        ("intent", "refund", 3, 9, 2, 33),
        ("month", "1", 2, 4, 2, 8),
        ("month", "2", 3, 12, 5, 54),
        ("month", "10", 1, 1, 1, 1),
    ]
    assert list(table.columns) == ["cohort", "value", "n", "n_eff", "estimate", "low", "high"]
    assert list(zip(table["cohort"], table["value"], table["n"], strict=True)) == [e[:3] for e in expected]
    for row, (*_, sw, swy, sw2) in zip(table.itertuples(), expected, strict=True):
        assert row.estimate == pytest.approx(swy / sw)
        assert row.n_eff == pytest.approx(sw**2 / sw2)
        assert (row.low, row.high) == pytest.approx(wilson_interval(swy / sw, sw**2 / sw2))


# ---- the design simulation ----

CHANNELS = {"web": 11500, "app": 5000, "email": 2000, "voice": 1500}
BY = ["channel", "tier", "intent"]


def _population(seed: int) -> pd.DataFrame:
    """20,000 traces; fail risk depends on channel (the strata), tier and the label-defined intent."""
    rng = np.random.default_rng(seed)
    channel = np.repeat(list(CHANNELS), list(CHANNELS.values()))
    rng.shuffle(channel)
    tier = rng.choice(["free", "pro", "enterprise"], channel.size, p=[0.7, 0.25, 0.05])
    intent = rng.choice(["refund", "billing", "other"], channel.size, p=[0.15, 0.25, 0.6])
    base = pd.Series({"web": 0.10, "app": 0.13, "email": 0.16, "voice": 0.20})[channel].to_numpy()
    mult = pd.Series({"free": 1.0, "enterprise": 1.6})[np.where(tier == "pro", "free", tier)].to_numpy()
    extra = pd.Series({"refund": 0.12, "billing": 0.03, "other": 0.0})[intent].to_numpy()
    risk = np.where(tier == "pro", 0.04, base * mult + extra)
    fail = rng.random(channel.size) < risk
    # an active-learning uncertainty score: higher for traces that fail
    uncertainty = fail + rng.normal(0.0, 1.0, channel.size)
    return pd.DataFrame({"channel": channel, "tier": tier, "intent": intent, "fail": fail,
                         "uncertainty": uncertainty})


def _truth(pop: pd.DataFrame) -> pd.Series:
    parts = {("overall", "all"): pop["fail"].mean()}
    for col in BY:
        parts.update({(col, str(v)): rate for v, rate in pop.groupby(col)["fail"].mean().items()})
    return pd.Series(parts).rename_axis(["cohort", "value"])


@pytest.mark.slow(reason="2,000 stratified draws: bias within 0.01 and coverage within 2 points need that many")
def test_estimator_is_unbiased_and_covers():
    pop = _population(seed=17)
    truth = _truth(pop)
    n, reps = 400, 2000
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    tables, naive = [], []
    for rep in range(reps):
        sample = stratified_draw(pop, ["channel"], n, rng, min_per_stratum=50)
        sample["weight"] = 1.0 / sample["inclusion_prob"]
        tables.append(domain_table(sample, "fail", "weight", BY).assign(rep=rep))
        naive.append(sample["fail"].mean())
    elapsed = time.perf_counter() - started
    runs = pd.concat(tables, ignore_index=True).join(truth.rename("truth"), on=["cohort", "value"])
    runs["covered"] = (runs["low"] <= runs["truth"]) & (runs["truth"] <= runs["high"])
    summary = runs.groupby(["cohort", "value"]).agg(
        truth=("truth", "first"), mean=("estimate", "mean"), coverage=("covered", "sum"), mean_n=("n", "mean"),
        min_n=("n", "min"))
    summary["coverage"] /= reps  # a cohort missing from a sample counts as not covered
    summary["bias"] = summary["mean"] - summary["truth"]
    print(f"\n{reps} stratified draws of n={n} in {elapsed:.1f}s\n{summary.round(4).to_string()}")

    # the design is what the test claims: unequal weights, a small cohort, a rare-failure cohort
    probs = sample.groupby("channel")["inclusion_prob"].first()
    assert probs.max() / probs.min() > 1.5
    assert summary.loc[("tier", "enterprise"), "mean_n"] <= 30
    assert summary.loc[("tier", "pro"), "truth"] <= 0.05
    assert summary["truth"].max() - summary["truth"].min() > 0.15
    assert len(summary) == len(truth)

    assert (summary["bias"].abs() <= 0.01).all(), summary["bias"]
    assert summary["coverage"].between(0.93, 0.97).all(), summary["coverage"]

    # the weights matter: the unweighted sample mean overweights the over-sampled voice stratum
    overall = runs.loc[runs["cohort"] == "overall", "estimate"]
    mc_se = overall.std() / math.sqrt(reps)
    naive_bias = np.mean(naive) - truth["overall", "all"]
    print(f"overall bias: weighted {summary.loc[('overall', 'all'), 'bias']:+.4f}, unweighted {naive_bias:+.4f}"
          f" (Monte-Carlo se {mc_se:.4f})")
    assert abs(summary.loc[("overall", "all"), "bias"]) < 4 * mc_se
    assert naive_bias > 10 * mc_se

    # the review queue's hard cases (top uncertainty) say little about the production fail rate
    hard = pop.nlargest(n, "uncertainty")
    hard_rate = hajek_rate(hard["fail"], np.ones(n))
    print(f"hard cases: fail rate {hard_rate.value:.3f} vs production {truth['overall', 'all']:.3f}")
    assert hard_rate.value - truth["overall", "all"] > 0.10
    assert not hard_rate.low <= truth["overall", "all"] <= hard_rate.high
