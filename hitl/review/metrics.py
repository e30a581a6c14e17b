"""Reviewer metrics: throughput, backlog, time to resolution, agreement (Krippendorff's alpha for the rotating
pool, Cohen's kappa per fixed pair and per label), each reviewer's agreement with adjudicated labels, and the
reviewers' agreement with the champion with and without its suggestions on the form (anchoring).

Pure functions over the review store's read models (`ReviewStore.annotations`, `items`, `batches`,
`resolutions`), so they are tested on scripted batches without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import numpy as np
import pandas as pd

from hitl.evaluation.estimates import newcombe_difference, wilson_interval
from hitl.review import forms, gold
from hitl.vocabulary import RANDOM

WITH_SUGGESTIONS = "with suggestions (policy items)"
BLIND_POLICY = "blind (policy items: the blind share)"
BLIND_RANDOM = "blind (random draw)"
CHAMPION_COLUMNS = ["shown", "annotations", "agree", "agreement", "low", "high"]
NO_DIFFERENCE = (float("nan"), float("nan"), float("nan"))


@dataclass
class ReviewMetrics:
    backlog: int  # items waiting for a label
    backlog_oldest_h: float  # age of the oldest waiting item (hours)
    backlog_median_h: float
    resolution_p50_h: float  # enqueue -> resolved, resolved items
    resolution_p90_h: float
    items_per_hour: float  # all reviewers, over the time their submitted batches were open
    alpha: float  # Krippendorff's alpha (nominal) over every item with two or more labels
    alpha_items: int
    reviewers: pd.DataFrame = field(default_factory=pd.DataFrame)  # per reviewer
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # Cohen's kappa per fixed pair
    per_label: pd.DataFrame = field(default_factory=pd.DataFrame)  # kappa of "label vs the rest" per label
    champion: pd.DataFrame = field(default_factory=pd.DataFrame)  # agreement with the champion by what was shown
    suggestion_effect: tuple[float, float, float] = NO_DIFFERENCE  # with minus without suggestions, 95% CI

    def as_mlflow_metrics(self) -> dict[str, float]:
        out = {"review_backlog": float(self.backlog), "review_backlog_oldest_h": self.backlog_oldest_h,
               "review_resolution_p50_h": self.resolution_p50_h, "review_resolution_p90_h": self.resolution_p90_h,
               "review_items_per_hour": self.items_per_hour, "review_krippendorff_alpha": self.alpha,
               "review_suggestion_effect": self.suggestion_effect[0]}
        rate = self.champion.set_index("shown")["agreement"] if len(self.champion) else pd.Series(dtype=float)
        out |= {"review_agrees_with_champion_suggested": rate.get(WITH_SUGGESTIONS, np.nan),
                "review_agrees_with_champion_blind": rate.get(BLIND_POLICY, np.nan)}
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}


def _hours(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() / 3600.0


def _utc(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    return s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")


def krippendorff_alpha(annotations: pd.DataFrame) -> tuple[float, int]:
    """Nominal alpha over items with at least two labels (reviewers x items, missing where not labelled)."""
    multi = annotations.groupby("trace_id").filter(lambda g: len(g) >= 2)
    if multi.empty or multi["label"].nunique() < 2:
        return float("nan"), int(multi["trace_id"].nunique())
    import krippendorff

    codes = {lab: i for i, lab in enumerate(sorted(multi["label"].unique()))}
    table = multi.assign(code=multi["label"].map(codes)).pivot_table(index="reviewer", columns="trace_id",
                                                                     values="code", aggfunc="first")
    value = krippendorff.alpha(reliability_data=table.to_numpy(dtype=float), level_of_measurement="nominal")
    return float(value), int(table.shape[1])


def pair_kappas(annotations: pd.DataFrame, min_items: int = 1) -> pd.DataFrame:
    """Cohen's kappa for every pair of reviewers that labelled at least `min_items` common items."""
    from sklearn.metrics import cohen_kappa_score

    wide = annotations.pivot_table(index="trace_id", columns="reviewer", values="label", aggfunc="first")
    rows = []
    for a, b in combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if len(both) < min_items:
            continue
        same = both[a] == both[b]
        kappa = (float(cohen_kappa_score(both[a], both[b])) if len(set(both[a]) | set(both[b])) > 1
                 else float("nan"))
        rows.append({"reviewer_a": a, "reviewer_b": b, "items": len(both), "agreement": float(same.mean()),
                     "kappa": kappa})
    return pd.DataFrame(rows, columns=["reviewer_a", "reviewer_b", "items", "agreement", "kappa"])


def label_kappas(annotations: pd.DataFrame) -> pd.DataFrame:
    """Per label, Cohen's kappa of "this label or not" over the first two labels of each double-labelled item
    (which labels reviewers confuse)."""
    from sklearn.metrics import cohen_kappa_score

    firsts = annotations.sort_values("annotation_id").groupby("trace_id").head(2)
    pairs = firsts.groupby("trace_id")["label"].agg(list)
    pairs = pairs[pairs.map(len) == 2]
    rows = []
    for lab in sorted(set(annotations["label"])):
        a = np.array([p[0] == lab for p in pairs], dtype=bool)
        b = np.array([p[1] == lab for p in pairs], dtype=bool)
        used = int((a | b).sum())
        kappa = float(cohen_kappa_score(a, b)) if len(pairs) and len(set(a) | set(b)) > 1 else float("nan")
        rows.append({"label": lab, "items_with_label": used, "kappa": kappa})
    return pd.DataFrame(rows, columns=["label", "items_with_label", "kappa"])


def champion_agreement(annotations: pd.DataFrame, items: pd.DataFrame
                       ) -> tuple[pd.DataFrame, tuple[float, float, float]]:
    """How often reviewers chose the champion's prediction, by what the form showed of it (`items["shown"]`,
    `forms.shown_as`), each share with its 95% Wilson interval; and the difference with minus without
    suggestions on policy items, with Newcombe's interval (SUGGESTION_NOTE says how to read it). Random-draw items
    are production traffic, not the policy's hard cases: shown apart, never in the difference. Counts annotations
    (an item labelled twice counts twice) of items with a champion prediction; items shown with the guess only are
    left out."""
    empty = pd.DataFrame(columns=CHAMPION_COLUMNS)
    if "shown" not in items or annotations.empty or items.empty:
        return empty, NO_DIFFERENCE
    known = items[items["prediction"].notna() & (items["prediction"].astype(str) != "")]
    group = np.select([known["shown"] == forms.SUGGESTED,
                       (known["shown"] == forms.BLIND) & (known["selection_reason"] != RANDOM),
                       known["shown"] == forms.BLIND], [WITH_SUGGESTIONS, BLIND_POLICY, BLIND_RANDOM], "")
    shown = pd.DataFrame({"trace_id": known["trace_id"], "shown": group, "prediction": known["prediction"]})
    joined = annotations[["trace_id", "label"]].merge(shown[shown["shown"] != ""], on="trace_id")
    rows = []
    for name in (WITH_SUGGESTIONS, BLIND_POLICY, BLIND_RANDOM):
        g = joined[joined["shown"] == name]
        if len(g):
            agree = int((g["label"] == g["prediction"]).sum())
            rows.append([name, len(g), agree, agree / len(g), *wilson_interval(agree / len(g), len(g))])
    table = pd.DataFrame(rows, columns=CHAMPION_COLUMNS) if rows else empty
    by = table.set_index("shown")
    if not {WITH_SUGGESTIONS, BLIND_POLICY} <= set(by.index):
        return table, NO_DIFFERENCE
    s, b = by.loc[WITH_SUGGESTIONS], by.loc[BLIND_POLICY]
    return table, newcombe_difference(int(s["agree"]), int(s["annotations"]), int(b["agree"]), int(b["annotations"]))


def compute(annotations: pd.DataFrame, items: pd.DataFrame, batches: pd.DataFrame,
            resolutions: pd.DataFrame, now: datetime, gold_answers: pd.DataFrame | None = None,
            gold_policy: tuple[int, float] = (20, 0.8)) -> ReviewMetrics:
    """Everything `hitl metrics` shows. `items`: trace_id, status, created_at, resolved_at (and, for the agreement
    with the champion, selection_reason, prediction and shown: `from_store` adds it); `batches`: id,
    status, reviewer, created_at, submitted_at; `resolutions`: trace_id, kind, label, created_at;
    `gold_answers`: reviewer, correct (cumulative gold accuracy, checked with `gold_policy`)."""
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    waiting = items[items["status"] == "queued"]
    ages = _hours(now_ts - _utc(waiting["created_at"])) if len(waiting) else pd.Series(dtype=float)
    done = items[items["status"] == "resolved"].dropna(subset=["resolved_at"])
    ttr = _hours(_utc(done["resolved_at"]) - _utc(done["created_at"])) if len(done) else pd.Series(dtype=float)
    sub = batches[batches["status"] == "submitted"].dropna(subset=["submitted_at"])
    open_h = _hours(_utc(sub["submitted_at"]) - _utc(sub["created_at"])) if len(sub) else pd.Series(dtype=float)
    per_batch = annotations.groupby("batch_id").size()
    alpha, alpha_items = krippendorff_alpha(annotations)

    # the decided label of every adjudicated or corrected item: what each reviewer is measured against
    final = resolutions.drop_duplicates("trace_id", keep="last").set_index("trace_id")["label"] \
        if len(resolutions) else pd.Series(dtype=object)
    rows = []
    for who, g in annotations.groupby("reviewer"):
        mine = sub[sub["reviewer"] == who]
        hours = float(open_h[mine.index].sum()) if len(mine) else 0.0
        judged = g[g["trace_id"].isin(final.index)]
        agree = int((judged["label"].to_numpy() == final.reindex(judged["trace_id"]).to_numpy()).sum())
        lo, hi = wilson_interval(agree / len(judged), len(judged)) if len(judged) else (float("nan"), float("nan"))
        answers = gold_answers[gold_answers["reviewer"] == who] if gold_answers is not None else []
        chk = gold.check(str(who), len(answers), int(answers["correct"].sum()) if len(answers) else 0, *gold_policy)
        rows.append({"reviewer": who, "labels": len(g), "batches": int(g["batch_id"].nunique()),
                     "gold_answers": chk.answers, "gold_accuracy": chk.accuracy, "gold_low": chk.low,
                     "gold_high": chk.high, "flagged": not chk.ok,
                     "items_per_hour": len(g) / hours if hours > 0 else float("nan"),
                     "adjudicated": len(judged), "agrees_with_adjudication": agree / len(judged) if len(judged)
                     else float("nan"), "agreement_low": lo, "agreement_high": hi})
    total_h = float(open_h[sub["id"].isin(per_batch.index).to_numpy()].sum()) if len(sub) else 0.0
    champion, effect = champion_agreement(annotations, items)
    return ReviewMetrics(
        backlog=len(waiting), backlog_oldest_h=float(ages.max()) if len(ages) else 0.0,
        backlog_median_h=float(ages.median()) if len(ages) else 0.0,
        resolution_p50_h=float(ttr.quantile(0.5)) if len(ttr) else float("nan"),
        resolution_p90_h=float(ttr.quantile(0.9)) if len(ttr) else float("nan"),
        items_per_hour=len(annotations) / total_h if total_h > 0 else float("nan"),
        alpha=alpha, alpha_items=alpha_items, reviewers=pd.DataFrame(rows),
        pairs=pair_kappas(annotations), per_label=label_kappas(annotations), champion=champion,
        suggestion_effect=effect)


def from_store(store, cfg, now: datetime) -> ReviewMetrics:
    """`compute` over everything a `ReviewStore` holds, with the config's gold policy; what each item's form showed
    is `forms.shown_as` under the current config (a changed `review.blind_share` reclassifies past items)."""
    items = store.items()
    items["shown"] = [forms.shown_as(it, cfg) for it in items.to_dict("records")]
    return compute(store.annotations(), items, store.batches(), store.resolutions(), now,
                   store.gold_answers(), (cfg.review.gold_min_answers, cfg.review.gold_min_accuracy))


AGREES_WITH_ADJUDICATION = "agrees with adjudication, on disputed items only (95% CI)"
SUGGESTION_NOTE = ("The blind share of policy items is drawn by a stable hash, so the two policy rows differ only "
                   "in what the form showed: a difference above 0 is the suggestions' pull on reviewers (anchoring, "
                   "or help: gold accuracy tells which).")
ADJUDICATION_NOTE = ("Agreement with adjudication counts only disputed (adjudicated) or corrected items, where "
                     "reviewers disagreed or a label was wrong: it reads low by construction and is not a reviewer's "
                     "accuracy (gold accuracy is).")


def markdown(m: ReviewMetrics) -> str:
    """The metrics as a Markdown page (Prefect artifact, `hitl metrics --markdown`)."""
    def f(v: float, pct: bool = False) -> str:
        return "—" if not np.isfinite(v) else (f"{v:.0%}" if pct else f"{v:.2f}")

    lines = ["## Reviewer metrics", "",
             f"- Backlog: {m.backlog} items waiting (oldest {f(m.backlog_oldest_h)} h, "
             f"median {f(m.backlog_median_h)} h)",
             f"- Time to resolution: p50 {f(m.resolution_p50_h)} h, p90 {f(m.resolution_p90_h)} h",
             f"- Throughput: {f(m.items_per_hour)} labels per hour of open batches",
             f"- Krippendorff's alpha (nominal): {f(m.alpha)} on {m.alpha_items} items with two or more labels", "",
             "| reviewer | labels | batches | labels/hour | gold answers | gold accuracy (95% CI) | adjudicated "
             f"| {AGREES_WITH_ADJUDICATION} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in m.reviewers.itertuples():
        ci = (f"{f(r.agrees_with_adjudication, True)} [{f(r.agreement_low, True)}, {f(r.agreement_high, True)}]"
              if r.adjudicated else "—")
        acc = (f"{f(r.gold_accuracy, True)} [{f(r.gold_low, True)}, {f(r.gold_high, True)}]"
               + (" **below the bar: labels sent to adjudication**" if r.flagged else "")) if r.gold_answers else "—"
        lines.append(f"| {r.reviewer} | {r.labels} | {r.batches} | {f(r.items_per_hour)} | {r.gold_answers} | "
                     f"{acc} | {r.adjudicated} | {ci} |")
    if len(m.pairs):
        lines += ["", "| pair | common items | raw agreement | Cohen's kappa |", "|---|---|---|---|"]
        lines += [f"| {p.reviewer_a} / {p.reviewer_b} | {p.items} | {f(p.agreement, True)} | {f(p.kappa)} |"
                  for p in m.pairs.itertuples()]
    if len(m.champion):
        d, lo, hi = m.suggestion_effect
        lines += ["", "| form showed | labels | chose the champion's prediction (95% CI) |", "|---|---|---|"]
        lines += [f"| {r.shown} | {r.annotations} | {f(r.agreement, True)} [{f(r.low, True)}, {f(r.high, True)}] |"
                  for r in m.champion.itertuples()]
        lines += ["", f"Suggestions' effect (with minus blind, policy items): {_pts(d)} (95% CI {_pts(lo)} to "
                  f"{_pts(hi)}). {SUGGESTION_NOTE}"]
    return "\n".join([*lines, "", ADJUDICATION_NOTE])


def _pts(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{100 * v:+.1f} pts"
