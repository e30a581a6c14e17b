"""Out-of-scope as an outcome (`make bench-oos`, section 11): how well the product's model says "I don't know"
on intents it was never taught, against the frozen-embedding anchor trained on the same rows, at one fixed
false-abstention rate on in-scope traffic.

Protocol (per scenario and seed): the intents are shuffled and `folds` blocks of `per_fold` intents are set apart.
In fold f, block f is *unknown*: its test items stand for traffic nobody foresaw, and none of its rows is seen in
training. Block f+1 (cyclically) is *out-of-scope training data*: `oos_per_intent` rows of each of its intents
are labelled with the fallback label, as reviewers label traffic the label set does not cover (the product's
`fallback_label`). Every other intent is *known*, with `train_per_intent` reviewed rows, except a seeded
`few_share` of them with only `few_per_intent` (as intents learnt from review have in the product, beside launch
intents with many). So the intents judged unknown are always disjoint from the out-of-scope rows a model learnt
from, and an in-scope score is judged on intents with few examples as well as many.

Both models train on exactly those rows: the product's recipe (`Trainer`, the fallback label a class of its own)
and the anchor (frozen MiniLM + logistic regression, hitl/learning/anchor.py, the fallback label a class too).
Each turns an item into an in-scope confidence (the highest probability of an in-scope label; the product also
by its served score and its parts, its head's highest cosine, the anchor's kin also by the nearest frozen class
mean) and abstains below a threshold. The threshold is cross-fitted: the in-scope test items fall into `cal_folds`
folds by id, and an item is judged with the threshold that puts `far` of the *other* folds' in-scope items below
it, the same rule for every scorer; the served score's ranks are fitted on those other folds too, as the product
fits them on its calibration draw. Reported: recall on unknown intents (share abstained), the false-abstention
rate realised on in-scope intents, and in-scope accuracy; differences in recall with a 95% interval from a
bootstrap over unknown intents (items of one intent are not independent), by fold and by label group.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.learning_curves import CACHE, bench_config, frozen_encoder
from hitl.config import TrainingConfig
from hitl.learning import abstention, anchor, modeling, recipe
from hitl.sim import banking77

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "banking77"
SECTION = 11
TITLE = f"## {SECTION}. Out-of-scope: saying \"I don't know\" (`make bench-oos`)"
FALLBACK = "out_of_scope"
MIXED = "product_encoder_mix"  # the same fine-tune, its encoder mixed with the base's (Setup.encoder_mix)
# scorer -> what it is; "product" is what the product serves (`modeling.score` once calibrated)
SCORERS = {
    "product": "the product's model as it serves: the mean rank of its two in-scope parts, the nearest in-scope "
               "training row's cosine in its own sentence space and its highest in-scope probability, each ranked "
               "among the in-scope items outside the item's fold (`abstention.combine`)",
    "product_nearest_row": "the product's model, the nearest in-scope training row alone (the serving score "
                           "before)",
    "product_with_top_probability": "the product's model, the plain mean of the nearest row's score and the highest "
                                    "in-scope probability (explored, not served)",
    "product_top_probability": "the product's model, highest in-scope probability (the serving score before that)",
    "product_cosine": "the product's model, highest cosine to an in-scope head row",
    "product_energy": "the product's model, log-sum-exp of the in-scope logits (energy)",
    "product_mahalanobis": "the product's model's sentence vectors, nearest in-scope class by Mahalanobis distance "
                           "(shared Ledoit-Wolf covariance)",
    MIXED: "the product's model with its encoder mixed with the base encoder (`training.encoder_mix`, WiSE-FT; not "
           "the default), scored as served",
    "anchor": "anchor, highest in-scope probability (frozen MiniLM + logistic regression)",
    "anchor_centroid": "frozen MiniLM, highest cosine to an in-scope class mean",
    "anchor_knn": "frozen MiniLM, highest cosine to an in-scope training row",
    "anchor_mahalanobis": "frozen MiniLM, nearest in-scope class by Mahalanobis distance",
}
FROZEN = ("anchor", "anchor_centroid", "anchor_knn", "anchor_mahalanobis")  # the simple baselines
ANCHOR = "anchor"
# label groups of BANKING77 for the breakdown: the first of these keywords (in this order) an intent's name contains
GROUP_WORDS = (("top_up", "top-up"), ("topping", "top-up"), ("transfer", "transfer"), ("cash", "cash & ATM"),
               ("atm", "cash & ATM"), ("exchange", "exchange"), ("currenc", "exchange"), ("verify", "identity"),
               ("identity", "identity"), ("refund", "refund"), ("card", "card"), ("pin", "card"),
               ("contactless", "card"), ("apple_pay", "card"), ("visa", "card"))


@dataclass(frozen=True)
class Setup:
    seeds: tuple[int, ...] = (0, 1, 2)  # `make bench-oos` measures all three (section 11)
    folds: int = 4  # folds over the held-out intents
    per_fold: int = 12  # intents unknown at test time in each fold; the next fold's block is the out-of-scope data
    train_per_intent: int = 20  # reviewed rows per known intent
    # a seeded share of each fold's known intents has only this many reviewed rows, as intents learnt from review
    # have in the product (a few examples beside launch intents with many): the in-scope score must not refuse them
    few_share: float = 0.5
    few_per_intent: int = 5
    oos_per_intent: int = 10  # reviewed out-of-scope rows per out-of-scope training intent
    far: float = 0.05  # the fixed false-abstention rate on in-scope traffic
    cal_folds: int = 5  # cross-fitting of the thresholds over the in-scope test items
    test_cap: int | None = None  # quick mode: at most this many test items per intent
    training: dict = field(default_factory=dict)  # TrainingConfig overrides (quick mode)
    # the share of the trained encoder in the MIXED row (the rest the base encoder's): chosen on seed 3's BANKING77
    # folds (2026-12-07, shares 0.4, 0.6, 0.8 and 1), a seed the section does not report
    encoder_mix: float = 0.6
    scenario: str = "banking77"  # or "world": the synthetic world's intents (WORLD_SETUP)


# the synthetic world has 10 intents: 4 folds of 2 unknown intents (2 more out-of-scope, 6 known), written messages
# from its templates, 200 training and 100 test messages per intent drawn apart
WORLD_SETUP = dict(scenario="world", folds=4, per_fold=2)
WORLD_TRAIN, WORLD_TEST = 200, 100
SCENARIO_NAMES = {"banking77": "BANKING77", "world": "synthetic world"}
SEEDS_NOTE = ("Seed 2 was added on 2026-12-07: the served score and the recipe's pseudo outliers were chosen on "
              "seeds 0 and 1, so its row in the breakdown by seed is the one no choice has seen.")


def group_of(intent: str) -> str:
    """A BANKING77 intent's label group (for the breakdown, by GROUP_WORDS); "account & other" without a keyword."""
    name = intent.lower()
    return next((g for word, g in GROUP_WORDS if word in name), "account & other")


@dataclass
class Fold:
    unknown: list[str]
    oos_train: list[str]
    known: list[str]


def folds_of(labels: list[str], seed: int, setup: Setup) -> list[Fold]:
    """The intent roles of every fold: unknown block f, out-of-scope training block f+1 (cyclic), the rest known."""
    if setup.folds < 2 or setup.folds * setup.per_fold > len(labels) - 2:
        raise ValueError(f"{setup.folds} folds of {setup.per_fold} intents need more than {len(labels)} intents")
    order = [labels[i] for i in np.random.default_rng([seed, 11]).permutation(len(labels))]
    blocks = [sorted(order[f * setup.per_fold:(f + 1) * setup.per_fold]) for f in range(setup.folds)]
    out = []
    for f in range(setup.folds):
        unknown, oos = blocks[f], blocks[(f + 1) % setup.folds]
        out.append(Fold(unknown, oos, sorted(set(labels) - set(unknown) - set(oos))))
    return out


def training_rows(train: pd.DataFrame, fold: Fold, rng: np.random.Generator, setup: Setup
                  ) -> tuple[list[str], list[str]]:
    """Texts and labels a fold's models train on: reviewed rows of the known intents, and rows of the out-of-scope
    training intents labelled FALLBACK."""
    texts, labels = [], []
    few = set(rng.choice(fold.known, size=int(round(setup.few_share * len(fold.known))), replace=False)) \
        if setup.few_share > 0 else set()
    for lab, n, as_label in [*((lab, setup.few_per_intent if lab in few else setup.train_per_intent, lab)
                               for lab in fold.known),
                             *((lab, setup.oos_per_intent, FALLBACK) for lab in fold.oos_train)]:
        rows = train.loc[train["label"] == lab, "text"].to_numpy(dtype=object)
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        texts += [str(t) for t in rows[np.sort(pick)]]
        labels += [as_label] * len(pick)
    return texts, labels


def thresholds_at(scores: np.ndarray, in_scope: np.ndarray, cal: np.ndarray, k: int, far: float) -> np.ndarray:
    """Per item, the cross-fitted threshold: the `far` quantile of the in-scope scores outside the item's fold
    `cal` (an item abstains when its score is below it)."""
    t = np.array([np.quantile(scores[in_scope & (cal != g)], far) for g in range(k)])
    return t[cal]


def cross_fitted_abstain(score: np.ndarray, in_scope: np.ndarray, cal: np.ndarray, k: int, far: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per item, its score as judged and whether it abstains. `score` is one score per item (`thresholds_at`), or
    the served score's parts (n, m): fold g's items are then combined on the scale (`abstention.fit_scale`) of the
    in-scope items outside g, and judged by the `far` quantile of those items' combined scores."""
    x = np.asarray(score, float)
    if x.ndim == 1:
        return x, x < thresholds_at(x, in_scope, cal, k, far)
    truth = np.where(in_scope, "in", FALLBACK)
    decided, abstain = np.zeros(len(x)), np.zeros(len(x), dtype=bool)
    for g in range(k):
        rest, here = cal != g, cal == g
        combined = abstention.combine(x, abstention.fit_scale(x[rest], truth[rest], FALLBACK))
        decided[here] = combined[here]
        abstain[here] = combined[here] < np.quantile(combined[in_scope & rest], far)
    return decided, abstain


def _in_scope_confidences(probs: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Highest probability among in-scope labels, and that label's position among `labels`."""
    cols = abstention.in_scope_columns(labels, FALLBACK)
    best = cols[probs[:, cols].argmax(axis=1)]
    return probs[np.arange(len(probs)), best], best


def mahalanobis(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minus the smallest Mahalanobis distance from each test vector to a class mean (shared covariance, Ledoit-Wolf
    shrunk), and that class's position among the sorted classes."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centred = train - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf().fit(centred).precision_
    diff = test[:, None, :] - means[None, :, :]
    dist = np.einsum("nkd,de,nke->nk", diff, precision, diff)
    return -dist.min(axis=1), dist.argmin(axis=1)


def score_fold(model: modeling.IntentModel, fit: anchor.Anchor, v_train: np.ndarray, y_train: list[str],
               train_texts: list[str], texts: list[str], v_test: np.ndarray
               ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Scorer -> (in-scope confidence, predicted in-scope label) per test item; and whether the product's model's
    top label is the fallback label."""
    labels = np.asarray(model.labels, dtype=object)
    served = modeling.score(model, texts)
    probs = served.probs
    conf, best = _in_scope_confidences(probs, model.labels)
    net = model.network
    in_scope = np.array([lab != FALLBACK and bool(net.active[i]) for i, lab in enumerate(model.labels)])
    weight = net.weight.detach().cpu().numpy()[in_scope]
    vecs = modeling.encode(model, texts)
    cos = vecs @ (weight / np.linalg.norm(weight, axis=1, keepdims=True)).T
    logits = float(net.log_scale.detach().exp()) * cos + net.bias.detach().cpu().numpy()[in_scope]
    energy = np.logaddexp.reduce(logits, axis=1)
    y = np.asarray(y_train, dtype=object)
    keep = y != FALLBACK
    y_in = y[keep].astype(str)
    tuned_train = modeling.encode(model, train_texts)[keep]
    a_probs = fit.predict_proba(v_test)
    a_conf, a_best = _in_scope_confidences(a_probs, list(fit.classes))
    known = np.unique(y_in)
    means = np.stack([v_train[keep][y_in == lab].mean(axis=0) for lab in known])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    c_cos = v_test @ means.T

    def knn(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sim = test @ train.T
        return sim.max(axis=1), y_in[sim.argmax(axis=1)]  # the frozen twin of the product's in-scope score

    def maha(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, at = mahalanobis(train, y_in, test)
        return score, known[at]

    top_is_fallback = probs.argmax(axis=1) == model.labels.index(FALLBACK)
    nearest = served.in_scope_parts[:, 0]
    return {"product": (np.column_stack([nearest, conf]), labels[best]),
            "product_nearest_row": (nearest, labels[best]),
            "product_with_top_probability": ((nearest + conf) / 2, labels[best]),
            "product_top_probability": (conf, labels[best]),
            "product_cosine": (cos.max(axis=1), labels[in_scope][cos.argmax(axis=1)]),
            "product_energy": (energy, labels[in_scope][logits.argmax(axis=1)]),
            "product_mahalanobis": maha(tuned_train, vecs),
            ANCHOR: (a_conf, np.asarray(fit.classes, dtype=object)[a_best]),
            "anchor_centroid": (c_cos.max(axis=1), known[c_cos.argmax(axis=1)]),
            "anchor_knn": knn(v_train[keep], v_test),
            "anchor_mahalanobis": maha(v_train[keep], v_test)}, top_is_fallback


def mixed_score(model: modeling.IntentModel, began: dict, share: float, train_texts: list[str], y_train: list[str],
                texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The served score's parts and predicted labels of a copy of `model` whose encoder is mixed with `began` (the
    encoder it was fine-tuned from) at `share`, as `training.encoder_mix` would return it."""
    mixed = copy.deepcopy(model)
    recipe.mix_encoder(mixed, began, share)
    recipe.keep_reference(mixed, train_texts, y_train, FALLBACK, 64)
    served = modeling.score(mixed, texts)
    conf, best = _in_scope_confidences(served.probs, mixed.labels)
    return np.column_stack([served.in_scope_parts[:, 0], conf]), np.asarray(mixed.labels, dtype=object)[best]


def world_splits(seed: int, n_train: int = WORLD_TRAIN, n_test: int = WORLD_TEST, salt: tuple[int, ...] = ()
                 ) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """The synthetic world's intents, and training and test messages (text, label) drawn from its templates, `n_train`
    and `n_test` of each intent (`salt`: more entropy for the draws, so another bench draws other messages)."""
    from hitl.sim import world

    def draw(n: int, stream: int) -> pd.DataFrame:
        rng = np.random.default_rng([seed, stream, *salt])
        rows = [(world.standard_text(rng, lab, world.LOCALES[int(rng.integers(len(world.LOCALES)))]), lab)
                for lab in world.INTENTS for _ in range(n)]
        return pd.DataFrame(rows, columns=["text", "label"])

    return list(world.INTENTS), draw(n_train, 1), draw(n_test, 2)


def splits_of(setup: Setup, seed: int, data_dir: Path) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """The scenario's intents, its training split and its test split (text, label)."""
    if setup.scenario == "world":
        return world_splits(seed)
    labels = banking77.load_labels(data_dir)
    return labels, banking77._read_split(data_dir / "train.csv", labels), \
        banking77._read_split(data_dir / "test.csv", labels)


def run_seed(seed: int, setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA,
             log=print) -> pd.DataFrame:
    """One row per (fold, test item): its intent, role, and per scorer whether it abstained and, in scope,
    whether its prediction was right."""
    labels, train, test = splits_of(setup, seed, data_dir)
    if setup.test_cap:
        test = test.groupby("label", sort=False).head(setup.test_cap).reset_index(drop=True)
    training = TrainingConfig(**setup.training)
    out = []
    for f, fold in enumerate(folds_of(labels, seed, setup)):
        t0 = time.monotonic()
        texts, y = training_rows(train, fold, np.random.default_rng([seed, 5, f]), setup)
        cfg = bench_config([*fold.known, FALLBACK]).model_copy(update={"training": training,
                                                                       "fallback_label": FALLBACK})
        model = modeling.load_base(cfg)
        began = {k: v.detach().clone() for k, v in model.network.encoder.state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            recipe.fine_tune(model, texts, y, training, Path(tmp), fallback_label=FALLBACK)
        v_train = encode(texts)
        fit = anchor.fit(v_train, np.asarray(y), seed=seed)
        rows = test[test["label"].isin([*fold.known, *fold.unknown])].reset_index(drop=True)
        test_texts = rows["text"].tolist()
        scored, top_is_fallback = score_fold(model, fit, v_train, y, texts, test_texts, encode(test_texts))
        if training.encoder_mix >= 1:  # the served model is unmixed: the mixed one is a row of its own
            scored[MIXED] = mixed_score(model, began, setup.encoder_mix, texts, y, test_texts)
        in_scope = rows["label"].isin(fold.known).to_numpy()
        ids = [f"{seed}-{f}-{i}" for i in range(len(rows))]
        cal = abstention.fold_of(ids, setup.cal_folds)
        frame = pd.DataFrame({"seed": seed, "fold": f, "intent": rows["label"],
                              "group": rows["label"].map(group_of) if setup.scenario == "banking77" else
                              rows["label"], "unknown": ~in_scope,
                              # reviewed rows of the item's intent (0: unknown)
                              "examples": rows["label"].map(pd.Series(y).value_counts()).fillna(0).astype(int)})
        for name, (conf, pred) in scored.items():
            frame[f"{name}_score"], frame[f"{name}_abstain"] = cross_fitted_abstain(conf, in_scope, cal,
                                                                                   setup.cal_folds, setup.far)
            frame[f"{name}_correct"] = np.where(in_scope, pred == rows["label"].to_numpy(dtype=object), False)
        # the fallback class alone, as the model serves it without a threshold
        frame["product_argmax_fallback"] = top_is_fallback
        # the in-scope label the product's model predicts, and how many reviewed rows that label had: the nearest
        # row depends on it (section 11's false abstention by reviewed rows), for analyses of the items file
        frame["product_predicted"] = scored["product"][1]
        counts = pd.Series(y).value_counts()
        frame["product_predicted_examples"] = frame["product_predicted"].map(counts).fillna(0).astype(int)
        out.append(frame)
        unk = frame[frame["unknown"]]
        log(f"{setup.scenario} seed {seed} fold {f}: {len(texts)} training rows ({len(fold.known)} known intents, "
            f"{len(fold.oos_train)} out-of-scope), recall product {unk['product_abstain'].mean():.1%} / anchor "
            f"{unk[f'{ANCHOR}_abstain'].mean():.1%}, {time.monotonic() - t0:.0f}s")
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------------------------- summaries
def cluster_interval(values: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Mean of `values` (points when they are 0/1 differences x 100 later) with a 95% percentile interval from
    resampling whole clusters (unknown intents) with replacement."""
    values = np.asarray(values, float)
    keys, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    sums, counts = np.bincount(inverse, values), np.bincount(inverse)
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(keys), size=(n_boot, len(keys)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(values.mean()), float(lo), float(hi)


def summary(items: pd.DataFrame) -> dict:
    """Per scorer: recall on unknown intents, false-abstention rate and accuracy in scope; each scorer's recall
    against the anchor's (intent-clustered interval); recall and false abstention by fold and by label group."""
    unk, ins = items[items["unknown"]], items[~items["unknown"]]
    clusters = unk["seed"].astype(str) + ":" + unk["intent"]
    scorers = []
    for name in SCORERS:
        if f"{name}_abstain" not in items:  # the mixed row, when the served model is mixed itself
            continue
        diff = 100 * (unk[f"{name}_abstain"].astype(float) - unk[f"{ANCHOR}_abstain"].astype(float)).to_numpy()
        d, lo, hi = cluster_interval(diff, clusters.to_numpy())
        r, r_lo, r_hi = cluster_interval(100 * unk[f"{name}_abstain"].astype(float).to_numpy(), clusters.to_numpy())
        kept = ins[~ins[f"{name}_abstain"]]
        scorers.append({"scorer": name, "recall": r, "recall_low": r_lo, "recall_high": r_hi,
                        "false_abstention": 100 * float(ins[f"{name}_abstain"].mean()),
                        "in_scope_accuracy": 100 * float(ins[f"{name}_correct"].mean()),
                        "accuracy_when_kept": 100 * float(kept[f"{name}_correct"].mean()) if len(kept) else np.nan,
                        "vs_anchor": d, "vs_anchor_low": lo, "vs_anchor_high": hi})
    by = []
    shown = ("product", ANCHOR, "product_nearest_row")
    for key in ("seed", "fold", "group", "examples"):
        if key not in items:  # results written before the column existed
            continue
        for value in sorted(items[key].unique(), key=lambda v: (str(type(v)), v)):
            u, i = unk[unk[key] == value], ins[ins[key] == value]
            if key == "examples" and not len(i):
                continue  # the unknown intents' row: their recall is the overall one
            by.append({"by": key, "value": f"{value} reviewed rows" if key == "examples" else str(value),
                       "unknown_items": len(u), "in_scope_items": len(i),
                       **{f"{n}_recall": 100 * float(u[f"{n}_abstain"].mean()) if len(u) else np.nan
                          for n in shown if f"{n}_abstain" in items},
                       **{f"{n}_false_abstention": 100 * float(i[f"{n}_abstain"].mean()) if len(i) else np.nan
                          for n in shown if f"{n}_abstain" in items}})
    best = max((r for r in scorers if r["scorer"] in FROZEN), key=lambda r: r["recall"])
    gap = unk["product_abstain"].astype(float) - unk[f"{best['scorer']}_abstain"].astype(float)
    d, lo, hi = cluster_interval(100 * gap.to_numpy(), clusters.to_numpy())
    vs_best = {"scorer": best["scorer"], "difference": d, "low": lo, "high": hi}
    gap = unk["product_abstain"].astype(float) - unk["product_nearest_row_abstain"].astype(float)
    d, lo, hi = cluster_interval(100 * gap.to_numpy(), clusters.to_numpy())
    vs_before = {"scorer": "product_nearest_row", "difference": d, "low": lo, "high": hi}
    mixed = None
    if f"{MIXED}_abstain" in items:
        gap = unk[f"{MIXED}_abstain"].astype(float) - unk["product_abstain"].astype(float)
        d, lo, hi = cluster_interval(100 * gap.to_numpy(), clusters.to_numpy())
        acc = 100 * (ins[f"{MIXED}_correct"].astype(float) - ins["product_correct"].astype(float))
        mixed = {"difference": d, "low": lo, "high": hi, "in_scope_accuracy": float(acc.mean())}
    fallback_only = {"recall": 100 * float(unk["product_argmax_fallback"].mean()),
                     "false_abstention": 100 * float(ins["product_argmax_fallback"].mean())}
    return {"scorers": scorers, "by": by, "fallback_class_alone": fallback_only, "product_vs_best_frozen": vs_best,
            "product_vs_before": vs_before, "mixed_vs_product": mixed,
            "unknown_items": len(unk), "unknown_intents": int(clusters.nunique()), "in_scope_items": len(ins)}


def acceptance(result: dict, goal: float = 10.0) -> str:
    """The issue's criterion, read off the product's served score; and the product against the best of the simple
    frozen-space scorers (chosen after the fact, which favours the baseline)."""
    p = next(s for s in result["summary"]["scorers"] if s["scorer"] == "product")
    ok = p["vs_anchor"] >= goal
    sure = "its interval's lower bound is above the goal too" if p["vs_anchor_low"] >= goal else \
        f"the interval's lower bound, {p['vs_anchor_low']:+.1f}, is below it"
    b = result["summary"].get("product_vs_best_frozen")
    best = f" Against the best frozen-space scorer here ({SCORERS[b['scorer']]}): {b['difference']:+.1f} pts " \
           f"[{b['low']:+.1f}, {b['high']:+.1f}]." if b else ""
    v = result["summary"].get("product_vs_before")
    before = f" The served score against the one it replaced, {SCORERS[v['scorer']]}: " \
             f"{v['difference']:+.1f} pts [{v['low']:+.1f}, {v['high']:+.1f}]." if v else ""
    m = result["summary"].get("mixed_vs_product")
    mr = next((s for s in result["summary"]["scorers"] if s["scorer"] == MIXED), None)
    mixed = f" The encoder mixed at {result['setup'].get('encoder_mix', 0):g} (not the default): recall minus the " \
            f"anchor's {mr['vs_anchor']:+.1f} pts [{mr['vs_anchor_low']:+.1f}, {mr['vs_anchor_high']:+.1f}], " \
            f"minus the served model's {m['difference']:+.1f} pts [{m['low']:+.1f}, {m['high']:+.1f}]; in-scope " \
            f"accuracy {m['in_scope_accuracy']:+.1f} pts against it." if m and mr else ""
    return (f"- {SCENARIO_NAMES[scenario_of(result)]}: the product's recall minus the anchor's at a "
            f"{100 * result['setup']['far']:.0f}% false-abstention rate, {p['vs_anchor']:+.1f} pts "
            f"[{p['vs_anchor_low']:+.1f}, {p['vs_anchor_high']:+.1f}]; goal at least +{goal:.0f}: "
            f"**{'met' if ok else 'not met'}** on the estimate ({sure}).{best}{before}{mixed}")


def scenario_of(result: dict) -> str:
    return result["setup"].get("scenario", "banking77")


def _pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.1f}"


def _recipe_text(result: dict) -> str:
    """How the product's model trained, as its run recorded it (older runs did not: nothing)."""
    r = result.get("recipe")
    if not r:
        return ""
    outliers = r.get("pseudo_outlier_weight")  # not recorded by runs before the term existed
    extra = "" if outliers is None else ", without pseudo outliers" if not outliers else \
        (f", with pseudo outliers (weight {outliers:g}: midpoints of two intents' sentence vectors taught as "
         f"`{FALLBACK}`, hitl/learning/recipe.py)")
    if r["validation_share"] > 0:
        return (f" The product's model trained with early stopping on a {r['validation_share']:.0%} validation split "
                f"(at most {r['epochs']:g} epochs), then a refit on every row{extra}.")
    return f" The product's model trained {r['epochs']:g} epochs on every row{extra}."


def scenario_markdown(result: dict) -> list[str]:
    """One scenario's table of scorers and its breakdown by fold and label group."""
    s, setup = result["summary"], result["setup"]
    lines = [f"### {SCENARIO_NAMES[scenario_of(result)]}", "",
             f"Measured {result['measured']} ({result['minutes']:.0f} min, {result['cores']} cores, "
             f"{result['fine_tunes']} fine-tunes). Seeds {list(setup['seeds'])}; {setup['folds']} folds of "
             f"{setup['per_fold']} unknown intents; {setup['train_per_intent']} rows per known intent"
             + (f" ({setup['few_per_intent']} for {setup['few_share']:.0%} of them)" if setup.get('few_share') else "")
             + ", "
             f"{setup['oos_per_intent']} out-of-scope rows per out-of-scope training intent; thresholds at a "
             f"{100 * setup['far']:.0f}% false-abstention rate, cross-fitted over {setup['cal_folds']} folds of the "
             f"in-scope test items. {s['unknown_items']} unknown test items from {s['unknown_intents']} intents "
             f"(seeds counted apart), {s['in_scope_items']} in-scope ones.{_recipe_text(result)}", "",
             "| scorer | recall on unknown intents | false abstention (in scope) | in-scope accuracy (kept and "
             "abstained) | accuracy when kept | recall vs the anchor |", "|---|---|---|---|---|---|"]
    for r in s["scorers"]:
        vs = "—" if r["scorer"] == ANCHOR else \
            f"{r['vs_anchor']:+.1f} [{r['vs_anchor_low']:+.1f}, {r['vs_anchor_high']:+.1f}]"
        lines.append(f"| {SCORERS[r['scorer']]} | {r['recall']:.1f} [{r['recall_low']:.1f}, {r['recall_high']:.1f}] "
                     f"| {r['false_abstention']:.1f} | {r['in_scope_accuracy']:.1f} | "
                     f"{_pct(r['accuracy_when_kept'])} | {vs} |")
    fb = s["fallback_class_alone"]
    lines += ["", f"The fallback class alone (the product's model predicting `{FALLBACK}` as its top label, no "
              f"threshold, as a model not yet calibrated answers): recall {fb['recall']:.1f}%, false abstention "
              f"{fb['false_abstention']:.1f}%. Once calibrated, the threshold alone refuses.", "",
              "By seed, by fold, by label group and by how many reviewed rows an in-scope intent had (the product's "
              "model as it serves, the anchor, and the nearest row alone, the serving score before): recall on the "
              "unknown intents of the seed, fold or group, false abstention on its in-scope intents.", "",
              "| by | seed, fold or group | unknown items | in-scope items | recall: product | recall: anchor "
              "| recall: nearest row | false abstention: product | false abstention: anchor "
              "| false abstention: nearest row |", "|---|---|---|---|---|---|---|---|---|---|"]
    for b in s["by"]:
        lines.append(f"| {b['by']} | {b['value']} | {b['unknown_items']} | {b['in_scope_items']} | "
                     f"{_pct(b['product_recall'])} | {_pct(b[f'{ANCHOR}_recall'])} | "
                     f"{_pct(b.get('product_nearest_row_recall', np.nan))} | "
                     f"{_pct(b['product_false_abstention'])} | {_pct(b[f'{ANCHOR}_false_abstention'])} | "
                     f"{_pct(b.get('product_nearest_row_false_abstention', np.nan))} |")
    return lines


def to_markdown(results: list[dict]) -> str:
    """Section 11 from each scenario's result."""
    lines = [TITLE, "", "`python -m bench.out_of_scope` (both scenarios; `--scenario banking77|world` one). "
             + " ".join((__doc__ or "").split("\n\n")[1].split()), "", "Figures in %; differences in points with "
             "95% intervals (bootstrap over unknown intents).", "", SEEDS_NOTE, ""]
    for result in results:
        lines += [*scenario_markdown(result), ""]
    lines += ["### Acceptance", "", *(acceptance(r) for r in results), "",
              "The served threshold maximises weighted accuracy on the random draw, or with `model.abstention_rate` "
              "refuses that share of its in-scope rows, the fixed-rate rule measured here "
              "(`hitl/learning/abstention.py`)."]
    return "\n".join(lines)


def run(setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA, log=print,
        items_path: Path | None = None) -> dict:
    started = time.monotonic()
    items = pd.concat([run_seed(seed, setup, encode, data_dir, log) for seed in setup.seeds], ignore_index=True)
    if items_path is not None:  # every item's scores, for analyses beyond the summary (not committed)
        items_path.parent.mkdir(parents=True, exist_ok=True)
        items.to_csv(items_path, index=False)
    training = TrainingConfig(**setup.training)
    return {"setup": asdict(setup),
            "recipe": training.model_dump(include={"epochs", "validation_share", "pseudo_outlier_weight"}),
            "summary": summary(items), "measured": time.strftime("%Y-%m-%d"),
            "minutes": (time.monotonic() - started) / 60, "cores": os.cpu_count(),
            "fine_tunes": len(setup.seeds) * setup.folds}


def main(argv: list[str]) -> int:
    """`python -m bench.out_of_scope [--quick] [--seeds 0,1] [--scenario banking77|world]`: run, write
    docs/bench/out_of_scope[-quick][-world].json and rewrite section 11 of docs/benchmarks[-quick].md."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quick = "--quick" in argv
    scenarios = [argv[argv.index("--scenario") + 1]] if "--scenario" in argv else list(SCENARIO_NAMES)
    encoder = frozen_encoder()

    def log(msg: str) -> None:
        print(f"[out-of-scope {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    for scenario in scenarios:
        setup = Setup(**(WORLD_SETUP if scenario == "world" else {}))
        if quick:
            setup = replace(setup, folds=2, per_fold=min(setup.per_fold, 6), test_cap=10,
                            training={"epochs": 1, "validation_share": 0.0})
        if "--seeds" in argv:
            setup = replace(setup, seeds=tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(",")))
        result = run(setup, encoder.encode, log=log, items_path=CACHE / _result_path(quick, scenario).with_suffix(
            ".items.csv").name)
        encoder.save()
        path = _result_path(quick, scenario)
        path.write_text(json.dumps(result, indent=2, default=str))
        log(f"{scenario} done in {result['minutes']:.1f} min; {path.relative_to(REPO)}")
    render(quick)
    return 0


def _result_path(quick: bool, scenario: str) -> Path:
    suffix = ("-quick" if quick else "") + ("" if scenario == "banking77" else f"-{scenario}")
    return REPO / "docs" / "bench" / f"out_of_scope{suffix}.json"


def render(quick: bool = False) -> None:
    """Section 11 of docs/benchmarks[-quick].md from the scenarios' JSON files."""
    from bench import report

    results = [json.loads(p.read_text()) for s in SCENARIO_NAMES if (p := _result_path(quick, s)).exists()]
    out_md = REPO / "docs" / f"benchmarks{'-quick' if quick else ''}.md"
    if results and (out_md.exists() or not quick):
        report.replace_section(out_md, SECTION, to_markdown(results))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) if "--render" not in sys.argv else render())
