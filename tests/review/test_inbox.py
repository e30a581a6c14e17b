"""`hitl inbox` (hitl/review/inbox.py, hitl/cli/inbox.py): what waits for a person, built from plain data.

Runs carry the form schemas the real flows store (tasks/review.py), so item counts and the adjudicators a form
names are read as from the Prefect server; the CLI tests put a fake `paused_runs` in the server's place."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import yaml
from helpers_domain import COHORTS, LABELS, make_cfg, review_items
from typer.testing import CliRunner

from hitl.review import inbox, prefect_api
from hitl.review.prefect_api import ADJUDICATION_FORM, APPROVAL_FORM, REVIEW_FORM, PausedRun
from hitl.review.store import ReviewStore

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
REPORT = ("# Regression report\n\n**Estimated production fail rate 7.4% -> 1.5%, gate PASS**\n\n"
          "Promotion decision: **pending**\n\n## Overall\n\n| a |\n\n## Gate: PASS\n- within margin\n\n---\n"
          "**Approve** moves `@champion` to version 2; **reject** keeps version 1.")


def _iso(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


def _review_schema(cfg, store, n: int = 3, prefix: str = "t") -> dict:
    from tasks.review import build_form

    store.enqueue(review_items(n, prefix=prefix), COHORTS)
    return build_form(store.take_batch(n), cfg).model_json_schema()


def _adjudication_schema(cfg, trace_ids: list[str]) -> dict:
    from tasks.review import build_adjudication_form

    items = [{**it, "annotations": [{"reviewer": "ann", "label": LABELS[0], "rationale": None},
                                    {"reviewer": "bob", "label": LABELS[1], "rationale": None}]}
             for it in review_items(len(trace_ids)).assign(trace_id=trace_ids).to_dict("records")]
    return build_adjudication_form(items, cfg).model_json_schema()


def _approval_schema(gate: str = "PASS") -> dict:
    from tasks.review import approval_form

    return approval_form("", gate).model_json_schema()


def _run(form: str, schema: dict, paused_min_ago: float, timeout_min: float | None = 60, description: str = "",
         run_id: str | None = None) -> PausedRun:
    paused = NOW - timedelta(minutes=paused_min_ago)
    expires = (paused + timedelta(minutes=timeout_min)).isoformat() if timeout_min is not None else None
    run_id = run_id or str(uuid.uuid4())
    return PausedRun(run_id, f"run-{run_id[:4]}", "flow", form, schema, description,
                     (paused - timedelta(minutes=1)).isoformat(), paused.isoformat(), expires)


@pytest.fixture
def world(tmp_path):
    """(cfg with adjudicators lead and sam, a review run, an adjudication run over d1 d2, an approval run)."""
    cfg = make_cfg(tmp_path, review={"adjudicators": ["lead", "sam"]})
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    review = _run(REVIEW_FORM, _review_schema(cfg, store), paused_min_ago=30)
    adjudication = _run(ADJUDICATION_FORM, _adjudication_schema(cfg, ["d1", "d2"]), paused_min_ago=90)
    approval = _run(APPROVAL_FORM, _approval_schema(), paused_min_ago=10, timeout_min=None, description=REPORT)
    return cfg, review, adjudication, approval


def _kinds(box) -> list[str]:
    return [w.kind for w in box.waiting]


# ---- routing by person ----

def test_everyone_sees_everything_with_who_may_answer(world):
    cfg, review, adjudication, approval = world
    box = inbox.build([review, adjudication, approval], cfg, queued_items=0, disputed=[], now=NOW)
    assert _kinds(box) == ["adjudication", "review", "approval"]  # oldest wait first
    by_kind = {w.kind: w for w in box.waiting}
    assert by_kind["adjudication"].answered_by == ["lead", "sam"]
    assert by_kind["review"].answered_by == by_kind["approval"].answered_by == []


def test_an_adjudication_waits_only_for_the_adjudicators(world):
    cfg, review, adjudication, approval = world
    runs = [review, adjudication, approval]
    assert _kinds(inbox.build(runs, cfg, queued_items=0, disputed=[], person="lead", now=NOW)) == \
        ["adjudication", "review", "approval"]
    assert _kinds(inbox.build(runs, cfg, queued_items=0, disputed=[], person="alice", now=NOW)) == \
        ["review", "approval"]


def test_without_adjudicators_in_the_config_anyone_adjudicates(tmp_path):
    cfg = make_cfg(tmp_path)
    run = _run(ADJUDICATION_FORM, _adjudication_schema(cfg, ["d1"]), paused_min_ago=5)
    box = inbox.build([run], cfg, queued_items=0, disputed=["d1", "d9"], person="alice", now=NOW)
    assert _kinds(box) == ["adjudication"] and box.waiting[0].answered_by == []
    assert box.open_disputes == 1  # d9: d1 is on the waiting run's form


def test_the_form_names_the_adjudicators_even_a_single_one(tmp_path):
    """A one-name Literal is stored as `const`, not `enum`: the form's list still routes the run."""
    form_cfg = make_cfg(tmp_path, review={"adjudicators": ["lead"]})
    run = _run(ADJUDICATION_FORM, _adjudication_schema(form_cfg, ["d1"]), paused_min_ago=5)
    now_cfg = make_cfg(tmp_path)  # the config changed since the run paused: the form is what the run accepts
    assert inbox.who_answers(run, now_cfg) == ["lead"]
    assert not inbox.build([run], now_cfg, queued_items=0, disputed=[], person="alice", now=NOW).waiting


def test_releases_wait_for_the_approvers_when_there_is_a_list(world):
    cfg, review, _, approval = world
    mine = inbox.build([review, approval], cfg, queued_items=0, disputed=[], person="alice", now=NOW,
                       approvers=["maya"])
    assert _kinds(mine) == ["review"]
    maya = inbox.build([review, approval], cfg, queued_items=0, disputed=[], person="maya", now=NOW,
                       approvers=["maya"])
    assert _kinds(maya) == ["review", "approval"] and maya.waiting[1].answered_by == ["maya"]


def test_open_disputes_count_only_for_those_who_may_adjudicate(world):
    cfg, review, adjudication, _ = world
    runs = [review, adjudication]
    disputed = ["d1", "d2", "d3", "d4"]
    assert inbox.build(runs, cfg, queued_items=7, disputed=disputed, person="sam", now=NOW).open_disputes == 2
    alice = inbox.build(runs, cfg, queued_items=7, disputed=disputed, person="alice", now=NOW)
    assert alice.open_disputes == 0 and alice.queued_items == 7
    assert inbox.build(runs, cfg, queued_items=7, disputed=disputed, now=NOW).open_disputes == 2


def test_runs_with_another_form_are_not_a_persons(world):
    cfg, review, *_ = world
    other = _run("SomeOtherInput", {"title": "SomeOtherInput"}, paused_min_ago=500)
    assert _kinds(inbox.build([other, review], cfg, queued_items=0, disputed=[], now=NOW)) == ["review"]


# ---- order, time, links, commands ----

def test_oldest_wait_first_whatever_the_time_zone_and_format(tmp_path):
    cfg = make_cfg(tmp_path)
    schema = _approval_schema()
    a = _run(APPROVAL_FORM, schema, 0, run_id="a" * 8)
    b = _run(APPROVAL_FORM, schema, 0, run_id="b" * 8)
    c = _run(APPROVAL_FORM, schema, 0, run_id="c" * 8)
    a.paused_at = "2026-03-02T13:00:00+02:00"  # 11:00 UTC: the oldest
    b.paused_at = "2026-03-02 11:30:00.250000+00:00"
    c.paused_at, c.created = "", "2026-03-02T11:15:00"  # not paused_at: the start; no zone: UTC
    box = inbox.build([b, c, a], cfg, queued_items=0, disputed=[], now=NOW)
    assert [w.run_id for w in box.waiting] == ["a" * 8, "c" * 8, "b" * 8]
    assert box.waiting[0].waiting_since == "2026-03-02T11:00:00+00:00"


def test_time_left_until_the_pause_times_out(world):
    cfg, review, adjudication, approval = world
    box = inbox.build([review, adjudication, approval], cfg, queued_items=0, disputed=[], now=NOW)
    left = {w.kind: w.seconds_left for w in box.waiting}
    assert left == {"review": 30 * 60, "adjudication": 0.0, "approval": None}  # 90 min into a 60 min wait
    assert {w.kind: w.expires_at for w in box.waiting}["review"] == (NOW + timedelta(minutes=30)).isoformat()


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"),
                                               (3600 + 5 * 60, "1 h 05 min"), (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"),
                                               (-5, "0 s")])
def test_durations_in_words(seconds, text):
    assert inbox.duration(seconds) == text


def test_each_run_links_to_its_prefect_ui_page_and_the_command_that_answers_it(world):
    cfg, review, adjudication, approval = world
    box = inbox.build([review, adjudication, approval], cfg, queued_items=0, disputed=[], person="lead", now=NOW,
                      config_path="my configs/team.yaml")
    by_kind = {w.kind: w for w in box.waiting}
    for run in (review, adjudication, approval):
        assert by_kind[inbox.KINDS[run.form]].link == cfg.flow_run_url(run.id) == \
            f"{cfg.prefect_ui_url}/runs/flow-run/{run.id}"
    assert by_kind["review"].command == f"hitl review --run {review.id} --reviewer lead -c 'my configs/team.yaml'"
    assert by_kind["adjudication"].command.startswith(f"hitl review --run {adjudication.id} --reviewer lead")
    assert by_kind["approval"].command == f"hitl approve --run {approval.id} --approver lead -c 'my configs/team.yaml'"
    assert inbox.answer_command("review", "r1") == "hitl review --run r1"


def test_batches_count_their_items_and_releases_show_the_gate_and_headline(world):
    cfg, review, adjudication, approval = world
    box = inbox.build([review, adjudication, approval], cfg, queued_items=0, disputed=[], now=NOW)
    by_kind = {w.kind: w for w in box.waiting}
    assert (by_kind["review"].items, by_kind["adjudication"].items, by_kind["approval"].items) == (3, 2, None)
    assert by_kind["approval"].gate == "PASS"
    assert by_kind["approval"].headline == "Estimated production fail rate 7.4% -> 1.5%, gate PASS"
    assert by_kind["review"].gate is by_kind["review"].headline is None


@pytest.mark.parametrize(("description", "gate", "headline"), [
    ("# R\n\n**One sentence.**\n\nGate: **INCONCLUSIVE** · Decision: **pending**\n\n## Gate: INCONCLUSIVE\n",
     "INCONCLUSIVE", "One sentence."),  # the first-screen layout: a sentence, then "Gate: **X** · Decision"
    ("**One sentence.**\n\nGate: **PASS** · Decision: **pending**\n\n> **Caution:** Worse than the baseline.\n",
     "PASS", "One sentence. Worse than the baseline."),  # a first-screen caution goes with the headline
    ("## Gate: FAIL\n- worse", "FAIL", None),
    ("", None, None),
])
def test_the_gate_and_headline_are_read_off_the_description_where_it_has_them(description, gate, headline):
    assert inbox.report_gate(description) == (gate, headline)


# ---- empty, JSON ----

def test_an_empty_inbox(tmp_path):
    box = inbox.build([], make_cfg(tmp_path), queued_items=0, disputed=[], person="alice", now=NOW)
    assert box.empty and box.to_dict() == {"person": "alice", "now": NOW.isoformat(), "empty": True, "waiting": [],
                                           "queued_items": 0, "open_disputes": 0}


def test_json_shape(world):
    cfg, review, adjudication, approval = world
    d = json.loads(json.dumps(inbox.build([review, adjudication, approval], cfg, queued_items=4, disputed=["d3"],
                                          person="lead", now=NOW).to_dict()))
    assert set(d) == {"person", "now", "empty", "waiting", "queued_items", "open_disputes"}
    assert (d["person"], d["empty"], d["queued_items"], d["open_disputes"]) == ("lead", False, 4, 1)
    assert [set(w) for w in d["waiting"]] == [{"kind", "run_id", "run_name", "link", "command", "waiting_since",
                                               "expires_at", "seconds_left", "items", "gate", "headline",
                                               "answered_by"}] * 3


# ---- the command ----

@pytest.fixture
def cli(tmp_path, monkeypatch):
    """`hitl inbox` against a fake Prefect server (its paused runs) and a real review store."""
    from hitl.cli import console
    from hitl.config import load_config

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"labels": LABELS, "state_dir": str(tmp_path / "state"),
                                      "review": {"adjudicators": ["lead"]}}))
    cfg = load_config(config)
    cfg.state.mkdir(parents=True)
    store = ReviewStore(cfg.store_url)
    runs: list[PausedRun] = []
    up = {"prefect": True}
    monkeypatch.setattr(prefect_api, "paused_runs", lambda form=None: [r for r in runs if r.form in form])
    monkeypatch.setattr("hitl.ops.stack.wait_healthy", lambda url, timeout: up["prefect"])
    monkeypatch.setattr("hitl.cli.apply_environment", lambda cfg: None)
    monkeypatch.setattr(console, "_width", 300)

    def hitl(*args: str):
        from hitl.cli import app

        return CliRunner().invoke(app, ["inbox", *args, "-c", str(config)])

    return SimpleNamespace(cfg=cfg, config=config, store=store, runs=runs, up=up, hitl=hitl)


def test_cli_lists_what_waits_with_links_and_commands(cli):
    cfg, store, runs, hitl = cli.cfg, cli.store, cli.runs, cli.hitl
    now = datetime.now(UTC)
    review = _run(REVIEW_FORM, _review_schema(cfg, store, 2), 0)
    review.paused_at = (now - timedelta(hours=2)).isoformat()
    review.expires_at = (now + timedelta(minutes=50)).isoformat()
    runs.append(review)
    store.enqueue(review_items(5, prefix="q"), COHORTS)
    result = hitl("--as", "alice")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Waiting for alice" in out and "2 items" in out and "2 h 00 min" in out and "49 min" in out
    assert cfg.flow_run_url(review.id) in out
    assert f"hitl review --run {review.id} --reviewer alice -c {cli.config}" in out
    assert "5 queued items are in no review batch yet" in out


def test_cli_json(cli):
    cfg, runs, hitl = cli.cfg, cli.runs, cli.hitl
    runs.append(_run(APPROVAL_FORM, _approval_schema("FAIL"), 0, description="## Gate: FAIL"))
    result = hitl("--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["empty"] is False and d["person"] is None
    assert [(w["kind"], w["gate"], w["link"]) for w in d["waiting"]] == [
        ("approval", "FAIL", cfg.flow_run_url(runs[0].id))]


def test_cli_says_plainly_when_nothing_waits(cli):
    result = cli.hitl("--as", "alice")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Nothing waits for alice now."


def test_cli_server_down_is_one_line_naming_the_url_and_hitl_up(cli):
    cli.up["prefect"] = False
    result = cli.hitl()
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and cli.cfg.prefect_api_url in lines[0] and "hitl up" in lines[0]


def test_cli_server_lost_after_the_health_check_is_the_same_line(cli, monkeypatch):
    import httpx

    def refused(form=None):
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(prefect_api, "paused_runs", refused)
    result = cli.hitl()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and cli.cfg.prefect_api_url in result.output
