"""The report's first screen as one structure: the sentence a manager reads, the gate and the person's decision,
the change per cohort (the chart's rows), the cohorts that moved most and the trend across releases.

The Markdown, the HTML page, the Prefect artifact and the MLflow artifact all print this structure, so they
cannot show different numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hitl.evaluation import refusals
from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.inference import FAIL, PASS, holm_adjusted, level_text
from hitl.evaluation.regression import EXPLORATORY, GUARD, GateResult

MOVED_MOST = 5  # rows in "the cohorts that moved most"
CHART_ROWS = 16  # rows of the change chart at most (the overall row, FAIL rows, then the strongest evidence)
MOVED_NOTE = ("Exploratory: the rows whose change has the strongest evidence, ranked by their p-value adjusted by "
              "Holm's method within its family (cohort and label-group rows; per-label rows), so a long list of "
              "labels does not crowd the top by chance. They say where to look; the gate above decides.")


def row_label(cohort: str, value: str) -> str:
    return "overall" if cohort == OVERALL else f"{cohort.replace('_', ' ')}: {value}"


def _subject(cohort: str, value: str) -> str:
    return "the challenger overall" if cohort == OVERALL else f"the {cohort.replace('_', ' ')} {value}"


def points(x: float, signed: bool = True) -> str:
    return f"{100 * x:+.1f}" if signed else f"{100 * abs(x):.1f}"


def change_text(r) -> str:
    """A row's change in points with its interval at the row's level."""
    return f"{points(r.delta)} pts ({level_text(r.level)} interval {points(r.delta_low)} to {points(r.delta_high)})"


def _because(table: pd.DataFrame, gate: GateResult, o: pd.Series) -> str:
    """Why the gate says what it says, in words."""
    m = f"{points(gate.settings.get('margin', 0.02), False)} points"
    if gate.outcome == FAIL:
        failed = table[(table["role"] != EXPLORATORY) & (table["outcome"] == FAIL)].sort_values("delta_low",
                                                                                               ascending=False)
        r = next(failed.itertuples())
        more = f" (and {len(failed) - 1} more rows)" if len(failed) > 1 else ""
        return (f"{_subject(r.cohort, r.value)} is worse by {points(r.delta, False)} points "
                f"({level_text(r.level)} interval {points(r.delta_low)} to {points(r.delta_high)}), beyond the {m} "
                f"the margin allows{more}")
    if gate.outcome == PASS:
        hi = float(o["delta_high"])
        worst = (f"at worst the challenger is {points(hi, False)} points better" if hi <= 0 else
                 f"at worst the challenger is {points(hi, False)} points worse, within the {m} the margin allows")
        if hi <= 0:
            worst += f" (the margin allows {m} worse)"
        if o["within_margin_worse"]:
            worst += ": it is significantly worse, but within the margin"
        return f"{worst}, and no cohort or label group is worse beyond the margin"
    need = o["labels_needed"]
    more = f"; about {int(need)} more random labels would decide it" if need == need else ""
    return (f"the interval still reaches {points(o['delta_high'], False)} points worse, past the {m} the margin "
            f"allows, without ruling out no change{more}; a person decides")


def sentence(table: pd.DataFrame, gate: GateResult, champion_version: str, challenger_version: str) -> str:
    """What changed, how sure, what the gate says and why: one sentence."""
    o = table[table["cohort"] == OVERALL].iloc[0] if len(table) else None
    if o is None or o["n"] == 0:
        return (f"No labelled random-draw traces yet, so champion v{champion_version} and challenger "
                f"v{challenger_version} cannot be compared; the gate says {gate.outcome}.")
    return (f"On {o['n']} randomly drawn, human-labelled production traces, challenger v{challenger_version} gets "
            f"an estimated {o['challenger']:.1%} of traffic wrong instead of {o['champion']:.1%} for champion "
            f"v{champion_version}: {points(o['delta'])} points ({level_text(o['level'])} interval "
            f"{points(o['delta_low'])} to {points(o['delta_high'])}); the gate says {gate.outcome} because "
            f"{_because(table, gate, o)}.")


def adjusted_p(table: pd.DataFrame) -> pd.Series:
    """Holm-adjusted p of every guard and exploratory row within its family (NaN for the overall row)."""
    out = pd.Series(np.nan, index=table.index)
    for family in (GUARD, EXPLORATORY):
        rows = table.index[table["role"] == family]
        if len(rows):
            out[rows] = holm_adjusted(table.loc[rows, "p"].to_numpy(float))
    return out


def moved_most(table: pd.DataFrame, k: int = MOVED_MOST) -> pd.DataFrame:
    """The k cohort, label-group or label rows with a change (a discordant pair at least) ranked by adjusted
    p, then raw p, then the size of the change."""
    rows = table.assign(adjusted_p=adjusted_p(table), size=table["delta"].abs())
    rows = rows[(rows["role"] != "primary") & (rows["n"] > 0) & (rows["b"] + rows["c"] > 0)]
    rows = rows.sort_values(["adjusted_p", "p", "size"], ascending=[True, True, False], kind="stable")
    return rows.head(k).drop(columns="size").reset_index(drop=True)


def chart_rows(table: pd.DataFrame, limit: int = CHART_ROWS) -> pd.DataFrame:
    """The change chart's rows, in table order: overall and every guard row with data; past `limit`, the
    overall row, FAIL rows, then those with the strongest evidence."""
    rows = table[(table["role"] != EXPLORATORY) & (table["n"] > 0)].assign(adjusted_p=adjusted_p(table))
    rows = rows[np.isfinite(rows["delta_low"]) & np.isfinite(rows["delta_high"])]
    if len(rows) > limit:
        key = rows.assign(first=(rows["cohort"] != OVERALL) & (rows["outcome"] != FAIL))
        keep = key.sort_values(["first", "adjusted_p"], kind="stable").index[:limit]
        rows = rows.loc[sorted(keep)]
    return rows.assign(label=[f"{row_label(c, v)} (n={n})" for c, v, n in
                              zip(rows["cohort"], rows["value"], rows["n"], strict=True)]).reset_index(drop=True)


ROLLBACK = "rollback"  # a trend row's decision starts with it when @champion was rolled back there
TREND_ESTIMATES = tuple(f"{who}{suffix}" for who in ("champion", "challenger") for suffix in ("", "_low", "_high"))


def releases(evals: list[dict], rollbacks: list[dict]) -> pd.DataFrame:
    """Every earlier regression eval (dicts with `at`, a UTC Timestamp, versions, TREND_ESTIMATES, n, decision)
    and every rollback (promotion.rollbacks: at, from/to versions, by, reason; no estimates), oldest first,
    `at` shown as `when` (month, day and time; the date with its year once the rows span more than a year)."""
    rows = [{**e} for e in evals]
    for rb in rollbacks:
        at = pd.Timestamp(rb["at"]) if rb["at"] else pd.NaT
        at = at if pd.isna(at) else at.tz_convert("UTC") if at.tzinfo else at.tz_localize("UTC")
        rows.append({"at": at, "champion_version": rb["from_version"], "challenger_version": rb["to_version"],
                     **dict.fromkeys(TREND_ESTIMATES, np.nan), "n": 0,
                     "decision": f"{ROLLBACK} to v{rb['to_version']} by {rb['by']}: {rb['reason']}"})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows).sort_values("at", kind="stable", na_position="first")
    at = pd.to_datetime(out.pop("at"), utc=True)
    fmt = "%m-%d %H:%M" if at.dt.year.nunique() <= 1 else "%Y-%m-%d"  # quarters over years: the year matters
    return out.assign(when=at.dt.strftime(fmt).fillna("?"))[["when", *out.columns]].reset_index(drop=True)


def trend_rows(trend: pd.DataFrame | None, table: pd.DataFrame, champion_version: str, challenger_version: str,
               decision: str, refused: pd.DataFrame | None = None) -> pd.DataFrame:
    """Earlier evals (oldest first) and this report's overall estimate as the last row, with both models' overall
    refusal rates where there is a fallback label (`refused`: refusals.table); empty without earlier evals (one
    point is no trend: the tables below have it)."""
    earlier = trend if trend is not None else pd.DataFrame()
    o = table[table["cohort"] == OVERALL]
    if earlier.empty or o.empty or o.iloc[0]["n"] == 0:
        return earlier.reset_index(drop=True)
    o = o.iloc[0]
    now = {"when": "this report", "champion_version": champion_version, "challenger_version": challenger_version,
           **{c: float(o[c]) for c in ("champion", "champion_low", "champion_high", "challenger", "challenger_low",
                                       "challenger_high")}, **refusals.overall_rates(refused), "n": int(o["n"]),
           "decision": decision}
    return pd.concat([earlier, pd.DataFrame([now])], ignore_index=True)  # Summary.trend_display orders the columns


# refusals.METRICS name -> the trend column showing it (champion → challenger)
REFUSAL_TREND = {refusals.METRICS[refusals.IN_SCOPE]: "in scope refused", refusals.METRICS[refusals.OUT_OF_SCOPE]:
                 "out-of-scope recall"}


def _rate(v: float) -> str:
    return "—" if v != v else f"{v:.1%}"


@dataclass(frozen=True)
class Summary:
    sentence: str
    gate: str  # PASS / FAIL / INCONCLUSIVE
    decision: str  # the person's decision (or what awaits one)
    margin: float
    level: str  # the overall row's level, as printed
    changes: pd.DataFrame  # chart_rows
    moved: pd.DataFrame  # moved_most
    trend: pd.DataFrame  # trend_rows
    guard_rows: int = 0  # guard rows with data (the chart may show fewer)
    reasons: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)  # what the gate does not weigh but a decider must see

    @property
    def announcement(self) -> str:
        """The sentence and its cautions: what a notification of this release says."""
        return " ".join([self.sentence, *self.cautions])

    def moved_display(self) -> list[dict[str, str]]:
        """The ranking as printed, identical in every format."""
        return [{"rank": str(i), "row": row_label(r.cohort, r.value), "n": str(r.n), "change": change_text(r),
                 "adjusted p": f"{r.adjusted_p:.2g}", "outcome": ("exploratory: " if r.role == EXPLORATORY else "")
                 + r.outcome} for i, r in enumerate(self.moved.itertuples(), 1)]

    def trend_display(self) -> pd.DataFrame:
        """The trend table as printed: estimates as they are (shown as percentages), and where any release had a
        fallback label, each overall refusal rate as "champion → challenger" in one column (REFUSAL_TREND)."""
        shown = self.trend.drop(columns=[c for c in refusals.TREND_COLUMNS if c in self.trend.columns])
        for name, title in REFUSAL_TREND.items():
            cols = [f"{who}_{name}" for who in ("champion", "challenger")]
            if all(c in self.trend.columns for c in cols) and self.trend[cols].notna().any().any():
                at = shown.columns.get_loc("n") if "n" in shown.columns else len(shown.columns)
                shown.insert(at, title, [
                    f"{_rate(a)} → {_rate(b)}" if a == a or b == b else "—"
                    for a, b in zip(self.trend[cols[0]], self.trend[cols[1]], strict=True)])
        return shown

    def changes_display(self) -> list[dict[str, str]]:
        return [{"row": r.label, "change": change_text(r), "outcome": r.outcome} for r in self.changes.itertuples()]

    @property
    def chart_caption(self) -> str:
        shown = len(self.changes) - int((self.changes["cohort"] == OVERALL).sum())
        part = f" ({shown} of {self.guard_rows} cohort rows: FAIL rows and the strongest evidence)" \
            if shown < self.guard_rows else ""
        return (f"Challenger minus champion fail rate, in points, per cohort{part}: the dot is the estimate, the "
                f"line its interval at the row's level ({self.level} overall; cohort and label-group rows at "
                f"Holm's level); left of 0 the challenger is better; the dashed line is the "
                f"+{points(self.margin, False)}-point margin.")

    def as_dict(self) -> dict:
        """JSON-ready, for the MLflow artifact."""
        def records(df: pd.DataFrame) -> list[dict]:
            plain = [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()}
                     for r in df.to_dict("records")]
            return [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in plain]

        return {"sentence": self.sentence, "gate": self.gate, "gate_reasons": self.reasons, "cautions": self.cautions,
                "decision": self.decision, "margin": self.margin, "level": self.level,
                "changes": records(self.changes.drop(columns=["label"], errors="ignore")),
                "moved_most": self.moved_display(), "moved_most_rows": records(self.moved),
                "trend": records(self.trend)}


def baseline_caution(baseline: dict | None, challenger_version: str) -> str | None:
    """A caution when the challenger is significantly worse than the strongest simple baseline fitted on its own
    training rows (challenger minus baseline interval above 0): the gate compares with the champion only, so such a
    release can pass, and the fine-tune, not the data, is then what fell short."""
    if not baseline or "delta_low" not in baseline or not baseline["delta_low"] > 0:
        return None
    return (f"Challenger v{challenger_version} is significantly worse than the strongest simple baseline "
            f"({baseline['name']}) fitted on the same training rows: {points(baseline['delta'])} points of traffic "
            f"wrong ({level_text(baseline['level'])} paired interval {points(baseline['delta_low'])} to "
            f"{points(baseline['delta_high'])}, on the same {baseline['n']} traces). The gate compares with the "
            f"champion only; the fine-tune fell short of what these labels can teach, so check the training "
            f"recipe before relying on this release.")


def summarize(table: pd.DataFrame, gate: GateResult, champion_version: str, challenger_version: str,
              decision: str, trend: pd.DataFrame | None = None, refused: pd.DataFrame | None = None,
              baseline: dict | None = None) -> Summary:
    o = table[table["cohort"] == OVERALL]
    level = level_text(float(o.iloc[0]["level"])) if len(o) and o.iloc[0]["n"] > 0 else \
        level_text(gate.settings.get("look_alpha", 0.05))
    guards = int(((table["role"] == GUARD) & (table["n"] > 0)).sum()) if len(table) else 0
    return Summary(sentence(table, gate, champion_version, challenger_version), gate.outcome, decision,
                   float(gate.settings.get("margin", 0.02)), level,
                   chart_rows(table) if len(table) else pd.DataFrame(),
                   moved_most(table) if len(table) else pd.DataFrame(),
                   trend_rows(trend, table, champion_version, challenger_version, decision, refused), guards,
                   list(gate.reasons), [c for c in [baseline_caution(baseline, challenger_version)] if c])

