"""Design-based inference for the stratified random draw: Hajek rates, their paired difference, one variance.

The regression set is a stratified random sample (strata = window x sampling stratum) with weights
w = 1 / inclusion probability. For a domain d (all rows, a cohort value, a label group) the Hajek estimate of a
variable y is  R = sum(w d y) / sum(w d). Its variance comes from Taylor linearisation: the influence values
u_i = w_i d_i (y_i - R) / sum(w d) and, treating each stratum's draws as independent (the with-replacement
approximation: no finite-population correction, so slightly conservative),

    V(R) = sum_h n_h / (n_h - 1) * sum_{i in h} (u_i - mean_h(u))^2.

Rows outside the domain keep u = 0, so a domain that cuts across strata gets the right (domain) variance.
A stratum with a single draw has no variance of its own: it is collapsed into its neighbour (`collapse_strata`).

Every function takes y with any number of leading axes (..., n): the simulation tests run thousands of draws in
one call through exactly the code the report uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SINGLETON_RULE = ("a stratum with one draw is merged into the next stratum of the same window in sorted order "
                  "(the previous one when it is the last); a window with one draw in all is merged into the next "
                  "window's first stratum")


def collapse_strata(windows: Sequence[str], strata: Sequence[str]) -> np.ndarray:
    """Integer stratum codes for (window, stratum) pairs, with every single-draw stratum collapsed by
    SINGLETON_RULE (repeated until no stratum has one draw, or only one stratum is left)."""
    keys = pd.DataFrame({"w": pd.Series(windows, dtype=object).astype(str).to_numpy(),
                         "s": pd.Series(strata, dtype=object).astype(str).to_numpy()})
    groups = sorted(keys.drop_duplicates().itertuples(index=False, name=None))
    members: list[list[tuple[str, str]]] = [[g] for g in groups]
    sizes = keys.value_counts().to_dict()
    count = [sizes[g] for g in groups]
    while len(count) > 1 and min(count) == 1:
        i = count.index(1)
        window = members[i][0][0]
        same = [j for j in range(len(members)) if j != i and members[j][0][0] == window]
        if same:  # within the window: the next stratum, or the previous when it is the last
            after = [j for j in same if j > i]
            j = after[0] if after else same[-1]
        else:  # the window's only stratum: the next window's first (or the previous window's last)
            j = i + 1 if i + 1 < len(members) else i - 1
        members[j] += members[i]
        count[j] += count[i]
        del members[i], count[i]
    code = {key: k for k, group in enumerate(members) for key in group}
    return np.array([code[(w, s)] for w, s in keys.itertuples(index=False, name=None)], dtype=np.int64)


def _onehot(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, np.int64)
    return np.eye(int(codes.max()) + 1 if codes.size else 0)[codes]


class StratumSums:
    """Per-stratum sums of w*y and w^2*y over a domain, for outcomes with shape (..., n): one matrix product
    per outcome serves every draw of a simulation. Sums are linear in y, so those of b - a are sums(b) - sums(a)."""

    def __init__(self, weights: np.ndarray, strata: np.ndarray, domain: np.ndarray | None = None) -> None:
        w = np.asarray(weights, float)
        d = np.ones(w.shape, bool) if domain is None else np.asarray(domain, bool)
        self.wd = np.where(d, w, 0.0)
        s = _onehot(strata)
        self.n_h = s.sum(axis=0)
        self._m = np.concatenate([self.wd[:, None] * s, (self.wd * w)[:, None] * s], axis=1)  # (n, 2H)
        self.b_w, self.b_w2 = self.wd @ s, (self.wd * w) @ s
        self.total = float(self.wd.sum())

    def of(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sum w y, sum w^2 y) per stratum, shape (..., H)."""
        out = np.asarray(y, float) @ self._m
        h = self.n_h.size
        return out[..., :h], out[..., h:]

    def hajek(self, s_wy: np.ndarray, s_w2y: np.ndarray, s_w2y2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(estimate, linearisation variance) from the sums of w y, w^2 y and w^2 y^2 per stratum."""
        if self.total <= 0:
            nan = np.full(np.shape(s_wy)[:-1], np.nan)
            return nan, nan.copy()
        est = s_wy.sum(axis=-1) / self.total
        r = est[..., None]
        sum_u = (s_wy - r * self.b_w) / self.total
        sum_u2 = (s_w2y2 - 2 * r * s_w2y + r * r * self.b_w2) / self.total**2
        n_h = self.n_h
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(n_h > 1, n_h / (n_h - 1) * (sum_u2 - sum_u**2 / np.maximum(n_h, 1)), 0.0)
        return est, np.maximum(per.sum(axis=-1), 0.0)


def linearized(y: np.ndarray, weights: np.ndarray, strata: np.ndarray, domain: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(Hajek estimate, linearisation variance) of y over the domain; y has shape (..., n).

    NaN estimate and variance when the domain is empty; variance 0 where every stratum holds one draw.
    """
    sums = StratumSums(weights, strata, domain)
    y = np.asarray(y, float)
    s_wy, s_w2y = sums.of(y)
    return sums.hajek(s_wy, s_w2y, sums.of(y * y)[1])


def kish(weights: np.ndarray, domain: np.ndarray | None = None) -> float:
    """Kish effective sample size of the domain's weights (0 when empty)."""
    w = np.asarray(weights, float)
    if domain is not None:
        w = w[np.asarray(domain, bool)]
    return float(w.sum() ** 2 / np.sum(w * w)) if w.size else 0.0
