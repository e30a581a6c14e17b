"""Weighted (Hajek) estimates of a production rate from a probability sample, with Wilson intervals.

Weights are 1 / inclusion probability. The interval is Wilson's evaluated at Kish's effective sample size,
which accounts for unequal weights (it ignores the finite-population correction and stratification gains).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri

OVERALL = "overall"
TABLE_COLUMNS = ["cohort", "value", "n", "n_eff", "estimate", "low", "high"]


@dataclass(frozen=True)
class Estimate:
    """A rate with its 1-alpha interval, sample size and Kish effective sample size (NaNs when n == 0)."""

    value: float
    low: float
    high: float
    n: int
    n_eff: float

    @property
    def se(self) -> float:
        """sqrt(p(1-p)/n_eff); NaN when undefined."""
        if not (self.n_eff > 0 and 0 <= self.value <= 1):
            return math.nan
        return math.sqrt(self.value * (1 - self.value) / self.n_eff)


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    return float(ndtri(1 - alpha / 2))


def wilson_bounds(p: np.ndarray, n_eff: np.ndarray, z: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds at a (possibly fractional) sample size; NaN where n_eff <= 0."""
    p, n_eff = np.asarray(p, float), np.asarray(n_eff, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 1 + z**2 / n_eff
        center = (p + z**2 / (2 * n_eff)) / denom
        half = z * np.sqrt(p * (1 - p) / n_eff + z**2 / (4 * n_eff**2)) / denom
    bad = ~(n_eff > 0)
    return np.where(bad, np.nan, np.clip(center - half, 0, 1)), np.where(bad, np.nan, np.clip(center + half, 0, 1))


def wilson_interval(p: float, n_eff: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for an observed proportion p at a (possibly non-integer) sample size n_eff."""
    low, high = wilson_bounds(p, n_eff, _z(alpha))
    return float(low), float(high)


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Difference of two independent proportions k1/n1 - k2/n2 with Newcombe's hybrid score interval (his method
    10: the square-and-add of each proportion's Wilson interval); NaNs when either n is 0."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(p1, n1, alpha), wilson_interval(p2, n2, alpha)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def kish_n_eff(weights: Sequence[float] | np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (0 for no weights)."""
    w = np.asarray(weights, float)
    return float(w.sum() ** 2 / np.sum(w**2)) if w.size else 0.0


def _checked(y: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, w = np.asarray(y, float), np.asarray(weights, float)
    if y.shape != w.shape or y.ndim != 1:
        raise ValueError("y and weights must be 1-d and of equal length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be 0/1")
    if not (np.isfinite(w) & (w > 0)).all():
        raise ValueError("weights must be positive and finite")
    return y, w


def _from_sums(sw: np.ndarray, swy: np.ndarray, sw2: np.ndarray, z: float) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(sw > 0, swy / sw, np.nan)
        n_eff = np.where(sw2 > 0, sw**2 / sw2, 0.0)
    low, high = wilson_bounds(value, n_eff, z)
    return {"n_eff": n_eff, "estimate": value, "low": low, "high": high}


def hajek_rate(y: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray,
               alpha: float = 0.05) -> Estimate:
    """Hajek estimate sum(w*y)/sum(w) of a 0/1 rate, with a Wilson interval at the Kish effective size."""
    y, w = _checked(y, weights)
    s = _from_sums(w.sum(), (w * y).sum(), (w**2).sum(), _z(alpha))
    return Estimate(float(s["estimate"]), float(s["low"]), float(s["high"]), int(y.size), float(s["n_eff"]))


def domain_table(sample: pd.DataFrame, y: str, weight: str, by: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Hajek rate of `y` overall and per value of each column in `by` (domains may cut across strata).

    Columns: cohort ("overall" or the column name), value ("all" or str(value)), n, n_eff, estimate, low, high.
    """
    yy, w = _checked(sample[y].to_numpy(float), sample[weight].to_numpy(float))
    cohorts, values, sums = [OVERALL], ["all"], [np.array([[w.sum()], [(w * yy).sum()], [(w**2).sum()], [w.size]])]
    for col in by:
        codes, uniques = pd.factorize(sample[col], sort=True, use_na_sentinel=False)
        k = len(uniques)
        sums.append(np.array([np.bincount(codes, weights=v, minlength=k) for v in (w, w * yy, w**2, np.ones_like(w))]))
        cohorts += [col] * k
        values += [str(v) for v in uniques]
    sw, swy, sw2, n = np.concatenate(sums, axis=1)
    stats = _from_sums(sw, swy, sw2, _z(alpha))
    return pd.DataFrame({"cohort": cohorts, "value": values, "n": n.astype(np.int64), **stats}, columns=TABLE_COLUMNS)
