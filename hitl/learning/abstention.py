"""Abstention: when the label set has a fallback label (e.g. out-of-scope), predict it whenever the model's
top probability falls below a threshold. The threshold is calibrated on the representative random sample
(weighted by 1/inclusion probability), so it fits production's mix rather than the hard cases."""

from __future__ import annotations

import numpy as np


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
