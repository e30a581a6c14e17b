"""Abstention: when the label set has a fallback label (e.g. out-of-scope), predict it whenever the model's
in-scope score falls below a threshold, and otherwise the most probable in-scope label (`in_scope_top`). So the
threshold alone refuses: the fallback class's own top probability is no second, uncalibrated way to refuse, and a
fixed false-abstention rate (`model.abstention_rate`) holds as set. (Served before 2026-12-07: the top label over
every label, so in-scope texts whose top label was the fallback were refused above the threshold too: on
BANKING77 with held-out intents as unknown traffic, 6.7% of in-scope texts refused at a 5% rate.) A model not yet
calibrated answers its top label over every label, the fallback class included; trained with pseudo outliers
(recipe.py), that refuses many in-scope texts (20.7% in section 11's BANKING77 protocol), so the fine-tune and
the bootstrap warn when they have no random draw to calibrate on (`uncalibrated_warning`). The threshold is
calibrated on the representative random sample (weighted by 1/inclusion probability), so it fits production's mix
rather than the hard cases.

The in-scope score has two parts (`Scores.in_scope_parts`): how close a text's sentence vector lies to the nearest
training row of an in-scope label (the model's *reference*, kept at training; `in_scope_score`), and the highest
probability among the in-scope labels. The first sees traffic unlike anything reviewed even where the head is
confident, which a probability cannot (a softmax over known labels always sums to one); the second sees texts near a
reviewed row of one intent that the head still cannot place. Their scales differ, so each part is ranked against the
in-scope rows of the calibration draw (`fit_scale`) and the ranks are averaged (`combine`): parameter-free, and on
BANKING77 and the synthetic world with held-out intents as unknown traffic it recognised more of it at a fixed
false-abstention rate than either part alone (docs/benchmarks.md, section 11): there the two behave as noisy views
of one thing, which a mean steadies. Where each part sees a different kind of unknown traffic, a mean dilutes
both (their minimum did worse on both scenarios, so it is not served). Piloted on BANKING77 on a seed section 11
does not report (3, four folds; 2026-12-07), where the served score recognised 33.6% (the anchor 27.0%): the mean
cosine of the k nearest rows instead of the nearest (k from 2 to 10), or of a label's k nearest, alone or ranked
with the probability, did no better (at best 33.2%); the nearest row's cosine less its label's median
nearest-neighbour cosine among its own rows, ranked with the probability, 34.3% (and 89.2% against 87.1% on the
synthetic world's seed 3, where the nearest row alone recognised 95.4%, most of the gap in one fold: 82.5% against
56.5%): within one seed's noise, not measured further. A model not yet calibrated ranks by the
nearest row alone; one without a reference (trained before it existed) uses its top probability.

A threshold fitted on the same rows that then judge it looks better there than in production; `cross_fitted`
decides each row with a scale and a threshold fitted on the other folds (`fold_of`), for an honest estimate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl.evaluation import horizon

REFERENCE_PER_LABEL = 200  # training rows of each in-scope label whose sentence vectors a model keeps
SCALE_POINTS = 201  # quantiles of each in-scope part a calibrated model keeps (`fit_scale`)
MIN_SCALE_ROWS = 20  # fewer in-scope calibration rows than this: no scale, the nearest row alone


def reference_rows(labels: list[str], fallback: str | None, per_label: int = REFERENCE_PER_LABEL,
                   seed: int = 0) -> np.ndarray:
    """Positions of the training rows a model keeps as its reference: each in-scope label's rows (a seeded choice
    of at most `per_label`), none of the fallback label's (they are what the reference must not resemble)."""
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    keep = []
    for lab in sorted({str(v) for v in y} - {fallback}):
        idx = np.flatnonzero(y == lab)
        keep.append(np.sort(rng.choice(idx, size=per_label, replace=False)) if len(idx) > per_label else idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def in_scope_score(vectors: np.ndarray, reference: np.ndarray, block: int = 2048) -> np.ndarray:
    """Per row of `vectors` (L2-normalised sentence vectors): (1 + its highest cosine similarity to a reference
    row) / 2, in [0, 1] like a probability, so a threshold of 0 still means "never abstain". An empty reference
    scores every row 1 (nothing to compare with: never abstain)."""
    vectors = np.asarray(vectors, np.float32)
    ref = np.asarray(reference, np.float32)
    if len(ref) == 0:
        return np.ones(len(vectors))
    best = np.concatenate([(vectors[i:i + block] @ ref.T).max(axis=1) for i in range(0, len(vectors), block)]) \
        if len(vectors) else np.zeros(0, np.float32)
    return np.clip((1.0 + best.astype(np.float64)) / 2.0, 0.0, 1.0)


def fit_scale(parts: np.ndarray, truth: np.ndarray, fallback: str, weights: np.ndarray | None = None,
              points: int = SCALE_POINTS) -> np.ndarray | None:
    """The scale `combine` ranks in-scope parts on: per column of `parts` (n, m), its weighted quantiles at `points`
    evenly spaced levels over the in-scope rows (truth != fallback, weight > 0), shape (m, points). None (rank by
    the first part alone) with one part, or fewer than MIN_SCALE_ROWS such rows."""
    x, y = np.asarray(parts, float), np.asarray(truth)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    keep = (y != fallback) & (w > 0)
    if x.ndim != 2 or x.shape[1] < 2 or keep.sum() < MIN_SCALE_ROWS:
        return None
    levels = np.linspace(0.0, 1.0, points)
    out = []
    for col in x[keep].T:
        order = np.argsort(col, kind="stable")
        share = np.cumsum(w[keep][order]) / w[keep].sum()
        out.append(col[order][np.minimum(np.searchsorted(share, levels - 1e-12), len(col) - 1)])
    return np.asarray(out)


def combine(parts: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The in-scope score in [0, 1]: the mean over the parts of each part's rank on `scale` (the weighted share of
    the calibration's in-scope rows at or below it, interpolated); without a scale, the first part."""
    x = np.asarray(parts, float)
    if x.ndim == 1:
        return x
    if scale is None:
        return x[:, 0]
    levels = np.linspace(0.0, 1.0, scale.shape[1])
    return np.mean([_rank(x[:, j], q, levels) for j, q in enumerate(np.asarray(scale, float))], axis=0)


def _rank(x: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The level of `x` on the quantiles `q` (at `levels`), linear between them, 0 below and 1 at or above the
    top. Tied quantiles count at their highest level (the share at or below). Never divides by a gap so small
    that the result overflows."""
    knots, first = np.unique(q[::-1], return_index=True)
    at = levels[::-1][first]
    i = np.searchsorted(knots, x, side="right") - 1  # knots[i] <= x < knots[i + 1]
    out = np.where(i < 0, 0.0, 1.0)
    mid = (i >= 0) & (i < len(knots) - 1)
    j = i[mid]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        frac = np.clip((x[mid] - knots[j]) / (knots[j + 1] - knots[j]), 0.0, 1.0)
    out[mid] = at[j] + frac * (at[j + 1] - at[j])
    return out


def in_scope_columns(labels: list[str], fallback: str | None) -> np.ndarray:
    """Positions of the labels other than `fallback` (every label's without one)."""
    return np.array([i for i, lab in enumerate(labels) if lab != fallback], dtype=np.int64)


def in_scope_probability(probs: np.ndarray, labels: list[str], fallback: str | None) -> np.ndarray:
    """Per row of `probs`, the highest probability among the labels other than `fallback` (among every label when
    there is no other): the in-scope score's second part, and the whole score of a model without a reference."""
    probs = np.asarray(probs, float)
    inside = in_scope_columns(labels, fallback)
    return (probs[:, inside] if inside.size else probs).max(axis=1) if len(probs) else np.zeros(0)


def in_scope_top(probs: np.ndarray, labels: list[str], fallback: str) -> np.ndarray:
    """Per row of `probs`, the most probable label other than `fallback`: what a calibrated model answers where its
    in-scope score clears the threshold (`fallback` for every row when it is the only label)."""
    probs = np.asarray(probs, float)
    inside = in_scope_columns(labels, fallback)
    if not inside.size:
        return np.full(len(probs), fallback, dtype=object)
    return np.asarray(labels, dtype=object)[inside[probs[:, inside].argmax(axis=1)]] if len(probs) else \
        np.zeros(0, dtype=object)


def apply(top_prob: np.ndarray, predicted: np.ndarray, fallback: str, threshold: float | np.ndarray) -> np.ndarray:
    """The predictions after abstention: `fallback` where the score `top_prob` (the in-scope score, or a top
    probability) < threshold (a scalar, or one per row).

    The serving rule (`modeling.score`) and calibration share it. Compared in float64, as `calibrate` fits it:
    a float32 probability against a Python-float threshold would otherwise compare in float32."""
    top, pred = np.asarray(top_prob, np.float64), np.asarray(predicted)
    return np.where(top < np.asarray(threshold, np.float64), fallback, pred)


def trains_fallback(labels: Iterable[str], fallback: str | None) -> bool:
    """Whether training rows with these labels teach the fallback class (so, uncalibrated, it refuses: the bootstrap
    warns then, `uncalibrated_warning`)."""
    return fallback is not None and any(str(label) == fallback for label in labels)


def uncalibrated_warning(fallback: str, why: str) -> str:
    """The log line for a model left without a threshold although it has a fallback label: `why`, then what it
    answers meanwhile and what to do."""
    return (f"{why}: this model answers its top label over every label, {fallback} included, which a model trained "
            f"with pseudo outliers gives to many in-scope texts. A fine-tune on a dataset version with random draws "
            f"in the production horizon calibrates a threshold; a model trained with "
            f"training.pseudo_outlier_weight: 0 refuses less until then (it learns {fallback} from its rows alone).")


def calibration_rows(records: pd.DataFrame, horizon_days: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows the served threshold is calibrated on: the dataset version's random draw inside the production
    horizon (`evaluation.horizon_days`, as the report estimates it), each weighted by 1/inclusion probability (so
    the threshold fits production's mix)."""
    sample, _ = horizon.random_draw(records, horizon_days)
    return sample, 1.0 / sample["inclusion_prob"].to_numpy(float)


def calibrate(top_prob: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
              weights: np.ndarray | None = None) -> float:
    """The threshold (0 to just above 1) that maximises weighted accuracy when predictions below it become `fallback`
    (ties: the lowest threshold, i.e. abstain as little as possible). 0 means never abstain."""
    top, pred, y = np.asarray(top_prob, float), np.asarray(predicted), np.asarray(truth)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    if len(y) == 0:
        return 0.0
    order = np.argsort(top, kind="stable")
    right_kept = (pred == y) * w  # credit when the prediction stands
    right_abstain = (y == fallback) * w  # credit when abstaining
    # abstaining on the i lowest: accuracy = sum(right_abstain[:i]) + sum(right_kept[i:])
    gain = np.concatenate([[0.0], np.cumsum(right_abstain[order] - right_kept[order])])
    sorted_top = top[order]
    valid = np.ones(len(gain), dtype=bool)  # a threshold cannot split tied probabilities
    valid[1:-1] = sorted_top[1:] > sorted_top[:-1]
    gain = np.where(valid, gain, -np.inf)
    i = int(np.argmax(gain))  # first maximum: the fewest abstentions among the best
    if i == 0:
        return 0.0
    below = sorted_top[i - 1]
    if i == len(order):  # abstain on everything: just above the highest probability
        return float(np.nextafter(below, np.inf))
    return float((below + sorted_top[i]) / 2)


def calibrate_at_rate(top_prob: np.ndarray, truth: np.ndarray, fallback: str, rate: float,
                      weights: np.ndarray | None = None) -> float:
    """The highest threshold at which at most `rate` of the in-scope rows (truth != fallback; weighted) fall
    below it and would be refused: a fixed false-abstention rate, whatever it costs or gains in accuracy (ties
    are not split). 0 means never abstain (no in-scope rows, or the lowest score alone is over the rate)."""
    top, y = np.asarray(top_prob, float), np.asarray(truth)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    keep = (y != fallback) & (w > 0)
    if not keep.any():
        return 0.0
    order = np.argsort(top[keep], kind="stable")
    s, share = top[keep][order], np.cumsum(w[keep][order]) / w[keep].sum()
    ok = np.flatnonzero((share <= rate + 1e-12) & np.append(s[1:] > s[:-1], True))  # i rows below, ties whole
    if not ok.size:
        return 0.0
    i = int(ok[-1]) + 1  # rows refused
    return float(np.nextafter(s[-1], np.inf)) if i == len(s) else float((s[i - 1] + s[i]) / 2)


def fold_of(ids: Iterable[str], k: int, salt: str = "hitl-crossfit") -> np.ndarray:
    """A fold in [0, k) per id, from sha256(salt:id) only: the same trace always lands in the same fold,
    whatever the order or company of the ids."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return np.array([int.from_bytes(hashlib.sha256(f"{salt}:{i}".encode()).digest()[:8], "big") % k for i in ids],
                    dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CrossFit:
    """The outcome of `cross_fitted`."""

    predictions: np.ndarray  # labels after abstention, each row by the threshold fitted without its fold
    thresholds: np.ndarray  # (k,) the threshold fitted on the rows outside each fold
    k: int


def fit(top_prob: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
        weights: np.ndarray | None = None, rate: float | None = None) -> float:
    """The served rule: `calibrate` (best accuracy), or with `rate` (`model.abstention_rate`)
    `calibrate_at_rate`."""
    if rate is None:
        return calibrate(top_prob, predicted, truth, fallback, weights)
    return calibrate_at_rate(top_prob, truth, fallback, rate, weights)


def fit_served(score: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
               weights: np.ndarray | None = None, rate: float | None = None) -> tuple[np.ndarray | None, float]:
    """The served rule fitted on these rows: the scale of the in-scope parts (`fit_scale`; None for one score per
    row), then the threshold `fit` on the score they combine into."""
    x = np.asarray(score, float)
    scale = fit_scale(x, truth, fallback, weights) if x.ndim == 2 else None
    return scale, fit(combine(x, scale), predicted, truth, fallback, weights, rate)


def cross_fitted(score: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
                 weights: np.ndarray | None, folds: np.ndarray, k: int | None = None, rate: float | None = None
                 ) -> CrossFit:
    """Cross-fitted abstention: fold f's rows abstain below the threshold `fit` (with `rate`) on the rows outside
    f (with their weights), so no row's own label touches its prediction. `score` is one score per row, or the
    in-scope parts (n, m), combined for each fold on the scale (`fit_scale`) of the rows outside it. `folds` holds
    a fold in [0, k) per row (see `fold_of`); k defaults to max(folds) + 1. A fold with no rows outside it (k = 1,
    or every other fold empty) has nothing to fit on and never abstains (threshold 0), as does one whose outside
    rows weigh nothing."""
    x, pred, y = np.asarray(score, float), np.asarray(predicted), np.asarray(truth)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    f = np.asarray(folds)
    if not len(x) == len(pred) == len(y) == len(w) == len(f):
        raise ValueError("score, predicted, truth, weights and folds must have one entry per row")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise ValueError("folds must be integers")
    f = f.astype(np.int64)
    k = (int(f.max()) + 1 if f.size else 1) if k is None else k
    if k < 1 or (f.size and (f.min() < 0 or f.max() >= k)):
        raise ValueError("folds must lie in [0, k) with k >= 1")
    thresholds, decided = np.zeros(k), np.zeros(len(y))
    for g in range(k):
        rest, here = f != g, f == g
        scale, thresholds[g] = fit_served(x[rest], pred[rest], y[rest], fallback, w[rest], rate) if rest.any() \
            else (None, 0.0)
        decided[here] = combine(x[here], scale)
    return CrossFit(apply(decided, pred, fallback, thresholds[f]), thresholds, k)


VERDICT_FOLDS = 5


def verdict_predictions(probs: np.ndarray, labels: list[str], fallback: str, truth: np.ndarray,
                        weights: np.ndarray | None, ids: Iterable[str], k: int = VERDICT_FOLDS,
                        in_scope: np.ndarray | None = None, rate: float | None = None) -> np.ndarray:
    """A model's predictions on the verdict rows (the random draw) with abstention cross-fitted over them: the
    top in-scope label (`in_scope_top`), then the fallback below a threshold on the in-scope score
    (`Scores.in_scope_parts`, or one score per row; the top in-scope probability when not given) fitted, with its
    scale, on the other `k` folds (by trace id), by the served rule (`rate`)."""
    raw = in_scope_top(probs, labels, fallback)
    score = in_scope_probability(probs, labels, fallback) if in_scope is None else np.asarray(in_scope, float)
    return cross_fitted(score, raw, truth, fallback, weights, fold_of(ids, k), k, rate).predictions
