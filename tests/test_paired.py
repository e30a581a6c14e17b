"""Paired champion/challenger statistics (hitl/evaluation/paired.py) against hand values and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from hitl.evaluation.paired import (
    discordant,
    holm,
    labels_needed,
    mcnemar_midp,
    min_detectable_change,
    paired_difference,
    power_midp,
)

Z975 = 1.959963984540054


def _pairs(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """champion_fail, challenger_fail arrays with the given 2x2 cell counts (1 = fail)."""
    champ = np.repeat([True, True, False, False], [n11, n10, n01, n00])
    chall = np.repeat([True, False, True, False], [n11, n10, n01, n00])
    return champ, chall


def _simulated_power(n: int, psi: float, delta: float, alpha: float, reps: int, seed: int) -> float:
    """Share of simulated samples in which mcnemar_midp rejects (independent of power_midp's algebra)."""
    p10, p01 = (psi - delta) / 2, (psi + delta) / 2
    counts = np.random.default_rng(seed).multinomial(n, [p10, p01, 1 - psi], size=reps)[:, :2]
    pairs, freq = np.unique(counts, axis=0, return_counts=True)
    reject = np.array([mcnemar_midp(int(b), int(c)) <= alpha for b, c in pairs])
    return float(freq[reject].sum() / reps)


# ---- mcnemar_midp ----

@pytest.mark.parametrize(("b", "c", "expected"), [
    (0, 0, 1.0), (0, 1, 0.5), (1, 1, 1.0), (0, 5, 2 * 0.5**5 - 0.5**5), (5, 0, 0.03125), (4, 4, 1.0)])
def test_midp_hand_values(b, c, expected):
    assert mcnemar_midp(b, c) == pytest.approx(expected, abs=1e-12)


def test_midp_asymmetric_case_from_the_binomial_formula():
    # b = 3, c = 10: X ~ Bin(13, 1/2), mid-p = 2 P(X <= 3) - P(X = 3)
    pmf = [math.comb(13, k) / 2**13 for k in range(4)]
    expected = 2 * sum(pmf) - pmf[3]
    assert expected == pytest.approx((2 * (1 + 13 + 78 + 286) - 286) / 8192)
    assert mcnemar_midp(3, 10) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_midp(10, 3) == pytest.approx(expected, abs=1e-12)


def test_midp_is_below_the_exact_p_value():
    # exact McNemar p = 2 P(X <= min) (capped); mid-p subtracts P(X = min) from it
    for b, c in [(1, 6), (2, 9), (7, 12)]:
        d, k = b + c, min(b, c)
        exact = min(1.0, 2 * sum(math.comb(d, i) for i in range(k + 1)) / 2**d)
        assert mcnemar_midp(b, c) == pytest.approx(exact - math.comb(d, k) / 2**d, abs=1e-12)
        assert mcnemar_midp(b, c) < exact


# ---- holm ----

def test_holm_hand_values_with_nan():
    # non-NaN family of 3: sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    out = holm([0.01, math.nan, 0.04, 0.03])
    assert np.isnan(out[1])
    assert out[[0, 2, 3]] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert np.isnan(holm([math.nan])).all() and holm([]).size == 0


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels_with_nans(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, 12)
    nan_at = rng.choice(12, 4, replace=False)
    p[nan_at] = np.nan
    keep = ~np.isnan(p)
    out = holm(p)
    assert np.isnan(out[nan_at]).all()
    assert out[keep] == pytest.approx(multipletests(p[keep], method="holm")[1])


# ---- discordant / paired_difference ----

def test_discordant_counts():
    champ, chall = _pairs(3, 2, 6, 9)
    assert discordant(champ, chall) == (2, 6)
    assert discordant(chall, champ) == (6, 2)


def test_paired_difference_agresti_min_hand_case():
    champ, chall = _pairs(3, 2, 6, 9)  # n = 20, b = 2, c = 6
    # add 0.5 to each cell: n* = 22, p10* = 2.5/22, p01* = 6.5/22, d* = 4/22
    d_adj = 4 / 22
    se = math.sqrt((9 / 22 - d_adj**2) / 22)
    est, low, high = paired_difference(champ, chall)
    assert est == pytest.approx((6 - 2) / 20)
    assert (low, high) == pytest.approx((d_adj - Z975 * se, d_adj + Z975 * se))
    assert (low, high) == pytest.approx((-0.07442, 0.43806), abs=1e-5)
    # constant weights carry no information: same answer; swapping the models flips the sign
    assert paired_difference(champ, chall, weights=np.full(20, 7.0)) == pytest.approx((est, low, high))
    assert paired_difference(chall, champ) == pytest.approx((-est, -high, -low))


def test_paired_difference_weighted_hand_case():
    # 4 items: champion-only fail (w=3), challenger-only fail (w=1), two concordant (w=2 each)
    champ = np.array([True, False, True, False])
    chall = np.array([False, True, True, False])
    w = np.array([3.0, 1.0, 2.0, 2.0])
    n_eff = 8**2 / (9 + 1 + 4 + 4)  # 64 / 18
    q10, q01 = (n_eff * 3 / 8 + 0.5) / (n_eff + 2), (n_eff * 1 / 8 + 0.5) / (n_eff + 2)
    half = Z975 * math.sqrt((q10 + q01 - (q01 - q10) ** 2) / (n_eff + 2))
    est, low, high = paired_difference(champ, chall, weights=w)
    assert est == pytest.approx(1 / 8 - 3 / 8)
    assert (low, high) == pytest.approx((q01 - q10 - half, q01 - q10 + half))


def test_paired_difference_degenerate():
    assert all(math.isnan(v) for v in paired_difference([], []))
    est, low, high = paired_difference(*_pairs(0, 0, 5, 0))  # every item: only the challenger fails
    assert est == 1.0 and high == 1.0 and low < 1.0


def test_paired_difference_coverage():
    cells = np.array([0.08, 0.07, 0.11, 0.74])  # p11, p10, p01, p00: true difference 0.04
    truth = cells[2] - cells[1]
    rng = np.random.default_rng(0)
    reps, covered = 2000, 0
    for counts in rng.multinomial(200, cells, size=reps):
        _, low, high = paired_difference(*_pairs(*counts))
        covered += low <= truth <= high
    print(f"paired_difference coverage: {covered / reps:.3f}")
    assert 0.92 <= covered / reps <= 0.975


# ---- power / minimum detectable change / labels needed ----

@pytest.mark.parametrize(("n", "psi", "delta"), [(150, 0.2, 0.08), (400, 0.1, -0.03)])
def test_power_matches_simulation(n, psi, delta):
    exact = power_midp(n, psi, delta, 0.05)
    simulated = _simulated_power(n, psi, delta, 0.05, reps=20_000, seed=n)
    print(f"power n={n} psi={psi} delta={delta}: exact {exact:.4f}, simulated {simulated:.4f}")
    assert 0.2 < exact < 0.9  # an informative setting, not a trivial 0 or 1
    assert exact == pytest.approx(simulated, abs=0.015)


def test_power_hand_values():
    # n = 5 pairs, all discordant in the challenger's disfavour (psi = delta = 1): b = 0, c = 5, mid-p = 1/32
    assert power_midp(5, 1.0, 1.0, 0.05) == pytest.approx(1.0)
    assert power_midp(4, 1.0, 1.0, 0.05) == 0.0  # best case 0 vs 4 gives mid-p 1/16 > 0.05
    # psi = delta: only D = n = 5 rejects, so power = delta**5
    assert power_midp(5, 0.7, 0.7, 0.05) == pytest.approx(0.7**5)
    assert power_midp(100, 0.0, 0.0, 0.05) == 0.0
    size = power_midp(300, 0.15, 0.0, 0.05)
    assert 0.02 < size <= 0.06  # under the null the mid-p test is close to its level


def test_min_detectable_change_hand_value_and_monotone():
    assert min_detectable_change(5, 0.1, 0.05) == pytest.approx(0.8 ** (1 / 5), abs=1e-3)  # from delta**5 >= 0.8
    assert min_detectable_change(4, 0.1, 0.05) == math.inf
    assert min_detectable_change(0, 0.1, 0.05) == math.inf
    mdcs = [min_detectable_change(n, 0.12, 0.05) for n in (100, 200, 400, 800, 1600)]
    assert all(a > b for a, b in zip(mdcs, mdcs[1:], strict=False))


def test_min_detectable_change_has_the_requested_power():
    n, psi = 300, 0.15
    mdc = min_detectable_change(n, psi, 0.05)
    at_mdc = _simulated_power(n, psi, mdc, 0.05, reps=20_000, seed=1)
    below = _simulated_power(n, psi, 0.6 * mdc, 0.05, reps=20_000, seed=2)
    print(f"MDC n={n} psi={psi}: {mdc:.4f}; simulated power {at_mdc:.3f} at MDC, {below:.3f} at 0.6 MDC")
    assert at_mdc == pytest.approx(0.8, abs=0.03)
    assert below < 0.55


def test_labels_needed():
    target, psi = 0.04, 0.12
    n = labels_needed(target, psi, 0.05)
    assert min_detectable_change(n, psi, 0.05) <= target
    assert min_detectable_change(int(n * 0.8), psi, 0.05) > target
    # normal-approximation sample size for McNemar (Connor 1987) as an independent ballpark
    z_b = 0.8416212335729143
    approx = (Z975 * math.sqrt(psi) + z_b * math.sqrt(psi - target**2)) ** 2 / target**2
    assert 0.8 * approx < n < 1.2 * approx
    with pytest.raises(ValueError):
        labels_needed(0.001, 0.5, 0.05, n_max=1000)
