"""Reconciling notifications from run states after a Prefect server restart (`hitl up` runs it).

Prefect's event broker is in memory: an event or an automation's action queued when the server stops is lost, and
nothing is replayed after a restart. So `hitl up` compares what should have been said, read from run states (runs
waiting for people, waits about to expire, releases awaiting approval, failed runs of scheduled deployments), with
what was delivered, read from Prefect's event store: the automations' `prefect.automation.action.executed` events
and this module's own `hitl.notification.sent` events, each naming the automation, the triggering event (a state's
event id is the state's id) and the block. What is missing is sent through the same blocks and recorded.

What it guarantees: news whose state is older than `notifications.settle_s` (left to the automations until then)
and younger than its wait (or `lookback_s` for failures) is delivered at least once by the time `hitl up` returns,
and is not sent again once its delivery is recorded. A delivery whose record had not been written when the server
stopped (the event persister flushes every few seconds) is sent a second time; that is the one window left.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hitl.config import Config
from hitl.ops import notifications as nt
from hitl.ops import notify_outbox
from hitl.review import inbox
from hitl.review.prefect_api import ADJUDICATION_FORM, APPROVAL_FORM, REVIEW_FORM, PausedRun

EXECUTED = "prefect.automation.action.executed"
DIGEST_TAG = "hitl-digest:"  # run tag naming the digest event that announced the run
KEYS = {REVIEW_FORM: ("review", "reviewers"), ADJUDICATION_FORM: ("adjudication", "adjudicators")}


@dataclass(frozen=True)
class FailedRun:
    id: str
    name: str
    deployment: str
    state_id: str
    state_name: str
    message: str
    ended: str  # ISO


@dataclass(frozen=True)
class Message:
    """One message an automation owes: its automation, the event it answers, the role, and the text."""

    automation: str
    event_id: str
    role: str
    subject: str
    body: str
    blocks: list[str] = field(default_factory=list)  # block names still owed it (filled by `owed`)


def render(template: str, context: dict[str, Any]) -> str:
    """A rule's Jinja template rendered here as the server renders it (plain dicts stand in for its objects)."""
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment().from_string(template).render(**context)


def release_payload(cfg: Config, run_id: str, headline: str | None, gate: str | None, models: str) -> dict:
    """What a release's awaiting-approval event carries, and its message shows."""
    return {"headline": headline or "The regression report is ready.", "gate": gate or "?", "models": models,
            "link": cfg.flow_run_url(run_id), "command": inbox.answer_command(inbox.APPROVAL, run_id)}


# After a restart the server fires a proactive trigger whose window ended while it was down, or drops it once it
# is older than its expired-bucket buffer (60 s), evaluating every 5 s: leave it that long before sending it here.
PROACTIVE_SETTLE_S = 60 + 2 * 5


def due(cfg: Config, waiting: list[PausedRun], failed: list[FailedRun], now: datetime,
        server_up_s: float = float("inf")) -> list[Message]:
    """The messages run states call for now, each keyed by its automation and triggering event. Expiry warnings
    only once the server has been up `PROACTIVE_SETTLE_S` (`server_up_s`: how long it has run)."""
    rules = {r.key: r for r in nt.rules(cfg)}
    settled = now - timedelta(seconds=cfg.notifications.settle_s)
    lead = timedelta(seconds=cfg.review.timeout_s - cfg.notifications.expiry_lead_s)
    out = []

    def add(key: str, event_id: str, context: dict) -> None:
        if key in rules:
            r = rules[key]
            out.append(Message(r.name(cfg), event_id, r.role, render(r.subject, context), render(r.body, context)))

    for run in waiting:
        since = inbox.parse_time(run.paused_at or run.created)
        flow_run = {"id": run.id, "name": run.name,
                    "state": {"state_details": {"pause_timeout": run.expires_at and inbox.parse_time(run.expires_at)}}}
        if run.form == APPROVAL_FORM and since <= settled:
            gate, headline = inbox.report_gate(run.description)
            payload = release_payload(cfg, run.id, headline, gate, f"{cfg.model.registered_name} ({run.name})")
            add("approval", str(nt.release_event_id(run.id)), {"event": {"payload": payload}})
        if run.form not in KEYS:
            continue
        key, _ = KEYS[run.form]
        if since <= settled:
            add(f"waiting-{key}", run.state_id, {"flow_run": flow_run})
        expires = inbox.parse_time(run.expires_at) if run.expires_at else None
        if since + lead <= settled and (expires is None or now < expires) and server_up_s >= PROACTIVE_SETTLE_S:
            add(f"expiring-{key}", run.state_id, {"flow_run": flow_run})
    for run in failed:
        if inbox.parse_time(run.ended) <= settled:
            add("failed", run.state_id, {"flow_run": {"id": run.id, "name": run.name, "state": {
                "name": run.state_name, "message": run.message}}, "deployment": {"name": run.deployment}})
    return out


def owed(cfg: Config, messages: list[Message], delivered: set[tuple[str, str, str]],
         block_ids: dict[str, str]) -> list[Message]:
    """`messages` with the blocks that have not delivered them yet (`delivered`: (automation, event id, block
    document id)); those every block delivered left out."""
    by_role = nt.routes(cfg)
    out = []
    for m in messages:
        missing = [name for _, name in by_role.get(m.role, [])
                   if (m.automation, m.event_id, block_ids.get(name, "")) not in delivered]
        if missing:
            out.append(Message(m.automation, m.event_id, m.role, m.subject, m.body, missing))
    return out


def batches(cfg: Config, messages: list[Message]) -> list[tuple[str, list[Message]]]:
    """(block name, messages) to send: one message each, or one digest when a block owes `digest_min` or more."""
    per_block: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        for b in m.blocks:
            per_block[b].append(m)
    out = []
    for block, ms in per_block.items():
        if len(ms) >= cfg.notifications.digest_min:
            out.append((block, ms))
        else:
            out += [(block, [m]) for m in ms]
    return out


def _event_ids(event, role: str) -> list[str]:
    prefix = {"triggering-event": "prefect.event.", "block": "prefect.block-document."}[role]
    return [r.id.removeprefix(prefix) for r in event.related if r.role == role]


def ledger(client, since: datetime) -> set[tuple[str, str, str]]:
    """(automation, triggering event id, block document id) of every delivery recorded since `since`."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    flt = EventFilter(event=EventNameFilter(name=[EXECUTED, nt.SENT_EVENT]),
                      occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=5)))
    out: set[tuple[str, str, str]] = set()
    page = client.read_events(filter=flt, limit=50)  # the most the API gives a page
    while True:
        for e in page.events:
            name = e.resource.get("prefect.resource.name", "")
            out |= {(name, t, b) for t in _event_ids(e, "triggering-event") for b in _event_ids(e, "block")}
        if not page.next_page:
            return out
        page = client.read_events_page(page.next_page)


def failed_runs(client, cfg: Config, since: datetime) -> list[FailedRun]:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED,
                                                                                   StateType.CRASHED])),
                        end_time=FlowRunFilterEndTime(after_=since), tags=FlowRunFilterTags(all_=[cfg.project]))
    names = sorted(cfg.deployments.schedules)
    out, deployments = [], {}
    for run in client.read_flow_runs(flow_run_filter=flt, limit=200, deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=names))):
        if run.deployment_id not in deployments:
            deployments[run.deployment_id] = client.read_deployment(run.deployment_id).name
        out.append(FailedRun(str(run.id), run.name, deployments[run.deployment_id], str(run.state.id), run.state.name,
                             run.state.message or "", (run.end_time or run.state.timestamp).isoformat()))
    return out


def post_event(client, event: str, resource: dict[str, str], related: list[dict[str, str]],
               payload: dict | None = None, event_id: uuid.UUID | None = None) -> None:
    """Record an event on the server now (the REST endpoint: no background sender to drain before exit)."""
    from prefect.events import Event

    e = Event(event=event, resource=resource, related=related, payload=payload or {}, id=event_id or uuid.uuid4())
    client.request("POST", "/events", json=[e.model_dump(mode="json")]).raise_for_status()


def reconcile(cfg: Config, now: datetime | None = None) -> list[str]:
    """Send what run states call for and no delivery records; returns one line per message sent or failed."""
    from prefect import get_client
    from prefect.blocks.core import Block

    from hitl.ops import stack
    from hitl.review import prefect_api

    if not cfg.notifications.enabled:
        return []
    now = now or datetime.now(UTC)
    waiting = prefect_api.paused_runs((REVIEW_FORM, ADJUDICATION_FORM, APPROVAL_FORM))
    lookback = now - timedelta(seconds=cfg.notifications.lookback_s)
    since = min([lookback, *(inbox.parse_time(r.paused_at or r.created) for r in waiting)])
    lines = []
    with get_client(sync_client=True) as client:
        started = stack.started_at(cfg, "prefect")
        up_s = now.timestamp() - started if started is not None else float("inf")  # not ours: up all along
        messages = due(cfg, waiting, failed_runs(client, cfg, lookback), now, up_s)
        delivered = ledger(client, since)
        blocks = {name: Block.load(f"{nt.block_slug(cfg, channel)}/{name}")
                  for pairs in nt.routes(cfg).values() for channel, name in pairs}
        ids = {name: str(b._block_document_id) for name, b in blocks.items()}
        digest_name = f"{nt.automation_prefix(cfg)}digest"
        announced = {t for (a, t, _) in delivered if a == digest_name}
        messages = [m for m in messages if not _announced(m, waiting, announced)]
        sends = batches(cfg, owed(cfg, messages, delivered, ids))
        if not sends:  # the usual case: no claims to take
            return lines
        outbox = notify_outbox.Outbox(cfg.store_url)
        try:
            for block, ms in sends:
                lines += _send(client, outbox, blocks[block], block, ids[block], ms)
        finally:
            outbox.close()
    return lines


def _send(client, outbox: notify_outbox.Outbox, notifier, block: str, block_id: str, ms: list[Message]) -> list[str]:
    """Send `ms` through one block, as one message or a digest, once claimed (another reconciliation may hold
    some); record each delivery. Returns the line to report."""
    keys = [notify_outbox.key(m.automation, m.event_id, block) for m in ms]
    held = set(outbox.claim(keys))
    ms = [m for m, k in zip(ms, keys, strict=True) if k in held]
    if not ms:
        return []
    subject = ms[0].subject if len(ms) == 1 else f"{len(ms)} hitl-loop notifications"
    body = ms[0].body if len(ms) == 1 else "\n\n".join(f"{m.subject}\n{m.body}" for m in ms)
    try:
        with notifier.raise_on_failure():
            notifier.notify(body, subject)
    except Exception as e:  # a NotificationError from our blocks names no secret
        outbox.release(sorted(held))
        return [f"could not deliver {len(ms)} message(s) through {block}: {getattr(e, 'log', e)}"]
    outbox.sent(sorted(held))
    for m in ms:
        post_event(client, nt.SENT_EVENT, {"prefect.resource.id": f"hitl.notification.{uuid.uuid4()}",
                                           "prefect.resource.name": m.automation},
                   [{"prefect.resource.id": f"prefect.event.{m.event_id}", "prefect.resource.role": "triggering-event"},
                    {"prefect.resource.id": f"prefect.block-document.{block_id}", "prefect.resource.role": "block"}])
    return [f"sent through {block}: {subject}"]


def _announced(m: Message, waiting: list[PausedRun], digests: set[str]) -> bool:
    """A waiting message of a run whose digest was delivered (the digest stands for it)."""
    return False if not digests else any(
        r.state_id == m.event_id and any(t[len(DIGEST_TAG):] in digests for t in r.tags if t.startswith(DIGEST_TAG))
        for r in waiting)


def announce_release(cfg: Config, flow_run_id: str, headline: str | None, gate: str | None, models: str) -> None:
    """Emit a release's awaiting-approval event (its id derived from the run: one per approval run)."""
    from prefect import get_client

    if not cfg.notifications.enabled:
        return
    with get_client(sync_client=True) as client:
        post_event(client, nt.RELEASE_EVENT, {"prefect.resource.id": f"hitl.release.{flow_run_id}",
                                              "prefect.resource.name": models},
                   [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}],
                   release_payload(cfg, flow_run_id, headline, gate, models), nt.release_event_id(flow_run_id))


@dataclass(frozen=True)
class Digest:
    """Review batches one dispatch opens at once: named and tagged so that the digest stands for their messages."""

    dispatch_run_id: str
    count: int

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"hitl.digest.{self.dispatch_run_id}")

    def run(self, i: int) -> dict:
        """start_deployment's run name and tags for the i-th batch."""
        return {"run_name": f"{nt.DIGEST_RUN_PREFIX}{i + 1}-of-{self.count}-{self.dispatch_run_id[:8]}",
                "tags": (f"{DIGEST_TAG}{self.event_id}",)}


def digest_plan(cfg: Config, n_batches: int, dispatch_run_id: str) -> Digest | None:
    """A digest when the reviewers hear of batches and one dispatch opens `digest_min` or more."""
    n = cfg.notifications
    if not (n.enabled and n.routes.get("reviewers")) or n_batches < n.digest_min:
        return None
    return Digest(dispatch_run_id, n_batches)


def announce_digest(cfg: Config, digest: Digest, started: list[tuple[str, str]]) -> None:
    """Emit the digest event: one line per batch (id, name) with its link."""
    from prefect import get_client

    text = "\n".join(f"- {name}: {cfg.flow_run_url(run_id)}" for run_id, name in started)
    with get_client(sync_client=True) as client:
        post_event(client, nt.DIGEST_EVENT, {"prefect.resource.id": f"hitl.digest.{digest.dispatch_run_id}"},
                   [{"prefect.resource.id": f"prefect.flow-run.{digest.dispatch_run_id}",
                     "prefect.resource.role": "flow-run"}],
                   {"count": len(started), "text": text}, digest.event_id)


def setup(cfg: Config) -> list[str]:
    """What `hitl up` does for notifications: configure the blocks and automations, then reconcile."""
    return [*nt.configure(cfg), *reconcile(cfg)]
