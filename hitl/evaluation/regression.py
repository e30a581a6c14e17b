"""Champion vs challenger as estimates of production, by cohort, and the release gate.

The regression set is the representative random draw (weights 1/inclusion probability), labelled by people.
A prediction *fails* when it differs from the human label. For every domain of estimation (overall, each
value of each cohort column, each label group, each label):
- both production fail rates as Hajek estimates with Wilson intervals at the Kish effective sample size;
- the paired difference (challenger - champion) with an Agresti-Min interval, the discordant pairs (b, c),
  the McNemar mid-p and its Holm-adjusted value across every row of the report;
- the minimum detectable change at that size (paired design, exact mid-p power, alpha / rows, power 0.8).
A domain is conclusive when its detectable change is at most `gate.max_detectable_change`, or when its data
settle the question anyway (a significant change, or an upper bound already within the margin); otherwise it
is "too small to judge", shown with the random labels it would need. The gate asks for non-inferiority: in
every conclusive domain, the upper bound of the paired difference must be at most `gate.margin`, and the
overall domain must be conclusive. Hard cases (policy picks held out of training) get their own table: they are
not production and are never mixed into the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.evaluation import estimates, paired
from hitl.evaluation.estimates import OVERALL

LABEL, LABEL_GROUP = "label", "label_group"
TOO_SMALL, BETTER, WORSE, NO_CHANGE = "too small to judge", "better", "worse", "no significant change"


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


def _row(cohort: str, value: str, champ: np.ndarray, chall: np.ndarray, w: np.ndarray, alpha: float) -> dict:
    a = estimates.hajek_rate(champ, w, alpha) if len(w) else None
    b = estimates.hajek_rate(chall, w, alpha) if len(w) else None
    nan = float("nan")
    diff, lo, hi = paired.paired_difference(champ, chall, w, alpha) if len(w) else (nan, nan, nan)
    nb, nc = paired.discordant(champ, chall)
    psi = float(w[champ != chall].sum() / w.sum()) if len(w) else nan
    return {
        "cohort": cohort, "value": value, "n": int(len(w)), "n_eff": a.n_eff if a else 0.0,
        "champion": a.value if a else nan, "champion_low": a.low if a else nan, "champion_high": a.high if a else nan,
        "challenger": b.value if b else nan, "challenger_low": b.low if b else nan,
        "challenger_high": b.high if b else nan,
        "delta": diff, "delta_low": lo, "delta_high": hi, "b": nb, "c": nc, "discordant_share": psi,
        "p": paired.mcnemar_midp(nb, nc),
    }


def production_table(sample: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str], cfg: Config
                     ) -> pd.DataFrame:
    """One row per domain of the random draw `sample` (label, inclusion_prob, cohort columns)."""
    g = cfg.gate
    truth = sample["label"].to_numpy()
    champ, chall = np.asarray(champion_pred) != truth, np.asarray(challenger_pred) != truth
    w = 1.0 / sample["inclusion_prob"].to_numpy(float)
    ev = cfg.evaluation
    rows = [_row(c, v, champ[m], chall[m], w[m], g.alpha)
            for c, v, m in domains(sample, cfg.cohorts, ev.label_groups, ev.per_label)]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_adjusted"] = paired.holm(table["p"].where(table["n"] > 0))
    alpha_row = g.alpha / max(1, int((table["n"] > 0).sum()))  # Holm's strictest step
    share = table["n_eff"] / max(float(table.loc[table["cohort"] == OVERALL, "n_eff"].iloc[0]), 1e-9)
    mdc, need = [], []
    for r, sh in zip(table.itertuples(), share, strict=True):
        psi = r.discordant_share if r.discordant_share == r.discordant_share else 0.0
        m = paired.min_detectable_change(int(round(r.n_eff)), psi, alpha_row, g.power)
        mdc.append(m)
        if m <= g.max_detectable_change:
            need.append(0)
        else:
            n_req = paired.connor_n(g.max_detectable_change, psi, alpha_row, g.power)  # a planning figure
            more = max(0, n_req - int(round(r.n_eff)))
            need.append(int(np.ceil(more / sh)) if sh > 0 else -1)  # random labels in all, at this share
    table["mdc"], table["labels_needed"] = mdc, need
    table["non_inferior"] = table["delta_high"] <= g.margin
    significant = table["p_adjusted"] < g.alpha
    # conclusive: large enough to detect the configured change, or the data already settle it either way
    table["judged"] = (table["mdc"] <= g.max_detectable_change) | significant | table["non_inferior"]
    table["verdict"] = np.select(
        [~table["judged"], significant & (table["delta"] < 0), significant & (table["delta"] > 0)],
        [TOO_SMALL, BETTER, WORSE], NO_CHANGE)
    return table


def hard_case_table(hard: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str]) -> pd.DataFrame:
    """Plain (unweighted) fail rates on the held-out policy picks, overall and by selection reason."""
    truth = hard["label"].to_numpy()
    champ, chall = np.asarray(champion_pred) != truth, np.asarray(challenger_pred) != truth
    frame = hard.assign(_all="all")
    rows = []
    for col, name in (("_all", OVERALL), ("selection_reason", "selection_reason")):
        for value in sorted(frame[col].astype(str).unique()):
            m = (frame[col].astype(str) == value).to_numpy()
            rows.append(_row(name, value, champ[m], chall[m], np.ones(int(m.sum())), 0.05))
    return pd.DataFrame(rows)


def overall(table: pd.DataFrame) -> pd.Series:
    return table[table["cohort"] == OVERALL].iloc[0]


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)


def gate(table: pd.DataFrame, cfg: Config) -> GateResult:
    """Non-inferiority in every domain that can be judged; the overall domain must be judgeable."""
    g = cfg.gate
    if table.empty or overall(table)["n"] == 0:
        return GateResult(False, ["the regression set is empty: nothing to compare (review the random draw)"])
    small = table[~table["judged"]]
    too_small = [f"{r.cohort}={r.value} (n={r.n}, detectable change {_pts(r.mdc)} > {_pts(g.max_detectable_change)}"
                 f"; needs about {r.labels_needed} more random labels)" for r in small.itertuples()]
    o = overall(table)
    reasons = []
    if not o["judged"]:
        reasons.append(f"overall is too small to judge: detectable change {_pts(o['mdc'])} > "
                       f"{_pts(g.max_detectable_change)}; about {o['labels_needed']} more random labels needed")
    for r in table[table["judged"] & ~table["non_inferior"]].itertuples():
        reasons.append(f"{r.cohort}={r.value}: challenger may be worse by up to {_pts(r.delta_high)} "
                       f"(95% upper bound; margin {_pts(g.margin)}); fail rate {r.champion:.1%} -> {r.challenger:.1%}")
    if reasons:
        return GateResult(False, reasons, too_small)
    judged = int(table["judged"].sum())
    return GateResult(True, [f"non-inferior in all {judged} domains with enough data: every upper 95% bound of "
                             f"the change is at most {_pts(g.margin)}"], too_small)


def _pts(x: float) -> str:
    return f"{100 * x:.1f} pts" if np.isfinite(x) else "unbounded"


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
