"""How often each model says "I don't know", as estimates of production (models with a fallback label).

Both errors of abstention are already fails in the release table (an in-scope trace refused, an out-of-scope
trace answered with an intent); this table says which of the two moved, and for whom:

- **refused in scope** (false abstention): the share of traffic people labelled with an intent that the model
  answered with the fallback label. Over all in-scope traffic, each cohort value, each label group, and the
  labels the champion did not know (newly learnt intents have few reviewed rows and are refused more).
- **out-of-scope recall**: the share of traffic people labelled with the fallback label that the model refused.

Each row is the release table's inference (`regression.judge`) on another outcome (refused, 0/1) and domain:
Hajek rates over the random draw with Wilson intervals at the design-effective size, the paired change with its
floored Wald interval and p-value, at the look's level. Descriptive: the rows explain the fail rates,
they never decide the release, so no multiplicity adjustment is made.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.evaluation import inference, regression

IN_SCOPE, OUT_OF_SCOPE = "in scope", "out of scope"
ALL, NEW_LABELS = "all", "labels new to the challenger"
NAMED = 5  # the new labels' row names this many of them
# each kind of traffic's overall rate as an eval run's metric `<model>_<name>` (MLflow) and a trend column
METRICS = {IN_SCOPE: "refused_in_scope", OUT_OF_SCOPE: "out_of_scope_recall"}
TREND_COLUMNS = tuple(f"{who}_{name}" for name in METRICS.values() for who in ("champion", "challenger"))
NOTE = ("Refused = answered with the fallback label. In scope: traffic people labelled with an intent, refused "
        "wrongly (false abstention). Out of scope: traffic people labelled with the fallback label, refused "
        "rightly (recall). Both errors are fails in the tables above; these rows say which one moved. Estimates "
        "of production from the same random draw and design, at the report's level; descriptive, never part of "
        "the decision.")
COLUMNS = ["traffic", "cohort", "value", "n", "n_eff", "champion", "champion_low", "champion_high", "challenger",
           "challenger_low", "challenger_high", "delta", "delta_low", "delta_high", "p"]


def domains(sample: pd.DataFrame, fallback: str, cohorts: list[str], label_groups: dict[str, list[str]],
            new_labels: list[str]) -> list[tuple[str, str, str, np.ndarray]]:
    """(traffic, cohort, value, mask): in-scope traffic overall, by cohort value, by label group and for the
    labels new to the challenger; out-of-scope traffic overall and by cohort value."""
    label = sample["label"].astype(str)
    inside = (label != fallback).to_numpy()

    def by_cohort(traffic: str, rows: np.ndarray) -> list[tuple[str, str, str, np.ndarray]]:
        return [(traffic, ALL, ALL, rows)] + [
            (traffic, col, value, rows & (sample[col].astype(str) == value).to_numpy())
            for col in cohorts for value in sorted(sample.loc[rows, col].astype(str).unique())]

    out = by_cohort(IN_SCOPE, inside)
    for name, labels in label_groups.items():
        group = [x for x in labels if x != fallback]
        if group:
            out.append((IN_SCOPE, regression.LABEL_GROUP, name, label.isin(group).to_numpy()))
    new = sorted(x for x in new_labels if x != fallback)
    if new:
        named = ", ".join(new[:NAMED]) + (f" and {len(new) - NAMED} more" if len(new) > NAMED else "")
        out.append((IN_SCOPE, NEW_LABELS, named, label.isin(new).to_numpy()))
    return out + by_cohort(OUT_OF_SCOPE, ~inside)


def table(sample: pd.DataFrame, champion_pred: list[str], challenger_pred: list[str], fallback: str,
          new_labels: list[str], cfg: Config, settings: regression.Settings) -> pd.DataFrame:
    """Every domain's row (COLUMNS) over the random draw `sample` (as `regression.production_table` reads it);
    predictions as judged (abstention cross-fitted), one per draw row. The change's interval and p come from
    `regression.judge` with every row exploratory (the look's level, no Holm family); rates at the same level."""
    a = (np.asarray(champion_pred, dtype=object) == fallback).astype(float)
    b = (np.asarray(challenger_pred, dtype=object) == fallback).astype(float)
    w, strata = regression.design_of(sample)
    doms = domains(sample, fallback, cfg.cohorts, cfg.evaluation.label_groups, new_labels)
    j = regression.judge(a, b, w, strata, [m for *_, m in doms], [regression.EXPLORATORY] * len(doms), settings)
    rows = []
    for i, ((traffic, cohort, value, _), est) in enumerate(zip(doms, j.rows, strict=True)):
        row = {"traffic": traffic, "cohort": cohort, "value": value, "n": est.n, "n_eff": est.n_eff}
        if est.n == 0:
            rows.append({**row, **dict.fromkeys(COLUMNS[5:], math.nan)})
            continue
        for who, rate, var in (("champion", est.champion, est.champion_var),
                               ("challenger", est.challenger, est.challenger_var)):
            lo, hi = inference.rate_interval(rate, var, est.n, est.n_eff, settings.look_alpha)
            row |= {who: float(rate), f"{who}_low": float(lo), f"{who}_high": float(hi)}
        rows.append({**row, "delta": float(est.delta), "delta_low": float(j.low[i]),
                     "delta_high": float(j.high[i]), "p": float(j.p[i])})
    return pd.DataFrame(rows, columns=COLUMNS)


def overall(refusals: pd.DataFrame, traffic: str) -> pd.Series | None:
    """The row over all in-scope or all out-of-scope traffic (None when it has no draws)."""
    rows = refusals[(refusals["traffic"] == traffic) & (refusals["cohort"] == ALL)]
    return rows.iloc[0] if len(rows) and rows.iloc[0]["n"] > 0 else None


def overall_rates(refusals: pd.DataFrame | None) -> dict[str, float]:
    """Both models' overall rates by METRICS name (`challenger_refused_in_scope`, ...), where there are draws."""
    if refusals is None or refusals.empty:
        return {}
    return {f"{who}_{name}": float(r[who]) for traffic, name in METRICS.items()
            if (r := overall(refusals, traffic)) is not None for who in ("champion", "challenger")}
