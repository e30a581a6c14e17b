"""Notifications through Prefect's own machinery: what `hitl up` creates from the config's `notifications`.

- **Blocks** (hitl/ops/notify_blocks.py): one `hitl-webhook` block per webhook channel, one `hitl-email` block per
  email channel and role (its recipients are the role's people). Secrets (a webhook URL, an SMTP password) go
  into the blocks' secret fields, read from `notifications.secrets_file` (mode 0600) or the environment.
- **Automations**, one per kind of news and role, each sending to the role's blocks:
  a review or adjudication batch starts waiting (`prefect.flow-run.Suspended` / `Paused` of its flow), its wait
  expires within `expiry_lead_s` (a proactive trigger: no resume within `review.timeout_s - expiry_lead_s`), a
  release waits for approval (the `hitl.release.awaiting-approval` event the regression eval emits, carrying the
  report's headline and link), many batches opened at once (one `hitl.review.digest` event from the dispatch; its
  runs are named `hitl-digest-...` and get no message of their own), a run of a scheduled deployment failed or
  crashed; and a delivery failed (`prefect.automation.action.failed` of the automations above, to
  `alert_channel`).

Every message links to the run's Prefect UI page (`Config.flow_run_url`, as `hitl inbox`) and names the command
that answers it. `configure` is idempotent: blocks and automations are created or updated by name; automations
of this project that the config no longer asks for are deleted. Reconciliation after a restart:
hitl/ops/notify_reconcile.py.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitl import credentials
from hitl.config import Config
from hitl.review import inbox

RUN_ID = "{{ flow_run.id }}"
RELEASE_EVENT = "hitl.release.awaiting-approval"
DIGEST_EVENT = "hitl.review.digest"
SENT_EVENT = "hitl.notification.sent"  # a delivery made by the reconciliation (the automations' are Prefect's own)
DIGEST_RUN_PREFIX = "hitl-digest-"
WAITING = ("prefect.flow-run.Suspended", "prefect.flow-run.Paused")
# what ends a wait: the resume (Resuming, then the re-run's states) or its end (expiry Fails it, or a cancel)
WAIT_ENDS = ("prefect.flow-run.Resuming", "prefect.flow-run.Scheduled", "prefect.flow-run.Pending",
             "prefect.flow-run.Running", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
             "prefect.flow-run.Crashed", "prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled")
FLOWS = {"reviewers": "review-batch", "adjudicators": "adjudicate"}
ENV_PREFIX = "HITL_NOTIFY_"


class NotificationsError(RuntimeError):
    """The notifications cannot be configured (a missing secret, a server that cannot load the blocks)."""


@dataclass(frozen=True)
class Rule:
    """One automation: which news, for which role, with its message templates (Jinja, rendered by the server)."""

    key: str  # waiting-review, expiring-review, waiting-adjudication, expiring-adjudication, approval, digest, ...
    role: str
    subject: str
    body: str

    def name(self, cfg: Config) -> str:
        return f"{automation_prefix(cfg)}{self.key}"


def automation_prefix(cfg: Config) -> str:
    """Every automation of this project starts with it (the delivery alert watches exactly these)."""
    return f"hitl {cfg.project}: "


def alert_name(cfg: Config) -> str:
    return f"hitl {cfg.project} alert: delivery failed"


def release_event_id(flow_run_id: object) -> uuid.UUID:
    """The id of a release's awaiting-approval event: one per approval run, so its delivery can be looked up."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"hitl.release.{flow_run_id}")


def _people(cfg: Config, role: str) -> str:
    names = cfg.notifications.people.get(role) or (cfg.review.adjudicators if role == "adjudicators" else [])
    return ", ".join(names) or {"reviewers": "any reviewer", "adjudicators": "any adjudicator",
                                "approvers": "an approver", "operators": "whoever runs the stack"}[role]


def rules(cfg: Config) -> list[Rule]:
    """The automations the config asks for: every kind of news whose role has a route."""
    link = cfg.flow_run_url(RUN_ID)
    lead_min = round(cfg.notifications.expiry_lead_s / 60)
    out = []
    for role in FLOWS:
        kind = "review batch" if role == "reviewers" else "adjudication batch"
        key = "review" if role == "reviewers" else "adjudication"
        command = inbox.answer_command(inbox.REVIEW, "RUN").replace("RUN", RUN_ID)
        a_kind = f"{'A' if role == 'reviewers' else 'An'} {kind}"
        out += [Rule(f"waiting-{key}", role, f"{a_kind} is waiting: {{{{ flow_run.name }}}}",
                     f"The {kind} {{{{ flow_run.name }}}} waits for {_people(cfg, role)}.\nOpen {link} and use Resume "
                     f"(the ⋮ menu), or run `{command}`.\nIt waits until "
                     "{{ flow_run.state.state_details.pause_timeout }} (UTC); then its items go back to the queue."),
                Rule(f"expiring-{key}", role, f"{a_kind} expires in about {lead_min} min: {{{{ flow_run.name }}}}",
                     f"Nobody has answered the {kind} {{{{ flow_run.name }}}} ({_people(cfg, role)}). Its wait ends at "
                     "{{ flow_run.state.state_details.pause_timeout }} (UTC) and its items go back to the queue.\n"
                     f"Open {link}, or run `{command}`.")]
    out += [
        Rule("digest", "reviewers", "{{ event.payload.count }} review batches are waiting",
             "{{ event.payload.count }} review batches opened at once wait for " + _people(cfg, "reviewers")
             + ":\n{{ event.payload.text }}"),
        Rule("approval", "approvers", "A release waits for approval: {{ event.payload.models }}",
             "{{ event.payload.headline }}\nGate: {{ event.payload.gate }}. It waits for " + _people(cfg, "approvers")
             + ".\nDecide at {{ event.payload.link }} (Resume, the ⋮ menu), or run `{{ event.payload.command }}`."),
        Rule("failed", "operators", "A scheduled run {{ flow_run.state.name | lower }}: {{ flow_run.name }}",
             "{{ flow_run.name }} ({{ deployment.name }}) ended {{ flow_run.state.name }}: "
             "{{ flow_run.state.message }}\nLogs: " + link),
    ]
    return [r for r in out if cfg.notifications.routes.get(r.role)]


def trigger(cfg: Config, rule: Rule) -> dict[str, Any]:
    """The automation trigger of `rule` (an EventTrigger, as a dict)."""
    per_run = {"prefect.resource.id": "prefect.flow-run.*"}
    one_each = {"for_each": ["prefect.resource.id"], "posture": "Reactive", "threshold": 1, "within": 0}
    if rule.key.startswith(("waiting-", "expiring-")):
        flow = {"prefect.resource.role": "flow", "prefect.resource.name": FLOWS[rule.role]}
        if rule.key.startswith("waiting-"):  # a run of a digest had its message in the digest
            return {**one_each, "expect": list(WAITING), "match_related": flow,
                    "match": {**per_run, "prefect.resource.name": f"!{DIGEST_RUN_PREFIX}*"}}
        return {"after": list(WAITING), "expect": list(WAIT_ENDS), "match": per_run, "match_related": flow,
                "for_each": ["prefect.resource.id"], "posture": "Proactive", "threshold": 1,
                "within": cfg.review.timeout_s - cfg.notifications.expiry_lead_s}
    if rule.key == "approval":
        return {**one_each, "expect": [RELEASE_EVENT], "match": {"prefect.resource.id": "hitl.release.*"}}
    if rule.key == "digest":
        return {**one_each, "expect": [DIGEST_EVENT], "match": {"prefect.resource.id": "hitl.digest.*"}}
    scheduled = sorted(cfg.deployments.schedules)
    return {**one_each, "expect": ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"], "match": per_run,
            "match_related": [{"prefect.resource.role": "deployment", "prefect.resource.name": scheduled},
                              {"prefect.resource.id": f"prefect.tag.{cfg.project}"}]}


def alert_trigger(cfg: Config) -> dict[str, Any]:
    return {"expect": ["prefect.automation.action.failed"], "posture": "Reactive", "threshold": 1, "within": 0,
            "match": {"prefect.resource.id": "prefect.automation.*",
                      "prefect.resource.name": f"{automation_prefix(cfg)}*"}}


ALERT_SUBJECT = "A hitl notification was not delivered"
ALERT_BODY = ("The automation {{ event.resource['prefect.resource.name'] }} could not deliver its message: "
              "{{ event.payload.notification_log or event.payload.reason }}. Check the channel; `hitl up` sends "
              "what is still missing once it works again.")


# ---- secrets and blocks ----
def secret_key(channel: str, what: str) -> str:
    """The environment variable (or secrets-file key) of a channel's secret: HITL_NOTIFY_<CHANNEL>_<URL|PASSWORD>."""
    return f"{ENV_PREFIX}{''.join(c if c.isalnum() else '_' for c in channel).upper()}_{what}"


def secrets(cfg: Config) -> dict[str, str]:
    """Each configured channel's secret by key: from `notifications.secrets_file`, else the environment."""
    n = cfg.notifications
    source = (credentials.read_secrets(Path(n.secrets_file).expanduser(), "notifications.secrets_file")
              if n.secrets_file else os.environ)
    out, missing = {}, []
    for name, ch in n.channels.items():
        key = secret_key(name, "URL" if ch.kind == "webhook" else "PASSWORD")
        if source.get(key):
            out[key] = source[key]
        elif ch.kind == "webhook" or ch.smtp_user:
            missing.append(key)
    if missing:
        where = f"notifications.secrets_file {n.secrets_file}" if n.secrets_file else "the environment"
        raise NotificationsError(f"Notifications: {', '.join(missing)} missing from {where} (KEY=value; a webhook's "
                                 "URL and an SMTP password are secrets and never go in the config)")
    return out


def block_name(cfg: Config, channel: str, role: str | None = None) -> str:
    """A block document's name: one per webhook channel; an email channel has one per role (its recipients)."""
    ch = cfg.notifications.channels[channel]
    raw = f"hitl-{cfg.project}-{channel}" + (f"-{role}" if ch.kind == "email" and role else "")
    return "".join(c if c.isalnum() else "-" for c in raw.lower())


def block_slug(cfg: Config, channel: str) -> str:
    from hitl.ops.notify_blocks import EMAIL_SLUG, WEBHOOK_SLUG

    return WEBHOOK_SLUG if cfg.notifications.channels[channel].kind == "webhook" else EMAIL_SLUG


def make_block(cfg: Config, channel: str, role: str, found: dict[str, str]):
    """The notification block that delivers `role`'s news on `channel` (not saved)."""
    from hitl.ops.notify_blocks import HitlEmail, HitlWebhook

    ch = cfg.notifications.channels[channel]
    if ch.kind == "webhook":
        return HitlWebhook(name=block_name(cfg, channel), url="{{url}}", json_data={"text": "{{subject}}\n{{body}}"},
                           secrets={"url": found[secret_key(channel, "URL")]})
    n = cfg.notifications
    to = [n.addresses[p] for p in n.people.get(role, [])] or [ch.sender]
    password = found.get(secret_key(channel, "PASSWORD"))
    return HitlEmail(smtp_host=ch.smtp_host, smtp_port=ch.smtp_port, security=ch.smtp_security,
                     username=ch.smtp_user, password=password, sender=ch.sender, to=to)


def routes(cfg: Config) -> dict[str, list[tuple[str, str]]]:
    """role -> [(channel, block name)], with the delivery alert as role "alert" (sent as the operators)."""
    out = {role: [(c, block_name(cfg, c, role)) for c in chans] for role, chans in cfg.notifications.routes.items()}
    if cfg.notifications.alert_channel:
        c = cfg.notifications.alert_channel
        out["alert"] = [(c, block_name(cfg, c, "operators"))]
    return out


def server_can_load_blocks() -> bool:
    """Whether this environment (the one `hitl up` starts the Prefect server in) registers hitl's blocks as a
    Prefect collection: the server imports them only then, and cannot deliver through them otherwise."""
    from importlib.metadata import entry_points

    return any(ep.value == "hitl.ops.notify_blocks" for ep in entry_points(group="prefect.collections"))


def configure(cfg: Config) -> list[str]:
    """Create or update the blocks and automations the config asks for; delete this project's automations it no
    longer asks for. Returns one line per automation for the user. Call with PREFECT_API_URL set."""
    from prefect import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore

    wanted: dict[str, AutomationCore] = {}
    if cfg.notifications.enabled:
        if not server_can_load_blocks():
            raise NotificationsError("Notifications: the Prefect server cannot load hitl's notification blocks (no "
                                     "`prefect.collections` entry point in this environment): reinstall the project "
                                     "(`pip install -e .`), then `hitl down` and `hitl up`.")
        found = secrets(cfg)
        ids: dict[str, uuid.UUID] = {}
        by_role = routes(cfg)
        for role, pairs in by_role.items():
            for channel, name in pairs:
                if name not in ids:
                    ids[name] = make_block(cfg, channel, "operators" if role == "alert" else role, found).save(
                        name, overwrite=True)
        for rule in rules(cfg):
            actions = [SendNotification(block_document_id=ids[name], subject=rule.subject, body=rule.body)
                       for _, name in by_role[rule.role]]
            wanted[rule.name(cfg)] = AutomationCore(name=rule.name(cfg), trigger=trigger(cfg, rule), actions=actions,
                                                    enabled=True, description=f"hitl-loop notifications ({rule.role})")
        if "alert" in by_role:
            wanted[alert_name(cfg)] = AutomationCore(
                name=alert_name(cfg), trigger=alert_trigger(cfg), description="a hitl notification failed",
                enabled=True,
                actions=[SendNotification(block_document_id=ids[n], subject=ALERT_SUBJECT, body=ALERT_BODY)
                         for _, n in by_role["alert"]])
    lines = []
    with get_client(sync_client=True) as client:
        ours = [a for a in client.read_automations()
                if a.name.startswith((automation_prefix(cfg), alert_name(cfg)))]
        for a in ours:
            if a.name not in wanted:
                client.delete_automation(a.id)
                lines.append(f"removed automation {a.name!r}")
        existing = {a.name: a for a in ours}
        for name, automation in wanted.items():
            if name in existing:
                client.update_automation(existing[name].id, automation)
            else:
                client.create_automation(automation)
            lines.append(f"automation {name!r} -> {', '.join(b for _, b in routes(cfg)[_role_of(cfg, name)])}")
    return lines


def _role_of(cfg: Config, automation_name: str) -> str:
    if automation_name == alert_name(cfg):
        return "alert"
    return next(r.role for r in rules(cfg) if r.name(cfg) == automation_name)
