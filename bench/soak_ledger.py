"""The soak's independent ledger, and the invariants checked against it.

Each actor of the soak (the trace generator, every simulated reviewer process, the fault injector, the champion
probe) appends what it did to its own JSON-lines file, flushed and fsynced line by line, so the record survives a
kill of anything else. Nothing here reads the system's own tables to decide what *should* be there: the checks
take the ledger as the truth and the system's tables, read once at the end, as what is there.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
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
