"""The report's first screen (hitl/evaluation/summary.py): the sentence for each gate outcome on hand-checked
tables, the cohorts that moved most in order of adjusted evidence, the change chart's axis following the data,
and the same sentence and ranking in the Markdown, the HTML and the MLflow summary."""

from __future__ import annotations

import html as htmllib
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg
from statsmodels.stats.multitest import multipletests

from hitl.evaluation import inference, regression, report, report_charts, summary
from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.regression import EXPLORATORY, GUARD, PRIMARY, GateResult
from hitl.review import inbox

SETTINGS = {"alpha": 0.05, "look": 1, "look_alpha": 0.0416, "margin": 0.02, "power": 0.8}


def _row(cohort: str, value: str, n: int, champion: float, challenger: float, low: float, high: float,
         level: float = 0.0416, p: float = 0.5, outcome: str = "PASS", b: int = 1, c: int = 0, **kw) -> dict:
    role = PRIMARY if cohort == OVERALL else EXPLORATORY if cohort == "label" else GUARD
    return {"cohort": cohort, "value": value, "role": role, "n": n, "champion": champion, "challenger": challenger,
            "delta": challenger - champion, "delta_low": low, "delta_high": high, "level": level, "p": p,
            "b": b, "c": c, "outcome": outcome, "within_margin_worse": False, "labels_needed": math.nan, **kw}


def _gate(table: pd.DataFrame) -> GateResult:
    """The release outcome the real gate would give these rows (regression.release_outcome)."""
    o = table[table["cohort"] == OVERALL].iloc[0]
    guards = table[table["role"] == GUARD]["outcome"].to_numpy(str)
    return GateResult(str(regression.release_outcome(np.array(o["outcome"]), guards)), ["reason"], [], SETTINGS)


def _sentence(rows: list[dict]) -> str:
    table = pd.DataFrame(rows)
    return summary.sentence(table, _gate(table), "1", "2")


def test_sentence_for_a_pass():
    s = _sentence([_row(OVERALL, "all", 270, 0.074, 0.015, -0.086, -0.032, p=9.1e-6, b=16),
                   _row("channel", "voice", 81, 0.247, 0.049, -0.325, -0.070, level=0.0042)])
    assert s == ("On 270 randomly drawn, human-labelled production traces, challenger v2 gets an estimated 1.5% of "
                 "traffic wrong instead of 7.4% for champion v1: -5.9 points (95.8% interval -8.6 to -3.2); the "
                 "gate says PASS because at worst the challenger is 3.2 points better (the margin allows 2.0 points "
                 "worse), and no cohort or label group is worse beyond the margin.")


def test_sentence_for_a_pass_that_is_worse_within_the_margin():
    s = _sentence([_row(OVERALL, "all", 5000, 0.050, 0.058, 0.002, 0.014, p=0.01, b=10, c=50,
                        within_margin_worse=True)])
    assert ": +0.8 points (95.8% interval +0.2 to +1.4); the gate says PASS because " in s
    assert s.endswith("the gate says PASS because at worst the challenger is 1.4 points worse, within the 2.0 points "
                      "the margin allows: it is significantly worse, but within the margin, and no cohort or label "
                      "group is worse beyond the margin.")


def test_sentence_for_a_fail_names_the_row_that_failed():
    s = _sentence([_row(OVERALL, "all", 400, 0.060, 0.050, -0.025, 0.005, p=0.2),
                   _row("channel", "app", 300, 0.02, 0.01, -0.03, 0.01, level=0.02),
                   _row("channel", "voice", 100, 0.10, 0.22, 0.031, 0.209, level=0.0104, p=0.001, outcome="FAIL")])
    assert s == ("On 400 randomly drawn, human-labelled production traces, challenger v2 gets an estimated 5.0% of "
                 "traffic wrong instead of 6.0% for champion v1: -1.0 points (95.8% interval -2.5 to +0.5); the "
                 "gate says FAIL because the channel voice is worse by 12.0 points (99% interval +3.1 to +20.9), "
                 "beyond the 2.0 points the margin allows.")


def test_sentence_for_an_inconclusive_gate_says_what_would_decide_it():
    s = _sentence([_row(OVERALL, "all", 120, 0.050, 0.055, -0.020, 0.030, outcome="INCONCLUSIVE",
                        labels_needed=1200.0)])
    assert s.endswith(": +0.5 points (95.8% interval -2.0 to +3.0); the gate says INCONCLUSIVE because the "
                      "interval still reaches 3.0 points worse, past the 2.0 points the margin allows, without ruling "
                      "out no change; about 1200 more random labels would decide it; a person decides.")


def test_sentence_without_rows():
    table = pd.DataFrame([_row(OVERALL, "all", 0, math.nan, math.nan, math.nan, math.nan, outcome="no rows yet")])
    gate = GateResult("INCONCLUSIVE", ["empty"], [], SETTINGS)
    assert summary.sentence(table, gate, "1", "2") == ("No labelled random-draw traces yet, so champion v1 and "
                                                       "challenger v2 cannot be compared; the gate says INCONCLUSIVE.")


def test_holm_adjusted_matches_statsmodels():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5, 0.002])
    adj = inference.holm_adjusted(p)
    keep = ~np.isnan(p)
    assert np.isnan(adj[1]) and np.allclose(adj[keep], multipletests(p[keep], method="holm")[1])


def test_moved_most_ranks_by_holm_adjusted_evidence_within_each_family():
    """One label with p=0.0005 among 10 labels (adjusted 0.005) ranks below a cohort row with p=0.001 among 3
    guards (adjusted 0.003), though its raw p is smaller; rows without a discordant pair and the overall row are
    left out."""
    rows = [_row(OVERALL, "all", 900, 0.10, 0.05, -0.07, -0.03, p=1e-9),
            _row("channel", "a", 300, 0.10, 0.02, -0.12, -0.04, p=0.001),
            _row("channel", "b", 300, 0.10, 0.07, -0.06, 0.00, p=0.02),
            _row("channel", "c", 300, 0.10, 0.09, -0.05, 0.03, p=0.5),
            _row("label", "x", 90, 0.10, 0.00, -0.16, -0.04, p=0.0005),
            _row("label", "y", 90, 0.10, 0.05, -0.14, 0.04, p=0.3),
            *[_row("label", f"z{i}", 90, 0.0, 0.0, -0.02, 0.02, p=1.0, b=0) for i in range(8)]]
    moved = summary.moved_most(pd.DataFrame(rows))
    assert list(moved["value"]) == ["a", "x", "b", "c", "y"]
    assert moved["adjusted_p"].tolist() == pytest.approx([0.003, 0.005, 0.04, 0.5, 1.0])  # y: 9 x 0.3, capped
    shown = summary.summarize(pd.DataFrame(rows), _gate(pd.DataFrame(rows)), "1", "2", "pending").moved_display()
    assert [r["row"] for r in shown][:2] == ["channel: a", "label: x"]
    assert shown[1]["outcome"] == "exploratory: PASS" and shown[0]["adjusted p"] == "0.003"


def _xlim(rows: list[dict], margin: float = 0.02) -> tuple[float, float]:
    changes = summary.chart_rows(pd.DataFrame(rows))
    plt, fig, ax = report_charts.change_axes(changes, margin, "95.8%")
    lim = ax.get_xlim()
    plt.close(fig)
    return lim


def test_change_chart_axis_follows_a_small_change():
    lo, hi = _xlim([_row(OVERALL, "all", 5000, 0.030, 0.025, -0.012, 0.002),
                    _row("channel", "a", 2500, 0.03, 0.028, -0.010, 0.006)])
    assert -1.5 < lo < -1.2 and 2.0 < hi < 2.3  # the intervals, 0 and the +2-point margin, little else


def test_change_chart_axis_follows_a_large_change():
    lo, hi = _xlim([_row(OVERALL, "all", 400, 0.40, 0.10, -0.41, -0.19),
                    _row("channel", "a", 100, 0.30, 0.35, -0.05, 0.12, outcome="INCONCLUSIVE")])
    assert -45 < lo < -41 and 12 < hi < 16


def test_rate_charts_follow_the_data_too():
    assert report_charts._top(np.array([0.02, 0.031])) == pytest.approx(0.03565)
    assert report_charts._top(np.array([0.9])) == 1.0


def demo_like_ctx(tmp_path, decision: str = "awaiting approval", regions: int = 0) -> report.ReportContext:
    """A draw like the demo's: 300 traces over 4 channels and 3 tiers, one label group, per-label rows, two
    earlier evals; the champion fails voice often, the challenger rarely. `regions`: one more cohort column with
    that many values (a chart longer than the first screen would hold)."""
    rng = np.random.default_rng(7)
    labels = list("abcdef")
    cohorts = ["channel", "tier"] + (["region"] if regions else [])
    cfg = make_cfg(tmp_path, labels=labels, cohorts=cohorts, selection={"strata": ["channel"]},
                   evaluation={"per_label": True, "label_groups": {"new intents": ["e", "f"]}})
    n = 300 + 40 * regions
    channel = rng.choice(["app", "email", "voice", "web_chat"], n, p=[0.25, 0.15, 0.3, 0.3])
    sample = pd.DataFrame({"label": rng.choice(labels, n), "channel": channel,
                           "tier": rng.choice(["free", "premium", "business"], n, p=[0.5, 0.35, 0.15]),
                           "stratum": [f"channel={c}" for c in channel], "window": "2026-01-01",
                           "inclusion_prob": np.where(channel == "voice", 0.2, 0.05)})
    if regions:
        sample["region"] = [f"region {i:02d}" for i in rng.integers(0, regions, n)]
    champ_fail = rng.random(n) < np.where(channel == "voice", 0.25, 0.04)
    chall_fail = champ_fail & (rng.random(n) < 0.2)
    wrong = {y: labels[(labels.index(y) + 1) % len(labels)] for y in labels}
    champ = [wrong[y] if f else y for y, f in zip(sample["label"], champ_fail, strict=True)]
    chall = [wrong[y] if f else y for y, f in zip(sample["label"], chall_fail, strict=True)]
    table = regression.production_table(sample, champ, chall, cfg)
    trend = pd.DataFrame([{"when": f"0{m}-01 10:00", "champion_version": str(m - 1), "challenger_version": str(m),
                           "champion": r, "champion_low": r - 0.02, "champion_high": r + 0.03, "challenger": r - 0.01,
                           "challenger_low": r - 0.03, "challenger_high": r + 0.02, "n": 250, "decision": "approved"}
                          for m, r in ((2, 0.09), (3, 0.08))])
    return report.ReportContext("Regression eval: champion vs challenger", "ds@3", "3", "4", table,
                                regression.gate(table, cfg), decision, trend=trend,
                                lineage={"dataset": "ds@3 (parent ds@2)"})


def _md_table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows[1:]]  # without the header


def test_the_sentence_and_the_ranking_are_the_same_in_markdown_html_and_the_mlflow_summary(tmp_path):
    ctx = demo_like_ctx(tmp_path)
    s = ctx.summary()
    md_path, html_path = report.write(ctx, tmp_path, "r", s)
    md, page = md_path.read_text(), html_path.read_text()
    assert len(s.moved) == summary.MOVED_MOST

    md_sentence = md.splitlines()[2].removeprefix("**").removesuffix("**")
    html_sentence = htmllib.unescape(re.search(r'<p id="headline"[^>]*>(.*?)</p>', page, re.S)[1])
    assert md_sentence == html_sentence == s.sentence == report.headline(ctx)

    md_moved = _md_table(md, "## Cohorts that moved most (exploratory)")
    table = re.search(r'<table id="moved">(.*?)</table>', page, re.S)[1]
    html_moved = [[htmllib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
                  for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]
    printed = [list(r.values()) for r in s.moved_display()]
    assert md_moved == html_moved == printed

    saved = json.loads(json.dumps(s.as_dict()))  # what publish logs to MLflow as report/summary.json
    assert saved["sentence"] == s.sentence and [list(r.values()) for r in saved["moved_most"]] == printed
    assert saved["gate"] == ctx.gate.outcome and len(saved["trend"]) == 3  # two earlier evals and this one


def _baseline(n: int, challenger_fails: float, baseline_fails: float, seed: int = 3) -> dict:
    """The real `versus_baseline` on a stratified draw where the challenger and the baseline fail at these rates
    (independently)."""
    rng = np.random.default_rng(seed)
    labels = list("abcd")
    sample = pd.DataFrame({"label": rng.choice(labels, n), "stratum": rng.choice(["s1", "s2"], n),
                           "inclusion_prob": 0.1})
    wrong = {y: labels[(labels.index(y) + 1) % 4] for y in labels}
    chall = [wrong[y] if rng.random() < challenger_fails else y for y in sample["label"]]
    base = [wrong[y] if rng.random() < baseline_fails else y for y in sample["label"]]
    st = regression.Settings(0.05, 1, 0.05, 0.02, 0.8)
    return {"name": "frozen embeddings + logistic regression", **regression.versus_baseline(sample, chall, base, st)}


def test_a_challenger_significantly_worse_than_the_baseline_gets_a_caution_on_the_first_screen(tmp_path):
    worse = _baseline(400, challenger_fails=0.20, baseline_fails=0.05)
    assert worse["delta_low"] > 0  # the simulated gap is far beyond its interval
    tied = _baseline(400, challenger_fails=0.10, baseline_fails=0.10)
    assert tied["delta_low"] <= 0
    assert summary.baseline_caution(tied, "4") is None and summary.baseline_caution(None, "4") is None
    assert summary.baseline_caution({k: v for k, v in worse.items() if not k.startswith("delta")}, "4") is None

    ctx = demo_like_ctx(tmp_path)
    assert ctx.gate.outcome == "PASS" and ctx.summary().cautions == []  # no baseline: nothing to say
    ctx.baseline = worse
    s = ctx.summary()
    (caution,) = s.cautions
    assert caution.startswith("Challenger v4 is significantly worse than the strongest simple baseline")
    assert f"{summary.points(worse['delta'])} points" in caution and "on the same 400 traces" in caution
    md_path, html_path = report.write(ctx, tmp_path, "r", s)
    first_screen = md_path.read_text().split("## Change per cohort", 1)[0]  # above the chart: what a decider reads
    assert f"> **Caution:** {caution}" in first_screen
    # the inbox and a re-sent notification read the headline off the approval form's Markdown: with the caution
    assert inbox.report_gate(md_path.read_text()) == ("PASS", f"{s.sentence} {caution}")
    page = html_path.read_text()
    shown = htmllib.unescape(re.search(r'<p class="caution"><strong>Caution:</strong> (.*?)</p>', page, re.S)[1])
    assert shown == caution and page.index('class="caution"') < page.index('id="change"')
    assert json.loads(json.dumps(s.as_dict()))["cautions"] == [caution]
    ctx.baseline = tied
    assert ctx.summary().cautions == []
