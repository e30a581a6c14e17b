"""Champion vs challenger on the same labelled items, for the benchmarks: discordant counts and the
Agresti-Min (2005) paired difference. The release report uses the design-based inference of
`hitl.evaluation.inference` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri

from hitl.evaluation.estimates import kish_n_eff


def _fails(champion_fail: Sequence[bool] | np.ndarray, challenger_fail: Sequence[bool] | np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(champion_fail, bool), np.asarray(challenger_fail, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("champion_fail and challenger_fail must be 1-d and of equal length")
    return a, b


def discordant(champion_fail: Sequence[bool] | np.ndarray, challenger_fail: Sequence[bool] | np.ndarray
               ) -> tuple[int, int]:
    """(b, c): champion fails & challenger passes, champion passes & challenger fails."""
    a, b = _fails(champion_fail, challenger_fail)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def paired_difference(champion_fail: Sequence[bool] | np.ndarray, challenger_fail: Sequence[bool] | np.ndarray,
                      weights: Sequence[float] | np.ndarray | None = None, alpha: float = 0.05
                      ) -> tuple[float, float, float]:
    """Challenger minus champion fail rate (Hajek) with an Agresti-Min (2005) adjusted Wald interval.

    The weighted 2x2 cell shares are scaled to counts at the Kish effective sample size and 0.5 is added to
    each of the four cells before the Wald interval. Returns (unadjusted estimate, low, high), in [-1, 1].
    """
    estimate, diff, variance = adjusted_difference(champion_fail, challenger_fail, weights)
    if math.isnan(estimate):
        return math.nan, math.nan, math.nan
    half = float(ndtri(1 - alpha / 2)) * math.sqrt(variance)
    return estimate, float(max(-1.0, diff - half)), float(min(1.0, diff + half))


def adjusted_difference(champion_fail: Sequence[bool] | np.ndarray, challenger_fail: Sequence[bool] | np.ndarray,
                        weights: Sequence[float] | np.ndarray | None = None) -> tuple[float, float, float]:
    """Challenger minus champion fail rate: (unadjusted estimate, Agresti-Min adjusted estimate, its variance),
    the pieces of `paired_difference`'s interval (also summed over independent blocks, e.g. seeds)."""
    a, b = _fails(champion_fail, challenger_fail)
    w = np.ones(a.size) if weights is None else np.asarray(weights, float)
    if w.shape != a.shape or not (np.isfinite(w) & (w > 0)).all():
        raise ValueError("weights must be positive, finite and one per item")
    if a.size == 0:
        return math.nan, math.nan, math.nan
    p10, p01 = w[a & ~b].sum() / w.sum(), w[~a & b].sum() / w.sum()
    n_eff = kish_n_eff(w)
    n_adj = n_eff + 2  # four cells + 0.5
    q10, q01 = (n_eff * p10 + 0.5) / n_adj, (n_eff * p01 + 0.5) / n_adj
    diff = q01 - q10
    return float(p01 - p10), float(diff), float((q10 + q01 - diff**2) / n_adj)
