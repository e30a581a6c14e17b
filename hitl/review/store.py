"""The review store: queue of items, batches handed to reviewers, and their annotations (SQLAlchemy).

SQLite by default (WAL), any SQLAlchemy URL (e.g. PostgreSQL) by config (`hitl.db`). Writes are idempotent:
enqueueing a trace twice, or submitting the same batch twice, stores nothing new.

This module is the store's writes: enqueueing, leasing batches (with their gold items), submissions with the
reviewers' gold checks, resolutions and label proposals; each is one transaction that keeps the queue's
invariants, which is why they stay together. The tables are `hitl.review.tables` (and sampling's,
`hitl.sampling.tables`), the read models `hitl.review.views`, sampling's state `hitl.sampling.state`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from hitl.db import Base, add_nullable_columns, open_engine, utc
from hitl.db import now as _now
from hitl.hashing import text_group
from hitl.review import gold
from hitl.review.forms import NONE_FITS  # the answer that proposes a new label (named in the rationale)
from hitl.review.tables import (
    DISPUTED,
    ERASED,
    EXPIRED,
    MAX_REVIEWER_CHARS,
    OPEN,
    PROPOSED,
    QUEUED,
    RESOLVED,
    SCHEMA_VERSION,
    SUBMITTED,
    AnnotationRow,
    Batch,
    BatchGold,
    BatchItem,
    GoldAnswer,
    GoldItem,
    Item,
    Proposal,
    Resolution,
    ReviewerCheck,
    StoreMeta,
    item_dict,
    suggestions_json,
)
from hitl.review.views import ReviewViews
from hitl.sampling.state import SamplingState
from hitl.sampling.tables import ConsideredTrace, Draw
from hitl.vocabulary import RANDOM

if TYPE_CHECKING:  # frames come in (enqueue, seed_gold); the read models build theirs (views.py)
    import pandas as pd

ID_CHUNK = 500  # trace ids one query asks about (a window's ids are never sent, or the history read, whole)


@dataclass(frozen=True)
class BatchView:
    """A batch as a reviewer form needs it: id plus its items in order."""

    id: str
    items: list[dict]
    flow_run_id: str | None = None
    status: str = OPEN
    resumed: bool = False  # take_batch gave a run back the batch it already held


@dataclass(frozen=True)
class Erasure:
    erased: list[str]  # trace ids whose text was erased now
    unknown: list[str]  # trace ids asked for that no review item has (never sampled for review: nothing stored)


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


class ReviewStore(ReviewViews, SamplingState):
    """The one object on the review store's database: the review stage's writes here (queue, leasing,
    submissions with gold checks, resolutions, proposals), its read models (`ReviewViews`) and sampling's
    state (`SamplingState`), all in the same transactions."""

    def __init__(self, url: str):
        self.url = url
        self.engine = open_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema()

    def _check_schema(self) -> None:
        """Create the tables of a new store; refuse one written by an incompatible version; add to an existing one
        the nullable columns added since (e.g. the review items' suggestions)."""
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
        try:
            add_nullable_columns(self.engine)
        except ValueError as e:
            raise ReviewError(f"The review store at {self.url} cannot be upgraded in place: {e}. Move it away "
                              f"and sample again.") from e

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
            ids = list(dict.fromkeys(considered))
            seen: set[str] = set()
            for start in range(0, len(ids), ID_CHUNK):
                chunk = ids[start:start + ID_CHUNK]
                seen.update(s.scalars(select(ConsideredTrace.trace_id).where(ConsideredTrace.trace_id.in_(chunk))))
            if fresh := [{"trace_id": t} for t in ids if t not in seen]:
                s.execute(insert(ConsideredTrace), fresh)  # one executemany, not an object a trace
            known = set(s.scalars(select(Item.trace_id).where(Item.trace_id.in_(list(items["trace_id"])))))
            new = [
                Item(
                    trace_id=r["trace_id"], input=r["input"], output=_str_or_none(r.get("output")) or "",
                    context=_str_or_none(r.get("context")), prediction=r["prediction"],
                    confidence=float(r["confidence"]), model_version=_str_or_none(r.get("model_version")) or "",
                    cohorts=json.dumps({c: _str_or_none(r[c]) for c in cohorts}),
                    selection_reason=r["selection_reason"],
                    evaluator_reasons=r.get("evaluator_reasons") or "", priority=float(r["priority"]),
                    required_annotations=int(r["required_annotations"]),
                    inclusion_prob=_float_or_none(r.get("inclusion_prob")), window=_str_or_none(r.get("window")),
                    stratum=_str_or_none(r.get("stratum")), text_group=text_group(r["input"]),
                    suggestions=suggestions_json(r.get("suggestions")), traced_at=_time_or_none(r.get("timestamp")),
                )
                for r in items.to_dict("records")
                if r["trace_id"] not in known
            ]
            s.add_all(new)
            s.add_all(Draw(**d) for d in draws)
        return len(new)

    def known_among(self, trace_ids: list[str]) -> set[str]:
        """Which of `trace_ids` are queued or were considered by an earlier sampling run (asked a chunk at a
        time: the store's history is never read whole)."""
        out: set[str] = set()
        with self._session() as s:
            for start in range(0, len(trace_ids), ID_CHUNK):
                chunk = trace_ids[start:start + ID_CHUNK]
                out.update(s.scalars(select(Item.trace_id).where(Item.trace_id.in_(chunk))))
                out.update(s.scalars(select(ConsideredTrace.trace_id).where(ConsideredTrace.trace_id.in_(chunk))))
        return out

    def known_trace_ids(self) -> set[str]:
        """Traces already queued or considered by an earlier sampling run."""
        with self._session() as s:
            return set(s.scalars(select(Item.trace_id))) | set(s.scalars(select(ConsideredTrace.trace_id)))

    # ---- leasing batches ----
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

    def _unleased_need(self, s: Session) -> list[int]:
        """Per queued item, the annotations still wanted that no open batch holds (items with none left out)."""
        open_n, done_n = self._open_assignments(s), self._annotation_counts(s)
        need = [it.required_annotations - done_n.get(it.id, 0) - open_n.get(it.id, 0)
                for it in s.scalars(select(Item).where(Item.status == QUEUED))]
        return [n for n in need if n > 0]

    def batches_wanted(self, size: int, gold_share: float = 0.0) -> int:
        """How many more batches of `size` the queued items need (annotations still wanted and not leased; an
        item needing two labels goes into two batches). Gold items take their share of each batch, as in
        `take_batch`, so fewer queued items fit in one."""
        with self._session() as s:
            need = self._unleased_need(s)
            room = self._room(s, size, gold_share) if need else size
        return max(-(-sum(need) // room), max(need)) if need else 0

    @staticmethod
    def _room(s: Session, size: int, gold_share: float) -> int:
        """Queued items a batch of `size` holds: the rest of it is gold items, when there are any."""
        has_gold = gold_share > 0 and s.scalar(select(func.count()).select_from(GoldItem)) > 0
        return max(1, size - round(size * gold_share)) if has_gold else size

    def unleased_items(self) -> int:
        """Queued items still wanting an annotation that no open batch holds: work not yet dispatched."""
        with self._session() as s:
            return len(self._unleased_need(s))

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
            room = self._room(s, size, gold_share)
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
        pool = [g for g in s.scalars(select(GoldItem)).all() if g.source_ref not in in_batch and g.input]
        k = gold.how_many(len(picked), share, len(pool))
        if k == 0:
            return []
        shown_n = dict(s.execute(select(BatchGold.gold_id, func.count()).group_by(BatchGold.gold_id)).all())
        rng = np.random.default_rng(seed)
        ties = rng.random(len(pool))
        chosen = [pool[i] for i in sorted(range(len(pool)), key=lambda i: (shown_n.get(pool[i].id, 0), ties[i]))[:k]]
        out = []
        for g in chosen:
            like = item_dict(picked[int(rng.integers(len(picked)))])
            item = {**like, **{key: v for key, v in json.loads(g.item).items() if v is not None}}
            out.append((g, _shown_gold({**item, "trace_id": g.source_ref, "input": g.input})))
        return out

    def _batch_items(self, s: Session, batch_id: str) -> list[dict]:
        """A batch's items in form order: review items and gold items (as shown) by position."""
        real = s.execute(select(Item, BatchItem.position).join(BatchItem, BatchItem.item_id == Item.id)
                         .where(BatchItem.batch_id == batch_id)).all()
        golds = s.execute(select(BatchGold.shown, BatchGold.position).where(BatchGold.batch_id == batch_id)).all()
        rows = [(pos, item_dict(it)) for it, pos in real] + [(pos, _shown_gold(json.loads(shown)))
                                                              for shown, pos in golds]
        return [d for _, d in sorted(rows, key=lambda r: r[0])]

    def _expire_stale(self, s: Session, lease_s: float) -> None:
        cutoff = _now().timestamp() - lease_s
        for batch in s.scalars(select(Batch).where(Batch.status == OPEN)):
            if utc(batch.created_at).timestamp() < cutoff:
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
                if item.status == ERASED:
                    skipped[trace_id] = "its text was erased after the batch was handed out"
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
            if item.status == ERASED:  # erased while its batch was out: it stays out of every dataset
                continue
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
                               item=json.dumps(item_dict(item))))
            s.flush()
            return res.id

    # ---- erasure: text that must go ----
    def erase(self, trace_ids: Iterable[str] = (), older_than: datetime | None = None, dry_run: bool = False
              ) -> Erasure:
        """Erase the text of review items: those of `trace_ids` (a request to delete a customer's data) and every
        item whose trace was written before `older_than` (`dataset.retention_days`; an item stored before the
        store kept that time counts from when it was queued). An erased item keeps its trace id (sampling
        never takes the trace again), its annotations and resolutions (the audit chain hashes them; they hold a
        label and a reviewer's rationale, no trace text), and becomes ERASED: no later dataset version carries
        it, no batch shows it, no adjudication asks for it. Its input, output, context, suggestions and evaluator
        reasons are blanked; so are an adjudicated gold item made from it (never shown again) and the copies of
        that gold item in batches already handed out. Items erased before are not counted again. `dry_run`: what
        would be erased, nothing changed (`hitl.audit.evidence.erase` plans with it, records the erasure in the
        audit chain, then erases exactly those ids)."""
        ids = list(dict.fromkeys(str(t) for t in trace_ids))
        erased: list[str] = []
        with self._session.begin() as s:
            found: dict[int, Item] = {}
            for start in range(0, len(ids), ID_CHUNK):
                for item in s.scalars(select(Item).where(Item.trace_id.in_(ids[start:start + ID_CHUNK]))):
                    found[item.id] = item
            unknown = sorted(set(ids) - {it.trace_id for it in found.values()})
            if older_than is not None:  # aged from when the trace was written; items stored before, when queued
                old = [i for i, traced, queued in s.execute(select(Item.id, Item.traced_at, Item.created_at)
                                                             .where(Item.status != ERASED))
                       if utc(traced or queued) < older_than and i not in found]
                for start in range(0, len(old), ID_CHUNK):
                    for item in s.scalars(select(Item).where(Item.id.in_(old[start:start + ID_CHUNK]))):
                        found[item.id] = item
            for item in sorted(found.values(), key=lambda it: it.id):
                if item.status == ERASED:
                    continue
                erased.append(item.trace_id)
                if dry_run:
                    continue
                item.input, item.output, item.context, item.suggestions, item.evaluator_reasons = "", "", None, None, ""
                item.status, item.label = ERASED, None
            for start in range(0, 0 if dry_run else len(erased), ID_CHUNK):
                golds = list(s.scalars(select(GoldItem).where(GoldItem.source == "adjudicated",
                                                              GoldItem.source_ref.in_(erased[start:start + ID_CHUNK]))))
                for g in golds:
                    g.input, g.item = "", "{}"
                for shown in s.scalars(select(BatchGold).where(BatchGold.gold_id.in_([g.id for g in golds]))):
                    shown.shown = "{}"
        return Erasure(erased, unknown)

    def erased_trace_ids(self) -> set[str]:
        """The trace ids of erased items (`erase`): no dataset version may keep their text."""
        with self._session() as s:
            return set(s.scalars(select(Item.trace_id).where(Item.status == ERASED)))

    def disputed_trace_ids(self) -> list[str]:
        """The trace ids of disputed items, in `disputed()`'s order, without reading their annotations."""
        with self._session() as s:
            return list(s.scalars(select(Item.trace_id).where(Item.status == DISPUTED)
                                  .order_by(Item.priority.desc(), Item.id)))

    def disputed(self) -> list[dict]:
        """Disputed items with every annotation (reviewer, label, rationale), oldest first."""
        with self._session() as s:
            items = s.scalars(select(Item).where(Item.status == DISPUTED).order_by(Item.priority.desc(),
                                                                                   Item.id)).all()
            out = []
            for it in items:
                anns = s.execute(select(AnnotationRow.reviewer, AnnotationRow.label, AnnotationRow.rationale)
                                 .where(AnnotationRow.item_id == it.id).order_by(AnnotationRow.id)).all()
                out.append(item_dict(it) | {"annotations": [dict(r._mapping) for r in anns]})
            return out

    # ---- gold items and label proposals ----
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


def _time_or_none(v) -> datetime | None:
    """A trace's timestamp as a UTC datetime (a naive one taken as UTC); None for a missing one (None, NaN, NaT)."""
    import pandas as pd

    return None if pd.isna(v) else utc(pd.Timestamp(v).to_pydatetime())




def _shown_gold(item: dict) -> dict:
    """A gold item as the form shows it: with the random-draw reason, so the form renders it blind
    (`forms.is_blind`) and its borrowed guess and suggestions never show. Also applied on reading, for batches
    stored before."""
    return {**item, "selection_reason": RANDOM, "suggestions": None}
