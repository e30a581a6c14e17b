"""The post-retrain eval delta report, in the order a manager asks: what is the production fail rate before
and after, per cohort, is the change real or too small to judge, how has it moved across releases; then the
hard cases, the gate and the lineage. Markdown (Prefect/MLflow artifact) and a self-contained HTML page.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, select_autoescape

from hitl import markdown
from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.regression import TOO_SMALL, GateResult, overall

ESTIMATE_NOTE = ("Fail rates are estimates of production: the regression set is a stratified random sample of "
                 "each window's traffic, weighted by 1/inclusion probability (Hajek), with 95% Wilson intervals at "
                 "the Kish effective sample size. The change is paired (same traces, both models; Agresti-Min "
                 "interval); p is McNemar mid-p, Holm-adjusted across every row of this report.")
HARD_NOTE = ("Hard cases are traces the sampler picked because they were uncertain, novel or flagged, held out of "
             "training. They are not production: their fail rates are far above it by design.")


def heading(cohort: str) -> str:
    return "Overall" if cohort == OVERALL else f"By {cohort.replace('_', ' ')}"


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
    baseline: dict | None = None  # name, estimate, low, high, n (the anchor on the regression set)
    trend: pd.DataFrame | None = None  # earlier reports: when, champion/challenger versions and estimates
    lineage: dict[str, str] = field(default_factory=dict)
    generated_at: str = ""

    def __post_init__(self) -> None:
        self.generated_at = self.generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


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


def verdict_text(r) -> str:
    if r.verdict == TOO_SMALL:
        need = f"; ~{r.labels_needed} more random labels" if r.labels_needed > 0 else ""
        return f"too small to judge (detects ≥{100 * r.mdc:.0f} pts{need})" if np.isfinite(r.mdc) else \
            f"too small to judge{need}"
    return f"{r.verdict} (p={r.p_adjusted:.2g})"


def display_rows(ctx: ReportContext) -> pd.DataFrame:
    """One printable row per domain: before -> after with intervals, the change, the verdict, and the latest
    window beside the cumulative estimate when the regression set spans several windows."""
    latest = ctx.latest.set_index(["cohort", "value"]) if ctx.latest is not None and len(ctx.latest) else None
    rows = []
    for r in ctx.table.itertuples():
        row = {"cohort": r.cohort, "value": r.value, "n": r.n,
               "champion (95% CI)": _with_ci(r.champion, r.champion_low, r.champion_high),
               "challenger (95% CI)": _with_ci(r.challenger, r.challenger_low, r.challenger_high),
               "change (95% CI)": f"{_pct(r.delta, True)} ({_ci(r.delta_low, r.delta_high, True)})",
               "b / c": f"{r.b} / {r.c}", "verdict": verdict_text(r)}
        if latest is not None:
            key = (r.cohort, r.value)
            row[f"latest window {ctx.latest_window}"] = (
                f"{_pct(latest.loc[key, 'champion'])} → {_pct(latest.loc[key, 'challenger'])} "
                f"(n={latest.loc[key, 'n']})") if key in latest.index else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def headline(ctx: ReportContext) -> str:
    o = overall(ctx.table)
    before = _with_ci(o["champion"], o["champion_low"], o["champion_high"])
    after = _with_ci(o["challenger"], o["challenger_low"], o["challenger_high"])
    return (f"Estimated production fail rate {before} for champion v{ctx.champion_version} -> {after} for "
            f"challenger v{ctx.challenger_version}: {_pct(o['delta'], True)} "
            f"({_ci(o['delta_low'], o['delta_high'], True)}), {verdict_text(o)}, on {o['n']} random-sample traces; "
            f"gate {'PASS' if ctx.gate.passed else 'FAIL'}")


def _hard_rows(hard: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"reason": r.value, "n": r.n, "champion": _pct(r.champion), "challenger": _pct(r.challenger),
                          "change": _pct(r.delta, True), "b / c": f"{r.b} / {r.c}", "p (mid-p)": f"{r.p:.3g}"}
                         for r in hard.itertuples()])


def _baseline_line(ctx: ReportContext) -> str | None:
    b = ctx.baseline
    if not b:
        return None
    o = overall(ctx.table)
    rate = _with_ci(b["estimate"], b["low"], b["high"])
    return (f"Strongest simple baseline ({b['name']}): estimated fail rate {rate} on the same {b['n']} traces; "
            "challenger minus baseline "
            f"{_pct(o['challenger'] - b['estimate'], True)}.")


def to_markdown(ctx: ReportContext) -> str:
    rows = display_rows(ctx)
    lines = [f"# {ctx.title}", "", f"**{headline(ctx)}**", "", f"Promotion decision: **{ctx.decision}**", "",
             f"_{ESTIMATE_NOTE}_", ""]
    if base := _baseline_line(ctx):
        lines += [base, ""]
    for cohort, part in rows.groupby("cohort", sort=False):
        lines += [f"## {heading(cohort)}", "", markdown.table(part.drop(columns="cohort")), ""]
    if ctx.trend is not None and len(ctx.trend):
        lines += ["## Across releases", "", markdown.table(ctx.trend, pct_columns=("champion", "challenger")), ""]
    if ctx.hard is not None and len(ctx.hard):
        lines += ["## Hard cases (not production)", "", f"_{HARD_NOTE}_", "", markdown.table(_hard_rows(ctx.hard)), ""]
    lines += ["## Gate: " + ("PASS" if ctx.gate.passed else "FAIL"), *[f"- {r}" for r in ctx.gate.reasons]]
    if ctx.gate.too_small:
        lines += ["", "Too small to judge (listed, not passed):", *[f"- {r}" for r in ctx.gate.too_small]]
    lines.append("")
    if ctx.lineage:
        lines += ["## Lineage", "", *[f"- {k}: {v}" for k, v in ctx.lineage.items()], ""]
    lines.append(f"Dataset `{ctx.dataset}`. Generated {ctx.generated_at}.")
    return "\n".join(lines)


def _figure(width: float, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _png(plt, fig) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def chart_png(table: pd.DataFrame, cohort: str) -> str:
    """Grouped bars: estimated fail rate of champion and challenger per value of one cohort, 95% intervals."""
    part = table[table["cohort"] == cohort]
    x = np.arange(len(part))
    plt, fig, ax = _figure(min(10, max(4, 1.1 * len(part) + 2)))
    for off, who, color in ((-0.2, "champion", "#9aa5b1"), (0.2, "challenger", "#2f6fde")):
        rate = part[who].to_numpy(float)
        err = np.vstack([rate - part[f"{who}_low"].to_numpy(float), part[f"{who}_high"].to_numpy(float) - rate])
        ax.bar(x + off, rate, 0.4, yerr=np.clip(np.nan_to_num(err), 0.0, None), capsize=3, label=who, color=color)
    many = len(part) > 6
    ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(part["value"], part["n"], strict=True)], fontsize=8,
                  rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("estimated production fail rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"{heading(cohort)} (95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def trend_png(trend: pd.DataFrame) -> str:
    """Estimated overall fail rate of the champion and the challenger at every regression eval so far."""
    plt, fig, ax = _figure(min(10, max(5, 0.8 * len(trend) + 3)))
    x = np.arange(len(trend))
    for who, color, off in (("champion", "#9aa5b1", -0.08), ("challenger", "#2f6fde", 0.08)):
        rate = trend[who].to_numpy(float)
        err = np.vstack([rate - trend[f"{who}_low"].to_numpy(float), trend[f"{who}_high"].to_numpy(float) - rate])
        ax.errorbar(x + off, rate, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o-", color=color, label=who,
                    capsize=3)
    ax.set_xticks(x, [f"{w}\nv{a}→v{b}" for w, a, b in zip(trend["when"], trend["champion_version"],
                                                          trend["challenger_version"], strict=True)], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("estimated production fail rate")
    ax.set_title("Overall, across regression evals (95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(plt, fig)


HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ ctx.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2933}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd2d9;padding:4px 8px;font-size:13px}
th{background:#f0f4f8}img{max-width:100%;height:auto}.note{color:#52606d;font-size:14px}.pass{color:#0b7a3e}
.fail{color:#b42318}.better{color:#0b7a3e}.worse{color:#b42318}.small{color:#8a6d00}
</style></head><body>
<h1>{{ ctx.title }}</h1>
<p><strong>{{ headline }}</strong></p>
<p>Promotion decision: <strong>{{ ctx.decision }}</strong></p>
<p class="note">{{ estimate_note }}</p>
{% if baseline %}<p>{{ baseline }}</p>{% endif %}
{% for cohort, rows, png in sections %}
<h2>{{ heading(cohort) }}</h2>
{% if png %}<img alt="fail rate by {{ cohort }}" src="data:image/png;base64,{{ png }}">{% endif %}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in columns %}<td class="{{ css(c, r) }}">{{ r[c] }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% if trend_png %}<h2>Across releases</h2><img alt="trend" src="data:image/png;base64,{{ trend_png }}">{% endif %}
{% if hard %}<h2>Hard cases (not production)</h2><p class="note">{{ hard_note }}</p>
<table><tr>{% for c in hard[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in hard %}<tr>{% for c in r %}<td>{{ r[c] }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>Gate: <span class="{{ 'pass' if ctx.gate.passed else 'fail' }}">
{{- 'PASS' if ctx.gate.passed else 'FAIL' }}</span></h2>
<ul>{% for r in ctx.gate.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
{% if ctx.gate.too_small %}<p>Too small to judge (listed, not passed):</p>
<ul>{% for r in ctx.gate.too_small %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
{% if ctx.lineage %}<h2>Lineage</h2><ul>{% for k, v in ctx.lineage.items() %}<li>{{ k }}: {{ v }}</li>
{% endfor %}</ul>{% endif %}
<p class="note">Dataset <code>{{ ctx.dataset }}</code>. Generated {{ ctx.generated_at }}.</p>
</body></html>"""


def _css(column: str, row: dict) -> str:
    if column != "verdict":
        return ""
    v = str(row[column])
    return "better" if v.startswith("better") else "worse" if v.startswith("worse") else \
        "small" if v.startswith("too small") else ""


def to_html(ctx: ReportContext) -> str:
    rows = display_rows(ctx)
    sections = []
    for cohort, part in rows.groupby("cohort", sort=False):
        png = None if cohort == OVERALL else chart_png(ctx.table, cohort)
        sections.append((cohort, part.drop(columns="cohort").to_dict("records"), png))
    columns = [c for c in rows.columns if c != "cohort"]
    hard = _hard_rows(ctx.hard).to_dict("records") if ctx.hard is not None and len(ctx.hard) else []
    trend = trend_png(ctx.trend) if ctx.trend is not None and len(ctx.trend) else None
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(HTML).render(ctx=ctx, headline=headline(ctx), sections=sections, columns=columns,
                                        heading=heading, css=_css, estimate_note=ESTIMATE_NOTE, hard=hard,
                                        hard_note=HARD_NOTE, baseline=_baseline_line(ctx), trend_png=trend)


def write(ctx: ReportContext, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.html`; also `latest.html`/`latest.md` next to them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, html = to_markdown(ctx), to_html(ctx)
    paths = (out_dir / f"{stem}.md", out_dir / f"{stem}.html")
    for p, text in zip(paths, (md, html), strict=True):
        p.write_text(text)
        (out_dir / f"latest{p.suffix}").write_text(text)
    return paths
