"""Regression statistics: champion vs challenger fail rate by cohort on the same human-labelled hold-out.

A prediction *fails* when it differs from the human label. Per cohort value: n, both fail rates with
Wilson 95% intervals, the delta, and an exact McNemar test on the paired outcomes (same items).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from hitl.config import Config
from hitl.schemas import CohortRegression

OVERALL = "overall"


def wilson(fails: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    lo, hi = proportion_confint(fails, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def mcnemar_p(champ_fail: np.ndarray, chall_fail: np.ndarray) -> float:
    """Exact McNemar p-value on paired fail/pass outcomes (1.0 when there are no discordant pairs)."""
    b = int(np.sum(champ_fail & ~chall_fail))
    c = int(np.sum(~champ_fail & chall_fail))
    if b + c == 0:
        return 1.0
    table = [[0, b], [c, 0]]
    return float(mcnemar(table, exact=True).pvalue)


def cohort_table(holdout: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str],
                 cohorts: list[str]) -> pd.DataFrame:
    """One CohortRegression row for the overall hold-out and for each value of each cohort column."""
    truth = holdout["label"].to_numpy()
    a = np.asarray(champion_pred) != truth
    b = np.asarray(challenger_pred) != truth
    groups: list[tuple[str, str, np.ndarray]] = [(OVERALL, "all", np.ones(len(truth), dtype=bool))]
    for col in [*cohorts, "label"]:
        for value in sorted(holdout[col].astype(str).unique()):
            groups.append((col, value, (holdout[col].astype(str) == value).to_numpy()))
    rows = []
    for cohort, value, mask in groups:
        n = int(mask.sum())
        fa, fb = int(a[mask].sum()), int(b[mask].sum())
        ra, rb = (fa / n, fb / n) if n else (float("nan"), float("nan"))
        (alo, ahi), (blo, bhi) = wilson(fa, n), wilson(fb, n)
        rows.append({
            "cohort": cohort, "value": value, "n": n,
            "champion_fail_rate": ra, "challenger_fail_rate": rb, "delta": rb - ra,
            "champion_ci_low": alo, "champion_ci_high": ahi,
            "challenger_ci_low": blo, "challenger_ci_high": bhi,
            "mcnemar_p": mcnemar_p(a[mask], b[mask]),
        })
    return CohortRegression.validate(pd.DataFrame(rows), lazy=True)


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)


def gate(table: pd.DataFrame, cfg: Config) -> GateResult:
    """Release gate: the overall fail rate must not rise by more than gate.max_overall_increase, and no
    cohort (of at least gate.min_cohort_size items) may rise significantly (McNemar p < 0.05)."""
    reasons: list[str] = []
    overall = table[table["cohort"] == OVERALL].iloc[0]
    if overall["n"] == 0:
        return GateResult(False, ["the hold-out is empty: nothing to compare"])
    if overall["delta"] > cfg.gate.max_overall_increase:
        reasons.append(f"overall fail rate rose {overall['champion_fail_rate']:.1%} -> "
                       f"{overall['challenger_fail_rate']:.1%} (allowed +{cfg.gate.max_overall_increase:.1%})")
    sized = table[(table["cohort"] != OVERALL) & (table["n"] >= cfg.gate.min_cohort_size)]
    worse = sized[(sized["delta"] > 0) & (sized["mcnemar_p"] < 0.05)]
    for _, r in worse.iterrows():
        reasons.append(f"{r['cohort']}={r['value']} fail rate rose significantly "
                       f"{r['champion_fail_rate']:.1%} -> {r['challenger_fail_rate']:.1%} (p={r['mcnemar_p']:.3f})")
    return GateResult(not reasons, reasons or ["overall fail rate did not rise; no cohort rose significantly"])


def agreement(annotations: pd.DataFrame) -> dict[str, float | int]:
    """Cohen's kappa between first and second annotations of doubly-labelled items."""
    multi = annotations.sort_values("annotation_id").groupby("trace_id")["label"].agg(list)
    pairs = [labels[:2] for labels in multi if len(labels) >= 2]
    if not pairs:
        return {"pairs": 0, "kappa": float("nan"), "raw_agreement": float("nan")}
    first, second = zip(*pairs, strict=True)
    raw = float(np.mean([x == y for x, y in pairs]))
    kappa = float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else float("nan")
    return {"pairs": len(pairs), "kappa": kappa, "raw_agreement": raw}
