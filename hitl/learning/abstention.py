"""Abstention: when the label set has a fallback label (e.g. out-of-scope), predict it whenever the model's
top probability falls below a threshold. The threshold is calibrated on the representative random sample
(weighted by 1/inclusion probability), so it fits production's mix rather than the hard cases.

A threshold fitted on the same rows that then judge it looks better there than in production; `cross_fitted`
decides each row with a threshold fitted on the other folds (`fold_of`), for an honest estimate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl.schemas import RANDOM


def apply(top_prob: np.ndarray, predicted: np.ndarray, fallback: str, threshold: float | np.ndarray) -> np.ndarray:
    """The predictions after abstention: `fallback` where top_prob < threshold (a scalar, or one per row).

    The serving rule (`modeling.score`) and calibration share it. Compared in float64, as `calibrate` fits it:
    a float32 probability against a Python-float threshold would otherwise compare in float32."""
    top, pred = np.asarray(top_prob, np.float64), np.asarray(predicted)
    return np.where(top < np.asarray(threshold, np.float64), fallback, pred)


def calibration_rows(records: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows the served threshold is calibrated on: the dataset version's random draw, each weighted by
    1/inclusion probability (so the threshold fits production's mix)."""
    sample = records[records["selection_reason"] == RANDOM]
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


def cross_fitted(top_prob: np.ndarray, predicted: np.ndarray, truth: np.ndarray, fallback: str,
                 weights: np.ndarray | None, folds: np.ndarray, k: int | None = None) -> CrossFit:
    """Cross-fitted abstention: fold f's rows abstain below `calibrate` fitted on the rows outside f (with their
    weights), so no row's own label touches its prediction. `folds` holds a fold in [0, k) per row (see
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
    thresholds = np.array([calibrate(top[rest], pred[rest], y[rest], fallback, w[rest]) if (rest := f != g).any()
                           else 0.0 for g in range(k)])
    return CrossFit(apply(top, pred, fallback, thresholds[f]), thresholds, k)


VERDICT_FOLDS = 5


def verdict_predictions(probs: np.ndarray, labels: list[str], fallback: str, truth: np.ndarray,
                        weights: np.ndarray | None, ids: Iterable[str], k: int = VERDICT_FOLDS) -> np.ndarray:
    """A model's predictions on the verdict rows (the random draw) with abstention cross-fitted over them: the
    raw top label, then the fallback below a threshold fitted on the other `k` folds (by trace id)."""
    raw = np.asarray(labels)[np.asarray(probs).argmax(axis=1)]
    top = np.asarray(probs).max(axis=1)
    return cross_fitted(top, raw, truth, fallback, weights, fold_of(ids, k), k).predictions
