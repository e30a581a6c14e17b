"""One design-based inference per row of the release report: both fail rates, their paired change, its
interval, p-value and verdict, all from the same estimate and the same variance (`hitl.evaluation.design`).

- Rates: Hajek estimates with Wilson intervals at the design-effective size n* = R(1-R)/V(R) (Korn & Graubard
  1998; Dean & Pagano 2015), capped at the row's draw count; at R = 0 or 1, where V(R) = 0, the Kish size.
- Change (challenger - champion fail rate): Wald on the linearised variance of the paired difference, floored
  so a row with few discordant pairs is never judged on a near-zero variance: the floor is the variance of a
  discordant share of z^2 / (n_eff + z^2) (Wilson's upper bound when none is seen), at the report's base alpha.
  The p-value is the same statistic's two-sided normal tail, so p < level exactly when the interval at that
  level excludes 0.
- Verdict against the non-inferiority margin: PASS when the upper bound is at most the margin (flagged when the
  lower bound is above 0: worse, but within the margin); FAIL when the lower bound is above 0 and the upper above
  the margin; INCONCLUSIVE otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from hitl.evaluation import design, estimates

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE)


def level_text(alpha: float) -> str:
    """A confidence level as people read it: 0.0416 -> '95.8%'."""
    return f"{100 * (1 - alpha):.3g}%"


def z_of(level: float | np.ndarray) -> np.ndarray:
    """Two-sided normal quantile z_(1 - level/2)."""
    level = np.asarray(level, float)
    if np.any((level <= 0) | (level >= 1)):
        raise ValueError("levels must lie in (0, 1)")
    return ndtri(1 - level / 2)


@dataclass(frozen=True)
class Paired:
    """Point estimates and variances of one domain (arrays over any leading axes of the outcomes)."""

    n: int
    n_eff: float
    champion: np.ndarray
    champion_var: np.ndarray
    challenger: np.ndarray
    challenger_var: np.ndarray
    delta: np.ndarray
    delta_var: np.ndarray  # linearised variance of the change, floored (see module docstring)
    delta_var_linear: np.ndarray  # the same before the floor
    discordance: np.ndarray  # weighted share of items where exactly one model fails
    b: np.ndarray  # items the champion fails and the challenger passes
    c: np.ndarray  # items the champion passes and the challenger fails


def variance_floor(n_eff: float, alpha: float) -> float:
    """The least variance a change is judged on: a discordant share of z^2/(n_eff + z^2) over n_eff pairs."""
    if n_eff <= 0:
        return math.nan
    z2 = float(z_of(alpha)) ** 2
    return z2 / (n_eff + z2) / n_eff


def paired(champion_fail: np.ndarray, challenger_fail: np.ndarray, weights: np.ndarray, strata: np.ndarray,
           domain: np.ndarray | None, alpha: float) -> Paired:
    """Both Hajek fail rates and their paired difference over `domain`; outcomes are 0/1 with shape (..., n)."""
    a, b = np.asarray(champion_fail, float), np.asarray(challenger_fail, float)
    d = np.ones(a.shape[-1], bool) if domain is None else np.asarray(domain, bool)
    sums = design.StratumSums(weights, strata, d)
    # 0/1 outcomes: a^2 = a, b^2 = b, (b - a)^2 = |b - a|, so three products give every sum needed
    x = np.abs(b - a)
    (a_w, a_w2), (b_w, b_w2), (x_w, x_w2) = sums.of(a), sums.of(b), sums.of(x)
    ra, va = sums.hajek(a_w, a_w2, a_w2)
    rb, vb = sums.hajek(b_w, b_w2, b_w2)
    dd, vd = sums.hajek(b_w - a_w, b_w2 - a_w2, x_w2)
    psi = x_w.sum(axis=-1) / sums.total if sums.total > 0 else np.full(a.shape[:-1], np.nan)
    n_eff = design.kish(weights, d)
    linear = vd
    if n_eff > 0:
        vd = np.maximum(vd, variance_floor(n_eff, alpha))
    dd_count, ab = d.astype(float), a - b
    nb = np.rint((x @ dd_count + ab @ dd_count) / 2).astype(np.int64)  # champion fails, challenger passes
    nc = np.rint((x @ dd_count - ab @ dd_count) / 2).astype(np.int64)
    return Paired(int(d.sum()), n_eff, ra, va, rb, vb, dd, vd, linear, psi, nb, nc)


def design_n(rate: np.ndarray, var: np.ndarray, n: int, n_eff: float) -> np.ndarray:
    """Design-effective size R(1-R)/V, capped at n; the Kish size where R is 0 or 1 or V is 0."""
    rate, var = np.asarray(rate, float), np.asarray(var, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        star = rate * (1 - rate) / var
    usable = (rate > 0) & (rate < 1) & (var > 0)
    return np.where(usable, np.minimum(star, n), n_eff)


def rate_interval(rate: np.ndarray, var: np.ndarray, n: int, n_eff: float, level: float | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    return estimates.wilson_bounds(rate, design_n(rate, var, n, n_eff), z_of(level))


def change_interval(delta: np.ndarray, var: np.ndarray, level: float | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wald interval of the change at `level`, clipped to [-1, 1]."""
    half = z_of(level) * np.sqrt(np.asarray(var, float))
    return np.clip(delta - half, -1, 1), np.clip(delta + half, -1, 1)


def p_value(delta: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Two-sided p of 'no change' from the same statistic the interval uses (1 where the change is 0)."""
    delta, var = np.asarray(delta, float), np.asarray(var, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.abs(delta) / np.sqrt(var)
    return np.where(delta == 0, 1.0, 2 * ndtr(-stat))


def outcome(low: np.ndarray, high: np.ndarray, margin: float) -> np.ndarray:
    """PASS / FAIL / INCONCLUSIVE from the change's interval (NaN bounds: INCONCLUSIVE)."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    return np.select([high <= margin, (low > 0) & (high > margin)], [PASS, FAIL], INCONCLUSIVE)


def holm_levels(p: np.ndarray, alpha: float) -> np.ndarray:
    """The level at which Holm's step-down procedure judges each p-value, along the last axis (NaN p: NaN
    level, left out of the family).

    The k-th smallest p is judged at alpha / (m - k + 1) while every smaller one was rejected; once a step fails,
    it and every later p are judged at that step's level. So p < level exactly when Holm rejects, and an
    interval at that level excludes 0 exactly then.
    """
    p = np.asarray(p, float)
    nan = np.isnan(p)
    m = (~nan).sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(nan, np.inf, p), axis=-1, kind="stable")
    sorted_p = np.take_along_axis(np.where(nan, np.inf, p), order, axis=-1)
    rank = np.arange(p.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(rank < m, alpha / (m - rank), np.nan)
    failed = np.cumsum(~(sorted_p < step) & (rank < m), axis=-1) > 0  # this step or an earlier one failed
    first = np.argmax(failed, axis=-1)[..., None]
    stop_level = np.take_along_axis(step, first, axis=-1)
    levels = np.where(failed, stop_level, step)
    out = np.empty_like(levels)
    np.put_along_axis(out, order, levels, axis=-1)
    return np.where(nan, np.nan, out)


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of one family (1-D; NaN p: NaN, left out): the k-th smallest p times the rows not
    yet rejected, made monotone and capped at 1. Holm rejects a row at level alpha exactly when it is <= alpha."""
    p = np.asarray(p, float)
    keep = ~np.isnan(p)
    out = np.full(p.shape, np.nan)
    order = np.argsort(p[keep], kind="stable")
    m = int(keep.sum())
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[keep][order]))
    out[np.flatnonzero(keep)[order]] = adjusted
    return out


def look_alpha(alpha: float, look: int) -> float:
    """Alpha spent at the look-th evaluation of the same challenger: alpha * look^-3 / zeta(3) (0.83, 0.10,
    0.03, ... of alpha), so over every look the chance of any wrong verdict stays at most alpha (union bound)."""
    if look < 1:
        raise ValueError("looks count from 1")
    return alpha * look**-3 / 1.2020569031595942


def labels_to_decide(var_linear: float, n_eff: float, n_row: int, n_total: int, margin: float, level: float,
                     power: float, alpha: float) -> float:
    """Random labels in all for the row's interval to reach the margin with probability `power` if the true change
    were 0: the N with (z_(1-level/2) + z_power) * se(N) <= margin, at the row's current share of the draw
    (n_row of n_total) and design effect. se(N)^2 is the larger of the linearised variance, scaling as 1/N, and
    the variance floor at the grown Kish size (`variance_floor`, which falls as 1/N^2): so a row without a
    discordant pair yet is planned by its floor, not by a 1/N extrapolation of it. NaN when undefined."""
    if not (n_row > 0 and n_eff > 0 and n_total > 0 and margin > 0):
        return math.nan
    target = (margin / (float(z_of(level)) + float(ndtri(power)))) ** 2
    rows_linear = n_row * var_linear / target if var_linear > 0 else 0.0
    z2 = float(z_of(alpha)) ** 2  # the floor z^2 / (m (m + z^2)) <= target at a Kish size m
    m = (-z2 + math.sqrt(z2 * z2 + 4 * z2 / target)) / 2
    rows_floor = m * n_row / n_eff
    return max(rows_linear, rows_floor) * n_total / n_row


def detectable_change(var: float, level: float, power: float) -> float:
    """Smallest true change the row's interval detects with probability `power`: (z + z_power) * se."""
    return (float(z_of(level)) + float(ndtri(power))) * math.sqrt(var) if var > 0 else math.nan
