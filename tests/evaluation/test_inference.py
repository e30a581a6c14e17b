"""Design-based inference units (hitl/evaluation/design.py, inference.py): strata collapsing, Holm's levels,
alpha spending across looks, the variance floor, and the consistency of p-values with intervals."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from hitl.evaluation import design, estimates, inference


def test_single_draw_strata_are_collapsed_into_their_neighbour():
    codes = design.collapse_strata(["d1"] * 5 + ["d2"] * 3, ["a", "a", "b", "c", "c", "a", "a", "b"])
    # d1: a(2), b(1) -> merged into c, c(2); d2: a(2), b(1) is last -> merged into the previous (a)
    assert codes[2] == codes[3] == codes[4] and codes[0] == codes[1] != codes[2]
    assert codes[5] == codes[6] == codes[7] and len(set(codes)) == 3
    lonely = design.collapse_strata(["d1", "d2", "d2"], ["a", "a", "a"])  # a window with one draw in all
    assert len(set(lonely)) == 1
    assert design.collapse_strata(["d1"], ["a"]).tolist() == [0]  # one draw in all: nothing to merge into


def test_linearized_variance_of_a_mean_under_simple_random_sampling():
    y = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0], float)
    est, var = design.linearized(y, np.ones(10), np.zeros(10, np.int64))
    assert est == pytest.approx(0.4)
    assert var == pytest.approx(y.var(ddof=1) / 10)  # s^2 / n


def test_linearized_handles_draws_on_leading_axes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (3, 5, 40)).astype(float)
    w, strata = rng.uniform(1, 5, 40), rng.integers(0, 4, 40)
    est, var = design.linearized(y, w, strata)
    one_est, one_var = design.linearized(y[1, 2], w, strata)
    assert est.shape == var.shape == (3, 5)
    assert est[1, 2] == pytest.approx(one_est) and var[1, 2] == pytest.approx(one_var)


@pytest.fixture(scope="module")
def frozen_heap():
    """statsmodels' Holm runs gc.collect() at every call: with torch and MLflow loaded that is ~0.1 s a call, most
    of this module's time. Objects frozen here are not scanned again."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), min_size=1, max_size=9),
       st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_levels_reject_exactly_what_holm_rejects(p, alpha):
    p = np.array(p)
    levels = inference.holm_levels(p, alpha)
    keep = ~np.isnan(p)
    assert np.isnan(levels[~keep]).all()
    if keep.any():
        adjusted = multipletests(p[keep], alpha, method="holm")[1]
        assert ((p[keep] < levels[keep]) == (adjusted < alpha)).all()
        assert (levels[keep] <= alpha + 1e-15).all() and (levels[keep] >= alpha / keep.sum() - 1e-15).all()


def test_alpha_spent_over_looks_never_exceeds_alpha():
    spent = [inference.look_alpha(0.05, k) for k in range(1, 10_000)]
    assert sum(spent) < 0.05 and spent[0] == pytest.approx(0.05 / 1.2020569, rel=1e-6)
    assert all(a > b for a, b in zip(spent, spent[1:], strict=False))
    with pytest.raises(ValueError):
        inference.look_alpha(0.05, 0)


def test_the_floor_keeps_a_row_without_discordant_pairs_from_a_zero_width_interval():
    a = b = np.zeros(20)
    est = inference.paired(a, b, np.ones(20), np.zeros(20, np.int64), None, 0.05)
    assert est.delta == 0 and est.delta_var == pytest.approx(inference.variance_floor(20, 0.05)) and est.delta_var > 0
    low, high = inference.change_interval(est.delta, est.delta_var, 0.05)
    assert high > 0.05 and inference.outcome(low, high, 0.02) == "INCONCLUSIVE"


@settings(max_examples=200, deadline=None)
@given(st.floats(-0.5, 0.5), st.floats(1e-6, 0.05), st.floats(0.001, 0.2))
def test_p_below_level_exactly_when_the_interval_excludes_zero(delta, var, level):
    p = inference.p_value(delta, var)
    low, high = inference.change_interval(delta, var, level)
    stat = abs(delta) / np.sqrt(var)
    if abs(stat - inference.z_of(level)) > 1e-9:  # away from the knife edge, where rounding decides
        assert (p < level) == (low > 0 or high < 0)


def test_rate_interval_uses_the_design_effective_size():
    # one stratum, equal weights: V = s^2/n with s^2's n - 1, so the design-effective size is n - 1
    y = np.array([1] * 3 + [0] * 27, float)
    est, var = design.linearized(y, np.ones(30), np.zeros(30, np.int64))
    low, high = inference.rate_interval(est, var, 30, 30.0, 0.05)
    w_low, w_high = estimates.wilson_bounds(0.1, 29, float(inference.z_of(0.05)))
    assert (float(low), float(high)) == pytest.approx((float(w_low), float(w_high)))
    zero_low, zero_high = inference.rate_interval(0.0, 0.0, 30, 30.0, 0.05)  # R = 0: the Kish size
    assert zero_low == 0 and 0.1 < zero_high < 0.13
