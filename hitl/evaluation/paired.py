"""Champion vs challenger on the same labelled items: mid-p McNemar, Holm, paired difference, power.

b counts items the champion fails and the challenger passes, c the reverse. Power and minimum detectable
change use the exact distribution of the mid-p McNemar test (Fagerland, Lydersen & Laake 2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri
from scipy.stats import binom
from statsmodels.stats.multitest import multipletests

from hitl.evaluation.estimates import kish_n_eff

_TAIL = 1e-14  # binomial mass left out of the power sum on each side of the number of discordant pairs
_MDC_TOL = 1e-4


def _midp(k: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Two-sided mid-p for min(b, c) = k out of d discordant pairs: 2 P(X <= k) - P(X = k), X ~ Bin(d, 1/2)."""
    return np.minimum(1.0, 2 * binom.cdf(k, d, 0.5) - binom.pmf(k, d, 0.5))


def mcnemar_midp(b: int, c: int) -> float:
    """McNemar mid-p value from the discordant counts (1.0 when there are none)."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    return 1.0 if b + c == 0 else float(_midp(np.array(min(b, c)), np.array(b + c)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs pass through and do not count towards the family size."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    keep = ~np.isnan(p)
    if keep.any():
        out[keep] = multipletests(p[keep], method="holm")[1]
    return out


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
    half = float(ndtri(1 - alpha / 2)) * math.sqrt((q10 + q01 - diff**2) / n_adj)
    return float(p01 - p10), float(max(-1.0, diff - half)), float(min(1.0, diff + half))


def _critical_k(d: np.ndarray, alpha: float) -> np.ndarray:
    """Largest k with midp(k, d - k) <= alpha for each d (-1 when none); midp increases in k up to d // 2."""
    lo, hi = np.full(d.shape, -1, np.int64), d // 2 + 1  # midp(lo) <= alpha < midp(hi), hi a sentinel
    while np.any(open_ := hi - lo > 1):
        mid = (lo + hi) // 2
        ok = _midp(mid, d) <= alpha
        lo = np.where(open_ & ok, mid, lo)
        hi = np.where(open_ & ~ok, mid, hi)
    return lo


def power_midp(n: int, psi: float, delta: float, alpha: float) -> float:
    """Exact power of the two-sided mid-p McNemar test at level alpha with n pairs.

    psi = p10 + p01 is the discordant probability, delta = p01 - p10. D ~ Bin(n, psi) discordant pairs; given D,
    b ~ Bin(D, (psi - delta) / (2 psi)); rejection when min(b, D - b) <= k_D. D values with binomial tail mass
    below 1e-14 on either side are left out, so the result is exact to ~1e-13.
    """
    if not 0 < alpha < 1 or not 0 <= psi <= 1 or abs(delta) > psi + 1e-12:
        raise ValueError("need 0 < alpha < 1, 0 <= psi <= 1 and |delta| <= psi")
    if n <= 0 or psi == 0:
        return 0.0
    d_lo, d_hi = int(binom.ppf(_TAIL, n, psi)), int(binom.isf(_TAIL, n, psi))
    d = np.arange(max(d_lo, 0), min(d_hi, n) + 1, dtype=np.int64)
    k = _critical_k(d, alpha)
    q = min(max((psi - delta) / (2 * psi), 0.0), 1.0)
    reject = np.where(k >= 0, binom.cdf(k, d, q) + binom.sf(d - k - 1, d, q), 0.0)
    return float(np.sum(binom.pmf(d, n, psi) * reject))


def min_detectable_change(n: int, psi_observed: float, alpha: float, power: float = 0.8) -> float:
    """Smallest delta in (0, 1] with power_midp(n, max(psi_observed, delta), delta, alpha) >= power.

    Bisection to 1e-4 (power increases with delta); inf when even delta = 1 is not detectable or n == 0.
    """
    if n <= 0:
        return math.inf

    def enough(delta: float) -> bool:
        return power_midp(n, max(psi_observed, delta), delta, alpha) >= power

    if not enough(1.0):
        return math.inf
    lo, hi = 0.0, 1.0
    while hi - lo > _MDC_TOL:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def connor_n(delta: float, psi: float, alpha: float, power: float = 0.8) -> int:
    """Connor's (1987) normal-approximation number of pairs to detect `delta` with discordant share `psi`."""
    za, zb = float(ndtri(1 - alpha / 2)), float(ndtri(power))
    psi = max(psi, abs(delta))
    return max(1, math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2))


def labels_needed(target: float, psi_observed: float, alpha: float, power: float = 0.8,
                  n_max: int = 1_000_000) -> int:
    """Smallest n (found by bisection on a bracket around Connor's approximation, widened by doubling) with
    min_detectable_change(n, ...) <= target.

    Exact power is slightly saw-toothed in n, so the criterion is not strictly monotone: this returns the n that
    bisection finds on the bracket (criterion met at n, not at the bracket's lower end), which may differ by a
    few labels from the global smallest. Raises ValueError when n_max labels are not enough.
    """
    if target <= 0:
        raise ValueError("target must be > 0")

    def enough(n: int) -> bool:
        return min_detectable_change(n, psi_observed, alpha, power) <= target

    guess = min(connor_n(target, psi_observed, alpha, power), n_max)
    lo, hi = max(0, guess // 2), guess
    while lo > 0 and enough(lo):
        lo, hi = lo // 2, lo
    while not enough(hi):
        if hi >= n_max:
            raise ValueError(f"more than n_max={n_max} labels needed to detect {target}")
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
