"""Quarter after quarter on BANKING77 (`make bench-quarters`): three retrain cycles with drift that keeps arriving,
each continuing from the previous quarter's challenger, for the product's selection policy and for random picks
at the same budget, on the real recipe (`Trainer`), several seeds.

The scenario, per seed: 27 launch intents (20 training rows each); quarter 1 brings 25 new intents, quarter 2
25 more, quarter 3 a new "voice" channel whose text reads like speech-to-text (lower case, no punctuation,
fillers, a few letter swaps) carrying half the traffic. The rest of BANKING77's train split is the traffic,
each intent's rows spread evenly over the quarters from its arrival on. Each quarter the champion scores its
traffic, the strategy picks `budget` traces (the oracle labels them; the representative random draw is a fixed
cost every strategy pays alike and is left out, as in section 1), and the challenger is fine-tuned from the
champion on the launch rows plus every row labelled so far (the product's datasets are cumulative: earlier
reviewed rows are replayed every quarter), then promoted. Accuracy is on BANKING77's fixed test split, by group
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
from bench.learning_curves import bench_config, t_interval
from hitl.config import TrainingConfig
from hitl.evaluation import paired
from hitl.hashing import text_group
from hitl.learning import anchor, modeling, recipe
from hitl.sampling import selection
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
    from_base: bool = False  # variant: each quarter trains the base model afresh on every row, not the champion


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


def build(data_dir: Path, seed: int, setup: Setup) -> Scenario:
    """The seed's scenario: intents split into launch and arriving groups, traffic split into quarters."""
    labels = banking77.load_labels(data_dir)
    train = banking77._read_split(data_dir / "train.csv", labels)
    test = banking77._read_split(data_dir / "test.csv", labels)
    rng = np.random.default_rng([seed, 77])
    order = [labels[i] for i in rng.permutation(len(labels))]
    groups, at = {}, 0
    for q, n in enumerate(setup.new_per_quarter, start=1):
        groups[f"q{q}-new"], at = sorted(order[at:at + n]), at + n
    groups = {"launch": sorted(order[at:]), **groups}
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
            text = np.array([voice(t, rng) if s else t for t, s in zip(text, spoken, strict=True)], dtype=object)
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
    return Scenario(launch, quarters, test, pd.Series([voice(t, vrng) for t in test["text"]]), groups, labels)


# ---------------------------------------------------------------------------------------------- one seed
def _pick(strategy: str, pool: pd.DataFrame, scores: modeling.Scores | None, vecs: np.ndarray, ref: np.ndarray,
          ref_labels: np.ndarray, known: set[str], budget: int, labels: list[str], rng: np.random.Generator
          ) -> np.ndarray:
    """Positions in `pool` the strategy sends for labelling."""
    budget = min(budget, len(pool))
    if strategy == "random":
        return np.sort(rng.choice(len(pool), size=budget, replace=False))
    traces = pool[["trace_id", "input", "channel"]].assign(
        prediction=scores.prediction, margin=scores.margin, entropy=scores.entropy, flagged=False,
        evaluator_reasons="")
    cand = selection.Candidates(traces, vecs, ref, ref_labels, known)
    no_draw = traces.iloc[0:0].assign(stratum=pd.Series(dtype=str), inclusion_prob=pd.Series(dtype=float))
    chosen = selection.select_for_review(cand, bench_config(labels), no_draw, budget=budget).items
    pos = pd.Index(pool["trace_id"]).get_indexer(chosen["trace_id"])
    return np.sort(pos[pos >= 0])


def _fails(pred, truth) -> np.ndarray:
    return np.asarray(pred) != np.asarray(truth)


def _rows(seed: int, strategy: str, quarter: int, n_train: int, s: Scenario, pred: np.ndarray,
          voice_pred: np.ndarray, anchor_pred: np.ndarray, anchor_voice: np.ndarray, boot: np.ndarray) -> list[dict]:
    """One row per test group (and the voice rendering of all intents): the model's and the anchor's fails."""
    y = s.test["label"].to_numpy()
    out = []
    for group in [*s.groups, VOICE]:
        mask = np.ones(len(y), bool) if group == VOICE else (s.test["group"] == group).to_numpy()
        m, a = (voice_pred, anchor_voice) if group == VOICE else (pred, anchor_pred)
        out.append({"seed": seed, "strategy": strategy, "quarter": quarter, "train_rows": n_train, "group": group,
                    "n_test": int(mask.sum()), "model_fail": _fails(m[mask], y[mask]),
                    "anchor_fail": _fails(a[mask], y[mask]),
                    "bootstrap_fail": _fails(boot[mask], y[mask]) if group == "launch" else None})
    return out


def run_seed(seed: int, setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA,
             log=print) -> tuple[list[dict], list[dict]]:
    """Every strategy's quarters on one seed: per-group test fails (with the anchor's and, on launch intents,
    the bootstrap champion's), and the policy's estimate checks."""
    s = build(data_dir, seed, setup)
    training = TrainingConfig(**setup.training)
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
        rows += _rows(seed, "bootstrap", 0, len(y_launch), s, boot,
                      np.asarray(modeling.score(champion, voice_texts).prediction), a0.predict(v_test),
                      a0.predict(v_voice), boot)
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
                            setup.budget, s.labels, rng)
                picked = pool.iloc[pos]
                texts += picked["input"].tolist()
                labels += picked["label"].tolist()
                vecs.append(v_quarters[q - 1][pos])
                model = modeling.align_labels(modeling.load_base(cfg) if setup.from_base else model, s.labels)
                recipe.fine_tune(model, texts, labels, training, Path(tmp) / "trainer")
                same_rows = anchor.fit(np.vstack(vecs), np.asarray(labels), seed=seed)
                pred = np.asarray(modeling.score(model, test_texts).prediction)
                rows += _rows(seed, strategy, q, len(labels), s, pred,
                              np.asarray(modeling.score(model, voice_texts).prediction), same_rows.predict(v_test),
                              same_rows.predict(v_voice), boot)
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
                     f"{' -> '.join(f'{x:.1f}' for x in anch)}"
                     " (what more intents to confuse with costs by itself).")
    return lines


def to_markdown(result: dict, variants: dict[str, dict] | None = None) -> str:
    setup, table = result["setup"], pd.DataFrame(result["table"])
    checks = pd.DataFrame(result["checks"])

    def ci(r, k):
        return f"{r[k]:+.1f} [{r[k + '_low']:+.1f}, {r[k + '_high']:+.1f}]"

    lines = [TITLE, "",
             f"Measured {result['measured']}, {result['minutes']:.0f} min on {result['cores']} cores, "
             f"{result['fine_tunes']} fine-tunes. " + __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Seeds {list(setup['seeds'])}; {setup['budget']} labels per quarter; new intents per quarter "
             f"{list(setup['new_per_quarter'])}; the voice channel in quarter {setup['voice_quarter']} "
             f"({setup['voice_share']:.0%} of its traffic). Accuracy in %, seed means; differences in points "
             "with seed-blocked paired 95% intervals (and, for the anchor, the t interval of the seeds' "
             "differences, which also carries training noise). Voice: all 77 intents' test items as the voice "
             "channel renders them.", "",
             "| strategy | quarter | group | n_test | train rows | model | anchor (same rows) | model - anchor "
             "| across seeds | launch vs bootstrap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        seeds = f"[{r['vs_anchor_seeds_low']:+.1f}, {r['vs_anchor_seeds_high']:+.1f}]" \
            if not np.isnan(r["vs_anchor_seeds_low"]) else "—"
        boot = ci(r, "vs_bootstrap") if r["group"] == "launch" and r["quarter"] > 0 else ""
        lines.append(f"| {r['strategy']} | {r['quarter']} | {r['group']} | {r['n_test']} | {r['train_rows']:.0f} | "
                     f"{r['model_acc']:.1f} | {r['anchor_acc']:.1f} | {ci(r, 'vs_anchor')} | {seeds} | {boot} |")
    lines += ["", "### Acceptance", "", *acceptance(table)]
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
        lines += ["", variants_markdown(result, variants)]
    lines += ["", "Not covered yet: the synthetic world over several quarters; how the regression set's weights stay "
              "right as it accumulates draws across quarters (each quarter's check draws afresh); out-of-scope "
              "traffic over the quarters (section 11 measures it on its own)."]
    return "\n".join(lines)


def _recipe_name(name: str, setup: dict) -> str:
    changes = [f"{k}={v:g}" for k, v in setup["training"].items()] + (["from base"] if setup.get("from_base") else [])
    return f"{name} ({', '.join(changes)})" if changes else name


def variants_markdown(base: dict, variants: dict[str, dict]) -> str:
    """The policy's quarters under each recipe variant (`--variant`), beside the default recipe's: launch intents
    against the bootstrap champion, the other groups against the anchor on the same rows."""
    lines = ["### Recipe variants (policy picks; `python -m bench.quarters --variant NAME ...`)", "",
             "Each variant is its own run on the seeds listed (the bootstrap champion of a seed is the same model in "
             "every run); a variant on fewer seeds than the default is not paired with it. Accuracy in %; launch: "
             "difference with the bootstrap champion, the other groups: with the anchor on the same rows (points, "
             "seed-blocked paired 95% intervals).", "",
             "| recipe | seeds | quarter | launch (vs bootstrap) | q1-new (vs anchor) | q2-new (vs anchor) "
             "| voice (vs anchor) |", "|---|---|---|---|---|---|---|"]

    def cell(t: pd.DataFrame, q: int, group: str, key: str) -> str:
        r = t[(t["quarter"] == q) & (t["group"] == group)].iloc[0]
        return f"{r['model_acc']:.1f} ({r[key]:+.1f} [{r[key + '_low']:+.1f}, {r[key + '_high']:+.1f}])"

    for name, res in {"default": base, **variants}.items():
        t = pd.DataFrame(res["table"])
        t = t[t["strategy"] == "policy"]
        for q in sorted(t["quarter"].unique()):
            lines.append(f"| {_recipe_name(name, res['setup'])} | {list(res['setup']['seeds'])} | {q} | "
                         f"{cell(t, q, 'launch', 'vs_bootstrap')} | {cell(t, q, 'q1-new', 'vs_anchor')} | "
                         f"{cell(t, q, 'q2-new', 'vs_anchor')} | {cell(t, q, VOICE, 'vs_anchor')} |")
    return "\n".join(lines)


def run(setup: Setup, encode: Callable[[list[str]], np.ndarray], data_dir: Path = DATA, log=print) -> dict:
    started = time.monotonic()
    rows, checks = [], []
    for seed in setup.seeds:
        r, c = run_seed(seed, setup, encode, data_dir, log)
        rows += r
        checks += c
    fine_tunes = len(setup.seeds) * (1 + len(setup.strategies) * setup.quarters)
    return {"setup": asdict(setup), "table": summary(rows).to_dict("records"), "checks": checks,
            "measured": time.strftime("%Y-%m-%d"), "minutes": (time.monotonic() - started) / 60,
            "cores": os.cpu_count(), "fine_tunes": fine_tunes}


def main(argv: list[str]) -> int:
    """`python -m bench.quarters [--quick | --variant NAME ... | --render]`: run, write docs/bench/quarters[-quick |
    -NAME].json, and rewrite section 10 of docs/benchmarks[-quick].md (`--render`: only that)."""
    from bench import report
    from hitl.config import Config
    from hitl.learning.embeddings import FrozenEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "--render" in argv:
        render()
        return 0
    quick = "--quick" in argv
    setup = Setup(seeds=(0,), budget=40, traffic_cap=400, training={"epochs": 1, "validation_share": 0.0}) \
        if quick else Setup()
    # a recipe variant, measured apart: --variant NAME [--training key=value,...] [--strategies a,b] [--seeds 0,1]
    # [--from-base]
    variant = argv[argv.index("--variant") + 1] if "--variant" in argv else ""
    if variant:
        pairs = argv[argv.index("--training") + 1].split(",") if "--training" in argv else []
        overrides = {k: float(v) for k, v in (p.split("=") for p in pairs)}
        strategies = tuple(argv[argv.index("--strategies") + 1].split(",")) if "--strategies" in argv else \
            setup.strategies
        seeds = tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(",")) if "--seeds" in argv else setup.seeds
        setup = replace(setup, training={**setup.training, **overrides}, strategies=strategies, seeds=seeds,
                        from_base="--from-base" in argv)
    cache = REPO / ".hitl" / "bench-cache"
    encoder = FrozenEncoder(modeling.base_model_path(Config(labels=["a", "b"], state_dir=str(cache))), cache)

    def log(msg: str) -> None:
        print(f"[quarters {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    result = run(setup, encoder.encode, log=log)
    encoder.save()
    suffix = ("-quick" if quick else "") + (f"-{variant}" if variant else "")
    (REPO / "docs" / "bench" / f"quarters{suffix}.json").write_text(json.dumps(result, indent=2, default=str))
    if quick:
        out_md = REPO / "docs" / "benchmarks-quick.md"
        if out_md.exists():
            report.replace_section(out_md, SECTION, to_markdown(result))
    else:
        render()
    log(f"done in {result['minutes']:.1f} min; docs/bench/quarters{suffix}.json")
    return 0


def render() -> None:
    """Section 10 of docs/benchmarks.md from docs/bench/quarters.json and the variants' quarters-NAME.json."""
    from bench import report

    art = REPO / "docs" / "bench"
    base = art / "quarters.json"
    if not base.exists():
        return
    variants = {f.stem.removeprefix("quarters-"): json.loads(f.read_text()) for f in sorted(art.glob("quarters-*.json"))
                if "quick" not in f.stem}
    report.replace_section(REPO / "docs" / "benchmarks.md", SECTION,
                           to_markdown(json.loads(base.read_text()), variants))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
