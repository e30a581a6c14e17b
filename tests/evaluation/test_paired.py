"""Paired champion/challenger statistics kept for the benchmarks (hitl/evaluation/paired.py): discordant
counts and the Agresti-Min difference. The report's inference is tested in test_inference.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hitl.evaluation.paired import discordant, paired_difference

Z975 = 1.959963984540054


def _pairs(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """champion_fail, challenger_fail arrays with the given 2x2 cell counts (1 = fail)."""
    champ = np.repeat([True, True, False, False], [n11, n10, n01, n00])
    chall = np.repeat([True, False, True, False], [n11, n10, n01, n00])
    return champ, chall


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
