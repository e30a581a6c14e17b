"""Per-source watermarks: which trace files, and which windows of them, were read already, and which quarantined
rows were counted already. Re-runs and backfills read each file only as often as needed, miss no late trace,
and count every quarantined row once.

A file is known by its path under the source and its content (sha256; size and mtime are recorded too). Its
content's span (first and last usable timestamp) is recorded when it is read. Reading it for a window
[since, until) covers that window for that content once the window's traces are stored as considered: at once
when none of them is new, else by `commit` after the run's enqueue, so a run that fails before never costs a
trace. A later run skips a file whose content is unchanged and whose timestamps inside the requested window
all lie in covered windows. A file with no timestamp inside the window is skipped once its content is known.
A file that is read (new, or changed: late traces appended) is read for the requested window and for every
window processed before, so a late trace of an earlier day comes with the next run, whichever day that run
asks for (the random draw gives it a supplemental draw of its day). Rows whose trace id the store already
knows are dropped, so only the new ones come back. Rows without a usable timestamp belong to every window;
like every quarantined row they are recorded by (file, row key) and counted once, however often read.

An MLflow source keeps the same windows, with one difference: it cannot tell that nothing was added to a window
(a trace's timestamp is the client's, so a late trace lands in a window read already). Each run reads the window
it asks for and every window read before that is not yet closed: a window is closed once a read started
`source.lateness_hours` after its end (that read pages a window no trace is being added to, by the allowance);
a closed window is not read again, the requested one included. A window's cap (`source.max_traces`,
hitl/sampling/mlflow_traces.py) is fixed at its first read and kept with it. Only trace infos are paged; traces
considered before are not fetched, and quarantined traces are counted once, as for files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from hitl.config import Config
from hitl.db import utc
from hitl.hashing import file_sha256
from hitl.sampling import mlflow_traces
from hitl.sampling.mlflow_traces import WindowPlan
from hitl.sampling.sources import (
    REFUSED_COLUMNS,
    FileRows,
    LoadResult,
    file_label,
    parse_timestamps,
    read_file_chunks,
    trace_files,
    validate,
)
from hitl.schemas import trace_schema
from hitl.vocabulary import REASON_COLUMN

Window = tuple[int | None, int | None]  # [since, until) in ns since the epoch (UTC); None: open


class WatermarkStore(Protocol):
    """What the watermarks keep in the review store's database (hitl/review/store.py)."""

    def known_among(self, trace_ids: list[str]) -> set[str]: ...
    def source_files(self, source: str) -> dict[str, dict]: ...
    def processed_windows(self, source: str) -> set[Window]: ...
    def source_windows(self, source: str) -> list[dict]: ...
    def record_source_files(self, source: str, files: Iterable[Mapping]) -> None: ...
    def cover_source_windows(self, source: str, windows: Iterable[Mapping]) -> None: ...
    def record_quarantined(self, source: str, rows: Iterable[tuple[str, str, str]]) -> set[tuple[str, str]]: ...


@dataclass(frozen=True)
class FileMark:
    """One content of a file (or an MLflow experiment) read for one window; covered once the window's traces are
    stored. MLflow windows also keep when the read started and the window's cap."""

    source: str
    path: str
    sha256: str
    since: int | None
    until: int | None
    read_at: datetime | None = None  # None: when covered
    take_below: float | None = None


MLFLOW_CONTENT = "mlflow"  # an MLflow window's `sha256`: the experiment has no content hash


def ns(t: datetime | None) -> int | None:
    """A time as ns since the epoch (UTC; a naive time is taken as UTC), None for an open bound."""
    return None if t is None else pd.Timestamp(utc(t)).as_unit("ns").value


def covered(span: tuple[int, int] | None, windows: Iterable[Window], since: int | None, until: int | None) -> bool:
    """Whether every timestamp of a known content inside [since, until) lies in a window read before.

    `span` is the content's (first, last) usable timestamp; None when it has none: its rows then belong to no
    window (they are quarantined, and counted, at the first read), so there is nothing left to read."""
    if span is None:
        return True
    t, last = span[0] if since is None else max(span[0], since), span[1]
    windows = list(windows)
    while t <= last and (until is None or t < until):
        ends = [u for s, u in windows if (s is None or s <= t) and (u is None or u > t)]
        if not ends:
            return False
        if None in ends:
            return True
        t = max(e for e in ends if e is not None)
    return True


def span(rows: pd.DataFrame, cfg: Config) -> tuple[int, int] | None:
    """(first, last) usable timestamp of a file's rows in ns, None when none has one."""
    df = rows.rename(columns=cfg.source.column_map)
    if df.empty or "timestamp" not in df.columns:
        return None
    ts = parse_timestamps(df["timestamp"])[0].dropna()
    return (ts.min().value, ts.max().value) if len(ts) else None


def row_keys(parts: list[FileRows], shas: Mapping[str, str], quarantined: pd.DataFrame) -> list[tuple[str, str]]:
    """(file, key) of each quarantined entry: the key is its line (or row) and a hash of what it held as read,
    so it is the same however often, and with whichever other files, the file is read; for a file refused as
    a whole, "file" and the file's content."""
    labels = {p.label for p in parts}
    wanted = set(quarantined["_source"].astype(str))
    held: dict[str, str] = {p.label: shas.get(p.label, "")[:24] for p in parts}
    for p in parts:
        held |= p.digests
        if not p.digests and "_source" in p.rows.columns:  # Parquet, MLflow: the row's values in its own file
            mine = p.rows[p.rows["_source"].isin(wanted)]
            held |= {r["_source"]: hashlib.sha256(json.dumps({k: str(v) for k, v in r.items() if _present(v)},
                                                             sort_keys=True).encode()).hexdigest()[:24]
                     for r in mine.to_dict("records")}
    out = []
    for where in quarantined["_source"].astype(str):
        path = where if where in labels else where.rpartition(":")[0] if len(labels) > 1 else next(iter(labels))
        line = where[len(path) + 1:] if where.startswith(f"{path}:") else "file" if where == path else where
        out.append((path, f"{line}#{held.get(where, '')}"))
    return out


def _present(v: object) -> bool:
    return not (v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v))


def in_windows(df: pd.DataFrame, windows: Iterable[Window]) -> pd.DataFrame:
    """Rows whose timestamp falls in one of the windows; rows without a usable timestamp are kept."""
    if df.empty or "timestamp" not in df.columns or not pd.api.types.is_datetime64_any_dtype(df["timestamp"]):
        return df
    ts, keep = df["timestamp"], df["timestamp"].isna()
    for since, until in windows:
        keep |= (True if since is None else ts >= pd.Timestamp(since, unit="ns", tz="UTC")) & \
            (True if until is None else ts < pd.Timestamp(until, unit="ns", tz="UTC"))
    return df[keep]


def mlflow_plan(windows: Iterable[Mapping], requested: Window, lateness_ns: int, now: int) -> list[WindowPlan]:
    """The MLflow windows to read at `now` (ns): the requested one unless it is closed, and every window read
    before that is not closed. `windows` are the recorded ones (since, until, read_at in ns, take_below)."""
    def closed(w: Mapping) -> bool:
        return w["until"] is not None and w["read_at"] >= w["until"] + lateness_ns

    known = {(w["since"], w["until"]): w for w in windows}
    plans = [WindowPlan(*requested)] if requested not in known else []
    plans += [WindowPlan(w["since"], w["until"], w["take_below"], first=False) for w in known.values()
              if not closed(w)]
    return sorted(plans, key=lambda p: (p.since or 0, p.until or 0))


def load_new(cfg: Config, store: WatermarkStore, since: datetime | None = None, until: datetime | None = None,
             path: Path | None = None, now: datetime | None = None,
             sink: Callable[[pd.DataFrame], None] | None = None) -> LoadResult:
    """`sources.load_traces`, reading only what is new since the last runs: files unchanged and already read
    for [since, until) are skipped; a file read (new, or changed) is read for that window and for every window
    processed before, so late traces in those come too; traces already considered are dropped, and quarantined
    rows counted before are not counted again (`seen_before`). `pending` holds the marks to `commit` once the
    traces are stored. An MLflow source reads its windows as the module's docstring says, at `now` (default:
    the clock).

    Files are read `source.partition_rows` rows at a time. With a `sink`, each partition's new traces go to it as
    they are validated and the result's `accepted` stays empty (`spilled` counts them): memory then grows with a
    partition, not with the window."""
    requested: Window = (ns(since), ns(until))
    reading, seen, skipped, marks, read = [requested], [], [], [], None
    if cfg.source.kind == "mlflow" and path is None:
        source, at = mlflow_traces.source_name(cfg), utc(now or datetime.now(UTC))
        plans = mlflow_plan(store.source_windows(source), requested, int(cfg.source.lateness_hours * 3600e9), ns(at))
        read = mlflow_traces.read_windows(cfg, plans, store.known_among)
        batches: Iterable[list[FileRows]] = [[FileRows(source, read.rows, pd.DataFrame(columns=REFUSED_COLUMNS))]]
        files, reading = [source], [(p.since, p.until) for p in plans]
        marks = [FileMark(source, source, MLFLOW_CONTENT, w.since, w.until, at, w.take_below) for w in read.windows]
        shas: dict[str, str] = {}
    else:
        root = path or cfg.traces_path
        source, files, shas = str(root), [], {}
        known = store.source_files(source)
        reading = sorted({requested} | store.processed_windows(source), key=lambda w: (w[0] or 0, w[1] or 0))
        todo = []
        for f in trace_files(root):
            label, sha = file_label(f, root), file_sha256(f)
            before = known.get(label)
            if before and before["sha256"] == sha and covered(
                    None if before["ts_min"] is None else (before["ts_min"], before["ts_max"]), before["windows"],
                    *requested):
                skipped.append(str(f))
                continue
            todo.append((f, label, sha))
            files.append(str(f))
            shas[label] = sha
        batches = _partitions(todo, cfg, seen)

    ids: set[str] = set()  # every trace id read so far: a later row with one is a duplicate
    waiting: set[str] = set()  # files (labels) with a new trace: covered only once the traces are stored
    kept, counted_parts = [], []
    n_accepted = n_fresh = n_quarantined = 0
    for parts in batches:
        accepted, quarantined = (in_windows(df, reading) for df in validate(parts, cfg, seen_ids=ids))
        keys = row_keys(parts, shas, quarantined)
        new = store.record_quarantined(source, [(p, k, r) for (p, k), r in
                                                zip(keys, quarantined[REASON_COLUMN].astype(str), strict=True)])
        counted_parts.append(quarantined[pd.Series([k in new for k in keys], index=quarantined.index, dtype=bool)])
        n_accepted, n_quarantined = n_accepted + len(accepted), n_quarantined + len(quarantined)
        fresh = accepted[~accepted["trace_id"].isin(store.known_among(accepted["trace_id"].tolist()))]
        fresh = fresh.reset_index(drop=True)
        owner = {t: p.label for p in parts for t in p.rows.rename(columns=cfg.source.column_map).get("trace_id", [])
                 if isinstance(t, str)}
        waiting |= {owner.get(t, "") for t in fresh["trace_id"]}
        n_fresh += len(fresh)
        if sink is not None and len(fresh):
            sink(fresh)
        elif sink is None:
            kept.append(fresh)
    store.record_source_files(source, seen)  # after the quarantine: a file known is a file counted
    counted = pd.concat(counted_parts, ignore_index=True) if counted_parts else pd.DataFrame(columns=REFUSED_COLUMNS)
    accepted = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(trace_schema(cfg).columns))
    marks += [FileMark(source, s["path"], s["sha256"], *w) for s in seen for w in reading]
    commit(store, [m for m in marks if m.path not in waiting])
    return LoadResult(accepted, counted, n_fresh + len(counted), files, skipped,
                      seen_before=n_accepted - n_fresh + n_quarantined - len(counted),
                      pending=[m for m in marks if m.path in waiting], mlflow=read,
                      spilled=n_fresh if sink is not None else 0)


def _partitions(todo: list[tuple[Path, str, str]], cfg: Config, seen: list[dict]) -> Iterator[list[FileRows]]:
    """The files' rows in partitions of about `source.partition_rows` (small files together, a large one in
    chunks); once a file is read through, its record (size, content, span of timestamps) goes to `seen`."""
    size = cfg.source.partition_rows
    batch: list[FileRows] = []
    for f, label, sha in todo:
        n_rows, lo, hi = 0, None, None
        for part in read_file_chunks(f, label, size):
            n_rows += len(part.rows) + len(part.refused)
            if first_last := span(part.rows, cfg):
                lo = first_last[0] if lo is None else min(lo, first_last[0])
                hi = first_last[1] if hi is None else max(hi, first_last[1])
            batch.append(part)
            if sum(len(p.rows) + len(p.refused) for p in batch) >= size:
                yield batch
                batch = []
        stat = f.stat()
        seen.append({"path": label, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha,
                     "rows": n_rows, "ts_min": lo, "ts_max": hi})
    if batch:
        yield batch


def commit(store: WatermarkStore, marks: Iterable[FileMark]) -> None:
    """Cover the marks' windows: call once the traces they hold are stored as considered."""
    by_source: dict[str, list[dict]] = {}
    for m in marks:
        by_source.setdefault(m.source, []).append(asdict(m))
    for source, windows in by_source.items():
        store.cover_source_windows(source, windows)


def mlflow_report(cfg: Config, loaded: LoadResult) -> list[str]:
    """What an MLflow source's run read, one line per capped window first (for the run log and its record)."""
    got = loaded.mlflow
    if got is None:
        return []
    lines = [f"Capped: window {_when(w.since)} to {_when(w.until)} of {mlflow_traces.source_name(cfg)} holds "
             f"{w.in_window:,} traces, more than source.max_traces {cfg.source.max_traces:,}: took a seeded "
             f"{w.taken:,} ({w.take_below:.1%}; the random draw's inclusion probabilities include it), left "
             f"{w.in_window - w.taken:,}; raise source.max_traces to take every trace" for w in got.windows if w.capped]
    return [*lines, f"MLflow: {len(got.windows)} windows read, {got.infos:,} trace infos paged, {got.fetched:,} "
                    f"traces fetched whole ({sum(w.new for w in got.windows):,} new)"]


def _when(t: int | None) -> str:
    return "open" if t is None else f"{pd.Timestamp(t, unit='ns', tz='UTC'):%Y-%m-%d %H:%M}"
