"""What waits for one person now (`hitl inbox`): paused review and adjudication batches, releases awaiting
approval, and the review store's work that no run holds yet. Each waiting run comes with its Prefect UI page
(`Config.flow_run_url`, where the notifications link too) and the terminal command that answers it.

Pure: built from plain data (the paused runs, two store counts, the config, a name), so it is tested without
servers; the CLI fetches and renders.

Who sees what: review batches go to everyone; an adjudication to the adjudicators its form names (else
`review.adjudicators`; nobody named: everyone); a release approval to `approvers` (the config names none yet:
everyone). Without a name, everything is shown with who may answer it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from hitl.config import Config
from hitl.db import utc
from hitl.review.forms import REVIEWER_FIELD, trace_ids_from_schema
from hitl.review.prefect_api import ADJUDICATION_FORM, APPROVAL_FORM, REVIEW_FORM, PausedRun
from hitl.vocabulary import CAUTION

REVIEW, ADJUDICATION, APPROVAL = "review", "adjudication", "approval"
KINDS = {REVIEW_FORM: REVIEW, ADJUDICATION_FORM: ADJUDICATION, APPROVAL_FORM: APPROVAL}
GATE = re.compile(r"^#*\s*Gate:\s*\**\s*([A-Z]+)\b", re.MULTILINE)  # "## Gate: PASS" or "Gate: **PASS** ·"
BOLD_LINE = re.compile(r"^\*\*(.+?)\*\*\s*$", re.MULTILINE)  # the report's headline: its first bold paragraph


@dataclass(frozen=True)
class Waiting:
    """One paused flow run waiting for a person."""

    kind: str  # review | adjudication | approval
    run_id: str
    run_name: str
    link: str  # the run's Prefect UI page: Resume is there
    command: str  # the terminal command that answers it
    waiting_since: str  # ISO 8601, UTC
    expires_at: str | None  # when the wait times out (then a review batch goes back to the queue)
    seconds_left: float | None  # until then; 0 once past
    items: int | None  # review and adjudication: items on the form
    gate: str | None  # approval: the release gate's outcome (PASS, INCONCLUSIVE, FAIL)
    headline: str | None  # approval: the report's headline
    answered_by: list[str]  # who may answer; empty: anyone


@dataclass(frozen=True)
class Inbox:
    person: str | None  # None: everyone's view
    now: str  # ISO 8601, UTC
    waiting: list[Waiting]  # oldest wait first
    queued_items: int  # queued items no open batch holds: the review dispatch opens batches for them
    open_disputes: int  # disputed items in no waiting adjudication run (0 for someone who may not adjudicate)

    @property
    def empty(self) -> bool:
        """Nothing to answer now (the counts may still say work is coming)."""
        return not self.waiting

    def to_dict(self) -> dict:
        return {"person": self.person, "now": self.now, "empty": self.empty,
                "waiting": [asdict(w) for w in self.waiting],
                "queued_items": self.queued_items, "open_disputes": self.open_disputes}


def parse_time(text: str) -> datetime:
    """A time the Prefect API gave as ISO text, in UTC (a naive one taken as UTC)."""
    return utc(datetime.fromisoformat(text))


def _choices(prop: dict | None) -> list[str]:
    """The values a form field accepts (`enum`, or the `const` of a one-value Literal)."""
    prop = prop or {}
    if prop.get("enum"):
        return [str(v) for v in prop["enum"]]
    return [str(prop["const"])] if "const" in prop else []


def answer_command(kind: str, run_id: str, person: str | None = None, config_path: str | None = None) -> str:
    """The terminal command that answers a waiting run (`hitl review` for batches, `hitl approve` for releases)."""
    if kind == APPROVAL:
        words = ["hitl", "approve", "--run", run_id] + (["--approver", person] if person else [])
    else:
        words = ["hitl", "review", "--run", run_id] + (["--reviewer", person] if person else [])
    return shlex.join(words + (["-c", config_path] if config_path else []))


def report_gate(description: str) -> tuple[str | None, str | None]:
    """(gate outcome, headline) read off an approval run's description (the report's Markdown), the headline
    followed by the first screen's cautions; None where the description does not have it."""
    gate, head = GATE.search(description), BOLD_LINE.search(description)
    cautions = [line.removeprefix(CAUTION).strip() for line in description.splitlines() if line.startswith(CAUTION)]
    headline = " ".join([head.group(1).strip(), *cautions]) if head else None
    return (gate.group(1) if gate else None), headline


def who_answers(run: PausedRun, cfg: Config, approvers: Sequence[str] = ()) -> list[str]:
    """Who may answer `run`; empty: anyone."""
    kind = KINDS.get(run.form)
    if kind == ADJUDICATION:
        return _choices(run.fields.get(REVIEWER_FIELD)) or list(cfg.review.adjudicators)
    if kind == APPROVAL:
        return list(approvers)
    return []


def entry(run: PausedRun, cfg: Config, now: datetime, person: str | None = None,
          config_path: str | None = None, approvers: Sequence[str] = ()) -> Waiting:
    """One waiting run as the inbox (and a notification) shows it."""
    kind = KINDS[run.form]
    since = parse_time(run.paused_at or run.created)
    expires = parse_time(run.expires_at) if run.expires_at else None
    gate = head = None
    if kind == APPROVAL:
        gate, head = report_gate(run.description)
    return Waiting(kind, run.id, run.name, cfg.flow_run_url(run.id), answer_command(kind, run.id, person, config_path),
                   since.astimezone(UTC).isoformat(), expires.astimezone(UTC).isoformat() if expires else None,
                   max(0.0, (expires - now).total_seconds()) if expires else None,
                   None if kind == APPROVAL else len(trace_ids_from_schema(run.schema)), gate, head,
                   who_answers(run, cfg, approvers))


def build(runs: Iterable[PausedRun], cfg: Config, *, queued_items: int, disputed: Iterable[str],
          person: str | None = None, now: datetime | None = None, config_path: str | None = None,
          approvers: Sequence[str] = ()) -> Inbox:
    """The inbox of `person` (everyone's when None): the paused runs they may answer, oldest wait first; the
    queued items no open batch holds; the disputed trace ids that no waiting adjudication run holds (for
    those who may adjudicate). Runs with another form (not a person's) are left out."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    runs = [r for r in runs if r.form in KINDS]
    items = [entry(r, cfg, now, person, config_path, approvers) for r in runs]
    mine = [w for w in items if person is None or not w.answered_by or person in w.answered_by]
    mine.sort(key=lambda w: (parse_time(w.waiting_since), w.run_id))
    in_runs = {t for r in runs if r.form == ADJUDICATION_FORM for t in trace_ids_from_schema(r.schema).values()}
    adjudicators = list(cfg.review.adjudicators)
    may_adjudicate = person is None or not adjudicators or person in adjudicators
    open_disputes = len(set(disputed) - in_runs) if may_adjudicate else 0
    return Inbox(person, now.isoformat(), mine, queued_items, open_disputes)


def duration(seconds: float) -> str:
    """A wait or a time left in words: "45 s", "12 min", "3 h 05 min", "2 d 4 h"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
