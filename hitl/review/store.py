"""The review store: queue of items, batches handed to reviewers, and their annotations (SQLAlchemy).

SQLite by default (WAL), any SQLAlchemy URL (e.g. PostgreSQL) by config. Writes are idempotent:
enqueueing a trace twice, or submitting the same batch twice, stores nothing new.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hitl.hashing import text_group
from hitl.review import gold
from hitl.review.forms import NONE_FITS  # the answer that proposes a new label (named in the rationale)
from hitl.sampling.selection import RANDOM

QUEUED, RESOLVED, DISPUTED, PROPOSED = "queued", "resolved", "disputed", "proposed"  # proposed: held for a new label
SCHEMA_VERSION = "2"  # 2: random draws (inclusion probabilities, windows, strata), text groups, resolutions
OPEN, SUBMITTED, EXPIRED = "open", "submitted", "expired"
MAX_REVIEWER_CHARS = 100  # the reviewer columns' width


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "review_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[str | None] = mapped_column(Text, nullable=True)
    prediction: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(200), default="")
    cohorts: Mapped[str] = mapped_column(Text, default="{}")  # JSON object: cohort column -> value
    selection_reason: Mapped[str] = mapped_column(String(40))
    inclusion_prob: Mapped[float | None] = mapped_column(Float, nullable=True)  # random draw only
    window: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the draw's window (random only)
    stratum: Mapped[str | None] = mapped_column(String(400), nullable=True)
    text_group: Mapped[str] = mapped_column(String(16), default="", index=True)  # hitl.hashing.text_group
    evaluator_reasons: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    required_annotations: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED, index=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Draw(Base):
    """One stratum of one random draw: the population it was drawn from and the inclusion probability."""

    __tablename__ = "random_draws"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    window: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # main | supplemental (late traces)
    stratum: Mapped[str] = mapped_column(String(400))
    population: Mapped[int] = mapped_column(Integer)
    drawn: Mapped[int] = mapped_column(Integer)
    rate: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class StoreMeta(Base):
    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class ConsideredTrace(Base):
    """Every trace a sampling run looked at: each trace is considered for review once."""

    __tablename__ = "considered_traces"
    trace_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    considered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Batch(Base):
    __tablename__ = "review_batches"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=OPEN, index=True)
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BatchItem(Base):
    __tablename__ = "review_batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "item_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("review_batches.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)


class AnnotationRow(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "reviewer"), UniqueConstraint("batch_id", "item_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("review_batches.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Resolution(Base):
    """A label decided over the annotations: an adjudication of a dispute, or a later correction. The
    annotations stay; the item's label becomes this one (the next dataset version carries it)."""

    __tablename__ = "resolutions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # adjudication | correction
    reviewer: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Proposal(Base):
    """A reviewer's "none of these fits" with the label they propose; the item waits until the label exists."""

    __tablename__ = "label_proposals"
    __table_args__ = (UniqueConstraint("item_id", "reviewer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("review_batches.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(100))
    proposed_label: Mapped[str] = mapped_column(String(200), index=True)
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | requeued
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class GoldItem(Base):
    """A message with a known label (an adjudicated item, or a row of a seeded labelled file)."""

    __tablename__ = "gold_items"
    __table_args__ = (UniqueConstraint("source", "source_ref"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(20))  # adjudicated | seeded
    source_ref: Mapped[str] = mapped_column(String(200))  # the trace id it came from (shown as the item's id)
    input: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    item: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what the form shows (prediction, cohorts...)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class BatchGold(Base):
    __tablename__ = "review_batch_gold"
    __table_args__ = (UniqueConstraint("batch_id", "gold_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("review_batches.id"), index=True)
    gold_id: Mapped[int] = mapped_column(ForeignKey("gold_items.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    shown: Mapped[str] = mapped_column(Text)  # JSON: the item as the form shows it (blind: see _shown_gold)


class GoldAnswer(Base):
    """A reviewer's answer to a gold item: measures the reviewer, never enters a dataset."""

    __tablename__ = "gold_answers"
    __table_args__ = (UniqueConstraint("batch_id", "gold_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gold_id: Mapped[int] = mapped_column(ForeignKey("gold_items.id"), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("review_batches.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(100), index=True)
    label: Mapped[str] = mapped_column(String(200))
    correct: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ReviewerCheck(Base):
    """One gold check of a reviewer; a failed one sends their labels since the last good check to adjudication."""

    __tablename__ = "reviewer_checks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reviewer: Mapped[str] = mapped_column(String(100), index=True)
    answers: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int] = mapped_column(Integer)
    upper: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean)
    sent_to_adjudication: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SourceFile(Base):
    """A trace file as last read (hitl/sampling/watermarks.py): its content and the span of its timestamps."""

    __tablename__ = "source_files"
    __table_args__ = (UniqueConstraint("source", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500))  # the source folder (or file)
    path: Mapped[str] = mapped_column(String(1000))  # the file, under the source
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)  # entries read: rows, refused lines, or 1 for an unreadable file
    ts_min: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # ns since the epoch (UTC); None: no
    ts_max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # usable timestamp in the file
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SourceWindow(Base):
    """A window [since, until) (ns since the epoch, UTC; None: open) in which every row of one content of a file
    was read and its traces stored as considered: that content is not read again for that window."""

    __tablename__ = "source_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500), index=True)
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    since: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class QuarantinedRow(Base):
    """A row refused by validation, recorded (and counted) once however often its file or window is read."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("source", "path", "row_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(String(1000))
    row_key: Mapped[str] = mapped_column(String(200))  # where in the file, and a hash of what it held
    reason: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class BatchView:
    """A batch as a reviewer form needs it: id plus its items in order."""

    id: str
    items: list[dict]
    flow_run_id: str | None = None
    status: str = OPEN
    resumed: bool = False  # take_batch gave a run back the batch it already held


@dataclass(frozen=True)
class SubmitResult:
    batch_id: str
    stored: int
    already_submitted: bool
    skipped: dict[str, str]  # trace_id -> why it was not stored
    late: bool = False  # the batch had expired: labels merged where items still needed them
    gold_answered: int = 0
    gold_correct: int = 0
    check: gold.GoldCheck | None = None  # the reviewer's cumulative gold check after this submission
    sent_to_adjudication: int = 0  # labels of a flagged reviewer sent to adjudication


class ReviewError(ValueError):
    """A submission that was refused as a whole; nothing was stored."""


class ReviewStore:
    def __init__(self, url: str):
        self.url = url
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=connect_args)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        elif url.startswith("postgresql"):
            event.listen(self.engine, "begin", _postgres_serialize)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema()

    def _check_schema(self) -> None:
        """Create the tables of a new store; refuse one written by an incompatible version."""
        from sqlalchemy import inspect

        existing = set(inspect(self.engine).get_table_names())
        if existing and "store_meta" not in existing:
            raise ReviewError(f"The review store at {self.url} was written by an older hitl-loop (schema 1). "
                              f"Move it away (or `make clean` for the demo) and sample again.")
        Base.metadata.create_all(self.engine)
        with self._session.begin() as s:
            row = s.get(StoreMeta, "schema_version")
            if row is None:
                s.add(StoreMeta(key="schema_version", value=SCHEMA_VERSION))
            elif row.value != SCHEMA_VERSION:
                raise ReviewError(f"The review store at {self.url} has schema {row.value}; this hitl-loop needs "
                                  f"{SCHEMA_VERSION}. Move it away and sample again.")

    # ---- queue ----
    def enqueue(self, items: pd.DataFrame, cohorts: Iterable[str], considered: Iterable[str] = (),
                draws: Iterable[dict] = ()) -> int:
        """Add review items (ReviewItem rows); traces already known are skipped. Returns how many were new.

        `considered` (all trace ids the sampling run looked at) and `draws` (the random draw's strata) are
        recorded in the same transaction, so a later run over the same window neither re-selects nor loses
        anything, and a crash leaves either all of it or none.
        """
        cohorts = list(cohorts)
        with self._session.begin() as s:
            seen = set(s.scalars(select(ConsideredTrace.trace_id)))
            s.add_all(ConsideredTrace(trace_id=t) for t in dict.fromkeys(considered) if t not in seen)
            known = set(s.scalars(select(Item.trace_id).where(Item.trace_id.in_(list(items["trace_id"])))))
            new = [
                Item(
                    trace_id=r["trace_id"], input=r["input"], output=r.get("output") or "",
                    context=r.get("context"), prediction=r["prediction"], confidence=float(r["confidence"]),
                    model_version=str(r.get("model_version") or ""),
                    cohorts=json.dumps({c: r[c] for c in cohorts}), selection_reason=r["selection_reason"],
                    evaluator_reasons=r.get("evaluator_reasons") or "", priority=float(r["priority"]),
                    required_annotations=int(r["required_annotations"]),
                    inclusion_prob=_float_or_none(r.get("inclusion_prob")), window=_str_or_none(r.get("window")),
                    stratum=_str_or_none(r.get("stratum")), text_group=text_group(r["input"]),
                )
                for r in items.to_dict("records")
                if r["trace_id"] not in known
            ]
            s.add_all(new)
            s.add_all(Draw(**d) for d in draws)
        return len(new)

    def draw_rates(self, window: str) -> dict[str, float]:
        """Stratum -> inclusion probability of the main random draw of `window` ({} if none yet)."""
        with self._session() as s:
            rows = s.execute(select(Draw.stratum, Draw.rate).where(Draw.window == window, Draw.kind == "main"))
            return dict(rows.all())

    def draws(self) -> pd.DataFrame:
        """Every random draw stratum recorded so far."""
        with self._session() as s:
            rows = s.execute(select(Draw.window, Draw.kind, Draw.stratum, Draw.population, Draw.drawn, Draw.rate,
                                    Draw.created_at).order_by(Draw.id)).all()
        return pd.DataFrame(rows, columns=["window", "kind", "stratum", "population", "drawn", "rate", "created_at"])

    def known_text_groups(self) -> set[str]:
        """Text groups (normalised texts) already in the queue, labelled or not."""
        with self._session() as s:
            return set(s.scalars(select(Item.text_group)))

    def random_items(self) -> pd.DataFrame:
        """Every item of the random draw with its status: the regression set, including what is missing."""
        with self._session() as s:
            rows = s.execute(select(Item.trace_id, Item.window, Item.stratum, Item.inclusion_prob, Item.status,
                                    Item.label).where(Item.selection_reason == RANDOM).order_by(Item.id)).all()
        return pd.DataFrame(rows, columns=["trace_id", "window", "stratum", "inclusion_prob", "status", "label"])

    def known_trace_ids(self) -> set[str]:
        """Traces already queued or considered by an earlier sampling run."""
        with self._session() as s:
            return set(s.scalars(select(Item.trace_id))) | set(s.scalars(select(ConsideredTrace.trace_id)))

    # ---- source watermarks (hitl/sampling/watermarks.py) ----
    def source_files(self, source: str) -> dict[str, dict]:
        """path -> {sha256, ts_min, ts_max, windows} of each file of `source` read before; `windows` lists the
        (since, until) covered for the content read last."""
        with self._session() as s:
            files = s.scalars(select(SourceFile).where(SourceFile.source == source)).all()
            covered = s.execute(select(SourceWindow.path, SourceWindow.sha256, SourceWindow.since, SourceWindow.until)
                                .where(SourceWindow.source == source)).all()
        out = {f.path: {"sha256": f.sha256, "ts_min": f.ts_min, "ts_max": f.ts_max, "windows": []} for f in files}
        for path, sha, since, until in covered:
            if path in out and out[path]["sha256"] == sha:
                out[path]["windows"].append((since, until))
        return out

    def processed_windows(self, source: str) -> set[tuple[int | None, int | None]]:
        """Every window (since, until) some file of `source` has been read for."""
        with self._session() as s:
            return set(s.execute(select(SourceWindow.since, SourceWindow.until).where(SourceWindow.source == source)
                                 .distinct()).all())

    def record_source_files(self, source: str, files: Iterable[Mapping]) -> None:
        """Record what was just read of each file: path, size, mtime_ns, sha256, rows, ts_min, ts_max."""
        with self._session.begin() as s:
            for f in files:
                row = s.scalar(select(SourceFile).where(SourceFile.source == source, SourceFile.path == f["path"]))
                if row is None:
                    row = SourceFile(source=source, path=f["path"])
                    s.add(row)
                row.size, row.mtime_ns, row.sha256, row.rows = f["size"], f["mtime_ns"], f["sha256"], f["rows"]
                row.ts_min, row.ts_max, row.read_at = f["ts_min"], f["ts_max"], _now()

    def cover_source_windows(self, source: str, windows: Iterable[Mapping]) -> None:
        """Record that each (path, sha256, since, until) was read whole and its traces stored (idempotent); the
        windows of the file's earlier contents go (the new content is read for every processed window)."""
        with self._session.begin() as s:
            for w in windows:
                s.execute(delete(SourceWindow).where(SourceWindow.source == source, SourceWindow.path == w["path"],
                                                     SourceWindow.sha256 != w["sha256"]))
                key = (SourceWindow.source == source, SourceWindow.path == w["path"],
                       SourceWindow.sha256 == w["sha256"],
                       SourceWindow.since.is_(None) if w["since"] is None else SourceWindow.since == w["since"],
                       SourceWindow.until.is_(None) if w["until"] is None else SourceWindow.until == w["until"])
                if s.scalar(select(SourceWindow.id).where(*key)) is None:
                    s.add(SourceWindow(source=source, path=w["path"], sha256=w["sha256"], since=w["since"],
                                       until=w["until"]))

    def record_quarantined(self, source: str, rows: Iterable[tuple[str, str, str]]) -> set[tuple[str, str]]:
        """Record quarantined rows (path, row_key, reason) not recorded before; returns their (path, row_key)."""
        with self._session.begin() as s:
            known = set(s.execute(select(QuarantinedRow.path, QuarantinedRow.row_key)
                                  .where(QuarantinedRow.source == source)).all())
            new = {}
            for path, key, reason in rows:
                if (path, key) not in known:
                    new.setdefault((path, key), QuarantinedRow(source=source, path=path, row_key=key, reason=reason))
            s.add_all(new.values())
        return set(new)

    def _open_assignments(self, s: Session) -> dict[int, int]:
        rows = s.execute(
            select(BatchItem.item_id, func.count())
            .join(Batch, Batch.id == BatchItem.batch_id)
            .where(Batch.status == OPEN)
            .group_by(BatchItem.item_id)
        )
        return dict(rows.all())

    def _annotation_counts(self, s: Session) -> dict[int, int]:
        rows = s.execute(select(AnnotationRow.item_id, func.count()).group_by(AnnotationRow.item_id))
        return dict(rows.all())

    def batches_wanted(self, size: int) -> int:
        """How many more batches of `size` the queued items need (annotations still wanted and not leased; an
        item needing two labels goes into two batches)."""
        with self._session() as s:
            open_n, done_n = self._open_assignments(s), self._annotation_counts(s)
            need = [it.required_annotations - done_n.get(it.id, 0) - open_n.get(it.id, 0)
                    for it in s.scalars(select(Item).where(Item.status == QUEUED))]
        need = [n for n in need if n > 0]
        return max(-(-sum(need) // size), max(need)) if need else 0

    def take_batch(self, size: int, lease_s: float | None = None, gold_share: float = 0.0,
                   flow_run_id: str | None = None) -> BatchView | None:
        """Lease up to `size` queued items that still need an annotation into a new open batch; about
        `gold_share` of the batch are gold items (known labels), shuffled among the others.

        With `flow_run_id`, the lease is idempotent: a run that already holds a batch (it was resumed, or
        re-run after a crash) gets that batch back, whatever its status, and nothing new is leased.

        Open batches older than `lease_s` (their run crashed or was abandoned) expire first, so their
        items return to the queue instead of being stuck.
        """
        with self._session.begin() as s:
            if flow_run_id is not None:
                held = s.scalar(select(Batch).where(Batch.flow_run_id == flow_run_id))
                if held is not None:
                    return BatchView(held.id, self._batch_items(s, held.id), held.flow_run_id, held.status,
                                     resumed=True)
            if lease_s is not None:
                self._expire_stale(s, lease_s)
            open_n = self._open_assignments(s)
            done_n = self._annotation_counts(s)
            queued = s.scalars(
                select(Item).where(Item.status == QUEUED).order_by(Item.priority.desc(), Item.id)
            ).all()
            has_gold = gold_share > 0 and s.scalar(select(func.count()).select_from(GoldItem)) > 0
            room = max(1, size - round(size * gold_share)) if has_gold else size
            picked = [
                it for it in queued
                if it.required_annotations - done_n.get(it.id, 0) - open_n.get(it.id, 0) > 0
            ][:room]
            if not picked:
                return None
            batch = Batch(id=str(uuid.uuid4()), flow_run_id=flow_run_id)
            s.add(batch)
            s.flush()
            seed = uuid.UUID(batch.id).int % 2**32
            golds = self._choose_gold(s, picked, gold_share, seed=seed)
            real_pos, gold_pos = gold.positions(len(picked), len(golds), seed=seed)
            # the queue's order (random draws first) must not show on the form: items in a seeded random order
            picked = [picked[i] for i in np.random.default_rng(seed + 1).permutation(len(picked))]
            s.add_all(BatchItem(batch_id=batch.id, item_id=it.id, position=p) for it, p in zip(picked, real_pos,
                                                                                               strict=True))
            s.add_all(BatchGold(batch_id=batch.id, gold_id=g.id, position=p, shown=json.dumps(shown))
                      for (g, shown), p in zip(golds, gold_pos, strict=True))
            s.flush()
            return BatchView(batch.id, self._batch_items(s, batch.id), flow_run_id)

    def _choose_gold(self, s: Session, picked: list[Item], share: float, seed: int) -> list[tuple[GoldItem, dict]]:
        """The least-shown gold items for a batch, each with the item the form will show: its fields come from
        its original item, or (seeded gold without them) from one of the batch's real items, and it is shown
        blind like a random-draw item (`_shown_gold`), so nothing sets a gold item apart."""
        in_batch = {it.trace_id for it in picked}
        pool = [g for g in s.scalars(select(GoldItem)).all() if g.source_ref not in in_batch]
        k = gold.how_many(len(picked), share, len(pool))
        if k == 0:
            return []
        shown_n = dict(s.execute(select(BatchGold.gold_id, func.count()).group_by(BatchGold.gold_id)).all())
        rng = np.random.default_rng(seed)
        ties = rng.random(len(pool))
        chosen = [pool[i] for i in sorted(range(len(pool)), key=lambda i: (shown_n.get(pool[i].id, 0), ties[i]))[:k]]
        out = []
        for g in chosen:
            like = _item_dict(picked[int(rng.integers(len(picked)))])
            item = {**like, **{key: v for key, v in json.loads(g.item).items() if v is not None}}
            out.append((g, _shown_gold({**item, "trace_id": g.source_ref, "input": g.input})))
        return out

    def _batch_items(self, s: Session, batch_id: str) -> list[dict]:
        """A batch's items in form order: review items and gold items (as shown) by position."""
        real = s.execute(select(Item, BatchItem.position).join(BatchItem, BatchItem.item_id == Item.id)
                         .where(BatchItem.batch_id == batch_id)).all()
        golds = s.execute(select(BatchGold.shown, BatchGold.position).where(BatchGold.batch_id == batch_id)).all()
        rows = [(pos, _item_dict(it)) for it, pos in real] + [(pos, _shown_gold(json.loads(shown)))
                                                              for shown, pos in golds]
        return [d for _, d in sorted(rows, key=lambda r: r[0])]

    def _expire_stale(self, s: Session, lease_s: float) -> None:
        cutoff = _now().timestamp() - lease_s
        for batch in s.scalars(select(Batch).where(Batch.status == OPEN)):
            created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=UTC)
            if created.timestamp() < cutoff:
                batch.status = EXPIRED

    def attach_flow_run(self, batch_id: str, flow_run_id: str) -> None:
        with self._session.begin() as s:
            s.get_one(Batch, batch_id).flow_run_id = flow_run_id

    def expire_batch(self, batch_id: str) -> bool:
        """Give an open batch's items back to the queue (e.g. its pause timed out). False if not open."""
        with self._session.begin() as s:
            batch = s.get_one(Batch, batch_id)
            if batch.status != OPEN:
                return False
            batch.status = EXPIRED
            return True

    def batch_of_run(self, flow_run_id: str) -> str | None:
        """The review batch a (paused or timed-out) flow run was opened for."""
        with self._session() as s:
            return s.scalar(select(Batch.id).where(Batch.flow_run_id == flow_run_id))

    def get_batch(self, batch_id: str) -> BatchView:
        with self._session() as s:
            batch = s.get(Batch, batch_id)
            if batch is None:
                raise KeyError(f"No review batch {batch_id!r} in the store")
            return BatchView(batch.id, self._batch_items(s, batch_id), batch.flow_run_id, batch.status)

    # ---- annotations ----
    def submit(self, batch_id: str, reviewer: str, labels: Mapping[str, tuple[str, str | None]],
               allowed_labels: Iterable[str], gold_policy: tuple[int, float] | None = None,
               max_rationale_chars: int | None = None) -> SubmitResult:
        """Store one reviewer's labels for a batch (trace_id -> (label, rationale)), atomically.

        Refused as a whole (ReviewError, nothing stored) for an empty or overlong reviewer name, a label outside
        the label set, a rationale longer than `max_rationale_chars` (`review.max_rationale_chars`), or a trace
        that is not in the batch. A batch already submitted stores nothing again.
        Items this reviewer already labelled in another batch are skipped and stay in the queue; so are items
        that meanwhile got all their labels elsewhere. A late submission (the batch expired while the reviewer
        worked) is merged where items still need a label and reported as late, never silently dropped.
        Answers to gold items go to the gold answers; with `gold_policy` (min answers, min accuracy) the
        reviewer's cumulative gold accuracy is checked, and a flagged reviewer's labels since their last good
        check go to adjudication.
        """
        reviewer = _reviewer_name(reviewer, "labelled this batch")
        allowed = set(allowed_labels) | {NONE_FITS}
        bad = {t: lab for t, (lab, _) in labels.items() if lab not in allowed}
        if bad:
            raise ReviewError(f"Labels outside the label set {sorted(allowed)}: {bad}")
        long = {t: len(r) for t, (_, r) in labels.items() if r and max_rationale_chars and len(r) > max_rationale_chars}
        if long:
            raise ReviewError(f"Rationales longer than {max_rationale_chars} characters (review.max_rationale_chars): "
                              f"{long}")
        with self._session.begin() as s:
            batch = s.get(Batch, batch_id, with_for_update=True)
            if batch is None:
                raise ReviewError(f"No review batch {batch_id!r} in the store")
            if batch.status == SUBMITTED:
                return SubmitResult(batch_id, 0, True, {})
            late = batch.status == EXPIRED
            members = dict(s.execute(
                select(Item.trace_id, Item).join(BatchItem, BatchItem.item_id == Item.id)
                .where(BatchItem.batch_id == batch_id)
            ).all())
            golds = dict(s.execute(
                select(GoldItem.source_ref, GoldItem).join(BatchGold, BatchGold.gold_id == GoldItem.id)
                .where(BatchGold.batch_id == batch_id)
            ).all())
            strangers = sorted(set(labels) - set(members) - set(golds))
            if strangers:
                raise ReviewError(f"Traces not in batch {batch_id}: {strangers}")
            skipped: dict[str, str] = {}
            stored = 0
            done_n = self._annotation_counts(s)
            for trace_id, (label, rationale) in labels.items():
                if trace_id in golds:
                    continue
                item = members[trace_id]
                if s.scalar(select(AnnotationRow.id).where(AnnotationRow.item_id == item.id,
                                                           AnnotationRow.reviewer == reviewer)):
                    skipped[trace_id] = f"{reviewer} already labelled this item in another batch"
                    continue
                if item.status == PROPOSED:
                    skipped[trace_id] = "held: another reviewer proposed a new label for it"
                    continue
                if done_n.get(item.id, 0) >= item.required_annotations or item.status != QUEUED:
                    skipped[trace_id] = "already has its labels from other reviewers" + (
                        " (this batch had expired)" if late else "")
                    continue
                if label == NONE_FITS:  # a proposal, not a label: the item waits for the label set to grow
                    s.add(Proposal(item_id=item.id, batch_id=batch_id, reviewer=reviewer,
                                   proposed_label=proposal_name(rationale), rationale=rationale or None))
                    item.status = PROPOSED
                    skipped[trace_id] = f"proposed a new label ({proposal_name(rationale)}); held until it is added"
                    continue
                s.add(AnnotationRow(item_id=item.id, batch_id=batch_id, reviewer=reviewer, label=label,
                                    rationale=(rationale or None)))
                stored += 1
            for trace_id in set(members) - set(labels):
                skipped[trace_id] = "no label given"
            answered = [GoldAnswer(gold_id=g.id, batch_id=batch_id, reviewer=reviewer, label=labels[ref][0],
                                   correct=labels[ref][0] == g.label) for ref, g in golds.items() if ref in labels]
            s.add_all(answered)
            batch.status, batch.reviewer, batch.submitted_at = SUBMITTED, reviewer, _now()
            s.flush()
            self._settle(s, [members[t] for t in members])
            chk, sent = (self._check_reviewer(s, reviewer, *gold_policy) if answered and gold_policy
                         else (None, 0))
            return SubmitResult(batch_id, stored, False, skipped, late, len(answered),
                                sum(a.correct for a in answered), chk, sent)

    def _check_reviewer(self, s: Session, reviewer: str, min_answers: int, min_accuracy: float
                        ) -> tuple[gold.GoldCheck, int]:
        """Check a reviewer's cumulative gold accuracy; when flagged, send the items they labelled since their
        last good check (and that nobody adjudicated since) to adjudication. Records the check."""
        answers = list(s.scalars(select(GoldAnswer.correct).where(GoldAnswer.reviewer == reviewer)))
        chk = gold.check(reviewer, len(answers), sum(answers), min_answers, min_accuracy)
        sent = 0
        if not chk.ok:
            since = s.scalar(select(func.max(ReviewerCheck.created_at))  # good: passed on enough evidence
                             .where(ReviewerCheck.reviewer == reviewer, ReviewerCheck.ok.is_(True),
                                    ReviewerCheck.answers >= min_answers))
            mine = select(AnnotationRow.item_id, AnnotationRow.created_at).where(AnnotationRow.reviewer == reviewer)
            if since is not None:
                mine = mine.where(AnnotationRow.created_at > since)
            for item_id, at in s.execute(mine).all():
                item = s.get_one(Item, item_id)
                decided_after = s.scalar(select(Resolution.id).where(Resolution.item_id == item_id,
                                                                     Resolution.created_at >= at))
                if item.status in (RESOLVED, QUEUED) and decided_after is None:
                    item.status, item.label, item.resolved_at = DISPUTED, None, None
                    sent += 1
        s.add(ReviewerCheck(reviewer=reviewer, answers=chk.answers, correct=chk.correct,
                            upper=chk.high, ok=chk.ok, sent_to_adjudication=sent))
        return chk, sent

    def _settle(self, s: Session, items: list[Item]) -> None:
        for item in items:
            labels = list(s.scalars(select(AnnotationRow.label).where(AnnotationRow.item_id == item.id)))
            if len(labels) < item.required_annotations:
                continue
            if len(set(labels)) == 1:
                item.status, item.label = RESOLVED, labels[0]
            else:
                item.status, item.label = DISPUTED, None
            item.resolved_at = _now()

    # ---- resolutions: adjudications and corrections ----
    def resolve(self, trace_id: str, label: str, reviewer: str, reason: str | None, kind: str,
                allowed_labels: Iterable[str]) -> int:
        """Decide an item's label over its annotations (kind "adjudication" for a disputed item, "correction"
        for one already resolved). The annotations stay in the store. Returns the resolution id."""
        reviewer = _reviewer_name(reviewer, "decided this label")
        if label not in set(allowed_labels):
            raise ReviewError(f"Label {label!r} is not in the label set")
        allowed_status = {"adjudication": {DISPUTED}, "correction": {RESOLVED, DISPUTED}}
        if kind not in allowed_status:
            raise ReviewError(f"Unknown resolution kind {kind!r}")
        with self._session.begin() as s:
            item = s.scalar(select(Item).where(Item.trace_id == trace_id).with_for_update())
            if item is None:
                raise ReviewError(f"No review item for trace {trace_id!r}")
            if item.status not in allowed_status[kind]:
                raise ReviewError(f"Trace {trace_id} is {item.status}; a {kind} needs it to be "
                                  f"{' or '.join(sorted(allowed_status[kind]))}")
            res = Resolution(item_id=item.id, kind=kind, reviewer=reviewer, label=label, reason=reason or None)
            s.add(res)
            item.status, item.label, item.resolved_at = RESOLVED, label, _now()
            known = s.scalar(select(GoldItem).where(GoldItem.source == "adjudicated",
                                                    GoldItem.source_ref == item.trace_id))
            if known is not None:  # a correction of a gold item's label corrects the gold too
                known.label = label
            elif kind == "adjudication":
                s.add(GoldItem(source="adjudicated", source_ref=item.trace_id, input=item.input, label=label,
                               item=json.dumps(_item_dict(item))))
            s.flush()
            return res.id

    def resolutions(self) -> pd.DataFrame:
        with self._session() as s:
            rows = s.execute(select(Resolution.id, Item.trace_id, Resolution.kind, Resolution.reviewer,
                                    Resolution.label, Resolution.reason, Resolution.created_at)
                             .join(Item, Item.id == Resolution.item_id).order_by(Resolution.id)).all()
        return pd.DataFrame(rows, columns=["resolution_id", "trace_id", "kind", "reviewer", "label", "reason",
                                           "created_at"])

    def disputed(self) -> list[dict]:
        """Disputed items with every annotation (reviewer, label, rationale), oldest first."""
        with self._session() as s:
            items = s.scalars(select(Item).where(Item.status == DISPUTED).order_by(Item.priority.desc(),
                                                                                   Item.id)).all()
            out = []
            for it in items:
                anns = s.execute(select(AnnotationRow.reviewer, AnnotationRow.label, AnnotationRow.rationale)
                                 .where(AnnotationRow.item_id == it.id).order_by(AnnotationRow.id)).all()
                out.append(_item_dict(it) | {"annotations": [dict(r._mapping) for r in anns]})
            return out

    # ---- read models ----
    def counts(self) -> dict[str, int]:
        with self._session() as s:
            by_status = dict(s.execute(select(Item.status, func.count()).group_by(Item.status)).all())
            open_batches = s.scalar(select(func.count()).select_from(Batch).where(Batch.status == OPEN))
            n_ann = s.scalar(select(func.count()).select_from(AnnotationRow))
        return {QUEUED: by_status.get(QUEUED, 0), RESOLVED: by_status.get(RESOLVED, 0),
                DISPUTED: by_status.get(DISPUTED, 0), "open_batches": open_batches or 0,
                "annotations": n_ann or 0}

    def seed_gold(self, rows: pd.DataFrame, cohorts: Iterable[str]) -> int:
        """Add gold items from a labelled file's rows (`gold.read_seed_file`); rows already known are skipped.
        Returns how many were new."""
        cohorts = list(cohorts)
        with self._session.begin() as s:
            known = set(s.scalars(select(GoldItem.source_ref).where(GoldItem.source == "seeded")))
            new = []
            for r in rows.to_dict("records"):
                ref = str(r["trace_id"])
                if ref in known:
                    continue
                shown = {c: _str_or_none(r.get(c)) for c in cohorts if c in r}
                if "prediction" in r and r.get("prediction") is not None:
                    shown |= {"prediction": str(r["prediction"]), "confidence": _float_or_none(r.get("confidence"))}
                new.append(GoldItem(source="seeded", source_ref=ref, input=str(r["input"]), label=str(r["label"]),
                                    item=json.dumps(shown)))
                known.add(ref)
            s.add_all(new)
        return len(new)

    def proposals(self) -> pd.DataFrame:
        """Every "none of these fits" answer: the proposed label, the item, who proposed it and why."""
        with self._session() as s:
            rows = s.execute(select(Proposal.proposed_label, Item.trace_id, Item.input, Proposal.reviewer,
                                    Proposal.rationale, Proposal.status, Proposal.created_at)
                             .join(Item, Item.id == Proposal.item_id).order_by(Proposal.id)).all()
        return pd.DataFrame(rows, columns=["proposed_label", "trace_id", "input", "reviewer", "rationale", "status",
                                           "created_at"])

    def requeue_proposals(self, labels: Iterable[str]) -> int:
        """Items held for a proposed label that is now in the label set go back to the queue (labelled with
        it or another by the next reviewer). Returns how many items were re-queued."""
        labels = set(labels)
        with self._session.begin() as s:
            ready = s.scalars(select(Proposal).where(Proposal.status == "open",
                                                     Proposal.proposed_label.in_(labels))).all()
            items = {p.item_id for p in ready}
            for p in ready:
                p.status = "requeued"
            for item in s.scalars(select(Item).where(Item.id.in_(items), Item.status == PROPOSED)):
                item.status = QUEUED
            return len(items)

    def gold_answers(self) -> pd.DataFrame:
        """Every answer to a gold item: reviewer, batch, the known label, the answer, whether it was right."""
        with self._session() as s:
            rows = s.execute(select(GoldAnswer.reviewer, GoldAnswer.batch_id, GoldItem.source_ref, GoldItem.label,
                                    GoldAnswer.label, GoldAnswer.correct, GoldAnswer.created_at)
                             .join(GoldItem, GoldItem.id == GoldAnswer.gold_id).order_by(GoldAnswer.id)).all()
        return pd.DataFrame(rows, columns=["reviewer", "batch_id", "trace_id", "gold_label", "answer", "correct",
                                           "created_at"])

    def reviewer_checks(self) -> pd.DataFrame:
        with self._session() as s:
            rows = s.execute(select(ReviewerCheck.reviewer, ReviewerCheck.answers, ReviewerCheck.correct,
                                    ReviewerCheck.upper, ReviewerCheck.ok, ReviewerCheck.sent_to_adjudication,
                                    ReviewerCheck.created_at).order_by(ReviewerCheck.id)).all()
        return pd.DataFrame(rows, columns=["reviewer", "answers", "correct", "upper", "ok", "sent_to_adjudication",
                                           "created_at"])

    def items(self) -> pd.DataFrame:
        """Every review item's lifecycle: trace_id, selection_reason, status, created_at, resolved_at."""
        with self._session() as s:
            rows = s.execute(select(Item.trace_id, Item.selection_reason, Item.status, Item.created_at,
                                    Item.resolved_at).order_by(Item.id)).all()
        return pd.DataFrame(rows, columns=["trace_id", "selection_reason", "status", "created_at", "resolved_at"])

    def batches(self) -> pd.DataFrame:
        """Every review batch: id, flow_run_id, status, reviewer, created_at, submitted_at."""
        with self._session() as s:
            rows = s.execute(select(Batch.id, Batch.flow_run_id, Batch.status, Batch.reviewer, Batch.created_at,
                                    Batch.submitted_at).order_by(Batch.created_at)).all()
        return pd.DataFrame(rows, columns=["id", "flow_run_id", "status", "reviewer", "created_at", "submitted_at"])

    def annotations(self) -> pd.DataFrame:
        """Every annotation with its trace_id (long format)."""
        with self._session() as s:
            rows = s.execute(
                select(AnnotationRow.id, Item.trace_id, AnnotationRow.reviewer, AnnotationRow.label,
                       AnnotationRow.rationale, AnnotationRow.batch_id, AnnotationRow.created_at)
                .join(Item, Item.id == AnnotationRow.item_id).order_by(AnnotationRow.id)
            ).all()
        cols = ["annotation_id", "trace_id", "reviewer", "label", "rationale", "batch_id", "created_at"]
        return pd.DataFrame(rows, columns=cols)

    def resolved(self, annotations: pd.DataFrame | None = None) -> pd.DataFrame:
        """Resolved items with their agreed label, reviewers and annotation ids (one row per trace).

        Pass `annotations()` if you already have it, to save reading them again.
        """
        with self._session() as s:
            items = s.scalars(select(Item).where(Item.status == RESOLVED).order_by(Item.id)).all()
            recs = [_item_dict(it) | {"label": it.label} for it in items]
        ann = self.annotations() if annotations is None else annotations
        if not recs:
            return pd.DataFrame(columns=["trace_id", "label", "reviewers", "annotation_ids"])
        df = pd.DataFrame(recs)
        res = self.resolutions().drop_duplicates("trace_id", keep="last")  # the latest decision holds
        people = pd.concat([ann[["trace_id", "reviewer"]], res[["trace_id", "reviewer"]]])
        ids = pd.concat([ann.assign(ref=ann["annotation_id"].astype(str))[["trace_id", "ref"]],
                         res.assign(ref="r" + res["resolution_id"].astype(str))[["trace_id", "ref"]]])
        df = df.join(people.groupby("trace_id")["reviewer"].agg(lambda r: ",".join(sorted(set(r))))
                     .rename("reviewers"), on="trace_id")
        df = df.join(ids.groupby("trace_id")["ref"].agg(",".join).rename("annotation_ids"), on="trace_id")
        return df.join(res.set_index("trace_id")["kind"].rename("resolution"), on="trace_id")


def proposal_name(rationale: str | None) -> str:
    """The label a reviewer proposes: the text before ':' in their rationale (or all of a short one), as a
    label name (lower case, words joined by '_'); "unnamed" when they gave none."""
    import re

    head = (rationale or "").split(":", 1)[0] if ":" in (rationale or "") else (rationale or "")
    name = re.sub(r"[^a-z0-9]+", "_", head.strip().lower()).strip("_")
    return name[:60] if name and len(head.split()) <= 4 else "unnamed"


def _reviewer_name(name: str | None, did: str) -> str:
    """A reviewer's name as stored, or ReviewError when it is empty or longer than the store keeps."""
    name = (name or "").strip()
    if not name:
        raise ReviewError(f"Reviewer name is empty: say who {did}.")
    if len(name) > MAX_REVIEWER_CHARS:
        raise ReviewError(f"Reviewer name is {len(name)} characters; at most {MAX_REVIEWER_CHARS}.")
    return name


def _float_or_none(v) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)


def _str_or_none(v) -> str | None:
    return None if v is None or (isinstance(v, float) and v != v) else str(v)


def _item_dict(it: Item) -> dict:
    return {
        "trace_id": it.trace_id, "input": it.input, "output": it.output, "context": it.context,
        "prediction": it.prediction, "confidence": it.confidence, "model_version": it.model_version,
        "selection_reason": it.selection_reason, "evaluator_reasons": it.evaluator_reasons,
        "inclusion_prob": it.inclusion_prob, "window": it.window, "stratum": it.stratum,
        **json.loads(it.cohorts),
    }


def _shown_gold(item: dict) -> dict:
    """A gold item as the form shows it: with the random-draw reason, so the form renders it blind
    (`forms.is_blind`) and its borrowed guess never shows. Also applied on reading, for batches stored before."""
    return {**item, "selection_reason": RANDOM}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself (below)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn) -> None:
    """Take SQLite's write lock at the start of every transaction, so read-then-write sequences
    (leasing a batch, submitting one) are serialized across threads and processes."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_serialize(conn) -> None:
    """PostgreSQL's counterpart of BEGIN IMMEDIATE: one store transaction at a time across processes (a
    transaction-scoped advisory lock), so two runs never lease the same items."""
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727271)")
