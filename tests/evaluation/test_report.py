"""The manager's report: production estimates first, charts, trend, hard cases apart, gate, lineage."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
from helpers_domain import make_cfg

from hitl.evaluation import refusals, regression, report


def _ctx(tmp_path, decision: str = "pending", gate: dict | None = None, **kw) -> report.ReportContext:
    cfg = make_cfg(tmp_path, labels=["a", "b"], cohorts=["channel"], selection={"strata": ["channel"]},
                   evaluation={"per_label": False}, gate=gate or {})
    n = 400
    sample = pd.DataFrame({"label": ["a"] * n, "channel": ["voice"] * 100 + ["app"] * 300,
                           "inclusion_prob": [0.1] * 100 + [0.05] * 300, "window": "2026-01-01"})
    champ = np.where(np.arange(n) < 80, "b", "a")  # 80 voice fails
    chall = np.where(np.arange(n) < 10, "b", "a")
    table = regression.production_table(sample, list(champ), list(chall), cfg)
    hard = regression.hard_case_table(pd.DataFrame({"label": ["a", "b"], "selection_reason": ["novel", "novel"]}),
                                      ["b", "a"], ["a", "b"])
    return report.ReportContext("Eval", "ds@1", "1", "2", table, regression.gate(table, cfg), decision,
                                latest=table, latest_window="2026-01-01", hard=hard, **kw)


def test_markdown_leads_with_the_sentence_and_the_decisions_then_method_then_tables(tmp_path):
    md = report.to_markdown(_ctx(tmp_path, "approved by ann: ok"))
    lines = md.splitlines()
    assert lines[2].startswith("**On 400 randomly drawn") and "challenger v2" in lines[2] and "champion v1" in lines[2]
    assert "the gate says PASS because" in lines[2]
    assert lines[4] == "Gate: **PASS** · Decision: **approved by ann: ok**"
    assert (md.index("## Change per cohort") < md.index("## Cohorts that moved most (exploratory)")
            < md.index("## How this was measured") < md.index("## Overall") < md.index("## By channel")
            < md.index("## Hard cases (not production)") < md.index("## Gate: PASS"))
    assert "| all | 400 | 11.4% (8.6–15.1%) | 1.4% (0.6–3.2%) | -10.0 pts (-12.4 to -7.6) |" in md  # moved down
    assert "PASS: better (p=3.9e-17)" in md
    assert "| voice | 100 | 80.0% (" in md
    assert all(f"**{k}**" in md for k in ("PASS", "FAIL", "INCONCLUSIVE"))  # the legend


def test_html_is_self_contained_with_charts(tmp_path):
    trend = pd.DataFrame([{"when": "01-01 10:00", "champion_version": "1", "challenger_version": "2",
                           "champion": 0.3, "champion_low": 0.25, "champion_high": 0.35, "challenger": 0.1,
                           "challenger_low": 0.07, "challenger_high": 0.13, "n": 400, "decision": "approved"}])
    md_path, html_path = report.write(_ctx(tmp_path, trend=trend), tmp_path, "r1")
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3  # the change per cohort, the trend, one cohort's rates (channel)
    assert html.index('id="change-chart"') < html.index("Across releases") < html.index("How this was measured")
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in html and "https://" not in html
    assert "Across releases" in html and "Hard cases (not production)" in html
    assert (tmp_path / "latest.html").read_text() == html and md_path.exists()


def test_every_quarterly_release_and_rollback_is_on_the_first_page(tmp_path):
    """Three years of quarterly retrains and one rollback: each is a row of the trend table and a point (or,
    for the rollback, a marked line) of its chart, on the page above how it was measured."""
    from hitl.evaluation import summary

    evals = [{"at": pd.Timestamp(f"{2024 + q // 4}-{1 + 3 * (q % 4):02d}-01 10:00", tz="UTC"),
              "champion_version": str(q + 1), "challenger_version": str(q + 2),
              **dict(zip(summary.TREND_ESTIMATES, (0.3 - 0.01 * q, 0.27 - 0.01 * q, 0.33 - 0.01 * q,
                                                   0.29 - 0.01 * q, 0.26 - 0.01 * q, 0.32 - 0.01 * q), strict=True)),
              "n": 400, "decision": "approve"} for q in range(12)]
    rollback = {"at": "2026-11-02T09:00:00+00:00", "from_version": "13", "to_version": "12", "by": "bo",
                "reason": "v13 misroutes card_lost"}
    trend = summary.releases(evals, [rollback])
    md_path, html_path = report.write(_ctx(tmp_path, trend=trend), tmp_path, "r1")
    md, html = md_path.read_text(), html_path.read_text()
    block = md.split("## Across releases", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 12 + 1 + 1  # every quarter, the rollback, this report
    assert [r.split(" | ")[0].strip("| ") for r in rows[:5]] == ["2024-01-01", "2024-04-01", "2024-07-01",
                                                                  "2024-10-01", "2025-01-01"]  # years apart
    assert "rollback to v12 by bo: v13 misroutes card_lost" in rows[-2] and "this report" in rows[-1]
    assert html.index("Across releases") < html.index("How this was measured")
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 3  # change, trend, one cohort


def test_html_escapes_cohort_values(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.table.loc[ctx.table["value"] == "voice", "value"] = "<script>x</script>"
    assert "<script>x</script>" not in report.to_html(ctx)


def test_baseline_and_lineage_are_shown_when_given(tmp_path):
    base = {"name": "frozen + LR", "estimate": 0.05, "low": 0.03, "high": 0.08, "n": 400, "delta": -0.012,
            "delta_low": -0.031, "delta_high": 0.007, "level": 0.0416}
    ctx = _ctx(tmp_path, baseline=base, lineage={"dataset": "ds@1 (parent none)", "leakage guard": "passed: none"})
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    assert "Strongest simple baseline (frozen + LR)" in md
    assert "challenger minus baseline -1.2 pts (95.8% paired interval -3.1 to +0.7)" in md
    assert "## Lineage" in md and "- leakage guard: passed: none" in md
    assert "<li>leakage guard: passed: none</li>" in html
    assert "Lineage" not in report.to_markdown(_ctx(tmp_path))


def _row(ctx, **kw):
    row = ctx.table.iloc[0].copy()
    for k, v in kw.items():
        row[k] = v
    return next(pd.DataFrame([row]).itertuples())


def test_an_inconclusive_row_says_what_it_detects_and_what_it_would_need(tmp_path):
    ctx = _ctx(tmp_path)
    row = _row(ctx, outcome="INCONCLUSIVE", verdict="no significant change", mdc=0.10004, labels_needed=420.0)
    assert report.verdict_text(row) == ("INCONCLUSIVE: detects changes of 10.1 pts or more; about 420 more random "
                                        "labels would decide it")  # rounded up: never reads below the data
    assert report.verdict_text(_row(ctx, outcome="no rows yet")) == "no rows yet"
    assert report.verdict_text(_row(ctx, role="exploratory", outcome="PASS", verdict="no significant change")) == \
        "exploratory: PASS: no significant change"


def test_alpha_from_config_in_every_text_and_chart(tmp_path):
    ctx = _ctx(tmp_path, gate={"alpha": 0.10})
    level = report.level_text(ctx.gate.settings["look_alpha"])
    assert level == "91.7%"
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    assert "95%" not in md and "95%" not in html
    assert f"({level} interval " in md and f"champion ({level} CI)" in md and "alpha 0.1 over all looks" in md
    assert f"{level} (Holm)" in md  # the guard rows' level


def test_latest_window_column_only_where_enough_rows(tmp_path):
    ctx = _ctx(tmp_path, latest_min_n=150)
    rows = report.display_rows(ctx).set_index("value")
    col = next(c for c in rows.columns if c.startswith("latest window"))
    assert "n ≥ 150" in col
    assert rows.loc["voice", col] == "—" and rows.loc["app", col].endswith("(n=300)")


def _refused(tmp_path) -> pd.DataFrame:
    """A refusal table (fallback label "oos", "b" new to the challenger): in scope the champion refuses 2 of 6
    rows, the challenger 1; out of scope the champion refuses 1 of 4, the challenger 3."""
    cfg = make_cfg(tmp_path, labels=["a", "b", "oos"], fallback_label="oos", cohorts=["channel"])
    sample = pd.DataFrame({"label": ["a"] * 6 + ["oos"] * 4, "channel": ["web", "voice"] * 5,
                           "inclusion_prob": 0.5, "window": "2026-01-01"})
    champion = ["oos", "oos", "a", "a", "a", "a", "a", "a", "oos", "b"]
    challenger = ["a", "a", "a", "a", "a", "oos", "oos", "oos", "oos", "b"]
    return refusals.table(sample, champion, challenger, "oos", ["b"], cfg, regression.Settings.of(cfg))


def test_refusals_are_a_section_of_their_own_only_with_a_fallback_label(tmp_path):
    refused = _refused(tmp_path)
    ctx = _ctx(tmp_path, refusals=refused)
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    assert f"## {report.REFUSALS_HEADING}" in md and refusals.NOTE in md
    level = ctx.level
    rows = report.refusal_rows(ctx).set_index(["traffic", "rows"])
    inside = rows.loc[("in scope: refused wrongly", "all")]
    assert inside[f"champion refused ({level} CI)"].startswith("33.3% (")
    assert inside[f"challenger refused ({level} CI)"].startswith("16.7% (")
    assert rows.loc[("out of scope: refused (recall)", "all"), f"change ({level} CI)"].startswith("+50.0 pts (")
    assert ("in scope: refused wrongly", "channel: voice") in rows.index
    assert rows.loc[("in scope: refused wrongly", "labels new to the challenger (b)"), "n"] == 0  # none drawn
    assert "| labels new to the challenger (b) | 0 | no rows yet |" in md
    assert 'id="refusals"' in html and "out of scope: refused (recall)" in html
    assert report.REFUSALS_HEADING not in report.to_markdown(_ctx(tmp_path))


def test_the_trend_shows_each_release_s_refusal_rates_where_it_had_a_fallback_label(tmp_path):
    """Earlier evals with refusal metrics and one without (before the fallback label existed), then this report's
    own overall rates: one "champion → challenger" column per kind of traffic on the first screen, in Markdown and
    in HTML (the chart shows fail rates only); a report without a fallback label anywhere has no such column."""
    refused = _refused(tmp_path)
    base = {"champion": 0.3, "champion_low": 0.25, "champion_high": 0.35, "challenger": 0.2, "challenger_low": 0.15,
            "challenger_high": 0.25, "n": 400, "decision": "approved"}
    trend = pd.DataFrame([{"when": "01-01 10:00", "champion_version": "1", "challenger_version": "2", **base},
                          {"when": "04-01 10:00", "champion_version": "2", "challenger_version": "3", **base,
                           "champion_refused_in_scope": 0.04, "challenger_refused_in_scope": 0.061,
                           "champion_out_of_scope_recall": 0.5, "challenger_out_of_scope_recall": 0.25}])
    ctx = _ctx(tmp_path, trend=trend, refusals=refused)
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    block = md.split("## Across releases", 1)[1].split("\n## ", 1)[0]
    header, _, *rows = [line for line in block.splitlines() if line.startswith("|")]
    assert "| in scope refused | out-of-scope recall | n | decision |" in header
    assert "| — | — | 400 | approved |" in rows[0]  # no fallback label then
    assert "| 4.0% → 6.1% | 50.0% → 25.0% |" in rows[1]
    assert "this report" in rows[2] and "| 33.3% → 16.7% | 25.0% → 75.0% |" in rows[2]  # refusals.table's rates
    assert 'id="refusal-trend"' in html and "33.3% → 16.7%" in html
    assert html.index("Across releases") < html.index('id="refusal-trend"') < html.index("How this was measured")
    plain = _ctx(tmp_path, trend=trend.iloc[:1])
    assert "refused" not in report.to_markdown(plain).split("## Across releases", 1)[1].split("\n## ", 1)[0]
    assert 'id="refusal-trend"' not in report.to_html(plain)
