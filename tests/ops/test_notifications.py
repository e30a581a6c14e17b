"""Notifications without a server: the config section, what `hitl up` would create, the secrets, the blocks'
failures, and the reconciliation's decisions (hitl/ops/notifications.py, notify_blocks.py, notify_reconcile.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

import pytest
from helpers_domain import make_cfg, serving
from pydantic import ValidationError

from hitl.credentials import CredentialsError
from hitl.ops import notifications as nt
from hitl.ops import notify_reconcile as rc
from hitl.ops.notify_blocks import HitlEmail, HitlWebhook
from hitl.review.prefect_api import ADJUDICATION_FORM, APPROVAL_FORM, REVIEW_FORM, PausedRun

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NOTIFY = {"enabled": True, "settle_s": 60, "expiry_lead_s": 600, "digest_min": 3,
          "channels": {"team": {"kind": "webhook"},
                       "mail": {"kind": "email", "smtp_host": "smtp.example.com", "sender": "hitl@example.com"}},
          "routes": {"reviewers": ["team"], "approvers": ["mail", "team"], "operators": ["team"]},
          "people": {"approvers": ["carol"]}, "addresses": {"carol": "carol@example.com"}, "alert_channel": "team"}


def cfg_with(tmp_path, **notify):
    return make_cfg(tmp_path, project="p1", notifications={**NOTIFY, **notify}, review={"timeout_s": 3600})


def test_config_refuses_unknown_channels_roles_and_email_without_addresses(tmp_path):
    with pytest.raises(ValidationError, match="not in notifications.channels"):
        cfg_with(tmp_path, routes={"reviewers": ["slack"]})
    with pytest.raises(ValidationError, match="unknown roles"):
        cfg_with(tmp_path, routes={"managers": ["team"]})
    with pytest.raises(ValidationError, match="name the role's people"):
        cfg_with(tmp_path, people={})
    with pytest.raises(ValidationError, match="at least 10 s"):
        cfg_with(tmp_path, expiry_lead_s=3595)


def test_rules_follow_the_routes_and_link_where_the_inbox_does(tmp_path):
    cfg = cfg_with(tmp_path)
    rules = {r.key: r for r in nt.rules(cfg)}
    assert set(rules) == {"waiting-review", "expiring-review", "digest", "approval", "failed"}  # no adjudicators
    assert cfg.flow_run_url(nt.RUN_ID) in rules["waiting-review"].body
    assert "hitl review --run {{ flow_run.id }}" in rules["waiting-review"].body
    assert "carol" in rules["approval"].body
    waiting, expiring = nt.trigger(cfg, rules["waiting-review"]), nt.trigger(cfg, rules["expiring-review"])
    assert waiting["expect"] == list(nt.WAITING) and waiting["for_each"] == ["prefect.resource.id"]
    assert waiting["match"]["prefect.resource.name"] == f"!{nt.DIGEST_RUN_PREFIX}*"
    assert expiring["posture"] == "Proactive" and expiring["within"] == 3600 - 600
    assert expiring["after"] == list(nt.WAITING) and not set(expiring["after"]) & set(expiring["expect"])
    failed = nt.trigger(cfg, rules["failed"])
    assert failed["match_related"][0]["prefect.resource.name"] == sorted(cfg.deployments.schedules)
    alert = nt.alert_trigger(cfg)["match"]["prefect.resource.name"]
    assert alert == "hitl p1: *" and not nt.alert_name(cfg).startswith(alert[:-1])  # the alert never alerts itself


def test_automations_are_valid_prefect_automations(tmp_path):
    from prefect.events.schemas.automations import AutomationCore, Posture

    cfg = cfg_with(tmp_path)
    for rule in nt.rules(cfg):
        a = AutomationCore(name=rule.name(cfg), trigger=nt.trigger(cfg, rule), actions=[])
        assert a.trigger.posture == (Posture.Proactive if rule.key.startswith("expiring") else Posture.Reactive)


def test_secrets_come_from_a_private_file_or_the_environment_and_are_never_quoted(tmp_path, monkeypatch):
    secret = "https://hooks.slack.com/services/T000/B000/s3cr3t"
    f = tmp_path / "secrets"
    f.write_text(f"# notifications\n{nt.secret_key('team', 'URL')}={secret}\n")
    f.chmod(0o644)
    cfg = cfg_with(tmp_path, secrets_file=str(f))
    with pytest.raises(CredentialsError, match="0644"):
        nt.secrets(cfg)
    f.chmod(0o600)
    assert nt.secrets(cfg) == {"HITL_NOTIFY_TEAM_URL": secret}
    f.write_text(f"HITL_NOTIFY_TEAM_URL {secret}\n")
    with pytest.raises(CredentialsError) as e:
        nt.secrets(cfg)
    assert secret not in str(e.value)
    monkeypatch.delenv("HITL_NOTIFY_TEAM_URL", raising=False)
    with pytest.raises(nt.NotificationsError, match="HITL_NOTIFY_TEAM_URL missing from the environment"):
        nt.secrets(cfg_with(tmp_path))
    monkeypatch.setenv("HITL_NOTIFY_TEAM_URL", secret)
    block = nt.make_block(cfg_with(tmp_path), "team", "reviewers", nt.secrets(cfg_with(tmp_path)))
    assert secret not in repr(block) and secret not in block.model_dump_json()  # Prefect masks secret fields
    mail = nt.make_block(cfg_with(tmp_path), "mail", "approvers", {})
    assert mail.to == ["carol@example.com"]


class _Hook(BaseHTTPRequestHandler):
    got: list[dict] = []

    def do_POST(self):  # noqa: N802
        self.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200 if self.path.startswith("/ok") else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_block_posts_text_and_fails_without_naming_its_url():
    from prefect.blocks.abstract import NotificationError

    with serving(_Hook) as base:
        ok = HitlWebhook(name="t", url="{{url}}", json_data={"text": "{{subject}}\n{{body}}"},
                         secrets={"url": f"{base}/ok/tok3n"})
        ok.notify("body line", "subject line")
        assert _Hook.got[-1] == {"text": "subject line\nbody line"}
        bad = HitlWebhook(name="t", url="{{url}}", json_data={"text": "{{body}}"}, secrets={"url": f"{base}/no/tok3n"})
        with pytest.raises(NotificationError) as e:
            bad.notify("x")
        assert "HTTP 503" in e.value.log and "tok3n" not in e.value.log and e.value.__cause__ is None


def test_email_block_reports_an_unreachable_server_without_its_password():
    from prefect.blocks.abstract import NotificationError

    block = HitlEmail(smtp_host="127.0.0.1", smtp_port=9, security="none", username="u", password="pa55word",
                      sender="a@example.com", to=["b@example.com"], timeout=2)
    with pytest.raises(NotificationError) as e:
        block.notify("x", "y")
    assert "127.0.0.1:9" in e.value.log and "pa55word" not in e.value.log


def _paused(form: str, minutes_ago: float, name: str = "calm-otter", tags=(), description: str = "") -> PausedRun:
    since = NOW - timedelta(minutes=minutes_ago)
    return PausedRun(f"id-{name}", name, "flow", form, {}, description, since.isoformat(), since.isoformat(),
                     (since + timedelta(hours=1)).isoformat(), f"state-{name}", tuple(tags))


def test_due_leaves_fresh_states_to_the_automations_and_warns_before_expiry(tmp_path):
    cfg = cfg_with(tmp_path)
    assert rc.due(cfg, [_paused(REVIEW_FORM, 0.5)], [], NOW) == []  # younger than settle_s
    keys = [m.automation for m in rc.due(cfg, [_paused(REVIEW_FORM, 5)], [], NOW)]
    assert keys == ["hitl p1: waiting-review"]
    late = rc.due(cfg, [_paused(REVIEW_FORM, 52)], [], NOW)  # warning at 50 min, settled at 51
    assert [m.automation for m in late] == ["hitl p1: waiting-review", "hitl p1: expiring-review"]
    assert "id-calm-otter" in late[0].body and late[0].event_id == "state-calm-otter"
    assert len(rc.due(cfg, [_paused(REVIEW_FORM, 52)], [], NOW, server_up_s=30)) == 1  # the server fires it
    assert rc.due(cfg, [_paused(ADJUDICATION_FORM, 52)], [], NOW) == []  # adjudicators have no route


def test_due_approval_carries_the_headline_and_the_release_event_id(tmp_path):
    cfg = cfg_with(tmp_path)
    run = _paused(APPROVAL_FORM, 5, description="## Gate: PASS\n\n**Challenger v2 is better.**\n")
    [m] = rc.due(cfg, [run], [], NOW)
    assert m.event_id == str(nt.release_event_id(run.id)) and "Challenger v2 is better." in m.body
    assert "Gate: PASS" in m.body and cfg.flow_run_url(run.id) in m.body and f"hitl approve --run {run.id}" in m.body


def test_owed_skips_what_was_delivered_per_block_and_batches_a_digest(tmp_path):
    cfg = cfg_with(tmp_path)
    ids = {"hitl-p1-team": "b-team", "hitl-p1-mail-approvers": "b-mail"}
    approval = _paused(APPROVAL_FORM, 5)
    [m] = rc.due(cfg, [approval], [], NOW)
    [left] = rc.owed(cfg, [m], {(m.automation, m.event_id, "b-mail")}, ids)
    assert left.blocks == ["hitl-p1-team"]
    assert rc.owed(cfg, [m], {(m.automation, m.event_id, b) for b in ids.values()}, ids) == []
    failed = [rc.FailedRun(f"r{i}", f"run-{i}", "sample-traces", f"s{i}", "Failed", "boom",
                           (NOW - timedelta(minutes=5)).isoformat()) for i in range(3)]
    msgs = rc.owed(cfg, rc.due(cfg, [], failed, NOW), set(), ids)
    assert [(b, len(ms)) for b, ms in rc.batches(cfg, msgs)] == [("hitl-p1-team", 3)]  # digest_min 3: one message
    assert [len(ms) for _, ms in rc.batches(cfg, msgs[:2])] == [1, 1]


def test_a_run_announced_by_a_delivered_digest_is_not_announced_again(tmp_path):
    cfg = cfg_with(tmp_path)
    run = _paused(REVIEW_FORM, 5, tags=[f"{rc.DIGEST_TAG}ev1"])
    [m] = rc.due(cfg, [run], [], NOW)
    assert rc._announced(m, [run], {"ev1"}) and not rc._announced(m, [run], {"ev2"})


def test_configure_refuses_when_the_server_cannot_load_the_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(nt, "server_can_load_blocks", lambda: False)
    with pytest.raises(nt.NotificationsError, match="pip install -e"):
        nt.configure(cfg_with(tmp_path))


def test_a_dispatch_opening_many_batches_names_them_out_of_the_per_batch_automation(tmp_path):
    from fnmatch import fnmatchcase

    cfg = cfg_with(tmp_path)
    assert rc.digest_plan(cfg, 2, "d" * 36) is None  # under digest_min: one message each
    digest = rc.digest_plan(cfg, 3, "0123456789abcdef" + "0" * 20)
    run = digest.run(0)
    assert run["run_name"] == "hitl-digest-1-of-3-01234567" and run["tags"] == (f"{rc.DIGEST_TAG}{digest.event_id}",)
    exclusion = nt.trigger(cfg, next(r for r in nt.rules(cfg) if r.key == "waiting-review"))["match"]
    assert fnmatchcase(run["run_name"], exclusion["prefect.resource.name"][1:])  # "!pattern": these are left out
    assert rc.digest_plan(cfg_with(tmp_path, routes={"approvers": ["team"]}), 9, "d") is None  # reviewers unrouted


def test_outbox_claims_are_exclusive_marked_sent_once_and_given_back_on_failure(tmp_path):
    from hitl.ops.notify_outbox import Outbox

    url = f"sqlite:///{tmp_path / 'review.db'}"
    a, b = Outbox(url, "a"), Outbox(url, "b")
    assert a.claim(["k1", "k2"]) == ["k1", "k2"]
    assert b.claim(["k1", "k3"]) == ["k3"]  # k1 is a's, fresh
    a.sent(["k1"])
    a.release(["k2"])  # a's block failed: k2 goes back
    assert b.claim(["k1", "k2"]) == ["k2"]  # sent news is never claimed again; given-back news is
    assert a.claim(["k3"], stale_s=0) == ["k3"]  # b died holding k3 unsent: taken over once stale
    b.sent(["k3"])  # b's late mark changes nothing: the claim is a's now
    assert b.claim(["k3"]) == []  # a's claim is fresh
    a.sent(["k3"])  # once marked sent, nobody takes it, stale or not
    assert Outbox(url, "c").claim(["k1", "k3"], stale_s=0) == []


def test_reconciliations_at_once_send_each_piece_of_news_once(tmp_path):
    """Eight reconciliations (each its own engine, as separate dispatch runs are) claim the same news at once."""
    import threading

    from hitl.ops.notify_outbox import Outbox

    url = f"sqlite:///{tmp_path / 'review.db'}"
    Outbox(url).close()
    keys = [f"k{i}" for i in range(30)]
    held: list[list[str]] = []
    barrier = threading.Barrier(8)

    def reconcile(owner: str) -> None:
        box = Outbox(url, owner)
        barrier.wait()
        held.append(box.claim(keys))
        box.sent(held[-1])

    threads = [threading.Thread(target=reconcile, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [k for h in held for k in h]
    assert sorted(won) == sorted(keys)  # each claimed by exactly one


class _Notifier:
    def __init__(self, fail: bool):
        self.fail, self.sent = fail, []

    def raise_on_failure(self):
        from contextlib import nullcontext

        return nullcontext()

    def notify(self, body: str, subject: str) -> None:
        if self.fail:
            raise RuntimeError("the channel answered HTTP 500")
        self.sent.append(subject)


class _Client:
    def __init__(self):
        self.events = []

    def request(self, method, path, json):
        self.events += json

        class Ok:
            def raise_for_status(self):
                return None

        return Ok()


def test_send_gives_its_claims_back_when_the_block_fails_and_records_each_delivery(tmp_path):
    from hitl.ops.notify_outbox import Outbox

    cfg = cfg_with(tmp_path)
    failed = [rc.FailedRun(f"r{i}", f"run-{i}", "sample-traces", f"s{i}", "Failed", "boom",
                           (NOW - timedelta(minutes=5)).isoformat()) for i in range(2)]
    msgs = rc.due(cfg, [], failed, NOW)
    box, client = Outbox(f"sqlite:///{tmp_path / 'review.db'}", "r1"), _Client()
    lines = rc._send(client, box, _Notifier(fail=True), "hitl-p1-team", "b-team", msgs)
    assert "could not deliver 2 message(s)" in lines[0] and client.events == []
    ok = _Notifier(fail=False)
    assert rc._send(client, box, ok, "hitl-p1-team", "b-team", msgs) == ["sent through hitl-p1-team: "
                                                                          "2 hitl-loop notifications"]
    assert len(client.events) == 2 and {e["event"] for e in client.events} == {nt.SENT_EVENT}
    assert rc._send(client, Outbox(box.engine.url.render_as_string(False), "r2"), ok, "hitl-p1-team", "b-team",
                    msgs) == []  # another reconciliation: already sent
    assert len(ok.sent) == 1
