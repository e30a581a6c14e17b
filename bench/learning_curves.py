"""Learning curves on the BANKING77 drift scenario: rounds of oracle review under a fixed per-round budget.

Each round is a window of production days. A strategy picks that round's traces to label (from the traffic
not labelled yet), the oracle labels them, and the learner is refitted on launch rows + everything labelled.
The learner is the cheap one: logistic regression on cached frozen all-MiniLM-L6-v2 vectors (C chosen once by
cross-validation on the seed's launch rows, then refitted warm each round); it also scores the traffic the
strategies rank. The project's
policy is the product's own `hitl.sampling.selection.select_for_review`, the same function the sampling flow
calls. The representative random draw is a fixed cost every strategy would pay alike and is left out: the
budget here is the training picks only.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.hashing import text_group
from hitl.learning import anchor
from hitl.sampling import representative, selection
from hitl.sim import banking77

BASELINES = ("random", "stratified", "margin")
ABLATIONS = ("policy-no-uncertain", "policy-no-novel", "policy-no-disagreement", "policy-no-diversity",
             "policy-no-dedup")
# selection settings over the product's defaults, each run as its own strategy (bench/selection_variants.py)
VARIANTS: dict[str, dict] = {
    # most picks where the signals agree, each k-means cluster's most typical row first, one cluster per pick
    "policy-consensus": {"components": {"uncertain": 0.0, "novel": 0.3, "disagreement": 0.0, "flagged": 0.15,
                                        "consensus": 1.0},
                         "cluster_pick": "typical", "cluster_quota": 1, "neighbors": 10},
}


CACHE = Path(__file__).resolve().parents[1] / ".hitl" / "bench-cache"  # the benchmarks' vectors and results


def frozen_encoder():
    """The frozen base encoder the benchmarks share, its vectors cached in `CACHE`."""
    from hitl.learning import modeling
    from hitl.learning.embeddings import FrozenEncoder

    return FrozenEncoder(modeling.base_model_path(Config(labels=["a", "b"], state_dir=str(CACHE))), CACHE)


@dataclass
class Setup:
    seeds: list[int]
    rounds: int = 7
    per_round: int = 60
    n_new_intents: int = 20
    launch_per_intent: int = 20
    days: int = 28
    new_from_day: int = 7
    strategies: list[str] = field(default_factory=lambda: [*BASELINES, "policy", *ABLATIONS])
    ablation_seeds: int = 3  # ablations run on the first seeds only (time)
    traffic_cap: int | None = None  # quick mode: at most this many traffic rows per round


@dataclass
class Seeded:
    """One seed's scenario with frozen vectors for its launch rows, traffic and test set."""

    data: banking77.ScenarioData
    launch: np.ndarray
    traffic: np.ndarray
    test: np.ndarray
    C: float


def embed_scenario(data: banking77.ScenarioData, encode: Callable[[list[str]], np.ndarray], seed: int) -> Seeded:
    launch = encode(data.launch["text"].tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = anchor.choose_c(launch, data.launch["label"].to_numpy(), seed)
    return Seeded(data, launch, encode(data.traffic["input"].tolist()), encode(data.test["text"].tolist()), c)


class WarmLR:
    """Multinomial logistic regression with scikit-learn's objective (C * log-loss sum + 1/2 ||W||^2, intercept
    not penalised), minimised by L-BFGS and warm-started from the previous round's weights, so refitting after
    each round of labels costs a few iterations instead of a full fit."""

    def __init__(self, C: float):
        self.C, self.classes_, self.W, self.b = C, np.array([]), np.zeros((0, 0)), np.zeros(0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> WarmLR:
        from scipy.optimize import minimize
        from scipy.special import logsumexp

        classes, yi = np.unique(y, return_inverse=True)
        n, d, k = len(X), X.shape[1], len(classes)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), yi] = 1.0
        W0, b0 = np.zeros((d, k)), np.zeros(k)
        old = {c: j for j, c in enumerate(self.classes_)}
        for j, c in enumerate(classes):  # classes seen before keep their weights
            if c in old:
                W0[:, j], b0[j] = self.W[:, old[c]], self.b[old[c]]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = theta[:d * k].reshape(d, k), theta[d * k:]
            Z = X @ W + b
            lse = logsumexp(Z, axis=1)
            G = self.C * (np.exp(Z - lse[:, None]) - onehot)
            value = self.C * float(lse.sum() - (Z * onehot).sum()) + 0.5 * float((W**2).sum())
            return value, np.r_[(X.T @ G + W).ravel(), G.sum(axis=0)]

        r = minimize(loss, np.r_[W0.ravel(), b0], jac=True, method="L-BFGS-B",
                     options={"maxiter": 1000, "gtol": 1e-4})
        self.classes_, self.W, self.b = classes, r.x[:d * k].reshape(d, k), r.x[d * k:]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(X @ self.W + self.b, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(X @ self.W + self.b).argmax(axis=1)]


def _accuracy(clf, s: Seeded) -> dict[str, float]:
    pred = clf.predict(s.test)
    y = s.data.test["label"].to_numpy()
    new = s.data.test["group"].to_numpy() == "new"
    return {"acc_new": float((pred[new] == y[new]).mean()), "acc_launch": float((pred[~new] == y[~new]).mean()),
            "acc_all": float((pred == y).mean())}


def _scores(clf, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = clf.predict_proba(vectors)
    top2 = np.sort(probs, axis=1)[:, -2:]
    p = np.clip(probs, 1e-12, 1)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(max(probs.shape[1], 2))
    return clf.classes_[probs.argmax(axis=1)], top2[:, 1] - top2[:, 0], entropy


def _policy_kwargs(strategy: str, cfg: Config) -> dict:
    """An ablation's overrides: `policy-no-X` drops component X, and signal X from the consensus too."""
    weights = dict(cfg.selection.components)
    dropped = strategy.removeprefix("policy-no-") if strategy.startswith("policy-no-") else ""
    weights.pop(dropped, None)
    return {"weights": weights, "diversity": dropped != "diversity", "dedup": dropped != "dedup",
            "signals": tuple(x for x in selection.SIGNALS if x != dropped)}


def pick(strategy: str, pool: pd.DataFrame, vecs: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray,
         known: set[str], budget: int, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """Positions in `pool` that `strategy` labels this round."""
    budget = min(budget, len(pool))
    if strategy == "random":
        return rng.choice(len(pool), size=budget, replace=False)
    if strategy == "stratified":  # by the learner's predicted class: known before labelling
        drawn = representative.stratified_draw(pool.reset_index(drop=True), ["prediction"], budget, rng, 0)
        return drawn.index.to_numpy()
    if strategy == "margin":
        return np.argsort(pool["margin"].to_numpy(), kind="stable")[:budget]
    cand = selection.Candidates(pool.reset_index(drop=True), vecs, ref, ref_labels, known)
    no_draw = pool.iloc[0:0].assign(stratum=pd.Series(dtype=str), inclusion_prob=pd.Series(dtype=float))
    chosen = selection.select_for_review(cand, cfg, no_draw, budget=budget, **_policy_kwargs(strategy, cfg)).items
    positions = pd.Index(pool["trace_id"]).get_indexer(chosen["trace_id"])
    return positions[positions >= 0]


def run_strategy(strategy: str, s: Seeded, setup: Setup, cfg: Config, seed: int) -> tuple[list[dict], np.ndarray]:
    """Per-round metrics, and the traffic positions labelled by the end."""
    rng = np.random.default_rng([seed, zlib.crc32(strategy.encode())])
    traffic = s.data.traffic
    y_launch = s.data.launch["label"].to_numpy()
    labelled = np.zeros(len(traffic), dtype=bool)
    clf = WarmLR(s.C).fit(s.launch, y_launch)
    rows = [{"round": 0, "labels": 0, **_accuracy(clf, s)}]
    per_round_days = setup.days / setup.rounds
    day = traffic["day"].to_numpy()
    for r in range(setup.rounds):
        in_window = (day >= r * per_round_days) & (day < (r + 1) * per_round_days) & ~labelled
        pos = np.flatnonzero(in_window)
        if setup.traffic_cap and len(pos) > setup.traffic_cap:
            pos = np.sort(rng.choice(pos, setup.traffic_cap, replace=False))
        pred, margin, entropy = _scores(clf, s.traffic[pos])
        pool = traffic.iloc[pos][["trace_id", "input", "channel"]].assign(
            prediction=pred, margin=margin, entropy=entropy, flagged=False, evaluator_reasons="")
        ref = np.vstack([s.launch, s.traffic[labelled]])
        ref_labels = np.r_[y_launch, traffic["label"].to_numpy()[labelled]]
        known = {text_group(t) for t in traffic["input"].to_numpy()[labelled]}
        chosen = pick(strategy, pool, s.traffic[pos], ref, ref_labels, known, setup.per_round, cfg, rng)
        labelled[pos[chosen]] = True
        clf.fit(np.vstack([s.launch, s.traffic[labelled]]), np.r_[y_launch, traffic["label"].to_numpy()[labelled]])
        rows.append({"round": r + 1, "labels": int(labelled.sum()), **_accuracy(clf, s)})
    return rows, np.flatnonzero(labelled)


def bench_config(labels: list[str], selection: dict | None = None) -> Config:
    """The product's default selection settings (`selection` overrides some), each pick labelled once (an oracle
    does not disagree)."""
    return Config(labels=labels, cohorts=["channel"], state_dir="/tmp/hitl-bench-unused",
                  selection={"strata": ["channel"], **(selection or {})}, review={"overlap_share": 0.0})


def run(setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir, log=print, selection: dict | None = None
        ) -> tuple[pd.DataFrame, dict[int, Seeded], dict[tuple[int, str], np.ndarray]]:
    """All strategies x seeds (`selection`: settings over the product's defaults). Returns the curves (one row
    per seed, strategy, round), the embedded scenarios, and the final labelled traffic positions of each
    (seed, strategy)."""
    rows, seeded, picks = [], {}, {}
    for seed in setup.seeds:
        data = banking77.build(banking77.Banking77Scenario(
            data_dir, seed=seed, n_new_intents=setup.n_new_intents, launch_per_intent=setup.launch_per_intent,
            days=setup.days, new_from_day=setup.new_from_day))
        s = seeded[seed] = embed_scenario(data, encode, seed)
        for strategy in setup.strategies:
            if strategy in ABLATIONS and seed not in setup.seeds[:setup.ablation_seeds]:
                continue
            cfg = bench_config(data.labels, {**(selection or {}), **VARIANTS.get(strategy, {})})
            t0 = time.monotonic()
            curve, final = run_strategy(strategy, s, setup, cfg, seed)
            picks[(seed, strategy)] = final
            rows += [{"seed": seed, "strategy": strategy, **row} for row in curve]
            log(f"seed {seed} {strategy:24s} new-intent accuracy {curve[-1]['acc_new']:.3f} after "
                f"{curve[-1]['labels']} labels ({time.monotonic() - t0:.0f}s)")
    return pd.DataFrame(rows), seeded, picks


# ---------------------------------------------------------------------------------------------- summaries
def t_interval(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval across seeds."""
    from scipy.stats import t

    x = np.asarray(x, float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


def summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and round: mean labels and mean accuracy with 95% intervals across seeds."""
    out = []
    for (strategy, rnd), g in curves.groupby(["strategy", "round"], sort=False):
        row = {"strategy": strategy, "round": rnd, "labels": float(g["labels"].mean())}
        for col in ("acc_new", "acc_launch", "acc_all"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = t_interval(g[col].to_numpy())
        out.append(row)
    return pd.DataFrame(out)


def auc(curve: pd.DataFrame, column: str = "acc_new") -> float:
    """Area under accuracy-vs-labels, as the mean accuracy over the label range (points)."""
    c = curve.sort_values("labels")
    x, y = c["labels"].to_numpy(float), c[column].to_numpy(float)
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float(y.mean())


def paired_auc_difference(curves: pd.DataFrame, a: str, b: str, column: str = "acc_new") -> tuple[float, float,
                                                                                                 float]:
    """Seed-paired difference of AUC (a - b), in points, with a 95% t interval."""
    diffs = [auc(g[g["strategy"] == a], column) - auc(g[g["strategy"] == b], column)
             for _, g in curves.groupby("seed") if {a, b} <= set(g["strategy"])]
    m, lo, hi = t_interval(np.asarray(diffs) * 100)
    return m, lo, hi


def labels_to_reach(curve: pd.DataFrame, target: float, column: str = "acc_new") -> float:
    """Labels at which a (mean) curve first reaches `target`, linearly interpolated; inf if never."""
    c = curve.sort_values("labels")
    x, y = c["labels"].to_numpy(float), c[column].to_numpy(float)
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            return float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
    return float("inf")
