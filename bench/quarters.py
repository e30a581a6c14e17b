"""Quarter after quarter on BANKING77 (`make bench-quarters`): three retrain cycles with drift that keeps arriving,
each picking with the previous quarter's champion, for the product's selection policy and for random picks at the
same budget, on the real recipe (`Trainer`), several seeds.

The scenario, per seed: 27 launch intents (20 training rows each); quarter 1 brings 25 new intents, quarter 2
25 more, quarter 3 a new "voice" channel whose text reads like speech-to-text (lower case, no punctuation,
fillers, a few letter swaps) carrying half the traffic. The rest of BANKING77's train split is the traffic,
each intent's rows spread evenly over the quarters from its arrival on. Each quarter the champion scores its
traffic, the strategy picks `budget` traces (the oracle labels them; the representative random draw is a fixed
cost every strategy pays alike and is left out, as in section 1), and the challenger is fine-tuned as the product
does (`training.start`: by default the base model afresh, a variant continues from the champion) on the launch
rows plus every row labelled so far (the product's datasets are cumulative: earlier reviewed rows are trained on
every quarter), then promoted. Accuracy is on BANKING77's fixed test split, by group
of intents, and on its voice rendering; each model beside the anchor (frozen MiniLM + logistic regression,
hitl/learning/anchor.py) fitted on exactly its rows, and beside the bootstrap champion on the launch intents.
For the policy, each quarter's report estimate (the previous champion and the new challenger on the quarter's
unlabelled traffic) is checked against an independent sample with bench/estimate_check.py.

Seed-blocked paired intervals: the mean over seeds of each seed's paired difference on the test items, with
the variance of the seeds' paired (Agresti-Min adjusted) differences summed over the seeds.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench import estimate_check
from bench.learning_curves import VARIANTS, bench_config, frozen_encoder, t_interval
from hitl.config import SelectionConfig, TrainingConfig
from hitl.evaluation import horizon, paired, regression
from hitl.hashing import text_group
from hitl.learning import anchor, modeling, recipe
from hitl.sampling import selection, windows
from hitl.sim import banking77

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "banking77"
SECTION = 10
TITLE = f"## {SECTION}. Quarter after quarter (`make bench-quarters`)"
VOICE = "voice"
CHANNELS = ("app", "web_chat", "email")
FILLERS = ("um", "uh", "so", "hi", "yeah", "okay so", "hello", "right so")
STRATEGIES = ("policy", "random")
_QUARTER_DAYS = 28
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Setup:
    seeds: tuple[int, ...] = (0, 1, 2)
    new_per_quarter: tuple[int, ...] = (25, 25)  # new intents arriving in quarters 1, 2, ... (40 test items each)
    quarters: int = 3  # the last ones bring no new intents; quarter 3 brings the voice channel
    launch_per_intent: int = 20
    budget: int = 150  # labels per quarter
    voice_quarter: int = 3
    voice_share: float = 0.5  # share of that quarter's traffic on the voice channel
    traffic_cap: int | None = None  # quick mode: at most this many traffic rows per quarter
    strategies: tuple[str, ...] = STRATEGIES
    training: dict = field(default_factory=dict)  # TrainingConfig overrides (quick mode, variants)
    # training.start base: each quarter the base model afresh on every row (the product's default; a variant
    # continues from the champion, `--from-champion`)
    from_base: bool = TrainingConfig().start == "base"
    scenario: str = "banking77"  # or "world": the synthetic world's intents and voice channel (WORLD_SETUP)
    selection: str = ""  # variant: a selection variant of bench.learning_curves.VARIANTS for the policy's picks


# the synthetic world has 10 intents: 4 at launch, 3 new in each of quarters 1 and 2; its voice channel speaks
# from its own transcript templates; 300 messages of each intent are the traffic, 100 the test split
WORLD_SETUP = dict(scenario="world", new_per_quarter=(3, 3), budget=60)
WORLD_TRAIN, WORLD_TEST = 300, 100


@dataclass
class Scenario:
    launch: pd.DataFrame  # text, label, channel
    quarters: list[pd.DataFrame]  # trace_id, timestamp, input, label, group, channel
    test: pd.DataFrame  # text, label, group (BANKING77's test split)
    test_voice: pd.Series  # the test texts as the voice channel renders them
    groups: dict[str, list[str]]  # "launch", "q1-new", "q2-new", ... -> intents
    labels: list[str]


# ---------------------------------------------------------------------------------------------- scenario
def voice(text: str, rng: np.random.Generator) -> str:
    """`text` as a speech-to-text channel renders it: lower case, no punctuation, a filler word half the time,
    and about one word in twelve of four letters or more with two inner letters swapped."""
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    out = []
    for w in words:
        if len(w) >= 4 and rng.random() < 1 / 12:
            i = int(rng.integers(1, len(w) - 2))
            w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
        out.append(w)
    filler = [FILLERS[int(rng.integers(len(FILLERS)))]] if rng.random() < 0.5 else []
    return " ".join([*filler, *out])


def _world(seed: int) -> tuple[list[str], pd.DataFrame, pd.DataFrame, Callable[[str, str, np.random.Generator], str]]:
    """The synthetic world's intents, training and test messages, and its voice channel (a transcript of the
    label from the world's voice templates)."""
    from bench.out_of_scope import world_splits
    from hitl.sim import world

    def speak(_text: str, label: str, rng: np.random.Generator) -> str:
        return world.voice_text(rng, label, world.LOCALES[int(rng.integers(len(world.LOCALES)))])

    return (*world_splits(seed, WORLD_TRAIN, WORLD_TEST, salt=(91,)), speak)


def _banking77(data_dir: Path) -> tuple[list[str], pd.DataFrame, pd.DataFrame,
                                        Callable[[str, str, np.random.Generator], str]]:
    labels = banking77.load_labels(data_dir)
    return (labels, banking77._read_split(data_dir / "train.csv", labels),
            banking77._read_split(data_dir / "test.csv", labels), lambda text, _label, rng: voice(text, rng))


def _splits(seed: int, setup: Setup, data_dir: Path) -> tuple[list[str], pd.DataFrame, pd.DataFrame,
                                                                Callable[[str, str, np.random.Generator], str]]:
    """The scenario's intents, training and test messages, and its voice channel."""
    return _world(seed) if setup.scenario == "world" else _banking77(data_dir)


def _scenario_rng(seed: int) -> np.random.Generator:
    """The generator of the seed's scenario: `intent_groups` draws from it first, then `build`."""
    return np.random.default_rng([seed, 77])


def intent_groups(labels: list[str], setup: Setup, rng: np.random.Generator) -> dict[str, list[str]]:
    """The intents by when they arrive: "launch", "q1-new", "q2-new", ... (`rng`: `_scenario_rng`, fresh)."""
    order = [labels[i] for i in rng.permutation(len(labels))]
    groups, at = {}, 0
    for q, n in enumerate(setup.new_per_quarter, start=1):
        groups[f"q{q}-new"], at = sorted(order[at:at + n]), at + n
    return {"launch": sorted(order[at:]), **groups}


def build(data_dir: Path, seed: int, setup: Setup) -> Scenario:
    """The seed's scenario: intents split into launch and arriving groups, traffic split into quarters."""
    labels, train, test, speak = _splits(seed, setup, data_dir)
    rng = _scenario_rng(seed)
    groups = intent_groups(labels, setup, rng)
    arrives = {lab: int(g[1:g.index("-")]) if g != "launch" else 0 for g, labs in groups.items() for lab in labs}
    group_of = {lab: g for g, labs in groups.items() for lab in labs}

    launch_idx, quarter_of = [], np.full(len(train), -1)
    for lab, idx in train.groupby("label", sort=True).indices.items():
        idx = rng.permutation(idx)
        if arrives[lab] == 0:
            launch_idx.append(idx[:setup.launch_per_intent])
            idx = idx[setup.launch_per_intent:]
        first = max(arrives[lab], 1)
        span = setup.quarters - first + 1
        for k, part in enumerate(np.array_split(idx, span)):
            quarter_of[part] = first + k
    launch = train.iloc[np.concatenate(launch_idx)].reset_index(drop=True)
    launch["channel"] = np.asarray(CHANNELS, dtype=object)[rng.integers(len(CHANNELS), size=len(launch))]

    quarters = []
    for q in range(1, setup.quarters + 1):
        rows = train.iloc[np.flatnonzero(quarter_of == q)].reset_index(drop=True)
        n = len(rows)
        new = rows["label"].map(arrives).to_numpy() > 0
        channel = np.where(new & (rng.random(n) < 0.6), "app",
                           np.asarray(CHANNELS, dtype=object)[rng.integers(len(CHANNELS), size=n)])
        text = rows["text"].to_numpy(dtype=object)
        if q == setup.voice_quarter:
            spoken = rng.random(n) < setup.voice_share
            channel = np.where(spoken, VOICE, channel)
            text = np.array([speak(t, lab, rng) if s else t for t, lab, s in zip(text, rows["label"], spoken,
                                                                                  strict=True)], dtype=object)
        start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=(q - 1) * _QUARTER_DAYS)
        traffic = pd.DataFrame({
            "timestamp": start + pd.to_timedelta(rng.integers(0, _QUARTER_DAYS * _DAY_MS, size=n), unit="ms"),
            "input": text, "label": rows["label"], "group": rows["label"].map(group_of), "channel": channel})
        traffic = traffic.sort_values("timestamp", kind="stable").reset_index(drop=True)
        traffic.insert(0, "trace_id", [f"q{q}-{seed}-{i:05d}" for i in range(n)])
        if setup.traffic_cap and n > setup.traffic_cap:
            traffic = traffic.sample(n=setup.traffic_cap, random_state=seed).sort_index().reset_index(drop=True)
        quarters.append(traffic)
    test = test.assign(group=test["label"].map(group_of))
    vrng = np.random.default_rng([seed, 3])
    spoken_test = [speak(t, lab, vrng) for t, lab in zip(test["text"], test["label"], strict=True)]
    return Scenario(launch, quarters, test, pd.Series(spoken_test), groups, labels)


# ---------------------------------------------------------------------------------------------- one seed
def _pick(strategy: str, pool: pd.DataFrame, scores: modeling.Scores | None, vecs: np.ndarray, ref: np.ndarray,
          ref_labels: np.ndarray, known: set[str], budget: int, labels: list[str], rng: np.random.Generator,
          variant: str = "") -> np.ndarray:
    """Positions in `pool` the strategy sends for labelling (`variant`: the policy's selection settings from
    bench.learning_curves.VARIANTS; the product's defaults if empty)."""
    budget = min(budget, len(pool))
    if strategy == "random":
        return np.sort(rng.choice(len(pool), size=budget, replace=False))
    traces = pool[["trace_id", "input", "channel"]].assign(
        prediction=scores.prediction, margin=scores.margin, entropy=scores.entropy, flagged=False,
        evaluator_reasons="")
    cand = selection.Candidates(traces, vecs, ref, ref_labels, known)
    no_draw = traces.iloc[0:0].assign(stratum=pd.Series(dtype=str), inclusion_prob=pd.Series(dtype=float))
    cfg = bench_config(labels, VARIANTS.get(variant))
    chosen = selection.select_for_review(cand, cfg, no_draw, budget=budget).items
    pos = pd.Index(pool["trace_id"]).get_indexer(chosen["trace_id"])
    return np.sort(pos[pos >= 0])


def _fails(pred, truth) -> np.ndarray:
    return np.asarray(pred) != np.asarray(truth)


def _within(probs: np.ndarray, classes, allowed: list[str]) -> np.ndarray:
    """Each row's most probable label among `allowed` (columns of `probs` follow `classes`)."""
    keep = set(allowed)
    cols = [i for i, lab in enumerate(classes) if lab in keep]
    return np.asarray(classes, dtype=object)[cols][probs[:, cols].argmax(axis=1)]


def _rows(seed: int, strategy: str, quarter: int, n_train: int, s: Scenario, pred: np.ndarray,
          voice_pred: np.ndarray, anchor_pred: np.ndarray, anchor_voice: np.ndarray, boot: np.ndarray,
          within: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """One row per test group (and the voice rendering of all intents): the model's and the anchor's fails. On the
    launch intents also, with `within` (the model's and the anchor's predictions among the launch intents alone),
    their fails there and which items each sent to an intent added later."""
    y = s.test["label"].to_numpy()
    out = []
    for group in [*s.groups, VOICE]:
        mask = np.ones(len(y), bool) if group == VOICE else (s.test["group"] == group).to_numpy()
        m, a = (voice_pred, anchor_voice) if group == VOICE else (pred, anchor_pred)
        row = {"seed": seed, "strategy": strategy, "quarter": quarter, "train_rows": n_train, "group": group,
               "n_test": int(mask.sum()), "model_fail": _fails(m[mask], y[mask]),
               "anchor_fail": _fails(a[mask], y[mask]),
               "bootstrap_fail": _fails(boot[mask], y[mask]) if group == "launch" else None}
        if group == "launch" and within is not None:
            launch = s.groups["launch"]
            row |= {"model_within_fail": _fails(within[0][mask], y[mask]),
                    "anchor_within_fail": _fails(within[1][mask], y[mask]),
                    "model_later": ~np.isin(m[mask], launch), "anchor_later": ~np.isin(a[mask], launch)}
        out.append(row)
    return out


def label_set_cost(seed: int, setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA,
                   C: float = 10.0) -> dict:
    """What a larger label set costs the launch intents when nothing is scarce: the anchor (frozen MiniLM + logistic
    regression, C fixed) fitted on every training row of the launch intents alone, and on every training row of
    all the intents; each one's accuracy on the launch intents' test items, and the share of those items the
    second sends to an intent added later. Neither forgets anything: the difference is the price of telling the
    launch intents from more intents."""
    labels, train, test, _ = _splits(seed, setup, data_dir)
    launch = intent_groups(labels, setup, _scenario_rng(seed))["launch"]
    x_train, x_test = encode(train["text"].tolist()), encode(test["text"].tolist())
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    mine, judged = np.isin(y_train, launch), np.isin(y_test, launch)
    alone = anchor.fit(x_train[mine], y_train[mine], C=C).predict(x_test[judged])
    every = anchor.fit(x_train, y_train, C=C).predict(x_test[judged])
    return {"seed": seed, "launch_alone": 100 * float((alone == y_test[judged]).mean()),
            "every_intent": 100 * float((every == y_test[judged]).mean()),
            "sent_later": 100 * float((~np.isin(every, launch)).mean()), "C": C,
            "intents": [len(launch), len(labels)], "train_rows": int(len(y_train))}


def fine_tune_label_set_cost(seed: int, setup: Setup, data_dir: Path = DATA, epochs: float = 2.0, log=print
                             ) -> dict:
    """`label_set_cost` with the product's recipe in place of the anchor: the base model fine-tuned on every
    training row of the launch intents alone (as the bootstrap champion, which knows only them), and on every
    training row of all the intents; each one's accuracy on the launch intents' test items, and the share of those
    items the second sends to an intent added later. `epochs` each, for both: with a hundred rows per intent the
    few-row recipe's 8 are not needed (2 took 20 min per seed on 2 cores, 8 would take over an hour)."""
    labels, train, test, _ = _splits(seed, setup, data_dir)
    launch = intent_groups(labels, setup, _scenario_rng(seed))["launch"]
    training = TrainingConfig(**{**setup.training, "epochs": epochs, "start": "base"})
    judged = test[test["label"].isin(launch)]
    out = {"seed": seed, "epochs": epochs, "intents": [len(launch), len(labels)], "train_rows": int(len(train))}
    for name, rows in (("launch_alone", train[train["label"].isin(launch)]), ("every_intent", train)):
        t0 = time.monotonic()
        model = modeling.load_base(bench_config(labels).model_copy(update={"training": training}))
        with tempfile.TemporaryDirectory() as tmp:
            recipe.fine_tune(model, rows["text"].tolist(), rows["label"].tolist(), training, Path(tmp))
        pred = np.asarray(modeling.score(model, judged["text"].tolist()).prediction)
        out[name] = 100 * float((pred == judged["label"].to_numpy()).mean())
        out[f"{name}_rows"] = int(len(rows))
        if name == "every_intent":
            out["sent_later"] = 100 * float((~np.isin(pred, launch)).mean())
        log(f"seed {seed}: the recipe on {len(rows)} rows ({name}), {out[name]:.1f}% on launch test items, "
            f"{time.monotonic() - t0:.0f}s")
    return out


def run_seed(seed: int, setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA,
             log=print) -> tuple[list[dict], list[dict]]:
    """Every strategy's quarters on one seed: per-group test fails (with the anchor's and, on launch intents,
    the bootstrap champion's), and the policy's estimate checks."""
    s = build(data_dir, seed, setup)
    training = TrainingConfig(**{**setup.training, "start": "base" if setup.from_base else "champion"})
    cfg = bench_config(s.labels).model_copy(update={"training": training})
    v_launch, v_test, v_voice = encode(s.launch["text"].tolist()), encode(s.test["text"].tolist()), \
        encode(s.test_voice.tolist())
    v_quarters = [encode(q["input"].tolist()) for q in s.quarters]
    y_launch = s.launch["label"].to_numpy()
    test_texts, voice_texts = s.test["text"].tolist(), s.test_voice.tolist()
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        champion = modeling.load_base(cfg)
        recipe.fine_tune(champion, s.launch["text"].tolist(), list(y_launch), training, Path(tmp) / "trainer")
        saved = modeling.save(champion, Path(tmp) / "bootstrap")
        boot = np.asarray(modeling.score(champion, test_texts).prediction)
        a0 = anchor.fit(v_launch, y_launch, seed=seed)
        launch = s.groups["launch"]
        rows += _rows(seed, "bootstrap", 0, len(y_launch), s, boot,
                      np.asarray(modeling.score(champion, voice_texts).prediction), a0.predict(v_test),
                      a0.predict(v_voice), boot, (boot, _within(a0.predict_proba(v_test), a0.classes, launch)))
        log(f"seed {seed}: bootstrap champion on {len(y_launch)} launch rows in {time.monotonic() - t0:.0f}s")
        for strategy in setup.strategies:
            rng = np.random.default_rng([seed, zlib.crc32(strategy.encode())])
            model = modeling.align_labels(modeling.load(saved), s.labels)
            texts, labels, vecs = list(s.launch["text"]), list(y_launch), [v_launch]
            for q, pool in enumerate(s.quarters, start=1):
                t0 = time.monotonic()
                scores = modeling.score(model, pool["input"].tolist()) if strategy == "policy" else None
                known = {text_group(t) for t in texts[len(y_launch):]}
                pos = _pick(strategy, pool, scores, v_quarters[q - 1], np.vstack(vecs), np.asarray(labels), known,
                            setup.budget, s.labels, rng, setup.selection)
                picked = pool.iloc[pos]
                texts += picked["input"].tolist()
                labels += picked["label"].tolist()
                vecs.append(v_quarters[q - 1][pos])
                model = modeling.align_labels(modeling.starting_point(cfg, model), s.labels)  # training.start
                recipe.fine_tune(model, texts, labels, training, Path(tmp) / "trainer")
                same_rows = anchor.fit(np.vstack(vecs), np.asarray(labels), seed=seed)
                tested = modeling.score(model, test_texts)
                pred = np.asarray(tested.prediction)
                rows += _rows(seed, strategy, q, len(labels), s, pred,
                              np.asarray(modeling.score(model, voice_texts).prediction), same_rows.predict(v_test),
                              same_rows.predict(v_voice), boot,
                              (_within(tested.probs, model.labels, launch),
                               _within(same_rows.predict_proba(v_test), same_rows.classes, launch)))
                if scores is not None:  # the report's estimate for this release, against an independent sample
                    rest = np.setdiff1d(np.arange(len(pool)), pos)
                    unseen = pool.iloc[rest].reset_index(drop=True)
                    after = np.asarray(modeling.score(model, unseen["input"].tolist()).prediction)
                    check = estimate_check.run(unseen, np.asarray(scores.prediction)[rest], after, cfg,
                                               n_random=min(400, len(unseen) // 4),
                                               n_independent=min(2000, len(unseen) // 2), noise=0.05, seed=seed)
                    checks += check.assign(seed=seed, quarter=q).to_dict("records")
                later = (picked["group"] != "launch").mean() if len(picked) else 0.0
                fresh = (picked["group"] == f"q{q}-new").mean() if len(picked) else 0.0
                log(f"seed {seed} {strategy:6s} quarter {q}: {len(pos)} labels ({later:.0%} on intents that arrived "
                    f"after launch, {fresh:.0%} on this quarter's new ones), {len(labels)} training rows, "
                    f"{time.monotonic() - t0:.0f}s")
    return rows, checks


# ------------------------------------------------------------------------------- the regression set as it grows
HORIZONS = (("one quarter", _QUARTER_DAYS), ("every window", None))
ESTIMATE_SEEDS = tuple(range(20))


def growing_set_seed(seed: int, setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA,
                     n_random: int = 400, noise: float = 0.05) -> list[dict]:
    """The report's estimate each quarter over the regression set as the product grows it (every quarter's random
    draw is kept: never trained on), read over the last quarter's windows (the production horizon,
    `evaluation.horizon_days`, here the scenario's quarter) and over every window, against the truth: each
    model's fail rate over all of the quarter's traffic it was not trained on. The draw is the sampling flow's
    (per day window, stratified by channel), labelled by two simulated reviewers each wrong 5% of the time
    (`noise`; a third settles disagreements). The models are anchors (frozen MiniLM + logistic regression)
    refitted each quarter on the launch rows plus the quarter's budget of random picks (150): what is measured is
    the estimator, not the model."""
    s = build(data_dir, seed, setup)
    cfg = bench_config(s.labels)
    cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"per_label": False})})
    rng = np.random.default_rng([seed, 5])
    v_launch, y_launch = encode(s.launch["text"].tolist()), s.launch["label"].to_numpy()
    c = anchor.choose_c(v_launch, y_launch, seed)
    champion = anchor.fit(v_launch, y_launch, C=c)
    train_x, train_y, held, held_x, out = [v_launch], [y_launch], [], [], []
    for q, pool in enumerate(s.quarters, start=1):
        vecs, y = encode(pool["input"].tolist()), pool["label"].to_numpy()
        framed = pool.assign(window=windows.window_keys(pool["timestamp"], "day", ""), _row=np.arange(len(pool)))
        drawn = windows.draw(framed, cfg.selection.strata, n_random, {}, rng, cfg.selection.min_per_stratum).items
        held.append(drawn.assign(label=estimate_check.reviewed(drawn["label"].to_numpy(), s.labels, noise, rng)))
        held_x.append(vecs[drawn["_row"].to_numpy()])
        rest = np.setdiff1d(np.arange(len(pool)), drawn["_row"].to_numpy())
        picks = rng.choice(rest, size=min(setup.budget, len(rest)), replace=False)
        train_x.append(vecs[picks])
        train_y.append(y[picks])
        challenger = anchor.fit(np.vstack(train_x), np.concatenate(train_y), C=c)
        unseen = np.setdiff1d(np.arange(len(pool)), picks)
        true = {"champion": float(np.mean(champion.predict(vecs[unseen]) != y[unseen])),
                "challenger": float(np.mean(challenger.predict(vecs[unseen]) != y[unseen]))}
        sample, x = pd.concat(held, ignore_index=True), np.vstack(held_x)
        pred = {"champion": champion.predict(x), "challenger": challenger.predict(x)}
        for name, days in HORIZONS:
            h = horizon.of(sample, days)
            o = regression.overall(regression.production_table(
                sample[h.mask].reset_index(drop=True), list(pred["champion"][h.mask]),
                list(pred["challenger"][h.mask]), cfg))
            row = {"seed": seed, "quarter": q, "horizon": name, "n": int(o["n"]), "older": h.older}
            for who in ("champion", "challenger"):
                row |= {who: float(o[who]), f"{who}_truth": true[who],
                        f"{who}_covered": bool(o[f"{who}_low"] <= true[who] <= o[f"{who}_high"])}
            change = true["challenger"] - true["champion"]
            row |= {"change": float(o["delta"]), "change_truth": change,
                    "change_covered": bool(o["delta_low"] <= change <= o["delta_high"])}
            out.append(row)
        champion = challenger
    return out


def growing_set(seeds: tuple[int, ...], setup: Setup, encode: Callable[[list[str]], np.ndarray],
                data_dir: Path = DATA, log=print) -> dict:
    started, rows = time.monotonic(), []
    for seed in seeds:
        rows += growing_set_seed(seed, setup, encode, data_dir)
        log(f"seed {seed}: the regression set over {setup.quarters} quarters")
    return {"seeds": list(seeds), "rows": rows, "measured": time.strftime("%Y-%m-%d"),
            "minutes": (time.monotonic() - started) / 60, "budget": setup.budget, "quarter_days": _QUARTER_DAYS}


def growing_set_markdown(result: dict) -> str:
    """Coverage of the truth by the report's intervals, per quarter and horizon, with the mean error."""
    from scipy.stats import binom

    df = pd.DataFrame(result["rows"])
    n_seeds = len(result["seeds"])
    consistent = float(binom.ppf(0.025, n_seeds, 0.95)) / n_seeds
    lines = ["### The regression set as it grows (`python -m bench.quarters --estimates`)", "",
             f"Measured {result['measured']} ({result['minutes']:.1f} min), seeds {result['seeds'][0]}-"
             f"{result['seeds'][-1]}. " + " ".join(growing_set_seed.__doc__.split("\n\n")[0].split()), "",
             f"Each quarter adds a draw of 400 to the hold-out. Figures: the share of the {n_seeds} seeds whose 95% "
             f"interval holds the truth (95% expected; with {n_seeds} seeds, {consistent:.0%} or more is within the "
             "binomial's central 95% of it), and the mean error (estimate minus truth, points). One quarter is "
             f"{result['quarter_days']} days here; the product's default horizon is 91 days.", "",
             "| quarter | horizon | draws in the estimate | older draws left out | champion: covered | champion: "
             "mean error | challenger: covered | challenger: mean error | change: covered | change: mean error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (q, name), g in df.groupby(["quarter", "horizon"], sort=False):
        cells = []
        for who in ("champion", "challenger", "change"):
            err = 100 * (g[who] - g[f"{who}_truth"]).mean()
            cells += [f"{g[f'{who}_covered'].mean():.0%}", f"{err:+.1f}"]
        lines.append(f"| {q} | {name} | {g['n'].mean():.0f} | {g['older'].mean():.0f} | {' | '.join(cells)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- summaries
def _paired(model_fail: np.ndarray, other_fail: np.ndarray) -> tuple[float, float]:
    """Model accuracy minus the other's, and the variance of its Agresti-Min adjusted estimate."""
    estimate, _, variance = paired.adjusted_difference(other_fail, model_fail)  # model fail minus other fail
    return -estimate, variance


def blocked(pairs: list[tuple[np.ndarray, np.ndarray]], z: float = 1.959964) -> tuple[float, float, float]:
    """Seed-blocked paired difference (model minus other, points) over (model_fail, other_fail) per seed."""
    d = [_paired(m, o) for m, o in pairs]
    mean = float(np.mean([x for x, _ in d]))
    se = math.sqrt(sum(v for _, v in d)) / len(d)
    return 100 * mean, 100 * (mean - z * se), 100 * (mean + z * se)


def summary(rows: list[dict]) -> pd.DataFrame:
    """Per strategy, quarter and group: seed-mean accuracy of the model and of the anchor on the same rows, the
    seed-blocked paired difference, the spread of that difference across seeds (t interval), and on launch
    intents the paired difference against the bootstrap champion."""
    df = pd.DataFrame(rows)
    out = []
    for (strategy, quarter, group), g in df.groupby(["strategy", "quarter", "group"], sort=False):
        acc = [1 - f.mean() for f in g["model_fail"]]
        row = {"strategy": strategy, "quarter": int(quarter), "group": group, "seeds": len(g),
               "train_rows": float(g["train_rows"].mean()), "n_test": int(g["n_test"].iloc[0]),
               "model_acc": 100 * float(np.mean(acc)),
               "anchor_acc": 100 * float(np.mean([1 - f.mean() for f in g["anchor_fail"]]))}
        row["vs_anchor"], row["vs_anchor_low"], row["vs_anchor_high"] = blocked(
            list(zip(g["model_fail"], g["anchor_fail"], strict=True)))
        per_seed = [100 * (a.mean() - m.mean()) for m, a in zip(g["model_fail"], g["anchor_fail"], strict=True)]
        _, row["vs_anchor_seeds_low"], row["vs_anchor_seeds_high"] = t_interval(np.asarray(per_seed))
        if group == "launch":
            row["vs_bootstrap"], row["vs_bootstrap_low"], row["vs_bootstrap_high"] = blocked(
                list(zip(g["model_fail"], g["bootstrap_fail"], strict=True)))
        if group == "launch" and "model_within_fail" in g and g["model_within_fail"].notna().all():
            row["within_acc"] = 100 * float(np.mean([1 - f.mean() for f in g["model_within_fail"]]))
            row["anchor_within_acc"] = 100 * float(np.mean([1 - f.mean() for f in g["anchor_within_fail"]]))
            row["within_vs_bootstrap"], row["within_vs_bootstrap_low"], row["within_vs_bootstrap_high"] = blocked(
                list(zip(g["model_within_fail"], g["bootstrap_fail"], strict=True)))
            row["sent_later"] = 100 * float(np.mean([f.mean() for f in g["model_later"]]))
            row["anchor_sent_later"] = 100 * float(np.mean([f.mean() for f in g["anchor_later"]]))
        out.append(row)
    return pd.DataFrame(out)


def acceptance(table: pd.DataFrame, min_group: int = 1000) -> list[str]:
    """The issue's criteria read off the table (policy challengers; groups below `min_group` test items are
    reported, not judged)."""
    pol = table[(table["strategy"] == "policy") & (table["quarter"] > 0)]
    lines = []
    judged = pol[(pol["group"] != VOICE) & (pol["n_test"] >= min_group)]
    small = sorted(set(pol.loc[(pol["group"] != VOICE) & (pol["n_test"] < min_group), "group"]))
    worst = judged.loc[judged["vs_anchor_low"].idxmin()] if len(judged) else None
    if worst is not None:
        ok = bool((judged["vs_anchor_low"] > -1).all())
        lines.append(f"- Policy challenger vs the anchor on the same rows, every quarter, groups of at least "
                     f"{min_group} test items ({', '.join(sorted(set(judged['group'])))}): lowest paired lower bound "
                     f"{worst['vs_anchor_low']:+.1f} pts ({worst['group']}, quarter {worst['quarter']}): "
                     f"**{'met' if ok else 'not met'}**.")
    if small:
        sm = pol[pol["group"].isin(small)]
        lines.append(f"- Smaller groups ({', '.join(small)}, {int(sm['n_test'].max())} test items each), reported: "
                     f"lowest paired lower bound against the anchor {sm['vs_anchor_low'].min():+.1f} pts, lowest "
                     f"difference {sm['vs_anchor'].min():+.1f} pts.")
    launch = pol[pol["group"] == "launch"].sort_values("quarter")
    if len(launch):
        ok = bool((launch["vs_bootstrap_low"] > -1).all())
        boot = table[(table["strategy"] == "bootstrap") & (table["group"] == "launch")].iloc[0]
        model, anch = ([boot[k], *launch[k]] for k in ("model_acc", "anchor_acc"))
        lines.append(f"- Launch intents against the bootstrap champion: lowest paired lower bound "
                     f"{launch['vs_bootstrap_low'].min():+.1f} pts over the quarters: "
                     f"**{'met' if ok else 'not met'}**. Launch accuracy quarter by quarter: the model "
                     f"{' -> '.join(f'{x:.1f}' for x in model)}, the anchor refitted on the same rows "
                     f"{' -> '.join(f'{x:.1f}' for x in anch)}.")
    return lines


def launch_loss_lines(result: dict) -> list[str]:
    """Where the policy challenger's launch accuracy goes against the bootstrap champion's: launch test items sent
    to intents added later (the bootstrap champion knows none of them), and the launch intents told apart among
    themselves (each prediction restricted to them); with the cost of the larger label set alone, measured on
    every training row (`label_set_cost`). A reading of the criterion, not another one. Empty for runs that did
    not record it, and where the criterion is met."""
    t = pd.DataFrame(result["table"])
    if "within_vs_bootstrap_low" not in t:
        return []
    launch = t[(t["strategy"] == "policy") & (t["group"] == "launch") & (t["quarter"] > 0)].sort_values("quarter")
    if launch.empty or launch["within_vs_bootstrap_low"].isna().any() or (launch["vs_bootstrap_low"] > -1).all():
        return []  # not recorded, or no loss to read: the criterion is met
    last, ok = launch.iloc[-1], bool((launch["within_vs_bootstrap_low"] > -1).all())
    boot = t[(t["strategy"] == "bootstrap") & (t["group"] == "launch")]["model_acc"].iloc[0]
    lines = [f"- Where the launch loss goes (a reading of the criterion above, not a criterion of its own). The "
             f"bootstrap champion knows only the launch intents. At quarter {last['quarter']} the model is "
             f"{last['model_acc'] - boot:+.1f} pts against it on the launch test items: "
             f"{last['model_acc'] - last['within_acc']:+.1f} from items it takes for intents added later (it sends "
             f"{last['sent_later']:.1f}% of them there; the anchor on the same rows {last['anchor_sent_later']:.1f}%), "
             f"and {last['within_acc'] - boot:+.1f} among the launch intents themselves (each prediction restricted "
             f"to them). Restricted so, against the bootstrap champion, paired: "
             f"{' -> '.join(_ci(r, 'within_vs_bootstrap') for _, r in launch.iterrows())} pts quarter by quarter, "
             f"lowest lower bound {launch['within_vs_bootstrap_low'].min():+.1f} ({'above' if ok else 'not above'} "
             "-1): " + ("told apart among themselves, the launch intents hold within the criterion's point; the loss "
                        "is launch traffic taken for the intents added since." if ok else
                        "the launch intents are also told apart less well among themselves.")]
    costs = result.get("label_set_cost") or []
    if costs:
        c, n_launch, n_all, priced = _priced(costs)
        lines.append(f"- The price of a larger label set, with nothing scarce: the anchor (C={c['C'].iloc[0]:g}) "
                     f"fitted on every training row ({int(c['train_rows'].iloc[0])}) scores "
                     f"{c['launch_alone'].mean():.1f}% on the launch intents' test items when it knows the "
                     f"{n_launch} launch intents alone; knowing all {n_all}, {priced}. Launch accuracy "
                     "against a champion that knew fewer intents carries that price, however little is forgotten.")
    tuned = (result.get("label_set_cost_fine_tune") or {}).get("seeds") or []
    if tuned:
        c, n_launch, n_all, priced = _priced(tuned)
        lines.append(f"- The same price for the product's recipe (`--label-set-price`, measured "
                     f"{result['label_set_cost_fine_tune']['measured']}, {len(c)} seed{'s' if len(c) > 1 else ''}, "
                     f"{c['epochs'].iloc[0]:g} epochs each): the base model fine-tuned on every training row of the "
                     f"{n_launch} launch intents ({c['launch_alone_rows'].mean():.0f} rows) scores "
                     f"{c['launch_alone'].mean():.1f}% on their test items; fine-tuned on every training row of all "
                     f"{n_all} ({int(c['every_intent_rows'].iloc[0])}), {priced}. The model of quarter "
                     f"{last['quarter']} ({last['train_rows']:.0f} rows) scores {last['model_acc']:.1f}% there: "
                     f"{last['model_acc'] - c['every_intent'].mean():+.1f} pts against the recipe on every row of "
                     f"the same {n_all} intents.")
    return lines


def _priced(seeds: list[dict]) -> tuple[pd.DataFrame, int, int, str]:
    """The seeds' label-set prices (`label_set_cost`, `fine_tune_label_set_cost`): as a frame, the launch and all
    intents' counts, and "A% (D pts; by seed ...), sending S% of them to the intents added later"."""
    c = pd.DataFrame(seeds)
    diff = c["every_intent"] - c["launch_alone"]
    n_launch, n_all = c["intents"].iloc[0]
    return c, n_launch, n_all, (f"{c['every_intent'].mean():.1f}% ({diff.mean():+.1f} pts; by seed "
                                f"{', '.join(f'{d:+.1f}' for d in diff)}), sending {c['sent_later'].mean():.1f}% "
                                "of them to the intents added later")


def _ci(r, k: str) -> str:
    return f"{r[k]:+.1f} [{r[k + '_low']:+.1f}, {r[k + '_high']:+.1f}]"


def _setup_line(setup: dict, n_intents: int) -> str:
    return (f"Seeds {list(setup['seeds'])}; {setup['budget']} labels per quarter; new intents per quarter "
            f"{list(setup['new_per_quarter'])}; the voice channel in quarter {setup['voice_quarter']} "
            f"({setup['voice_share']:.0%} of its traffic). Accuracy in %, seed means; differences in points "
            "with seed-blocked paired 95% intervals (and, for the anchor, the t interval of the seeds' "
            f"differences, which also carries training noise). Voice: all {n_intents} intents' test items as the "
            "voice channel renders them.")


def table_lines(table: pd.DataFrame) -> list[str]:
    """The quarter-by-quarter table: every strategy, quarter and group beside the anchor and the bootstrap."""
    lines = ["| strategy | quarter | group | n_test | train rows | model | anchor (same rows) | model - anchor "
             "| across seeds | launch vs bootstrap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        seeds = f"[{r['vs_anchor_seeds_low']:+.1f}, {r['vs_anchor_seeds_high']:+.1f}]" \
            if not np.isnan(r["vs_anchor_seeds_low"]) else "—"
        boot = _ci(r, "vs_bootstrap") if r["group"] == "launch" and r["quarter"] > 0 else ""
        lines.append(f"| {r['strategy']} | {r['quarter']} | {r['group']} | {r['n_test']} | {r['train_rows']:.0f} | "
                     f"{r['model_acc']:.1f} | {r['anchor_acc']:.1f} | {_ci(r, 'vs_anchor')} | {seeds} | {boot} |")
    return lines


def _measured(result: dict) -> str:
    """When and how long, and when the policy's rows were measured again (`adopt_policy`)."""
    again = (f"; the policy's rows and estimate checks measured again on {result['policy_measured']} "
             f"({result['policy_minutes']:.0f} min) when the selection defaults changed (random picks and the "
             "bootstrap champion do not depend on them; the bootstrap rows of both runs agree, "
             "`python -m bench.quarters --adopt-policy`)") if result.get("policy_measured") else ""
    return (f"Measured {result['measured']}, {result['minutes']:.0f} min on {result['cores']} cores, "
            f"{result['fine_tunes']} fine-tunes{again}.")


def world_markdown(result: dict, variants: dict[str, dict] | None = None) -> str:
    """The synthetic world's quarters (`--scenario world`): its table and the acceptance read off it; and its
    variants (`--scenario world --variant NAME`), if any."""
    setup, table = result["setup"], pd.DataFrame(result["table"])
    lines = ["### synthetic world (`python -m bench.quarters --scenario world`)", "",
             _measured(result) + " The same quarters on the synthetic world: its 10 intents "
             f"({WORLD_TRAIN} messages of each as traffic, {WORLD_TEST} as the test split, from its "
             "templates), 4 at launch; quarter 3's voice channel speaks from the world's own transcript "
             "templates (the demo's drift).", "", _setup_line(setup, int(table["n_test"].max()) // WORLD_TEST), "",
             *table_lines(table), "", *acceptance(table), *launch_loss_lines(result),
             *_checks_line(result)]
    if variants:
        lines += ["", "#### Variants on the synthetic world (`python -m bench.quarters --scenario world --variant "
                      "NAME ...`)", "", *variant_rows(result, variants), "", *anchor_gap_lines(result, variants),
                  "", selection_line(result, variants)]
    return "\n".join(lines)


def anchor_gap_lines(base: dict, variants: dict[str, dict]) -> list[str]:
    """Per variant, at its last quarter on the voice channel: the model and the anchor on the same rows against the
    default's, so a selection whose picks teach the anchor more than the fine-tune shows as such; and its report
    estimates' checks."""
    def last_voice(res: dict) -> pd.Series:
        t = pd.DataFrame(res["table"])
        t = t[(t["strategy"] == "policy") & (t["group"] == VOICE)]
        return t.loc[t["quarter"].idxmax()]

    d, base_checks, out = last_voice(base), pd.DataFrame(base["checks"]), []
    for name, res in variants.items():
        v, checks = last_voice(res), pd.DataFrame(res["checks"])
        line = (f"- {_recipe_name(name, res)}, quarter {v['quarter']}, voice: the model {v['model_acc']:.1f} "
                f"(default {d['model_acc']:.1f}), the anchor on the same rows {v['anchor_acc']:.1f} (default "
                f"{d['anchor_acc']:.1f}); model - anchor {_ci(v, 'vs_anchor')} (default {_ci(d, 'vs_anchor')}).")
        if len(checks):
            line += (f" The report's estimate within tolerance in {checks['within'].mean():.0%} of {len(checks)} "
                     f"checks (default {base_checks['within'].mean():.0%}).")
        out.append(line)
    return out


def _checks_line(result: dict) -> list[str]:
    """The policy's report estimates against the independent samples, in one line."""
    checks = pd.DataFrame(result["checks"])
    if checks.empty:
        return []
    return [f"- The report's estimate against an independent sample of the same quarter's unlabelled traffic "
            f"({int(checks['report_n'].max())} representative labels, {int(checks['independent_n'].max())} "
            f"independent): {checks['within'].mean():.0%} of {len(checks)} estimates within tolerance, mean "
            f"difference {100 * checks['difference'].mean():+.1f} pts."]


def to_markdown(result: dict, variants: dict[str, dict] | None = None, growing: dict | None = None,
                world: dict | None = None, world_variants: dict[str, dict] | None = None) -> str:
    setup, table = result["setup"], pd.DataFrame(result["table"])
    checks = pd.DataFrame(result["checks"])
    lines = [TITLE, "",
             _measured(result) + " " + __doc__.split("\n\n")[1].replace("\n", " "), "",
             _setup_line(setup, 77), "", *table_lines(table)]
    lines += ["", "### Acceptance", "", *acceptance(table), *launch_loss_lines(result)]
    if len(checks):
        ok = checks["within"].mean()
        lines += ["", "### The report's estimate, quarter by quarter (policy)", "",
                  f"Each release's production fail rate as the report estimates it ({int(checks['report_n'].max())} "
                  f"representative labels from two simulated reviewers with 5% noise) against an independent sample "
                  f"of {int(checks['independent_n'].max())} of the same quarter's unlabelled traffic: {ok:.0%} of "
                  f"{len(checks)} estimates within tolerance (|difference| <= 1.96 sqrt(se1^2 + se2^2); 95% "
                  f"expected), mean difference {100 * checks['difference'].mean():+.1f} pts. Figures in %.", "",
                  "| seed | quarter | model | report estimate | independent | difference | tolerance | within |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, c in checks.iterrows():
            lines.append(f"| {c['seed']} | {c['quarter']} | {c['model']} | {100 * c['report_estimate']:.1f} | "
                         f"{100 * c['independent_fail_rate']:.1f} | {100 * c['difference']:+.1f} | "
                         f"{100 * c['tolerance']:.1f} | {c['within']} |")
    if variants:
        lines += ["", variants_markdown(result, variants), "", selection_line(result, variants)]
        if recipe_of(result)["start"] == "base":
            lines += ["", joint_training_line(result)]
        if "head-only" in variants:
            lines += ["", frozen_encoder_line(variants["head-only"])]
        if "continue" in variants:
            lines += ["", launch_path_line(result, "continue", variants["continue"])]
    if growing:
        lines += ["", growing_set_markdown(growing)]
    if world:
        lines += ["", world_markdown(world, world_variants)]
    missing = [*([] if world else ["the synthetic world over several quarters"]),
               *([] if growing else ["the regression set as it accumulates draws across quarters (each quarter's "
                                     "check draws afresh)"]),
               "out-of-scope traffic over the quarters (section 11 measures it on its own)"]
    lines += ["", f"Not covered yet: {'; '.join(missing)}."]
    return "\n".join(lines)


def joint_training_line(result: dict) -> str:
    """What joint training (the base model afresh on every labelled row each quarter: nothing to forget) says about
    the launch criterion, beside the anchor refitted on the same rows."""
    t = pd.DataFrame(result["table"])
    launch = t[t["strategy"].isin(["bootstrap", "policy"]) & (t["group"] == "launch")].sort_values("quarter")
    first, last = launch.iloc[0], launch.iloc[-1]
    met = bool((launch.loc[launch["quarter"] > 0, "vs_bootstrap_low"] > -1).all())
    lead = [r["model_acc"] - r["anchor_acc"] for r in (first, last)]
    gained = last["anchor_acc"] - first["anchor_acc"]
    text = (f"Joint training: every labelled row, the base model trained afresh each quarter, nothing to forget. "
            f"By quarter {last['quarter']} launch accuracy is {_ci(last, 'vs_bootstrap')} pts against the bootstrap "
            f"champion ({len(result['setup']['seeds'])} seeds), so joint training "
            f"{'meets' if met else 'does not meet'} the launch criterion (lower bound above -1 point) here")
    if met:
        return text + "."
    return text + (f"; the anchor refitted on the same rows {'gains' if gained >= 0 else 'loses'} {abs(gained):.1f} "
                   f"pts on launch over the same quarters, and the fine-tune's lead over it there goes from "
                   f"{lead[0]:+.1f} to {lead[1]:+.1f} pts" + (
                       ": what more intents to confuse with costs does not explain the loss by itself." if gained >= 0
                       else ": part of the loss is the cost of more intents to tell launch traffic from."))


def launch_path_line(base: dict, name: str, variant: dict) -> str:
    """Launch accuracy from the bootstrap champion to the last quarter under a variant, beside the default's: a
    variant that changes how every model trains changes its bootstrap champion too, so its launch criterion
    compares with another bootstrap."""
    def path(res: dict) -> list[float]:
        t = pd.DataFrame(res["table"])
        rows = t[(t["group"] == "launch") & t["strategy"].isin(["bootstrap", "policy"])].sort_values("quarter")
        return [float(a) for a in rows["model_acc"]]

    mine, default = path(variant), path(base)
    arrow = " -> ".join
    recipe = _recipe_name(name, variant)
    return (f"Launch accuracy from the bootstrap champion to quarter {len(mine) - 1}, {recipe} "
            f"({len(variant['setup']['seeds'])} seeds): {arrow(f'{a:.1f}' for a in mine)}; the default "
            f"({len(base['setup']['seeds'])} seeds): {arrow(f'{a:.1f}' for a in default)}. Its bootstrap champion "
            f"is trained by its recipe too, {mine[0] - default[0]:+.1f} pts on launch against the default's, so its "
            f"launch criterion compares with a {'stronger' if mine[0] > default[0] else 'weaker'} bootstrap; at the "
            f"last quarter it is {mine[-1] - default[-1]:+.1f} pts against the default (seeds not paired).")


def frozen_encoder_line(head_only: dict) -> str:
    """What continuing with the encoder all but frozen (only the head learns) says about where launch accuracy
    is lost."""
    t = pd.DataFrame(head_only["table"])
    launch = t[(t["strategy"] == "policy") & (t["group"] == "launch")].sort_values("quarter")
    first, last = launch.iloc[0], launch.iloc[-1]
    return (f"The head-only variant continues from the champion with the encoder all but frozen "
            f"(continue_learning_rate={head_only['setup']['training'].get('continue_learning_rate', 0):g}): only the "
            f"cosine head learns, so the encoder cannot forget. Its launch accuracy against the bootstrap champion is "
            f"{_ci(first, 'vs_bootstrap')} pts at quarter {first['quarter']} and {_ci(last, 'vs_bootstrap')} pts at "
            f"quarter {last['quarter']} ({len(head_only['setup']['seeds'])} seeds), against the anchor on the same "
            f"rows {_ci(last, 'vs_anchor')} pts" + (
                ": the launch intents lose where the head tells them from the intents added, not in the encoder."
                if last["vs_bootstrap_high"] < 0 else ": without encoder updates the launch intents hold, so the "
                "loss from continuing is in the encoder."))


# recipe settings that say how a model trains (the rest, seeds and test caps, do not make another recipe)
RECIPE_KEYS = ("start", "epochs", "batch_size", "learning_rate", "continue_learning_rate", "head_learning_rate",
               "weight_decay", "logit_scale", "balance_power", "validation_share", "validation_min_per_class",
               "early_stopping_patience", "refit", "replay_launch", "distill_weight", "distill_temperature",
               "reset_head")


def recipe_of(result: dict) -> dict:
    """The recipe a run trained with: as recorded, else (runs written before 2026-12-06 recorded their overrides
    only, each with `validation_share` and `from_base` spelled out) its setup's overrides over today's defaults."""
    if "recipe" in result:
        return result["recipe"]
    s = result["setup"]
    start = "base" if s.get("from_base", TrainingConfig().start == "base") else "champion"
    return TrainingConfig(**{**s["training"], "start": start}).model_dump(include=set(RECIPE_KEYS))


def _recipe_name(name: str, result: dict) -> str:
    """A run's name and what its recipe changes from today's default recipe."""
    today, mine = TrainingConfig().model_dump(include=set(RECIPE_KEYS)), recipe_of(result)
    changes = [("from base" if v == "base" else "from the champion") if k == "start" else
               f"{k}={v:g}" if isinstance(v, float | int) and not isinstance(v, bool) else f"{k}={v}"
               for k, v in mine.items() if k in today and v != today[k]]
    changes += [f"selection {result['setup']['selection']}"] if result["setup"].get("selection") else []
    return f"{name} ({', '.join(changes)})" if changes else name


def variants_markdown(base: dict, variants: dict[str, dict]) -> str:
    """The policy's quarters under each recipe variant (`--variant`), beside the default recipe's, and the
    criteria by recipe."""
    return "\n".join(["### Recipe variants (policy picks; `python -m bench.quarters --variant NAME ...`)", "",
                      *variant_rows(base, variants), "", *criteria_by_recipe(base, variants)])


def variant_rows(base: dict, variants: dict[str, dict]) -> list[str]:
    """The policy's quarters under each variant beside the default's: launch intents against the bootstrap
    champion, the other groups against the anchor on the same rows."""
    lines = ["Each variant is its own run on the seeds listed, and its launch column compares with its own run's "
             "bootstrap champion (the same model as the default's unless the variant changes how every model trains, "
             "the bootstrap's fine-tune included); a variant on fewer seeds than the default is not paired with it. "
             "Accuracy in %; launch: difference with the bootstrap champion, the other groups: with the anchor on the "
             "same rows (points, seed-blocked paired 95% intervals).", "",
             "| recipe | seeds | quarter | launch (vs bootstrap) | q1-new (vs anchor) | q2-new (vs anchor) "
             "| voice (vs anchor) |", "|---|---|---|---|---|---|---|"]

    def cell(t: pd.DataFrame, q: int, group: str, key: str) -> str:
        r = t[(t["quarter"] == q) & (t["group"] == group)].iloc[0]
        return f"{r['model_acc']:.1f} ({r[key]:+.1f} [{r[key + '_low']:+.1f}, {r[key + '_high']:+.1f}])"

    for name, res in {"default": base, **variants}.items():
        t = pd.DataFrame(res["table"])
        t = t[t["strategy"] == "policy"]
        for q in sorted(t["quarter"].unique()):
            lines.append(f"| {_recipe_name(name, res)} | {list(res['setup']['seeds'])} | {q} | "
                         f"{cell(t, q, 'launch', 'vs_bootstrap')} | {cell(t, q, 'q1-new', 'vs_anchor')} | "
                         f"{cell(t, q, 'q2-new', 'vs_anchor')} | {cell(t, q, VOICE, 'vs_anchor')} |")
    return lines


def criteria_by_recipe(base: dict, variants: dict[str, dict], min_group: int = 1000) -> list[str]:
    """Each recipe against the criteria (`acceptance`), as the lowest paired lower bound over its quarters:
    launch against the bootstrap champion, and every judged group (launch and new intents with at least
    `min_group` test items, from the quarter they arrive) against the anchor on the same rows; a bound above -1
    point meets a criterion."""
    lines = ["The criteria by recipe (lowest paired lower bound over the quarters, points; above -1 meets it):", "",
             "| recipe | seeds | launch vs bootstrap | launch vs anchor | new intents vs anchor | all met |",
             "|---|---|---|---|---|---|"]
    for name, res in {"default": base, **variants}.items():
        t = pd.DataFrame(res["table"])
        pol = t[(t["strategy"] == "policy") & (t["quarter"] > 0) & (t["group"] != VOICE) & (t["n_test"] >= min_group)]
        arrived = pol["quarter"] >= pol["group"].str.extract(r"^q(\d+)-new$")[0].astype(float).fillna(0)
        launch, new = pol[pol["group"] == "launch"], pol[(pol["group"] != "launch") & arrived]
        (boot, b), (anch, a), (fresh, f) = _lowest(launch, "vs_bootstrap"), _lowest(launch, "vs_anchor"), \
            _lowest(new, "vs_anchor")
        lines.append(f"| {_recipe_name(name, res)} | {list(res['setup']['seeds'])} | {boot} | {anch} | "
                     f"{fresh} | {'yes' if min(b, a, f) > -1 else 'no'} |")
    return lines


def _lowest(rows: pd.DataFrame, key: str) -> tuple[str, float]:
    """The row with the lowest `key`_low: that bound, its quarter (and group unless launch); and the bound."""
    r = rows.loc[rows[f"{key}_low"].idxmin()]
    where = f"quarter {r['quarter']}" + ("" if r["group"] == "launch" else f", {r['group']}")
    return f"{r[f'{key}_low']:+.1f} ({where})", float(r[f"{key}_low"])


def run(setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA, log=print) -> dict:
    started = time.monotonic()
    rows, checks = [], []
    costs = []
    for seed in setup.seeds:
        r, c = run_seed(seed, setup, encode, data_dir, log)
        rows += r
        checks += c
        costs.append(label_set_cost(seed, setup, encode, data_dir))
    fine_tunes = len(setup.seeds) * (1 + len(setup.strategies) * setup.quarters)
    return {"setup": asdict(setup), "recipe": recipe_of({"setup": asdict(setup)}),
            "table": summary(rows).to_dict("records"), "checks": checks, "label_set_cost": costs,
            "measured": time.strftime("%Y-%m-%d"), "minutes": (time.monotonic() - started) / 60,
            "cores": os.cpu_count(), "fine_tunes": fine_tunes, "policy_selection": policy_selection(setup.selection)}


SELECTION_KEYS = ("components", "cluster_quota", "cluster_pick", "neighbors")
# what runs written before 2026-12-06, which did not record their selection, picked with: the defaults of then
UNRECORDED_SELECTION = {"components": {"uncertain": 0.35, "novel": 0.3, "disagreement": 0.2, "flagged": 0.15},
                        "cluster_quota": 3, "cluster_pick": "best", "neighbors": 10}


def _settings(overrides: dict) -> dict:
    return SelectionConfig(**overrides).model_dump(include=set(SELECTION_KEYS))


def policy_selection(variant: str = "") -> dict:
    """The selection settings the policy picks with (the product's defaults, or a variant's over them)."""
    return _settings(VARIANTS.get(variant, {}))


def selection_of(result: dict) -> dict:
    """The selection settings a run's policy picked with: as recorded, else its variant's, else (a run written
    before 2026-12-06 recorded none) `UNRECORDED_SELECTION`."""
    if result.get("policy_selection"):
        return result["policy_selection"]
    variant = result["setup"].get("selection")
    return policy_selection(variant) if variant else _settings(UNRECORDED_SELECTION)


def selection_line(base: dict, variants: dict[str, dict]) -> str:
    """Which selection settings each run's policy picked with, against today's defaults."""
    def text(sel: dict) -> str:
        parts = ", ".join(f"{k} {v:g}" for k, v in sel["components"].items() if v)
        return (f"{parts}; {sel['cluster_quota']} per cluster, {sel['cluster_pick']} first; {sel['neighbors']} "
                "neighbours")

    today, runs = policy_selection(), {"default": base, **variants}
    groups: dict[str, list[str]] = {}
    for name, res in runs.items():
        groups.setdefault(text(selection_of(res)), []).append(name)
    return ("Selection (the policy's picks): " + "; ".join(
        f"{', '.join(names)} picked with {sel}{' (the product defaults today)' if sel == text(today) else ''}"
        for sel, names in groups.items()) + ".")


def adopt_policy(base: dict, variant: dict) -> tuple[dict, dict]:
    """When the product's selection defaults change: the default run with its policy rows and estimate checks
    taken from a policy-only run of the new selection (`variant`), and the policy of `base` kept as a run of its
    own (the selection before). Random picks and the bootstrap champion do not depend on the selection, so
    their rows stand; refused unless both runs share every setting but the selection and the strategies, and
    their bootstrap rows (fitted again by the variant's run) agree. Returns (new default run, the one before)."""
    ignore = {"selection", "strategies"}
    defaults = json.loads(json.dumps(asdict(Setup())))  # settings a run written before they existed left out
    was, now = {**defaults, **base["setup"]}, {**defaults, **variant["setup"]}
    differs = sorted(k for k in {*was, *now} - ignore if was.get(k) != now.get(k))
    if differs:
        raise ValueError(f"the runs differ in {', '.join(differs)}: only a run that changes the selection alone "
                         "can replace the default's policy rows")
    if list(variant["setup"]["strategies"]) != ["policy"]:
        raise ValueError("the variant's run must pick with the policy alone (--strategies policy)")

    def rows(res: dict, strategy: str) -> pd.DataFrame:
        t = pd.DataFrame(res["table"])
        return t[t["strategy"] == strategy].reset_index(drop=True)

    a, b = rows(base, "bootstrap"), rows(variant, "bootstrap")
    numeric = a.select_dtypes("number").columns
    if len(a) != len(b) or not np.allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), equal_nan=True):
        raise ValueError("the bootstrap rows of the two runs differ: training is not reproducible here, so the "
                         "default run has to be measured again whole (make bench-quarters)")
    table = [r for r in base["table"] if r["strategy"] != "policy"] + rows(variant, "policy").to_dict("records")
    adopted = {**base, "setup": {**base["setup"], "selection": ""}, "table": table,  # its selection: the default
               "checks": variant["checks"],
               "policy_selection": selection_of(variant),
               "policy_measured": variant["measured"], "policy_minutes": variant["minutes"]}
    before = {**base, "setup": {**base["setup"], "strategies": ["policy"]},
              "table": [r for r in base["table"] if r["strategy"] in ("bootstrap", "policy")],
              "policy_selection": selection_of(base)}
    return adopted, before


def main(argv: list[str]) -> int:
    """`python -m bench.quarters [--quick | --scenario world | --variant NAME ... | --estimates [--seeds 0,1] |
    --adopt-policy NAME | --label-set-price [--seeds 0,1] [--epochs 2] | --render]`: run, write
    docs/bench/quarters[-quick | -world | -NAME | -estimates].json, and rewrite section 10 of
    docs/benchmarks[-quick].md (`--render`: only that; `--adopt-policy`: see `adopt_policy`; `--label-set-price`:
    adds `fine_tune_label_set_cost` to quarters.json, 60 min for 3 seeds at 2 epochs on 2 cores)."""
    from bench import report

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "--render" in argv:
        render()
        return 0
    world = "--scenario" in argv and argv[argv.index("--scenario") + 1] == "world"
    if "--adopt-policy" in argv:  # --adopt-policy NAME: quarters[-world]-NAME.json's policy rows become the default's
        art, name = REPO / "docs" / "bench", argv[argv.index("--adopt-policy") + 1]
        base = art / f"quarters{'-world' if world else ''}.json"
        variant = base.with_name(f"{base.stem}-{name}.json")
        adopted, before = adopt_policy(json.loads(base.read_text()), json.loads(variant.read_text()))
        base.with_name(f"{base.stem}-selection-before.json").write_text(json.dumps(before, indent=2, default=str))
        base.write_text(json.dumps(adopted, indent=2, default=str))
        variant.unlink()
        render()
        return 0
    if "--estimates" in argv:  # the regression set as it grows: anchors only, a few minutes
        return _growing_main(argv)
    if "--label-set-price" in argv:  # [--seeds 0,1] [--epochs 2]: the recipe's price of the larger label set
        return _label_set_main(argv, world)
    quick = "--quick" in argv
    setup = Setup(**(WORLD_SETUP if world else {}))
    if quick:
        setup = replace(setup, seeds=(0,), budget=min(40, setup.budget), traffic_cap=400,
                        training={"epochs": 1, "validation_share": 0.0})
    # a recipe variant, measured apart: --variant NAME [--training key=value,...] [--strategies a,b] [--seeds 0,1]
    # [--from-base | --from-champion] [--selection NAME (of bench.learning_curves.VARIANTS)]
    variant = argv[argv.index("--variant") + 1] if "--variant" in argv else ""
    if variant:
        pairs = argv[argv.index("--training") + 1].split(",") if "--training" in argv else []
        overrides = {k: float(v) for k, v in (p.split("=") for p in pairs)}
        strategies = tuple(argv[argv.index("--strategies") + 1].split(",")) if "--strategies" in argv else \
            setup.strategies
        seeds = tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(",")) if "--seeds" in argv else setup.seeds
        picks = argv[argv.index("--selection") + 1] if "--selection" in argv else ""
        if picks and picks not in VARIANTS:
            print(f"unknown selection variant {picks!r}: one of {', '.join(VARIANTS)}", file=sys.stderr)
            return 2
        setup = replace(setup, training={**setup.training, **overrides}, strategies=strategies, seeds=seeds,
                        from_base="--from-base" in argv or ("--from-champion" not in argv and setup.from_base),
                        selection=picks)
    encoder = frozen_encoder()
    result = run(setup, encoder.encode, log=_log)
    encoder.save()
    suffix = ("-quick" if quick else "") + ("-world" if world else "") + (f"-{variant}" if variant else "")
    (REPO / "docs" / "bench" / f"quarters{suffix}.json").write_text(json.dumps(result, indent=2, default=str))
    if quick:
        out_md = REPO / "docs" / "benchmarks-quick.md"
        if out_md.exists():
            report.replace_section(out_md, SECTION, to_markdown(result))
    else:
        render()
    _log(f"done in {result['minutes']:.1f} min; docs/bench/quarters{suffix}.json")
    return 0


def _log(msg: str) -> None:
    print(f"[quarters {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _label_set_main(argv: list[str], world: bool) -> int:
    """`--label-set-price`: `fine_tune_label_set_cost` on the run's seeds (or `--seeds`), added to
    docs/bench/quarters[-world].json as `label_set_cost_fine_tune`; section 10 rendered again."""
    path = REPO / "docs" / "bench" / f"quarters{'-world' if world else ''}.json"
    result = json.loads(path.read_text())
    setup = Setup(**{k: tuple(v) if isinstance(v, list) else v for k, v in result["setup"].items()})
    seeds = tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(",")) if "--seeds" in argv else setup.seeds
    epochs = float(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else 2.0
    started = time.monotonic()
    costs = [fine_tune_label_set_cost(seed, setup, epochs=epochs, log=_log) for seed in seeds]
    result["label_set_cost_fine_tune"] = {"seeds": costs, "measured": time.strftime("%Y-%m-%d"),
                                          "minutes": (time.monotonic() - started) / 60}
    path.write_text(json.dumps(result, indent=2, default=str))
    render()
    _log(f"done in {result['label_set_cost_fine_tune']['minutes']:.1f} min; {path.relative_to(REPO)}")
    return 0


def _growing_main(argv: list[str]) -> int:
    seeds = tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(",")) if "--seeds" in argv else ESTIMATE_SEEDS
    encoder = frozen_encoder()
    result = growing_set(seeds, Setup(), encoder.encode, log=_log)
    encoder.save()
    (REPO / "docs" / "bench" / "quarters-estimates.json").write_text(json.dumps(result, indent=2, default=str))
    render()
    print(growing_set_markdown(result))
    return 0


def render() -> None:
    """Section 10 of docs/benchmarks.md from docs/bench/quarters.json and the variants' quarters-NAME.json."""
    from bench import report

    art = REPO / "docs" / "bench"
    base = art / "quarters.json"
    if not base.exists():
        return
    apart = ("quarters-estimates", "quarters-world")  # not recipe variants: rendered as their own parts
    variants = {f.stem.removeprefix("quarters-"): json.loads(f.read_text()) for f in sorted(art.glob("quarters-*.json"))
                if "quick" not in f.stem and f.stem != apart[0] and not f.stem.startswith(apart[1])}
    world_variants = {f.stem.removeprefix(f"{apart[1]}-"): json.loads(f.read_text())
                      for f in sorted(art.glob(f"{apart[1]}-*.json"))}
    growing, world = (art / f"{name}.json" for name in apart)
    report.replace_section(REPO / "docs" / "benchmarks.md", SECTION,
                           to_markdown(json.loads(base.read_text()), variants,
                                       json.loads(growing.read_text()) if growing.exists() else None,
                                       json.loads(world.read_text()) if world.exists() else None, world_variants))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
