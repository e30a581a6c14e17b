"""Representative draw: stratified simple random sampling of traces, with known inclusion probabilities.

Production fail rates are estimated from this sample only (weight = 1 / inclusion_prob). The review queue's
hard cases (flagged, uncertain) are chosen for learning, not measurement, and would bias such estimates.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

ALL = "all"
DRAW_COLUMNS = ("stratum", "inclusion_prob", "stratum_size", "stratum_draws")


def stratum_key(frame: pd.DataFrame, strata: list[str]) -> pd.Series:
    """One label per row, e.g. "channel=voice|tier=free" (missing values read "nan"); "all" without strata."""
    if not strata:
        return pd.Series(ALL, index=frame.index, dtype=str, name="stratum")
    parts = [f"{col}=" + frame[col].astype(str).fillna("nan") for col in strata]
    return functools.reduce(lambda left, right: left + "|" + right, parts).astype(str).rename("stratum")


def _largest_remainder(quota: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    base = np.floor(quota).astype(np.int64)
    frac = np.where(base < cap, quota - base, -np.inf)
    extra = total - int(base.sum())
    base[np.argsort(-frac, kind="stable")[:extra]] += 1
    return base


def allocate(sizes: dict[str, int], n: int, min_per_stratum: int = 2) -> dict[str, int]:
    """Proportional allocation of `n` draws over strata of sizes N_h (largest remainders).

    Every stratum gets at least min(min_per_stratum, N_h) when n covers all those minimums (otherwise the
    allocation is purely proportional) and never more than N_h; the total is min(n, sum N_h). With minimums,
    the quota is clip(lam * N_h, minimum_h, N_h) with lam chosen so the quotas sum to the total.
    """
    if n < 0 or min_per_stratum < 0 or any(v < 0 for v in sizes.values()):
        raise ValueError("n, min_per_stratum and stratum sizes must be >= 0")
    keys = list(sizes)
    big_n = np.array([sizes[k] for k in keys], dtype=np.int64)
    total = min(n, int(big_n.sum()))
    if total == int(big_n.sum()):
        return {k: int(v) for k, v in zip(keys, big_n, strict=True)}
    floor_ = np.minimum(min_per_stratum, big_n)
    if floor_.sum() > total:
        floor_ = np.zeros_like(big_n)
    live = big_n > 0
    # sum_h clip(lam * N_h, floor_h, N_h) is piecewise linear and strictly increasing between these kinks
    kinks = np.unique(np.append(floor_[live] / big_n[live], 1.0))
    reach = np.clip(kinks[:, None] * big_n, floor_, big_n).sum(axis=1)
    lam = np.interp(total, reach, kinks)
    quota = np.clip(lam * big_n, floor_, big_n)
    counts = _largest_remainder(quota, total, big_n)
    return {k: int(v) for k, v in zip(keys, counts, strict=True)}


def _srs(codes: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of a simple random sample without replacement of draws[c] rows from each stratum code c."""
    perm = rng.permutation(codes.size)
    order = perm[np.argsort(codes[perm], kind="stable")]  # by stratum, random order within it
    starts = np.searchsorted(codes[order], np.arange(draws.size))
    rank = np.arange(codes.size) - starts[codes[order]]
    return np.sort(order[rank < draws[codes[order]]])


def _drawn_frame(population: pd.DataFrame, pos: np.ndarray, labels: np.ndarray, codes: np.ndarray,
                 prob: np.ndarray, sizes: np.ndarray, draws: np.ndarray) -> pd.DataFrame:
    rows = population.iloc[pos]
    if clash := [col for col in DRAW_COLUMNS if col in rows.columns]:  # e.g. re-drawing from a drawn frame
        rows = rows.drop(columns=clash)
    c = codes[pos]
    design = pd.DataFrame({
        "stratum": pd.Series(labels[c], index=rows.index, dtype=str),
        "inclusion_prob": prob[c].astype(float),
        "stratum_size": sizes[c].astype(np.int64),
        "stratum_draws": draws[c].astype(np.int64),
    }, index=rows.index)
    return pd.concat([rows, design], axis=1)


def _factorize(population: pd.DataFrame, strata: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, labels = pd.factorize(stratum_key(population, strata), sort=True)
    labels = np.asarray(labels, dtype=object)
    return codes.astype(np.int64), labels, np.bincount(codes, minlength=labels.size).astype(np.int64)


def stratified_draw(population: pd.DataFrame, strata: list[str], n: int, rng: np.random.Generator,
                    min_per_stratum: int = 2) -> pd.DataFrame:
    """Stratified SRS without replacement of `n` rows, allocated by `allocate`.

    Returns the drawn rows (original index and columns, population order) plus stratum, inclusion_prob
    (n_h / N_h), stratum_size (N_h) and stratum_draws (n_h).
    """
    codes, labels, sizes = _factorize(population, strata)
    alloc = allocate(dict(zip(labels, sizes.tolist(), strict=True)), n, min_per_stratum)
    draws = np.array([alloc[s] for s in labels], dtype=np.int64)
    pos = _srs(codes, draws, rng)
    prob = draws / sizes  # every factorized stratum has N_h >= 1
    return _drawn_frame(population, pos, labels, codes, prob, sizes, draws)


def supplemental_draw(population: pd.DataFrame, strata: list[str], rates: dict[str, float], default_rate: float,
                      rng: np.random.Generator) -> pd.DataFrame:
    """Draw late-arriving traces at fixed per-stratum rates (strata missing from `rates` use `default_rate`).

    n_h = floor(rate_h * N_h) + Bernoulli(frac(rate_h * N_h)), then SRS: every unit's inclusion probability is
    exactly rate_h, which is what inclusion_prob reports. Same columns as `stratified_draw`.
    """
    codes, labels, sizes = _factorize(population, strata)
    prob = np.array([rates.get(s, default_rate) for s in labels], dtype=float)
    if np.any((prob < 0) | (prob > 1)) or not 0 <= default_rate <= 1:
        raise ValueError("rates must lie in [0, 1]")
    expected = prob * sizes
    whole = np.floor(expected)
    draws = (whole + (rng.random(labels.size) < expected - whole)).astype(np.int64)
    pos = _srs(codes, draws, rng)
    return _drawn_frame(population, pos, labels, codes, prob, sizes, draws)


def draw_rates(drawn: pd.DataFrame) -> dict[str, float]:
    """Stratum -> inclusion probability of a draw, to reuse for a later supplemental draw."""
    probs = drawn.groupby("stratum", sort=True)["inclusion_prob"]
    if (probs.nunique() > 1).any():
        raise ValueError("inclusion_prob differs within a stratum")
    return {str(k): float(v) for k, v in probs.first().items()}
