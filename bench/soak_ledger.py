"""The soak's independent ledger, and the invariants checked against it.

Each actor of the soak (the trace generator, every simulated reviewer process, the fault injector, the champion
probe) appends what it did to its own JSON-lines file, flushed and fsynced line by line, so the record survives a
kill of anything else. Nothing here reads the system's own tables to decide what *should* be there: the checks
take the ledger as the truth and the system's tables, read once at the end, as what is there.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd


class Ledger:
    """One actor's append-only record: `<folder>/<actor>.jsonl`."""

    def __init__(self, folder: Path, actor: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{actor}.jsonl"
        self.actor = actor

    def write(self, kind: str, **fields) -> None:
        line = json.dumps({"t": time.time(), "actor": self.actor, "kind": kind, **fields}, default=str)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read(folder: Path) -> list[dict]:
    """Every actor's entries, oldest first (a line cut short by a kill is skipped)."""
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return sorted(out, key=lambda e: e["t"])


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def traces_considered(entries: list[dict], considered: set[str], queued_trace_ids: list[str]) -> Check:
    """Every valid trace the generator wrote was considered by sampling, and none was queued twice."""
    written = [t for e in entries if e["kind"] == "traces" for t in e["ids"]]
    missing = sorted(set(written) - considered)
    twice = sorted(t for t, n in Counter(queued_trace_ids).items() if n > 1)
    unknown = sorted(set(queued_trace_ids) - set(written))
    ok = not missing and not twice and not unknown and len(written) == len(set(written))
    return Check("every valid trace considered exactly once", ok,
                 f"{len(written)} written, {len(set(written) & considered)} considered, {len(missing)} never "
                 f"considered{f' (e.g. {missing[:3]})' if missing else ''}; {len(queued_trace_ids)} queued, "
                 f"{len(twice)} queued twice, {len(unknown)} queued that were never written")


def garbage_quarantined(entries: list[dict], quarantined: pd.DataFrame) -> Check:
    """Every garbage line injected is quarantined once with a reason; no other row is. `quarantined`: one row per
    quarantined row, with `path` (as the source names it: relative to its folder) and `reason`; files are matched
    by name."""
    injected = Counter()
    for e in entries:
        if e["kind"] == "fault" and e["fault"] == "garbage-file" and e.get("ok"):
            injected[Path(e["file"]).name] += int(e["garbage_rows"])
    found = Counter(Path(p).name for p in quarantined["path"])
    wrong = {p: (injected.get(p, 0), found.get(p, 0)) for p in set(injected) | set(found)
             if injected.get(p, 0) != found.get(p, 0)}
    no_reason = int((quarantined["reason"].fillna("").str.strip() == "").sum())
    return Check("every garbage row quarantined once, with its reason", not wrong and not no_reason,
                 f"{sum(injected.values())} garbage rows in {len(injected)} files, {len(quarantined)} quarantined; "
                 f"{len(wrong)} files where the counts differ{f' {dict(list(wrong.items())[:2])}' if wrong else ''}"
                 f"; {no_reason} without a reason")


def _answers(entries: list[dict], form: str) -> list[dict]:
    return [e for e in entries if e["kind"] == "answer" and e["form"] == form and e["accepted"]]


def labels_stored_once(entries: list[dict], batches: pd.DataFrame, annotations: pd.DataFrame,
                       items: pd.DataFrame) -> Check:
    """Every label of a review form the server accepted is stored exactly once, or refused by the store with its
    reason (the reviewer had labelled the item in another batch; the item had its labels from others meanwhile);
    no stored label was never submitted. `batches`: id, flow_run_id; `annotations`: trace_id, reviewer, label,
    batch_id; `items`: trace_id, status."""
    accepted = _answers(entries, "ReviewForm")
    per_run = Counter(e["run_id"] for e in accepted)
    resumed_twice = sorted(r for r, n in per_run.items() if n > 1)
    batch_of = dict(zip(batches["flow_run_id"].astype(str), batches["id"], strict=False))
    stored = {(r.batch_id, r.trace_id, r.reviewer): r.label for r in annotations.itertuples()}
    by_trace = annotations.groupby("trace_id")
    status = dict(zip(items["trace_id"], items["status"], strict=False))
    lost, wrong_label, explained, ok_n = [], [], 0, 0
    claimed: Counter = Counter()
    for e in accepted:
        batch = batch_of.get(str(e["run_id"]))
        for trace, label in e["labels"].items():
            key = (batch, trace, e["reviewer"])
            if key in stored:
                claimed[key] += 1
                ok_n += 1
                if stored[key] != label:
                    wrong_label.append(key)
                continue
            others = by_trace.get_group(trace) if trace in by_trace.groups else annotations.iloc[0:0]
            if ((others["reviewer"] == e["reviewer"]).any()
                    or (len(others) and status.get(trace) != "queued")):
                explained += 1
            else:
                lost.append(key)
    phantom = [k for k in stored if k not in claimed]
    dup = [k for k, n in claimed.items() if n > 1]
    ok = not (lost or wrong_label or phantom or dup or resumed_twice)
    return Check("every accepted label stored exactly once", ok,
                 f"{len(accepted)} review forms accepted ({sum(len(e['labels']) for e in accepted)} labels): "
                 f"{ok_n} stored, {explained} refused by the store with a reason, {len(lost)} lost, "
                 f"{len(wrong_label)} stored with another label, {len(dup)} stored twice, {len(phantom)} stored "
                 f"that nobody submitted; {len(resumed_twice)} runs accepted twice"
                 + (f" (lost e.g. {lost[:2]}, phantom e.g. {phantom[:2]})" if lost or phantom else ""))


def adjudications_stored_once(entries: list[dict], resolutions: pd.DataFrame) -> Check:
    """Every adjudication the server accepted is a resolution once (or the item was already resolved)."""
    accepted = _answers(entries, "AdjudicationForm")
    adj = resolutions[resolutions["kind"] == "adjudication"]
    counts = Counter(adj["trace_id"])
    decided = [(t, lab) for e in accepted for t, lab in e["labels"].items()]
    missing = [t for t, _ in decided if counts.get(t, 0) == 0]
    twice = [t for t, n in counts.items() if n > 1]
    return Check("every accepted adjudication stored once", not missing and not twice,
                 f"{len(accepted)} adjudication forms accepted ({len(decided)} decisions), {len(adj)} stored; "
                 f"{len(missing)} missing, {len(twice)} items resolved twice")


def champion_probes(entries: list[dict]) -> Check:
    """@champion was loadable and an approved version at every probe MLflow answered before and after."""
    probes = [e for e in entries if e["kind"] == "probe"]
    bad = [e for e in probes if e["mlflow_up"] and not (e["ok"] and e["approved"])]
    down = sum(not e["mlflow_up"] for e in probes)
    versions = sorted({str(e["version"]) for e in probes if e.get("version")}, key=lambda v: int(v))
    return Check("@champion loadable and approved at every probe", bool(probes) and not bad,
                 f"{len(probes)} probes ({down} while MLflow was down by injection), {len(bad)} failed"
                 f"{' (e.g. ' + str(bad[0].get('error')) + ')' if bad else ''}; "
                 f"champion versions seen: {', '.join(versions) or 'none'}")


def faults_survived(entries: list[dict], min_total: int, min_kinds: int) -> tuple[Check, dict[str, tuple[int, int]]]:
    """Faults injected and survived (the stack answered again afterwards), by kind."""
    faults = [e for e in entries if e["kind"] == "fault"]
    by_kind: dict[str, tuple[int, int]] = {}
    for e in faults:
        n, ok = by_kind.get(e["fault"], (0, 0))
        by_kind[e["fault"]] = (n + 1, ok + bool(e.get("ok")))
    injected = sum(n for n, _ in by_kind.values())
    survived = sum(ok for _, ok in by_kind.values())
    ok = injected >= min_total and len(by_kind) >= min_kinds and survived == injected
    return Check(f"at least {min_total} faults of {min_kinds} kinds, each survived", ok,
                 f"{injected} injected of {len(by_kind)} kinds, {survived} survived"), by_kind


def runs_settled(runs: pd.DataFrame, now: float) -> Check:
    """No run left Pending or Running, or Paused past its expiry; every Failed or Crashed run says why.
    `runs`: name, deployment, state, message, expires_at (epoch seconds or NaN)."""
    stuck = runs[runs["state"].isin(["PENDING", "RUNNING"])]
    overdue = runs[(runs["state"] == "PAUSED") & (runs["expires_at"].fillna(float("inf")) < now)]
    silent = runs[runs["state"].isin(["FAILED", "CRASHED"]) & (runs["message"].fillna("").str.strip() == "")]
    states = ", ".join(f"{n} {s.lower()}" for s, n in runs["state"].value_counts().items())
    return Check("no run left Pending, Running or past its wait without a reason",
                 stuck.empty and overdue.empty and silent.empty,
                 f"{len(runs)} runs ({states}); {len(stuck)} still pending/running, {len(overdue)} suspended past "
                 f"their timeout, {len(silent)} failed or crashed without a message")


def bounded_growth(samples: pd.DataFrame, factor: float = 2.0, slack_mb: float = 100.0) -> Check:
    """Each service's RSS and open files at the end within `factor` of its level after warm-up (the second
    fifth of the run), plus slack. `samples`: t, service, rss_mb, open_files (one service's restarts start over,
    so the comparison uses the last process's samples against the whole run's warm level)."""
    problems, lines = [], []
    for service, s in samples.groupby("service"):
        s = s.sort_values("t")
        warm = s.iloc[len(s) // 5: max(len(s) // 5 + 1, 2 * len(s) // 5)]
        end = s.tail(3)
        for col, slack in (("rss_mb", slack_mb), ("open_files", 50)):
            base, last = float(warm[col].median()), float(end[col].median())
            lines.append(f"{service} {col} {base:.0f}->{last:.0f}")
            if last > factor * base + slack:
                problems.append(f"{service} {col}")
    return Check("resource growth bounded (RSS, open files)", not problems,
                 "; ".join(lines) + (f"; grew past bound: {problems}" if problems else ""))


def disk_bounded(start: dict[str, float], end: dict[str, float], new_model_versions: int, traces: int,
                 per_1000_traces_mb: float = 50.0) -> Check:
    """The state's growth is what the work explains: the MLflow artifacts grew by about one model per version
    registered (the launch model's size, `start["artifacts_mb"]`, within 10% plus 20 MB), and everything else
    (the Prefect, MLflow and review databases, logs, caches) by at most `per_1000_traces_mb` per 1,000 traces."""
    model_mb = start["artifacts_mb"]
    artifacts = end["artifacts_mb"] - start["artifacts_mb"]
    allowed = 1.1 * model_mb * new_model_versions + 20
    rest = (end["state_mb"] - end["artifacts_mb"] + end.get("postgres_mb", 0.0)) - (
        start["state_mb"] - start["artifacts_mb"] + start.get("postgres_mb", 0.0))
    rate = rest / max(1, traces) * 1000
    ok = artifacts <= allowed and rate <= per_1000_traces_mb
    return Check("disk growth bounded (artifacts, databases, logs)", ok,
                 f"artifacts +{artifacts:.0f} MB for {new_model_versions} new model versions (bound {allowed:.0f}); "
                 f"databases, logs and caches +{rest:.0f} MB, {rate:.1f} MB per 1,000 traces (bound "
                 f"{per_1000_traces_mb:.0f}); logs {end.get('logs_mb', 0):.1f} MB")


# ---- notifications ---------------------------------------------------------------------------------------------
# The subject lines of hitl's messages (hitl/ops/notifications.py), and what each is about.
SUBJECTS = {
    "waiting": re.compile(r"^An? (review|adjudication) batch is waiting: "),
    "expiring": re.compile(r"^An? (review|adjudication) batch expires in about "),
    "digest": re.compile(r"^\d+ review batches are waiting"),
    "approval": re.compile(r"^A release waits for approval: "),
    "failed": re.compile(r"^A scheduled run \w+: "),
    "alert": re.compile(r"^A hitl notification was not delivered"),
}
RUN_LINK = re.compile(r"/runs/flow-run/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def parse_notices(entries: list[dict]) -> list[tuple[str, str]]:
    """(kind, flow run id) of every piece of news the webhook received: a digest names each of its runs, and the
    reconciliation's combined message ("N hitl-loop notifications") each message it holds. Digest news counts as
    the run's waiting news."""
    out = []
    for e in entries:
        if e["kind"] != "notice":
            continue
        kind = None
        for line in e["text"].splitlines():
            hit = next((k for k, rx in SUBJECTS.items() if rx.match(line)), None)
            if hit:
                kind = hit
                if kind == "alert":
                    out.append(("alert", ""))
            for run_id in RUN_LINK.findall(line) if kind and kind != "alert" else []:
                out.append(("waiting" if kind == "digest" else kind, run_id))
                if kind != "digest":
                    kind = None  # one run per message
    return out


@dataclass
class RunHistory:
    """What Prefect's state history says of one flow run (read at the end)."""

    deployment: str
    waits: int  # Suspended/Paused states
    failures: int  # Failed/Crashed states
    final: str  # the last state's type
    ended: float  # epoch seconds of the last state


def notifications_once(entries: list[dict], history: dict[str, RunHistory], scheduled: set[str], wait_s: float,
                       cutoff: float) -> Check:
    """Each piece of news delivered exactly once. From the ledger: what the webhook received, and the runs the
    reviewers saw waiting, since when and until their answer was accepted (or the wait's end). Nothing was said
    twice: a run's waiting and expiry news at most once per wait (Prefect's history counts the waits), an approval
    at most once per run, a failure at most once per Failed/Crashed state. Nothing owed was lost: every run that
    waited for people at least `wait_s` had its waiting news (its expiry warning when it waited that long past the
    warning's time is not required: after a restart the server may drop it, see docs/operations.md), an approval
    run its approval news, and every run of a scheduled deployment (`scheduled`) that ended Failed or Crashed
    before `cutoff - wait_s` its failure news. No delivery failed (no alert)."""
    notices = parse_notices(entries)
    said = Counter(notices)
    seen = {e["run_id"]: e for e in entries if e["kind"] == "seen"}
    answered: dict[str, float] = {}
    for e in entries:
        if e["kind"] == "answer" and e["accepted"]:
            answered.setdefault(e["run_id"], e["t"])
    twice = []
    for (kind, run_id), n in said.items():
        h = history.get(run_id)
        allowed = {"waiting": h.waits if h else 1, "expiring": h.waits if h else 1, "approval": 1,
                   "failed": h.failures if h else 1, "alert": 0}[kind]
        if n > max(allowed, 1 if kind != "alert" else 0):
            twice.append(f"{kind} {run_id[:8]} x{n}")
    owed, missing = 0, []
    for run_id, e in seen.items():
        since = datetime.fromisoformat(e["paused_at"]).timestamp()
        until = answered.get(run_id, datetime.fromisoformat(e["expires_at"]).timestamp() if e.get("expires_at")
                             else cutoff)
        if min(until, cutoff) - since < wait_s:
            continue
        kind = "approval" if e["form"] == "ApprovalForm" else "waiting"
        owed += 1
        if not said.get((kind, run_id)):
            missing.append(f"{kind} {run_id[:8]}")
    for run_id, h in history.items():
        if h.deployment in scheduled and h.final in ("FAILED", "CRASHED") and h.ended < cutoff - wait_s:
            owed += 1
            if not said.get(("failed", run_id)):
                missing.append(f"failed {run_id[:8]}")
    kinds = Counter(k for k, _ in notices)
    alerts = kinds.pop("alert", 0)
    received = sum(e["kind"] == "notice" for e in entries)
    ok = not twice and not missing and not alerts
    return Check("every notification delivered exactly once", ok,
                 f"{received} messages received ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
                 f"{owed} owed (waits of {wait_s:.0f} s or more, failures), {len(missing)} missing"
                 f"{f' (e.g. {missing[:3]})' if missing else ''}; {len(twice)} said twice"
                 f"{f' (e.g. {twice[:3]})' if twice else ''}; {alerts} delivery alerts")
