"""Champion vs challenger as estimates of production, by cohort, and the release decision.

The regression set is the representative random draw (weights 1/inclusion probability, strata = window x
sampling stratum), labelled by people. A prediction *fails* when it differs from the human label. Every row of
the report (overall, each value of each cohort column, each label group, each label) gets one design-based
inference (`hitl.evaluation.inference`): both fail rates, the paired change, its interval, its p-value and its
outcome all from one estimate and one variance, so they cannot disagree.

Levels: the overall row is the primary question, judged at the look's alpha (`inference.look_alpha`: repeated
evaluations of one challenger share `gate.alpha`). Cohort and label-group rows are guards, judged at Holm's
levels within their family; per-label rows are exploratory (unadjusted, never part of the decision).

The release decision: PASS when the overall row passes and no row FAILs; FAIL when the overall row or a guard
FAILs; INCONCLUSIVE otherwise. A guard that is INCONCLUSIVE for lack of data never blocks a PASS. Hard cases
(policy picks held out of training) get their own table: they are not production and never enter the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.evaluation import design, inference
from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.inference import FAIL, INCONCLUSIVE, PASS, level_text

LABEL, LABEL_GROUP = "label", "label_group"
PRIMARY, GUARD, EXPLORATORY = "primary", "guard", "exploratory"
NO_ROWS = "no rows yet"
BETTER, WORSE, NO_CHANGE = "better", "worse", "no significant change"


def domains(frame: pd.DataFrame, cohorts: list[str], label_groups: dict[str, list[str]], per_label: bool
            ) -> list[tuple[str, str, np.ndarray]]:
    """(cohort, value, row mask): overall, every value of every cohort column, label groups, labels."""
    out: list[tuple[str, str, np.ndarray]] = [(OVERALL, "all", np.ones(len(frame), dtype=bool))]
    for col in cohorts:
        for value in sorted(frame[col].astype(str).unique()):
            out.append((col, value, (frame[col].astype(str) == value).to_numpy()))
    for name, labels in label_groups.items():
        out.append((LABEL_GROUP, name, frame["label"].isin(labels).to_numpy()))
    if per_label:
        for value in sorted(frame["label"].astype(str).unique()):
            out.append((LABEL, value, (frame["label"].astype(str) == value).to_numpy()))
    return out


def role(cohort: str) -> str:
    return PRIMARY if cohort == OVERALL else EXPLORATORY if cohort == LABEL else GUARD


def strata_of(sample: pd.DataFrame) -> np.ndarray:
    """Design strata (window x sampling stratum), single-draw strata collapsed (design.SINGLETON_RULE)."""
    n = len(sample)
    windows = sample["window"].fillna("") if "window" in sample else pd.Series([""] * n)
    strata = sample["stratum"].fillna("") if "stratum" in sample else pd.Series([""] * n)
    return design.collapse_strata(list(windows), list(strata)) if n else np.zeros(0, np.int64)


def design_of(sample: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The random draw's design: weights (1 / inclusion probability) and strata (`strata_of`)."""
    w = 1.0 / sample["inclusion_prob"].to_numpy(float) if len(sample) else np.zeros(0)
    return w, strata_of(sample)


@dataclass(frozen=True)
class Settings:
    """What the decision is judged with: recorded before any label is read, printed in the report."""

    alpha: float  # gate.alpha, spread over the looks at one challenger
    look: int
    look_alpha: float
    margin: float
    power: float

    @classmethod
    def of(cls, cfg: Config, look: int = 1) -> Settings:
        g = cfg.gate
        return cls(g.alpha, look, inference.look_alpha(g.alpha, look), g.margin, g.power)

    def as_dict(self) -> dict[str, float | int]:
        return {"alpha": self.alpha, "look": self.look, "look_alpha": self.look_alpha, "margin": self.margin,
                "power": self.power}


@dataclass(frozen=True)
class Judged:
    """Every row's estimates, level, change interval and outcome; arrays over the outcomes' leading axes."""

    rows: list[inference.Paired]
    p: np.ndarray  # (..., k)
    level: np.ndarray
    low: np.ndarray
    high: np.ndarray
    outcome: np.ndarray


def judge(champion_fail: np.ndarray, challenger_fail: np.ndarray, weights: np.ndarray, strata: np.ndarray,
          masks: list[np.ndarray], roles: list[str], st: Settings) -> Judged:
    """The decision logic of the report, vectorised over draws: one paired inference per row mask, levels
    (primary and exploratory rows at the look's alpha, guards at Holm's levels within their family), the
    change's interval at that level and the row outcome. Outcomes have shape (..., n); results (..., k)."""
    rows = [inference.paired(champion_fail, challenger_fail, weights, strata, m, st.alpha) for m in masks]
    delta = np.stack([np.asarray(r.delta, float) for r in rows], axis=-1)
    var = np.stack([np.asarray(r.delta_var, float) for r in rows], axis=-1)
    p = inference.p_value(delta, var)
    level = np.where(np.isnan(p), np.nan, st.look_alpha)
    guard = np.array([r == GUARD for r in roles])
    if guard.any():
        level[..., guard] = inference.holm_levels(p[..., guard], st.look_alpha)
    with np.errstate(invalid="ignore"):
        low, high = inference.change_interval(delta, var, np.where(np.isnan(level), 0.5, level))
    empty = np.isnan(delta)
    low, high = np.where(empty, np.nan, low), np.where(empty, np.nan, high)
    outcome = np.where(empty, NO_ROWS, inference.outcome(low, high, st.margin))
    return Judged(rows, p, level, low, high, outcome)


def production_table(sample: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str], cfg: Config,
                     settings: Settings | None = None) -> pd.DataFrame:
    """One row per domain of the random draw `sample` (label, inclusion_prob, window, stratum, cohort columns).

    Columns: cohort, value, role, n, n_eff, both rates with intervals at the look's level, delta with its
    interval at the row's `level`, se, b, c, discordant_share, p, outcome (PASS/FAIL/INCONCLUSIVE, or "no rows
    yet"), verdict (better / worse / no significant change at that level), within_margin_worse, mdc (the change
    detectable with gate.power) and labels_needed (random labels in all, raw, that would decide an INCONCLUSIVE
    row at the next look, with the row's share of the draw and design effect as observed)."""
    st = settings or Settings.of(cfg)
    truth = sample["label"].to_numpy()
    champ, chall = np.asarray(champion_pred) != truth, np.asarray(challenger_pred) != truth
    w, strata = design_of(sample)
    doms = domains(sample, cfg.cohorts, cfg.evaluation.label_groups, cfg.evaluation.per_label)
    roles = [role(c) for c, _, _ in doms]
    j = judge(champ, chall, w, strata, [m for _, _, m in doms], roles, st)
    n_total = len(sample)
    next_alpha = inference.look_alpha(st.alpha, st.look + 1)
    rows = []
    for i, ((cohort, value, _), est) in enumerate(zip(doms, j.rows, strict=True)):
        row = {"cohort": cohort, "value": value, "role": roles[i], "n": est.n, "n_eff": est.n_eff}
        if est.n == 0:
            nan = math.nan
            rows.append({**row, **dict.fromkeys(
                ("champion", "champion_low", "champion_high", "challenger", "challenger_low", "challenger_high",
                 "delta", "delta_low", "delta_high", "se", "discordant_share", "p", "level", "mdc",
                 "labels_needed"), nan), "b": 0, "c": 0, "outcome": NO_ROWS, "verdict": NO_ROWS,
                 "within_margin_worse": False})
            continue
        lo_a, hi_a = inference.rate_interval(est.champion, est.champion_var, est.n, est.n_eff, st.look_alpha)
        lo_b, hi_b = inference.rate_interval(est.challenger, est.challenger_var, est.n, est.n_eff, st.look_alpha)
        var, level, low, high = float(est.delta_var), float(j.level[i]), float(j.low[i]), float(j.high[i])
        outcome = str(j.outcome[i])
        need = math.nan
        if outcome == INCONCLUSIVE:  # the next look's level, scaled like this row's (Holm) level
            total = inference.labels_to_decide(float(est.delta_var_linear), est.n_eff, est.n, n_total, st.margin,
                                               level * next_alpha / st.look_alpha, st.power, st.alpha)
            need = float(max(0, math.ceil(total - n_total))) if total == total else math.nan
        rows.append({**row, "champion": float(est.champion), "champion_low": float(lo_a), "champion_high": float(hi_a),
                     "challenger": float(est.challenger), "challenger_low": float(lo_b),
                     "challenger_high": float(hi_b), "delta": float(est.delta), "delta_low": low, "delta_high": high,
                     "se": math.sqrt(var), "discordant_share": float(est.discordance), "p": float(j.p[i]),
                     "level": level, "b": int(est.b), "c": int(est.c), "outcome": outcome,
                     "verdict": BETTER if high < 0 else WORSE if low > 0 else NO_CHANGE,
                     "within_margin_worse": outcome == PASS and low > 0,
                     "mdc": inference.detectable_change(var, level, st.power), "labels_needed": need})
    return pd.DataFrame(rows)


def latest_window(sample: pd.DataFrame) -> tuple[str, np.ndarray | None]:
    """The latest window of the draw and its rows; None when the draw has one window (the latest estimate is
    then the cumulative one)."""
    if sample.empty or "window" not in sample:
        return "", None
    latest = str(sample["window"].dropna().max())
    if sample["window"].nunique() <= 1:
        return latest, None
    return latest, (sample["window"] == latest).to_numpy()


def versus_baseline(sample: pd.DataFrame, challenger_pred: list[str], baseline_pred: list[str], st: Settings
                    ) -> dict[str, float]:
    """The baseline's estimated fail rate and challenger minus baseline, paired on the same draw, with the same
    inference and level as the report's overall row."""
    truth = sample["label"].to_numpy()
    base, chall = np.asarray(baseline_pred) != truth, np.asarray(challenger_pred) != truth
    est = inference.paired(base, chall, *design_of(sample), None, st.alpha)
    low, high = inference.rate_interval(est.champion, est.champion_var, est.n, est.n_eff, st.look_alpha)
    d_low, d_high = inference.change_interval(est.delta, est.delta_var, st.look_alpha)
    return {"estimate": float(est.champion), "low": float(low), "high": float(high), "n": est.n,
            "delta": float(est.delta), "delta_low": float(d_low), "delta_high": float(d_high),
            "level": st.look_alpha}


def hard_case_table(hard: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str], level: float = 0.05
                    ) -> pd.DataFrame:
    """Plain (unweighted) fail rates on the held-out policy picks, overall and by selection reason, with the
    same paired inference as the production rows (one stratum, weight 1): descriptive, never in the decision."""
    truth = hard["label"].to_numpy()
    champ, chall = np.asarray(champion_pred) != truth, np.asarray(challenger_pred) != truth
    frame = hard.assign(_all="all")
    rows = []
    for col, name in (("_all", OVERALL), ("selection_reason", "selection_reason")):
        for value in sorted(frame[col].astype(str).unique()):
            m = (frame[col].astype(str) == value).to_numpy()
            est = inference.paired(champ[m], chall[m], np.ones(int(m.sum())), np.zeros(int(m.sum()), np.int64),
                                   None, level)
            low, high = inference.change_interval(est.delta, est.delta_var, level)
            rows.append({"cohort": name, "value": value, "n": est.n, "champion": float(est.champion),
                         "challenger": float(est.challenger), "delta": float(est.delta), "delta_low": float(low),
                         "delta_high": float(high), "b": int(est.b), "c": int(est.c),
                         "p": float(inference.p_value(est.delta, est.delta_var))})
    return pd.DataFrame(rows)


def overall(table: pd.DataFrame) -> pd.Series:
    return table[table["cohort"] == OVERALL].iloc[0]


@dataclass
class GateResult:
    """The release decision, its reasons, and the rows that could not be judged yet (listed, never passed)."""

    outcome: str  # PASS / FAIL / INCONCLUSIVE
    reasons: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome == PASS


def release_outcome(primary: np.ndarray, guards: np.ndarray) -> np.ndarray:
    """PASS when the primary row passes and no guard FAILs; FAIL when either FAILs; INCONCLUSIVE otherwise.

    `primary` has shape (...), `guards` (..., m) of row outcomes: vectorised for the simulation tests."""
    primary, guards = np.asarray(primary), np.asarray(guards)
    fail = (primary == FAIL) | (guards == FAIL).any(axis=-1) if guards.size else primary == FAIL
    return np.where(fail, FAIL, np.where(primary == PASS, PASS, INCONCLUSIVE))


def row_name(r) -> str:
    return "overall" if r.cohort == OVERALL else f"{r.cohort}={r.value}"


def gate(table: pd.DataFrame, cfg: Config, settings: Settings | None = None) -> GateResult:
    """The release decision from the table's outcomes (see the module docstring)."""
    st = settings or Settings.of(cfg)
    if table.empty or overall(table)["n"] == 0:
        return GateResult(INCONCLUSIVE, ["the regression set is empty: nothing to compare (review the random "
                                         "draw)"], [], st.as_dict())
    judged = table[table["role"] != EXPLORATORY]
    o = overall(table)
    guards = judged[judged["role"] == GUARD]
    outcome = str(release_outcome(np.array(o["outcome"]), guards["outcome"].to_numpy(str)))
    m = _pts(st.margin)
    reasons = []
    for r in judged[judged["outcome"] == FAIL].itertuples():
        reasons.append(f"{row_name(r)}: worse by {_pts(r.delta)} ({level_text(r.level)} interval {_pts(r.delta_low)} "
                       f"to {_pts(r.delta_high)}, above the {m} margin); fail rate {r.champion:.1%} -> "
                       f"{r.challenger:.1%}")
    if o["outcome"] == PASS and outcome == PASS:
        note = " (worse, but within the margin)" if o["within_margin_worse"] else ""
        reasons.append(f"overall: the challenger is at most {_pts(o['delta_high'])} worse ({level_text(o['level'])} "
                       f"upper bound), within the {m} margin{note}; no cohort or label group is significantly "
                       "worse beyond the margin")
    elif o["outcome"] == INCONCLUSIVE:
        need = o["labels_needed"]
        more = f"; about {int(need)} more random labels would decide it" if need == need else ""
        reasons.append(f"overall: not decided: the change's {level_text(o['level'])} interval "
                       f"{_pts(o['delta_low'])} to {_pts(o['delta_high'])} reaches past the {m} margin without "
                       f"excluding 0{more}")
    inconclusive = [f"{row_name(r)} (n={r.n}: interval {_pts(r.delta_low)} to {_pts(r.delta_high)}"
                    + (f"; about {int(r.labels_needed)} more random labels" if r.labels_needed == r.labels_needed
                       else "") + ")"
                    for r in guards[guards["outcome"] == INCONCLUSIVE].itertuples()]
    inconclusive += [f"{row_name(r)} (no rows yet)" for r in guards[guards["outcome"] == NO_ROWS].itertuples()]
    return GateResult(outcome, reasons, inconclusive, st.as_dict())


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} pts" if np.isfinite(x) else "unbounded"


def agreement(annotations: pd.DataFrame) -> dict[str, float | int]:
    """Cohen's kappa between first and second annotations of doubly-labelled items."""
    from sklearn.metrics import cohen_kappa_score

    multi = annotations.sort_values("annotation_id").groupby("trace_id")["label"].agg(list)
    pairs = [labels[:2] for labels in multi if len(labels) >= 2]
    if not pairs:
        return {"pairs": 0, "kappa": float("nan"), "raw_agreement": float("nan")}
    first, second = zip(*pairs, strict=True)
    raw = float(np.mean([x == y for x, y in pairs]))
    kappa = float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else float("nan")
    return {"pairs": len(pairs), "kappa": kappa, "raw_agreement": raw}
