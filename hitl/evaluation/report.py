"""The post-retrain eval delta report, in the order a manager asks. The first screen (`summary.Summary`): one
sentence (what changed, how sure, what the gate says and why), the gate and the person's decision, the change
per cohort with its interval, the cohorts that moved most, the trend across releases (with both models' overall
refusal rates where a release had a fallback label). Below: how it was
measured, every table, with a fallback label how often each model refuses (`refusals`), the hard cases, the
gate's reasons and the lineage. Markdown (Prefect/MLflow artifact) and a self-contained HTML page (charts in
`report_charts`), both printed from the same `Summary`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

from hitl import markdown
from hitl.evaluation import design, refusals
from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.inference import FAIL, INCONCLUSIVE, PASS, level_text
from hitl.evaluation.regression import EXPLORATORY, GUARD, NO_ROWS, GateResult
from hitl.evaluation.report_charts import change_png, chart_png, heading, trend_png
from hitl.evaluation.summary import MOVED_NOTE, REFUSAL_TREND, TREND_ESTIMATES, Summary, summarize
from hitl.vocabulary import CAUTION

REFUSALS_HEADING = "Saying “I don't know” (the fallback label)"
HARD_NOTE = ("Hard cases are traces the sampler picked because they were uncertain, novel or flagged, held out of "
             "training. They are not production: their fail rates are far above it by design.")
LEGEND = {PASS: "the change's upper bound is within the margin: the challenger is not worse than the margin "
                "allows (it may still be significantly worse, within the margin: then it says so)",
          FAIL: "the challenger is significantly worse, by more than the margin may allow",
          INCONCLUSIVE: "the interval still reaches past the margin without excluding 0: more random labels would "
                        "decide it (the row says how many); never promoted automatically"}


def estimate_note(settings: dict) -> str:
    """How every figure of the report was estimated, at the level it was judged."""
    look, a = settings.get("look", 1), settings.get("look_alpha", 0.05)
    return (f"Fail rates are estimates of production: the regression set is a stratified random sample of each "
            f"window's traffic (the windows of the production horizon, `evaluation.horizon_days`), weighted by "
            f"1/inclusion probability (Hajek). Variances come from Taylor "
            f"linearisation with strata = window x sampling stratum ({design.SINGLETON_RULE}). Rate intervals are "
            f"Wilson's at the design-effective sample size; the change (challenger minus champion, paired on the "
            f"same traces) has a Wald interval on its linearised variance, floored so few discordant pairs never "
            f"give a narrow interval, and its p-value comes from the same statistic. Intervals are "
            f"{level_text(a)}: alpha {settings.get('alpha', 0.05):g} is spread over repeated evaluations of one "
            f"challenger (this is look {look}, alpha {a:.3g}). Cohort and label-group rows are guards, their "
            f"change judged at Holm's level within the family (the row's level column); per-label rows are "
            f"exploratory and never decide. Margin {100 * settings.get('margin', 0.02):.1f} pts; labels needed at "
            f"power {settings.get('power', 0.8):g}.")


@dataclass
class ReportContext:
    title: str
    dataset: str
    champion_version: str
    challenger_version: str
    table: pd.DataFrame  # regression.production_table
    gate: GateResult
    decision: str = "pending"
    latest: pd.DataFrame | None = None  # the same table on the latest window only
    latest_window: str = ""
    hard: pd.DataFrame | None = None  # regression.hard_case_table
    baseline: dict | None = None  # name, estimate, low, high, n, delta, delta_low, delta_high, level
    trend: pd.DataFrame | None = None  # earlier reports: when, champion/challenger versions and estimates
    lineage: dict[str, str] = field(default_factory=dict)
    generated_at: str = ""
    latest_min_n: int = 30  # the latest-window column shows a row only from this many draws
    calibration: str = ""  # how anything fitted on labels was kept off the verdict rows
    refusals: pd.DataFrame | None = None  # with a fallback label: refusals.table

    def __post_init__(self) -> None:
        self.generated_at = self.generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    @property
    def level(self) -> str:
        return level_text(self.gate.settings.get("look_alpha", 0.05))

    def summary(self) -> Summary:
        """The first screen: every format prints this one structure."""
        return summarize(self.table, self.gate, self.champion_version, self.challenger_version, self.decision,
                         self.trend, self.refusals, self.baseline)


def _pct(v: float, signed: bool = False) -> str:
    if v != v:
        return "—"
    return f"{100 * v:+.1f} pts" if signed else f"{v:.1%}"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if lo != lo:
        return "—"
    return f"{100 * lo:+.1f} to {100 * hi:+.1f}" if signed else f"{100 * lo:.1f}–{100 * hi:.1f}%"


def _with_ci(v: float, lo: float, hi: float) -> str:
    return f"{_pct(v)} ({_ci(lo, hi)})" if v == v else "—"


def _ceil_pts(x: float) -> str:
    """A detectable change in points, rounded up so it never reads below what the data detect."""
    return f"{math.ceil(1000 * x - 1e-9) / 10:.1f} pts"


def verdict_text(r) -> str:
    """The row's outcome in words; its direction (better / worse) only when the row's interval excludes 0."""
    if r.outcome == NO_ROWS:
        return NO_ROWS
    p = f"p={r.p:.2g}" + (" at the Holm level" if r.role == GUARD else "")
    if r.outcome == PASS:
        text = ("PASS: worse, but within the margin" if r.within_margin_worse else
                f"PASS: {r.verdict}") + (f" ({p})" if r.verdict != "no significant change" else "")
    elif r.outcome == FAIL:
        text = f"FAIL: worse beyond the margin ({p})"
    else:
        parts = [f"detects changes of {_ceil_pts(r.mdc)} or more"] if r.mdc == r.mdc else []
        if r.labels_needed == r.labels_needed:
            parts.append(f"about {int(r.labels_needed)} more random labels would decide it")
        if r.verdict != "no significant change":
            parts.append(f"{r.verdict} ({p})")
        text = "INCONCLUSIVE" + (f": {'; '.join(parts)}" if parts else "")
    return f"exploratory: {text}" if r.role == EXPLORATORY else text


def _row_level(r) -> str:
    if r.level != r.level:
        return "—"
    return level_text(r.level) + (" (Holm)" if r.role == GUARD else " (exploratory)" if r.role == EXPLORATORY
                                  else "")


def display_rows(ctx: ReportContext) -> pd.DataFrame:
    """One printable row per domain: before -> after with intervals, the change at the row's level, the outcome,
    and the latest window beside the cumulative estimate where its row has at least `latest_min_n` draws."""
    latest = ctx.latest.set_index(["cohort", "value"]) if ctx.latest is not None and len(ctx.latest) else None
    lv = ctx.level
    rows = []
    for r in ctx.table.itertuples():
        row = {"cohort": r.cohort, "value": r.value, "n": r.n,
               f"champion ({lv} CI)": _with_ci(r.champion, r.champion_low, r.champion_high),
               f"challenger ({lv} CI)": _with_ci(r.challenger, r.challenger_low, r.challenger_high),
               "change (CI at the row's level)": f"{_pct(r.delta, True)} ({_ci(r.delta_low, r.delta_high, True)})",
               "level": _row_level(r), "b / c": f"{r.b} / {r.c}", "outcome": verdict_text(r)}
        if latest is not None:
            key = (r.cohort, r.value)
            shown = key in latest.index and latest.loc[key, "n"] >= ctx.latest_min_n
            row[f"latest window {ctx.latest_window} (n ≥ {ctx.latest_min_n})"] = (
                f"{_pct(latest.loc[key, 'champion'])} → {_pct(latest.loc[key, 'challenger'])} "
                f"(n={latest.loc[key, 'n']})") if shown else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _refusal_group(r) -> str:
    if r.cohort == refusals.ALL:
        return "all"
    if r.cohort == refusals.NEW_LABELS:
        return f"{refusals.NEW_LABELS} ({r.value})"
    return f"{r.cohort.replace('_', ' ')}: {r.value}"


def refusal_rows(ctx: ReportContext) -> pd.DataFrame:
    """The refusal table as printed: in-scope traffic refused wrongly, out-of-scope traffic refused rightly."""
    lv = ctx.level
    what = {refusals.IN_SCOPE: "in scope: refused wrongly", refusals.OUT_OF_SCOPE: "out of scope: refused (recall)"}
    return pd.DataFrame([{
        "traffic": what[r.traffic], "rows": _refusal_group(r), "n": r.n,
        f"champion refused ({lv} CI)": _with_ci(r.champion, r.champion_low, r.champion_high) if r.n else NO_ROWS,
        f"challenger refused ({lv} CI)": _with_ci(r.challenger, r.challenger_low, r.challenger_high) if r.n
        else NO_ROWS,
        f"change ({lv} CI)": f"{_pct(r.delta, True)} ({_ci(r.delta_low, r.delta_high, True)})" if r.n else NO_ROWS,
        "p": f"{r.p:.2g}" if r.p == r.p else "—"} for r in ctx.refusals.itertuples()])


def headline(ctx: ReportContext) -> str:
    """The report's first sentence: what changed, how sure, what the gate says and why."""
    return ctx.summary().sentence


def _hard_rows(hard: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"reason": r.value, "n": r.n, "champion": _pct(r.champion), "challenger": _pct(r.challenger),
                          "change": _pct(r.delta, True), "b / c": f"{r.b} / {r.c}", "p": f"{r.p:.3g}"}
                         for r in hard.itertuples()])


def _baseline_line(ctx: ReportContext) -> str | None:
    b = ctx.baseline
    if not b:
        return None
    rate = _with_ci(b["estimate"], b["low"], b["high"])
    paired = ""
    if "delta" in b:
        paired = (f"challenger minus baseline {_pct(b['delta'], True)} ({level_text(b['level'])} paired interval "
                  f"{_ci(b['delta_low'], b['delta_high'], True)})")
    return (f"Strongest simple baseline ({b['name']}): estimated fail rate {rate} on the same {b['n']} traces; "
            f"{paired}.")


def _settings_line(ctx: ReportContext) -> str:
    st = ctx.gate.settings
    return (f"Gate settings (recorded before any label was read): margin {100 * st.get('margin', 0):.1f} pts, "
            f"alpha {st.get('alpha', 0):g} over all looks (look {st.get('look', 1)}: {st.get('look_alpha', 0):.3g}), "
            f"power {st.get('power', 0):g}.")


def _first_screen_md(s: Summary) -> list[str]:
    lines = [f"**{s.sentence}**", "", f"Gate: **{s.gate}** · Decision: **{s.decision}**", ""]
    lines += [line for c in s.cautions for line in (f"{CAUTION}{c}", "")]
    if len(s.changes):
        lines += ["## Change per cohort", "", f"_{s.chart_caption}_", "",
                  markdown.table(pd.DataFrame(s.changes_display())), ""]
    lines += ["## Cohorts that moved most (exploratory)", "", f"_{MOVED_NOTE}_", ""]
    lines += [markdown.table(pd.DataFrame(s.moved_display())) if len(s.moved) else
              "No cohort moved: no row has a discordant pair.", ""]
    if len(s.trend):
        lines += ["## Across releases", "", markdown.table(s.trend_display(), pct_columns=TREND_ESTIMATES), ""]
    return lines


def to_markdown(ctx: ReportContext, s: Summary | None = None) -> str:
    """The first screen (`Summary`), then how it was measured, every table, hard cases, the gate, lineage."""
    s = s or ctx.summary()
    rows = display_rows(ctx)
    lines = [f"# {ctx.title}", "", *_first_screen_md(s), "## How this was measured", "",
             f"_{estimate_note(ctx.gate.settings)}_", ""]
    if ctx.calibration:
        lines += [f"_Calibration: {ctx.calibration}_", ""]
    if base := _baseline_line(ctx):
        lines += [base, ""]
    for cohort, part in rows.groupby("cohort", sort=False):
        lines += [f"## {heading(cohort)}", "", markdown.table(part.drop(columns="cohort")), ""]
    if ctx.refusals is not None and len(ctx.refusals):
        lines += [f"## {REFUSALS_HEADING}", "", f"_{refusals.NOTE}_", "", markdown.table(refusal_rows(ctx)), ""]
    if ctx.hard is not None and len(ctx.hard):
        lines += ["## Hard cases (not production)", "", f"_{HARD_NOTE}_", "", markdown.table(_hard_rows(ctx.hard)), ""]
    lines += [f"## Gate: {ctx.gate.outcome}", *[f"- {r}" for r in ctx.gate.reasons]]
    if ctx.gate.inconclusive:
        lines += ["", "Not decided yet (guards: listed, never passed, never blocking):",
                  *[f"- {r}" for r in ctx.gate.inconclusive]]
    lines += ["", _settings_line(ctx), "", "Legend: " + "; ".join(f"**{k}**: {v}" for k, v in LEGEND.items()), ""]
    if ctx.lineage:
        lines += ["## Lineage", "", *[f"- {k}: {v}" for k, v in ctx.lineage.items()], ""]
    lines.append(f"Dataset `{ctx.dataset}`. Generated {ctx.generated_at}.")
    return "\n".join(lines)


HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ ctx.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;color:#1f2933}
h1{font-size:1.5em;margin:.2em 0 .4em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #cbd2d9;padding:4px 8px;font-size:13px}th{background:#f0f4f8}img{max-width:100%;height:auto}
.note{color:#52606d;font-size:14px}.pass{color:#0b7a3e}.fail{color:#b42318}.inconclusive{color:#8a6d00}
.headline{font-size:19px;line-height:1.45;margin:.3em 0;max-width:60em}.decision{font-size:16px;margin:.5em 0}
.caution{border-left:4px solid #b42318;padding:.3em .7em;background:#fef3f2;max-width:60em}
figure{margin:.5em 0}#change-chart{max-height:460px;width:auto}figcaption{margin-top:.2em}
</style></head><body>
<h1>{{ ctx.title }}</h1>
<p id="headline" class="headline">{{ s.sentence }}</p>
<p id="decision" class="decision">Gate: <strong class="{{ s.gate | lower }}">{{ s.gate }}</strong> ·
Decision: <strong>{{ s.decision }}</strong></p>
{% for c in s.cautions %}<p class="caution"><strong>Caution:</strong> {{ c }}</p>{% endfor %}
{% if change_png %}<figure id="change"><img id="change-chart" alt="change per cohort with intervals"
src="data:image/png;base64,{{ change_png }}"><figcaption class="note">{{ s.chart_caption }}</figcaption></figure>
{% endif %}
<h2>Cohorts that moved most <span class="note">(exploratory)</span></h2><p class="note">{{ moved_note }}</p>
{% if moved %}<table id="moved"><tr>{% for c in moved[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in moved %}<tr>{% for c in r %}<td class="{{ css(c, r) }}">{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}
</table>{% else %}<p id="moved">No cohort moved: no row has a discordant pair.</p>{% endif %}
{% if trend_png %}<h2>Across releases</h2><img alt="trend" src="data:image/png;base64,{{ trend_png }}">{% endif %}
{% if refusal_trend %}<table id="refusal-trend"><tr>{% for c in refusal_trend[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in refusal_trend %}<tr>{% for c in r %}<td>{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>How this was measured</h2>
<p class="note">{{ estimate_note }}</p>
{% if ctx.calibration %}<p class="note">Calibration: {{ ctx.calibration }}</p>{% endif %}
{% if baseline %}<p>{{ baseline }}</p>{% endif %}
{% for cohort, rows, png in sections %}
<h2>{{ heading(cohort) }}</h2>
{% if png %}<img alt="fail rate by {{ cohort }}" src="data:image/png;base64,{{ png }}">{% endif %}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in columns %}<td class="{{ css(c, r) }}">{{ r[c] }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% if refused %}<h2>{{ refusals_heading }}</h2><p class="note">{{ refusals_note }}</p>
<table id="refusals"><tr>{% for c in refused[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in refused %}<tr>{% for c in r %}<td>{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% if hard %}<h2>Hard cases (not production)</h2><p class="note">{{ hard_note }}</p>
<table><tr>{% for c in hard[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in hard %}<tr>{% for c in r %}<td>{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>Gate: <span class="{{ ctx.gate.outcome | lower }}">{{ ctx.gate.outcome }}</span></h2>
<ul>{% for r in ctx.gate.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
{% if ctx.gate.inconclusive %}<p>Not decided yet (guards: listed, never passed, never blocking):</p>
<ul>{% for r in ctx.gate.inconclusive %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
<p class="note">{{ settings_line }}</p>
<dl class="note">{% for k, v in legend.items() %}<dt class="{{ k | lower }}">{{ k }}</dt><dd>{{ v }}</dd>
{% endfor %}</dl>
{% if ctx.lineage %}<h2>Lineage</h2><ul>{% for k, v in ctx.lineage.items() %}<li>{{ k }}: {{ v }}</li>
{% endfor %}</ul>{% endif %}
<p class="note">Dataset <code>{{ ctx.dataset }}</code>. Generated {{ ctx.generated_at }}.</p>
</body></html>"""


def _css(column: str, row: dict) -> str:
    if column != "outcome":
        return ""
    v = str(row[column]).removeprefix("exploratory: ")
    return next((k.lower() for k in (PASS, FAIL, INCONCLUSIVE) if v.startswith(k)), "")


def to_html(ctx: ReportContext, s: Summary | None = None) -> str:
    """The same order and numbers as `to_markdown`, with charts, as one self-contained page."""
    s = s or ctx.summary()
    rows = display_rows(ctx)
    sections = []
    for cohort, part in rows.groupby("cohort", sort=False):
        png = None if cohort == OVERALL else chart_png(ctx.table, cohort, ctx.level)
        sections.append((cohort, part.drop(columns="cohort").to_dict("records"), png))
    columns = [c for c in rows.columns if c != "cohort"]
    hard = _hard_rows(ctx.hard).to_dict("records") if ctx.hard is not None and len(ctx.hard) else []
    refused = refusal_rows(ctx).to_dict("records") if ctx.refusals is not None and len(ctx.refusals) else []
    trend = s.trend_display() if len(s.trend) else pd.DataFrame()
    said = [c for c in REFUSAL_TREND.values() if c in trend.columns]  # the chart shows fail rates only
    refusal_trend = trend[["when", "champion_version", "challenger_version", *said]].to_dict("records") if said \
        else []
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(HTML).render(
        ctx=ctx, s=s, change_png=change_png(s.changes, s.margin, s.level) if len(s.changes) else None,
        moved=s.moved_display(), moved_note=MOVED_NOTE, trend_png=trend_png(s.trend, ctx.level) if len(s.trend)
        else None, sections=sections, columns=columns, heading=heading, css=_css,
        estimate_note=estimate_note(ctx.gate.settings), hard=hard, hard_note=HARD_NOTE, refused=refused,
        refusal_trend=refusal_trend,
        refusals_heading=REFUSALS_HEADING, refusals_note=refusals.NOTE,
        baseline=_baseline_line(ctx), settings_line=_settings_line(ctx), legend=LEGEND)


def write(ctx: ReportContext, out_dir: Path, stem: str, s: Summary | None = None) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.html` from one `Summary`; also `latest.html`/`latest.md` next to them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s = s or ctx.summary()
    md, html = to_markdown(ctx, s), to_html(ctx, s)
    paths = (out_dir / f"{stem}.md", out_dir / f"{stem}.html")
    for p, text in zip(paths, (md, html), strict=True):
        p.write_text(text)
        (out_dir / f"latest{p.suffix}").write_text(text)
    return paths
