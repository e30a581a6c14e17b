"""docs/benchmarks.md: every figure below is what the run that wrote it measured."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from bench import learning_curves as lc
from bench import speed
from hitl import markdown

ORDER = ["random", "stratified", "margin", "policy"]


def _ci(m: float, lo: float, hi: float, scale: float = 100, unit: str = "") -> str:
    if lo != lo:
        return f"{scale * m:.1f}{unit}"
    return f"{scale * m:.1f}{unit} [{scale * lo:.1f}, {scale * hi:.1f}]"


def plot(summary: pd.DataFrame, strategies: list[str], column: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for strategy in strategies:
        g = summary[summary["strategy"] == strategy]
        if g.empty:
            continue
        ax.plot(g["labels"], 100 * g[column], marker="o", ms=3, label=strategy,
                lw=2.2 if strategy == "policy" else 1.2)
        ax.fill_between(g["labels"], 100 * g[f"{column}_low"], 100 * g[f"{column}_high"], alpha=0.15)
    ax.set_xlabel("labels reviewed (training picks)")
    ax.set_ylabel("accuracy on the fixed test set (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def strategy_table(curves: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Final accuracies, AUC, seed-paired AUC differences vs margin and random, labels to reach random's final
    new-intent accuracy."""
    last = summary[summary["round"] == summary["round"].max()].set_index("strategy")
    target = float(last.loc["random", "acc_new"]) if "random" in last.index else float("nan")
    rows, facts = [], {"random_final_new": target}
    for strategy in [s for s in ORDER if s in last.index] + [s for s in last.index if s not in ORDER]:
        r = last.loc[strategy]
        aucs = [lc.auc(g[g["strategy"] == strategy]) for _, g in curves.groupby("seed")
                if (g["strategy"] == strategy).any()]
        row = {"strategy": strategy, "labels": int(r["labels"]),
               "new intents": _ci(r["acc_new"], r["acc_new_low"], r["acc_new_high"]),
               "launch intents": _ci(r["acc_launch"], r["acc_launch_low"], r["acc_launch_high"]),
               "overall": _ci(r["acc_all"], r["acc_all_low"], r["acc_all_high"]),
               "AUC new": _ci(*lc.t_interval(np.asarray(aucs)))}
        for other in ("margin", "random"):
            if other != strategy and other in last.index:
                row[f"AUC vs {other} (pts)"] = _ci(*lc.paired_auc_difference(curves, strategy, other), scale=1)
        reach = lc.labels_to_reach(summary[summary["strategy"] == strategy], target)
        row["labels to reach random's final new acc."] = "never" if not np.isfinite(reach) else f"{reach:.0f}"
        rows.append(row)
        if strategy == "policy":
            facts["policy_reach"] = reach
            if "margin" in last.index:
                facts["policy_vs_margin"] = lc.paired_auc_difference(curves, "policy", "margin")
    return pd.DataFrame(rows), facts


def label_share(curves: pd.DataFrame, strategy: str = "policy") -> tuple[np.ndarray, tuple[float, float, float]]:
    """Per seed, the share of random's labels `strategy` needs to reach that seed's random final new-intent
    accuracy (inf where it never does), and their mean with a 95% t interval over the seeds."""
    shares = []
    for _, g in curves.groupby("seed"):
        rand, other = g[g["strategy"] == "random"], g[g["strategy"] == strategy]
        if rand.empty or other.empty:
            continue
        last = rand.sort_values("round").iloc[-1]
        shares.append(lc.labels_to_reach(other, float(last["acc_new"])) / float(last["labels"]))
    shares = np.asarray(shares, float)
    return shares, lc.t_interval(shares) if np.isfinite(shares).all() else (float("inf"),) * 3


def goal_line(curves: pd.DataFrame, facts: dict, total: int) -> str:
    """The label-efficiency goal: the policy's mean curve against random's final, and the seed-paired share."""
    reach = facts.get("policy_reach", float("inf"))
    ratio = reach / total if np.isfinite(reach) else float("inf")
    shares, (m, lo, hi) = label_share(curves)
    per_seed = (f" Seed by seed (each against its own random run's final): {m:.0%} of random's labels, 95% t "
                f"interval [{lo:.0%}, {hi:.0%}] over {len(shares)} seeds" if np.isfinite(m) and len(shares) > 1
                else " Seed by seed: the policy never reaches random's final on some seed")
    return (f"- Goal: reach random sampling's final new-intent accuracy ({100 * facts['random_final_new']:.1f}% "
            f"after {total} labels) with at most half the labels. The policy's mean curve reaches it at "
            + (f"{reach:.0f} labels ({ratio:.0%} of random's)" if np.isfinite(reach) else "no point") + "."
            + per_seed + f": **{'met' if ratio <= 0.5 and hi <= 0.5 else 'not met'}**"
            + (f", by {100 * (m - 0.5):.0f} points of random's labels on the seed mean." if m > 0.5 else "."))


def markdown_doc(setup: lc.Setup, curves: pd.DataFrame, ft: pd.DataFrame, checks: pd.DataFrame, sanity: dict,
                 speed_result: dict, seconds: float, quick: bool, art: Path) -> str:
    summary = lc.summary(curves)
    table, facts = strategy_table(curves, summary)
    suffix = "-quick" if quick else ""
    base = [s for s in ORDER if s in set(curves["strategy"])]
    ablations = ["policy", *[s for s in lc.ABLATIONS if s in set(curves["strategy"])]]
    plot(summary, base, "acc_new", "New intents: accuracy vs labels (mean, 95% CI over seeds)",
         art / f"curve-new{suffix}.png")
    plot(summary, base, "acc_launch", "Launch intents: accuracy vs labels", art / f"curve-launch{suffix}.png")
    if len(ablations) > 1:
        plot(summary, ablations, "acc_new", "Ablations: policy without one component", art / f"ablations{suffix}.png")
    total = setup.rounds * setup.per_round
    vs_margin = facts.get("policy_vs_margin")
    ft_disp = ft.assign(**{
        "model acc": (100 * ft["model_acc"]).round(1), "anchor acc (same rows)": (100 * ft["anchor_acc"]).round(1),
        "model - anchor (pts, 95% CI)": [_ci(d, lo, hi) for d, lo, hi in zip(ft["diff"], ft["diff_low"],
                                                                             ft["diff_high"], strict=True)]})
    ft_disp = ft_disp[["model", "train_rows", "intents", "n_test", "model acc", "anchor acc (same rows)",
                       "model - anchor (pts, 95% CI)", "seconds"]]
    at_least = ft[ft["intents"].isin(["launch", "new"])]
    at_least = at_least[~((at_least["model"] == "bootstrap champion") & (at_least["intents"] == "new"))]
    ft_ok = bool((at_least["model_acc"] >= at_least["anchor_acc"]).all())
    lines = [
        "# Benchmarks", "",
        f"Written by `{'make bench-quick' if quick else 'make bench'}` (`.venv/bin/python -m bench"
        f"{' --quick' if quick else ''}`) on {dt.date.today().isoformat()}, {platform.machine()}, "
        f"{speed_result.get('torch_threads', '?')} torch threads; the whole run took {seconds / 60:.1f} min. "
        "Every number here is what that run printed; rerun the command to reproduce them "
        "(scenario, sampling and training are seeded; CPU kernels can still move a test prediction or two)."
        + (" **Quick mode is a smoke run of the whole bench at toy sizes (one training epoch, two seeds): its "
           "figures are not evidence.**" if quick else ""), "",
        "## 1. Learning new intents from few labels (BANKING77 drift scenario)", "",
        f"BANKING77 (77 intents; CC BY 4.0, Casanueva et al. 2020). Per seed, {setup.n_new_intents} intents are "
        f"held out of launch (the launch model sees {setup.launch_per_intent} examples of each other intent); the "
        f"rest of the train split is {setup.days} days of production traffic in which the new intents appear from "
        f"day {setup.new_from_day + 1} (more often on the app channel). {setup.rounds} rounds (windows of "
        f"{setup.days // setup.rounds} days), {setup.per_round} oracle labels per round, seeds {setup.seeds}. "
        "Accuracy is on BANKING77's fixed test split. Learner for the curves: logistic regression on cached frozen "
        "all-MiniLM-L6-v2 vectors (C by CV on the launch rows), refitted each round; the policy is the product's "
        "own `select_for_review`. The representative random draw (the regression set) is a fixed cost every "
        "strategy pays alike, so the budget here counts training picks only.", "",
        markdown.table(table), "",
        f"![new intents](bench/curve-new{suffix}.png)", "", f"![launch intents](bench/curve-launch{suffix}.png)", "",
    ]
    if len(ablations) > 1:
        lines += [f"![ablations](bench/ablations{suffix}.png)", ""]
    lines += ["### Acceptance and goal", ""]
    if vs_margin:
        m, lo, hi = vs_margin
        lines.append(f"- Policy vs margin, seed-paired difference in area under the new-intent curve: {m:+.2f} pts, "
                     f"95% CI [{lo:+.2f}, {hi:+.2f}]; the lower bound is {'above' if lo > -1 else 'NOT above'} "
                     f"-1 point: **{'met' if lo > -1 else 'not met'}**.")
    lines.append(goal_line(curves, facts, total))
    lines.append("- Selection variants measured against this goal, on these seeds and on fresh ones: section 13 "
                 "(`python -m bench.selection_variants`).")
    lines += ["", "## 2. The real recipe at the final budget, beside the anchor on the same rows", "",
              f"Seed {setup.seeds[0]}. Fine-tuning: transformers `Trainer`, the product recipe "
              "(hitl/learning/recipe.py). Anchor: frozen all-MiniLM-L6-v2, mean pooling, L2-normalised, "
              "logistic regression with C chosen by 3-fold CV (hitl/learning/anchor.py), on exactly the rows each "
              "model saw. Differences are paired on the test items (Agresti-Min 95% interval).", "",
              markdown.table(ft_disp), "",
              f"- Acceptance (challenger at or above the anchor on new and launch intents; bootstrap champion at "
              f"or above it on launch intents): **{'met' if ft_ok else 'not met'}** in this run.",
              f"- Anchor sanity check, MTEB protocol (8 examples of each of the 77 intents, full test set, mean of "
              f"{sanity['seeds']} draws): {100 * sanity['anchor_cv']:.1f}% with C by CV, "
              f"{100 * sanity['sklearn_default']:.1f}% with scikit-learn's defaults (MTEB reports 80.0% for "
              "all-MiniLM-L6-v2 on Banking77Classification).", "",
              estimate_section(checks),
              "## 4. Speed", "", speed.to_markdown(speed_result), ""]
    return "\n".join(lines)


def estimate_section(checks: pd.DataFrame, rerun: str | None = None, seconds: float | None = None) -> str:
    """Section 3: the report's estimate against an independent sample, per scenario and model."""
    chk = checks.assign(**{c: (100 * checks[c]).round(2) for c in ("report_estimate", "report_se",
                                                                    "independent_fail_rate", "independent_se",
                                                                    "difference", "tolerance")})
    when = (f"Re-run on its own on {rerun} (`python -m bench --estimates`, {seconds / 60:.0f} min: seed 0's policy "
            "picks, champion and challenger fine-tuned again); the other sections are from the full run.\n\n"
            if rerun else "")
    return "\n".join([
        "## 3. The report's production estimate vs an independent sample", "",
        when + "The regression set is drawn as the sampling flow draws it (per day, stratified by channel), labelled "
        "by two simulated reviewers with 5% noise (a third settles disagreements), and estimated with the report's "
        "own code (Hajek rates, Wilson intervals at the design-effective size; report_se is the interval's "
        "half-width over its z). An independent random sample of the same traffic is scored against the ground "
        "truth. Holds when |difference| <= 1.96 * sqrt(se1^2 + se2^2). Figures in %.", "",
        markdown.table(chk[["scenario", "model", "report_estimate", "report_se", "report_n",
                            "independent_fail_rate", "independent_se", "independent_n", "difference", "tolerance",
                            "within"]]), ""])


def _section_bounds(lines: list[str], number: int) -> tuple[int, int] | None:
    """Where section `number` ("## N. ...") starts and where the next "## " heading (or the end) is."""
    start = next((i for i, line in enumerate(lines) if line.startswith(f"## {number}. ")), None)
    if start is None:
        return None
    return start, next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))


def section_text(path: Path, number: int) -> str:
    """Section `number` of a Markdown file, up to the next "## " heading; "" when it has none."""
    lines = path.read_text().splitlines() if path.exists() else []
    bounds = _section_bounds(lines, number)
    return "\n".join(lines[slice(*bounds)]).rstrip("\n") + "\n" if bounds else ""


def replace_section(path: Path, number: int, text: str) -> None:
    """Rewrite section `number` ("## N. ...") of a Markdown file in place, up to the next "## " heading; append
    it when the file has no such section."""
    lines = path.read_text().splitlines()
    bounds = _section_bounds(lines, number)
    start, end = bounds or (len(lines), len(lines))
    head = [*lines[:start], ""] if bounds is None else lines[:start]
    rest = ["", *lines[end:]] if end < len(lines) else []
    path.write_text("\n".join([*head, *text.rstrip("\n").splitlines(), *rest]) + "\n")
