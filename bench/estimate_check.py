"""Does the report's production estimate describe production? The regression set is drawn exactly as the
sampling flow draws it (per window, stratified, `hitl.sampling.windows.draw`), labelled by two simulated
noisy reviewers (disagreements settled by a third), and estimated with the report's own
`hitl.evaluation.regression.production_table` (Hajek rates, Wilson intervals at the design-effective size). A
second sample is drawn independently from the same traffic and scored against the ground truth. The two must
agree within 1.96 * sqrt(se1^2 + se2^2), se1 read off the report's own interval (its half-width over z at the
interval's level), se2 binomial."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.evaluation import inference, regression
from hitl.sampling import windows


def noisy(truth: np.ndarray, labels: list[str], noise: float, rng: np.random.Generator) -> np.ndarray:
    """A reviewer who is wrong with probability `noise` (then picks another label at random)."""
    out = truth.copy()
    wrong = rng.random(len(truth)) < noise
    for i in np.flatnonzero(wrong):
        out[i] = rng.choice([lab for lab in labels if lab != truth[i]])
    return out


def reviewed(truth: np.ndarray, labels: list[str], noise: float, rng: np.random.Generator) -> np.ndarray:
    """The labels two noisy reviewers give, a third (as noisy) settling their disagreements."""
    first, second = noisy(truth, labels, noise, rng), noisy(truth, labels, noise, rng)
    third = noisy(truth, labels, noise, rng)  # the adjudicator of disagreements
    return np.where(first == second, first, third)


def run(traffic: pd.DataFrame, champion_pred: np.ndarray, challenger_pred: np.ndarray, cfg: Config,
        n_random: int, n_independent: int, noise: float, seed: int) -> pd.DataFrame:
    """One row per model: the report's estimate and its se, the independent sample's fail rate and its se, the
    difference, the tolerance, and whether it holds. `traffic` needs trace_id, timestamp, label and the strata
    columns; the predictions align with its rows."""
    rng = np.random.default_rng(seed)
    pool = traffic.assign(window=windows.window_keys(traffic["timestamp"], cfg.selection.window, "run"),
                          _row=np.arange(len(traffic)))
    drawn = windows.draw(pool, cfg.selection.strata, n_random, {}, rng, cfg.selection.min_per_stratum).items
    sample = drawn.assign(label=reviewed(drawn["label"].to_numpy(), cfg.labels, noise, rng))
    rows = sample["_row"].to_numpy()
    table = regression.production_table(sample.reset_index(drop=True), list(champion_pred[rows]),
                                        list(challenger_pred[rows]), cfg)
    o = regression.overall(table)
    rest = np.setdiff1d(np.arange(len(traffic)), rows)
    indep = rng.choice(rest, size=min(n_independent, len(rest)), replace=False)
    y = traffic["label"].to_numpy()[indep]
    out = []
    for who, pred in (("champion", champion_pred), ("challenger", challenger_pred)):
        est = float(o[who])
        se1 = (float(o[f"{who}_high"]) - float(o[f"{who}_low"])) / (2 * float(inference.z_of(float(o["level"]))))
        fail = float(np.mean(pred[indep] != y))
        se2 = np.sqrt(fail * (1 - fail) / len(indep))
        tol = 1.96 * np.sqrt(se1**2 + se2**2)
        out.append({"model": who, "report_estimate": est, "report_n": int(o["n"]), "report_se": se1,
                    "independent_fail_rate": fail, "independent_n": len(indep), "independent_se": se2,
                    "difference": est - fail, "tolerance": tol, "within": bool(abs(est - fail) <= tol)})
    return pd.DataFrame(out)
