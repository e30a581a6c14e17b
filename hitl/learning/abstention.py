"""Abstention: when the label set has a fallback label (e.g. out-of-scope), predict it whenever the model's
in-scope score falls below a threshold. The threshold is calibrated on the representative random sample
(weighted by 1/inclusion probability), so it fits production's mix rather than the hard cases.

The in-scope score (`in_scope_score`) is how close a text's sentence vector lies to the nearest training row of an
in-scope label (the model's *reference*, kept at training): traffic unlike anything reviewed scores low even where
the head is confident, which a top probability cannot tell (a softmax over known labels always sums to one). On
BANKING77 with held-out intents as unknown traffic it was the best of the scores measured at a fixed
false-abstention rate, ahead of the top probability by a margin still within noise (docs/benchmarks.md, section
11). A model without a reference (trained before it existed) uses its top probability.

A threshold fitted on the same rows that then judge it looks better there than in production; `cross_fitted`
decides each row with a threshold fitted on the other folds (`fold_of`), for an honest estimate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl.evaluation import horizon

REFERENCE_PER_LABEL = 200  # training rows of each in-scope label whose sentence vectors a model keeps


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


def apply(top_prob: np.ndarray, predicted: np.ndarray, fallback: str, threshold: float | np.ndarray) -> np.ndarray:
    """The predictions after abstention: `fallback` where the score `top_prob` (the in-scope score, or a top
    probability) < threshold (a scalar, or one per row).

    The serving rule (`modeling.score`) and calibration share it. Compared in float64, as `calibrate` fits it:
    a float32 probability against a Python-float threshold would otherwise compare in float32."""
    top, pred = np.asarray(top_prob, np.float64), np.asarray(predicted)
    return np.where(top < np.asarray(threshold, np.float64), fallback, pred)


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


def cross_fitted(top_prob: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
                 weights: np.ndarray | None, folds: np.ndarray, k: int | None = None, rate: float | None = None
                 ) -> CrossFit:
    """Cross-fitted abstention: fold f's rows abstain below the threshold `fit` (with `rate`) on the rows outside
    f (with their weights), so no row's own label touches its prediction. `folds` holds a fold in [0, k) per row (see
    `fold_of`); k defaults to max(folds) + 1. A fold with no rows outside it (k = 1, or every other fold empty)
    has nothing to fit on and never abstains (threshold 0), as does one whose outside rows weigh nothing."""
    top, pred, y = np.asarray(top_prob, float), np.asarray(predicted), np.asarray(truth)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    f = np.asarray(folds)
    if not len(top) == len(pred) == len(y) == len(w) == len(f):
        raise ValueError("top_prob, predicted, truth, weights and folds must have one entry per row")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise ValueError("folds must be integers")
    f = f.astype(np.int64)
    k = (int(f.max()) + 1 if f.size else 1) if k is None else k
    if k < 1 or (f.size and (f.min() < 0 or f.max() >= k)):
        raise ValueError("folds must lie in [0, k) with k >= 1")
    thresholds = np.array([fit(top[rest], pred[rest], y[rest], fallback, w[rest], rate) if (rest := f != g).any()
                           else 0.0 for g in range(k)])
    return CrossFit(apply(top, pred, fallback, thresholds[f]), thresholds, k)


VERDICT_FOLDS = 5


def verdict_predictions(probs: np.ndarray, labels: list[str], fallback: str, truth: np.ndarray,
                        weights: np.ndarray | None, ids: Iterable[str], k: int = VERDICT_FOLDS,
                        in_scope: np.ndarray | None = None, rate: float | None = None) -> np.ndarray:
    """A model's predictions on the verdict rows (the random draw) with abstention cross-fitted over them: the
    raw top label, then the fallback below a threshold on the in-scope score (`Scores.in_scope`; the top
    probability when not given) fitted on the other `k` folds (by trace id), by the served rule (`rate`)."""
    raw = np.asarray(labels)[np.asarray(probs).argmax(axis=1)]
    score = np.asarray(probs).max(axis=1) if in_scope is None else np.asarray(in_scope, float)
    return cross_fitted(score, raw, truth, fallback, weights, fold_of(ids, k), k, rate).predictions
