"""Notifications on the real stack (one stack for the module): Prefect's automations deliver through hitl's blocks
to a local webhook receiver (the "Slack" end), and the reconciliation (`hitl up`'s after a Prefect server restart,
and every review-dispatch's) sends what was lost and nothing twice. The webhook URLs are secrets: they must appear
in no log, state file or API answer.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest
from e2e_helpers import api, running_stack
from helpers_domain import review_items, serving

from hitl.ops import deploy, notify_reconcile, processes, runs, stack
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e
TOKEN, BROKEN = secrets.token_hex(16), secrets.token_hex(16)  # the secret part of each webhook URL
WAIT_S = 120


class Receiver(BaseHTTPRequestHandler):
    got: list[dict] = []
    refused: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        ok = self.path == f"/hook/{TOKEN}"
        (self.got if ok else self.refused).append({"path": self.path, **body})
        self.send_response(200 if ok else 500)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def notified(tmp_path_factory):
    receiver = ExitStack()
    base = receiver.enter_context(serving(Receiver))
    tmp = tmp_path_factory.mktemp("notify")
    secret_file = tmp / "notify-secrets"
    secret_file.write_text(f"HITL_NOTIFY_TEAM_URL={base}/hook/{TOKEN}\n"
                           f"HITL_NOTIFY_BROKEN_URL={base}/broken/{BROKEN}\n")
    secret_file.chmod(0o600)
    notifications = {"enabled": True, "secrets_file": str(secret_file), "settle_s": 5, "expiry_lead_s": 585,
                     "channels": {"team": {"kind": "webhook"}, "broken": {"kind": "webhook"}},
                     "routes": {"reviewers": ["team"], "approvers": ["team", "broken"], "operators": ["team"]},
                     "people": {"approvers": ["carol"]}, "alert_channel": "team"}
    gen = running_stack(tmp, project="notify", notifications=notifications,
                        review={"batch_size": 5, "timeout_s": 600, "poll_interval_s": 1})
    cfg, path = next(gen)
    with api(cfg):
        notify_reconcile.setup(cfg)  # what `hitl up` does after the worker starts
    try:
        yield cfg, path
    finally:
        gen.close()
        receiver.close()


def _messages(subject_part: str) -> list[dict]:
    return [m for m in Receiver.got if subject_part in m["text"].split("\n", 1)[0]]


def _wait_for(what, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := what():
            return out
        time.sleep(1)
    raise AssertionError(f"nothing arrived within {timeout} s; received: {[m['text'][:80] for m in Receiver.got]}")


def _start_review(cfg, path, n: int):
    ReviewStore(cfg.store_url).enqueue(review_items(5, prefix=f"n{n}-"), cfg.cohorts)
    with api(cfg):
        return deploy.trigger(cfg, path, "review-batch")


def _paused(cfg, run) -> None:
    with api(cfg):
        _wait_for(lambda: any(r.id == str(run.id) for r in runs.flow_runs(["review-batch/review-batch"],
                                                                            states=("PAUSED",))))


def test_each_kind_of_news_arrives_once_with_its_link_and_survives_a_restart(notified):
    from prefect import get_client

    cfg, path = notified
    first = _start_review(cfg, path, 1)
    with api(cfg):  # meanwhile a run of a scheduled deployment fails (no labelled rows to register)
        failed = deploy.trigger(cfg, path, "register-dataset")
    link = cfg.flow_run_url(first.id)
    waiting = _wait_for(lambda: _messages(f"A review batch is waiting: {first.name}"))
    assert link in waiting[0]["text"] and f"hitl review --run {first.id}" in waiting[0]["text"]
    # Lost news, next: a batch suspends while its automation is off (as an event lost in the in-memory broker
    # would be); the Prefect server is killed below and `hitl up` starts it again and reconciles.
    with api(cfg), get_client(sync_client=True) as client:
        client.pause_automation(client.read_automations_by_name(f"hitl {cfg.project}: waiting-review")[0].id)
    second = _start_review(cfg, path, 2)

    # a release awaiting approval: the event the regression eval's announce-release task emits
    with api(cfg):
        notify_reconcile.announce_release(cfg, str(first.id), "**Challenger v2 is better.**", "PASS",
                                          "e2e-intent v2 (champion v1)")
    approval = _wait_for(lambda: _messages("A release waits for approval: e2e-intent v2"))
    assert link in approval[0]["text"] and "Gate: PASS" in approval[0]["text"] and "carol" in approval[0]["text"]
    # its second channel answers 500: the delivery alert says so on the team channel, naming no URL
    alert = _wait_for(lambda: _messages("A hitl notification was not delivered"))
    assert "answered HTTP 500" in alert[0]["text"] and "approval" in alert[0]["text"]
    assert len(Receiver.refused) == 1  # tried once: a failed delivery is recorded, not retried
    expiring = _wait_for(lambda: _messages(f"expires in about 10 min: {first.name}"))  # 15 s after the suspend
    assert link in expiring[0]["text"]
    failure = _wait_for(lambda: _messages(f"A scheduled run failed: {failed.name}"))
    assert cfg.flow_run_url(failed.id) in failure[0]["text"]

    _paused(cfg, second)
    time.sleep(cfg.notifications.settle_s + 5)  # past the settle time, and the executed events flushed
    assert not _messages(f"waiting: {second.name}")
    pid = next(s.pid for s in stack.status(cfg) if s.name == "prefect")
    os.killpg(pid, signal.SIGKILL)  # as a crash would
    processes.CHILDREN.pop(pid).wait(30)  # started by this process: reap it, as init would
    stack.up(cfg)
    with api(cfg):
        lines = notify_reconcile.setup(cfg)
    assert len(_messages(f"A review batch is waiting: {second.name}")) == 1, lines  # sent by the reconciliation
    # its expiry warning (window 15 s, ended while the server was down) comes from the server's proactive trigger,
    # whose bucket is in the database; the reconciliation leaves it to the server for 70 s after its start
    _wait_for(lambda: _messages(f"10 min: {second.name}"))
    with api(cfg):
        assert notify_reconcile.setup(cfg)[-1].startswith("automation")  # a second `hitl up`: nothing to send
    # news lost with no `hitl up` to follow (a supervisor restarted the server): the next review-dispatch sends it
    with api(cfg), get_client(sync_client=True) as client:
        client.pause_automation(client.read_automations_by_name(f"hitl {cfg.project}: waiting-review")[0].id)
    third = _start_review(cfg, path, 3)
    _paused(cfg, third)
    time.sleep(cfg.notifications.settle_s + 5)
    assert not _messages(f"waiting: {third.name}")
    with api(cfg):
        dispatch = runs.wait(deploy.trigger(cfg, path, "review-dispatch").id, WAIT_S)
    assert dispatch.state.is_completed(), dispatch.state.message
    assert len(_messages(f"A review batch is waiting: {third.name}")) == 1
    _wait_for(lambda: _messages(f"10 min: {third.name}"))
    time.sleep(cfg.notifications.settle_s)
    # every piece of news exactly once, and nothing else (the second batch's expiry warning may come before or
    # after the kill: its 15 s window can end while the test waits for the executed events to flush)
    kinds = (f"waiting: {first.name}", f"10 min: {first.name}", "approval: e2e-intent", failed.name,
             f"waiting: {second.name}", f"10 min: {second.name}", f"waiting: {third.name}", f"10 min: {third.name}",
             "A hitl notification was not delivered")
    for kind in kinds:
        assert len(_messages(kind)) == 1, kind
    assert len(Receiver.got) == len(kinds), [m["text"][:80] for m in Receiver.got]

    # the secrets are in no log, no state file and no API answer the UI asks for (secrets masked: an API client
    # with the stack's credentials may still ask for them, which is how the server itself loads the blocks)
    for f in cfg.state.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000:
            data = f.read_bytes()
            assert TOKEN.encode() not in data and BROKEN.encode() not in data, f
    with api(cfg), get_client(sync_client=True) as client:
        for doc in client.read_block_documents(include_secrets=False):
            assert TOKEN not in doc.model_dump_json() and BROKEN not in doc.model_dump_json()
