"""The manager's report: Markdown and self-contained HTML with one chart per cohort column."""

from __future__ import annotations

import base64
import re

import pandas as pd

from hitl.config import Config
from hitl.evaluation import regression, report


def _ctx(decision: str = "pending") -> report.ReportContext:
    cfg = Config(labels=["a", "b"], cohorts=["channel"], state_dir="/tmp/unused")
    holdout = pd.DataFrame({"label": ["a", "a", "b", "b", "a", "b"],
                            "channel": ["voice", "voice", "voice", "app", "app", "app"]})
    champion = ["b", "b", "a", "b", "a", "b"]  # 3 voice fails, 0 app fails
    challenger = ["a", "a", "a", "b", "a", "b"]  # 1 voice fail
    table = regression.cohort_table(holdout, champion, challenger, cfg.cohorts)
    return report.ReportContext("Eval", "ds@1", "1", "2", table, regression.gate(table, cfg), decision)


def test_markdown_states_measured_rates_and_decision():
    md = report.to_markdown(_ctx("approved by ann: ok"))
    assert "Overall fail rate 50.0% (champion v1) -> 16.7% (challenger v2) on 6 hold-out items" in md
    assert "| voice | 3 | 100.0% |" in md and "| app | 3 | 0.0% |" in md
    assert "approved by ann: ok" in md and "## Gate: PASS" in md


def test_html_is_self_contained_with_a_chart_per_cohort(tmp_path):
    md_path, html_path = report.write(_ctx(), tmp_path, "r1")
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2  # channel and label; "overall" has a table only
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in html and "https://" not in html
    assert "<td>voice</td><td>3</td><td>100.0%</td>" in html.replace("\n", "")
    assert (tmp_path / "latest.html").read_text() == html and md_path.exists()


def test_html_escapes_cohort_values():
    ctx = _ctx()
    ctx.table.loc[ctx.table["value"] == "voice", "value"] = "<script>x</script>"
    assert "<script>x</script>" not in report.to_html(ctx)


def test_lineage_is_shown_when_given():
    ctx = _ctx()
    ctx.lineage = {"dataset": "ds@1 (parent none)", "reviewers": "alice,bob"}
    md, html = report.to_markdown(ctx), report.to_html(ctx)
    assert "## Lineage" in md and "- reviewers: alice,bob" in md
    assert "<li>reviewers: alice,bob</li>" in html
    assert "Lineage" not in report.to_markdown(_ctx())
