"""Abstention threshold calibration on a weighted random sample."""

from __future__ import annotations

import numpy as np

from hitl.learning.abstention import calibrate


def _accuracy(thr, top, pred, truth, w, fallback="oos"):
    final = np.where(top < thr, fallback, pred)
    return float(np.sum((final == truth) * w) / np.sum(w))


def test_threshold_separates_out_of_scope_when_confidence_does():
    top = np.array([0.2, 0.25, 0.3, 0.8, 0.9, 0.95])
    pred = np.array(["a", "b", "a", "a", "b", "a"])
    truth = np.array(["oos", "oos", "oos", "a", "b", "a"])
    thr = calibrate(top, pred, truth, "oos")
    assert 0.3 < thr < 0.8
    assert _accuracy(thr, top, pred, truth, np.ones(6)) == 1.0


def test_no_out_of_scope_means_never_abstain():
    top = np.array([0.1, 0.5, 0.9])
    assert calibrate(top, np.array(["a", "b", "a"]), np.array(["a", "a", "a"]), "oos") == 0.0


def test_matches_brute_force_on_random_weighted_samples():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        top = rng.uniform(0, 1, n).round(2)  # ties on purpose
        truth = rng.choice(["a", "b", "oos"], n)
        pred = np.where(rng.uniform(size=n) < 0.6, truth, rng.choice(["a", "b"], n))
        pred = np.where(pred == "oos", "a", pred)
        w = rng.uniform(0.5, 3, n)
        thr = calibrate(top, pred, truth, "oos", w)
        grid = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], top, top + 1e-9]))
        best = max(_accuracy(t, top, pred, truth, w) for t in grid)
        assert abs(_accuracy(thr, top, pred, truth, w) - best) < 1e-12
