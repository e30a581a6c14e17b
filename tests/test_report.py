"""The manager's report: production estimates first, charts, trend, hard cases apart, gate, lineage."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
from helpers_domain import make_cfg

from hitl.evaluation import regression, report


def _ctx(tmp_path, decision: str = "pending", **kw) -> report.ReportContext:
    cfg = make_cfg(tmp_path, labels=["a", "b"], cohorts=["channel"], selection={"strata": ["channel"]},
                   evaluation={"per_label": False})
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


def test_markdown_leads_with_the_production_estimate_and_decision(tmp_path):
    md = report.to_markdown(_ctx(tmp_path, "approved by ann: ok"))
    first = md.splitlines()[2]
    assert first.startswith("**Estimated production fail rate") and "champion v1" in first and "v2" in first
    assert "better (p=" in first and "gate PASS" in first
    assert "approved by ann: ok" in md
    assert md.index("## By channel") < md.index("## Hard cases (not production)") < md.index("## Gate: PASS")
    assert "| voice | 100 | 80.0% (71.1–86.7%) |" in md


def test_html_is_self_contained_with_charts(tmp_path):
    trend = pd.DataFrame([{"when": "01-01 10:00", "champion_version": "1", "challenger_version": "2",
                           "champion": 0.3, "champion_low": 0.25, "champion_high": 0.35, "challenger": 0.1,
                           "challenger_low": 0.07, "challenger_high": 0.13, "n": 400, "decision": "approved"}])
    md_path, html_path = report.write(_ctx(tmp_path, trend=trend), tmp_path, "r1")
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2  # one cohort chart (channel) and the trend
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in html and "https://" not in html
    assert "Across releases" in html and "Hard cases (not production)" in html
    assert (tmp_path / "latest.html").read_text() == html and md_path.exists()


def test_html_escapes_cohort_values(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.table.loc[ctx.table["value"] == "voice", "value"] = "<script>x</script>"
    assert "<script>x</script>" not in report.to_html(ctx)


def test_baseline_and_lineage_are_shown_when_given(tmp_path):
    ctx = _ctx(tmp_path, baseline={"name": "frozen + LR", "estimate": 0.05, "low": 0.03, "high": 0.08, "n": 400},
               lineage={"dataset": "ds@1 (parent none)", "leakage guard": "passed: none"})
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    assert "Strongest simple baseline (frozen + LR)" in md and "challenger minus baseline" in md
    assert "## Lineage" in md and "- leakage guard: passed: none" in md
    assert "<li>leakage guard: passed: none</li>" in html
    assert "Lineage" not in report.to_markdown(_ctx(tmp_path))


def test_too_small_cohorts_say_what_they_would_need(tmp_path):
    ctx = _ctx(tmp_path)
    row = ctx.table.iloc[0].copy()
    row["verdict"], row["mdc"], row["labels_needed"] = regression.TOO_SMALL, 0.31, 420
    assert report.verdict_text(pd.DataFrame([row]).itertuples().__next__()) == \
        "too small to judge (detects ≥31 pts; ~420 more random labels)"
