"""The post-retrain eval delta report: Markdown (Prefect/MLflow artifact) and a self-contained HTML page."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

from hitl import markdown
from hitl.evaluation.regression import OVERALL, GateResult

PCT = ("champion", "challenger", "delta")  # displayed as percentages
CAVEAT = ("The hold-out is made of reviewed traces, which the sampler picks mostly among uncertain and flagged "
          "ones: its fail rates are higher than production's. Compare champion and challenger on it, not "
          "with production dashboards. p is an exact McNemar test on the same items.")


def heading(cohort: str) -> str:
    return "Overall" if cohort == OVERALL else f"Fail rate by {cohort}"


@dataclass
class ReportContext:
    title: str
    dataset: str
    champion_version: str
    challenger_version: str
    table: pd.DataFrame
    gate: GateResult
    decision: str = "pending"
    generated_at: str = ""
    lineage: dict[str, str] = field(default_factory=dict)  # where the data and models came from

    def __post_init__(self) -> None:
        self.generated_at = self.generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _display(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    t["champion 95% CI"] = [f"{lo:.0%}–{hi:.0%}" if lo == lo else "—"
                            for lo, hi in zip(t["champion_ci_low"], t["champion_ci_high"], strict=True)]
    t["challenger 95% CI"] = [f"{lo:.0%}–{hi:.0%}" if lo == lo else "—"
                              for lo, hi in zip(t["challenger_ci_low"], t["challenger_ci_high"], strict=True)]
    t["p (McNemar)"] = t["mcnemar_p"].map(lambda p: f"{p:.3f}")
    t = t.rename(columns={"champion_fail_rate": "champion", "challenger_fail_rate": "challenger"})
    return t[["cohort", "value", "n", "champion", "champion 95% CI", "challenger", "challenger 95% CI", "delta",
              "p (McNemar)"]]


def headline(ctx: ReportContext) -> str:
    o = ctx.table[ctx.table["cohort"] == OVERALL].iloc[0]
    return (f"Overall fail rate {o['champion_fail_rate']:.1%} (champion v{ctx.champion_version}) -> "
            f"{o['challenger_fail_rate']:.1%} (challenger v{ctx.challenger_version}) on {o['n']} hold-out "
            f"items; gate {'PASS' if ctx.gate.passed else 'FAIL'}")


def to_markdown(ctx: ReportContext) -> str:
    lines = [f"# {ctx.title}", "", f"**{headline(ctx)}**", "",
             f"Dataset `{ctx.dataset}` hold-out, human labels as truth. Generated {ctx.generated_at}.", "",
             f"_{CAVEAT}_", "",
             "## Gate: " + ("PASS" if ctx.gate.passed else "FAIL"), *[f"- {r}" for r in ctx.gate.reasons], "",
             f"Promotion decision: **{ctx.decision}**", ""]
    if ctx.lineage:
        lines += ["## Lineage", "", *[f"- {k}: {v}" for k, v in ctx.lineage.items()], ""]
    for cohort, part in _display(ctx.table).groupby("cohort", sort=False):
        lines += [f"## {heading(cohort)}", "", markdown.table(part.drop(columns="cohort"), PCT), ""]
    return "\n".join(lines)


def chart_png(table: pd.DataFrame, cohort: str) -> bytes:
    """Grouped bars: champion vs challenger fail rate per value of one cohort, with Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    part = table[table["cohort"] == cohort]
    x = np.arange(len(part))
    fig, ax = plt.subplots(figsize=(min(10, max(4, 1.1 * len(part) + 2)), 3.6), dpi=110)
    for off, who, color in ((-0.2, "champion", "#9aa5b1"), (0.2, "challenger", "#2f6fde")):
        rate = part[f"{who}_fail_rate"].to_numpy()
        err = np.vstack([rate - part[f"{who}_ci_low"].to_numpy(), part[f"{who}_ci_high"].to_numpy() - rate])
        err = np.clip(np.nan_to_num(err), 0.0, None)  # Wilson bounds can sit a rounding error past the rate
        ax.bar(x + off, rate, 0.4, yerr=err, capsize=3, label=who, color=color)
    many = len(part) > 6
    ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(part["value"], part["n"], strict=True)], fontsize=8,
                  rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("fail rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"Fail rate by {cohort} (95% Wilson CI)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ ctx.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#1f2933}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd2d9;padding:4px 8px;font-size:14px}
th{background:#f0f4f8}img{max-width:100%;height:auto}.note{color:#52606d;font-size:14px}.pass{color:#0b7a3e}.fail{color:#b42318}.better{color:#0b7a3e}.worse{color:#b42318}
</style></head><body>
<h1>{{ ctx.title }}</h1>
<p><strong>{{ headline }}</strong></p>
<p>Dataset <code>{{ ctx.dataset }}</code> hold-out (never trained on), human labels as truth.
Generated {{ ctx.generated_at }}.</p>
<p class="note">{{ caveat }}</p>
<h2>Gate: <span class="{{ 'pass' if ctx.gate.passed else 'fail' }}">
{{- 'PASS' if ctx.gate.passed else 'FAIL' }}</span></h2>
<ul>{% for r in ctx.gate.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
<p>Promotion decision: <strong>{{ ctx.decision }}</strong></p>
{% if ctx.lineage %}<h2>Lineage</h2><ul>{% for k, v in ctx.lineage.items() %}<li>{{ k }}: {{ v }}</li>
{% endfor %}</ul>{% endif %}
{% for cohort, rows, png in sections %}
<h2>{{ heading(cohort) }}</h2>
{% if png %}<img alt="fail rate by {{ cohort }}" src="data:image/png;base64,{{ png }}">{% endif %}
<table><tr><th>value</th><th>n</th><th>champion</th><th>95% CI</th><th>challenger</th><th>95% CI</th>
<th>delta</th><th>p (McNemar)</th></tr>
{% for r in rows %}<tr><td>{{ r.value }}</td><td>{{ r.n }}</td><td>{{ pct(r.champion) }}</td>
<td>{{ r['champion 95% CI'] }}</td><td>{{ pct(r.challenger) }}</td><td>{{ r['challenger 95% CI'] }}</td>
<td class="{{ 'better' if r.delta < 0 else ('worse' if r.delta > 0 else '') }}">{{ pct(r.delta, True) }}</td>
<td>{{ r['p (McNemar)'] }}</td></tr>{% endfor %}</table>
{% endfor %}
</body></html>"""


def _pct(v: float, signed: bool = False) -> str:
    if v != v:
        return "—"
    return f"{v:+.1%}" if signed else f"{v:.1%}"


def to_html(ctx: ReportContext) -> str:
    disp = _display(ctx.table)
    sections = []
    for cohort, part in disp.groupby("cohort", sort=False):
        png = None if cohort == OVERALL else base64.b64encode(chart_png(ctx.table, cohort)).decode()
        sections.append((cohort, part.to_dict("records"), png))
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(HTML).render(ctx=ctx, headline=headline(ctx), sections=sections, pct=_pct,
                                        heading=heading, caveat=CAVEAT)


def write(ctx: ReportContext, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.html`; also `latest.html`/`latest.md` next to them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, html = to_markdown(ctx), to_html(ctx)
    paths = (out_dir / f"{stem}.md", out_dir / f"{stem}.html")
    for p, text in zip(paths, (md, html), strict=True):
        p.write_text(text)
        (out_dir / f"latest{p.suffix}").write_text(text)
    return paths
