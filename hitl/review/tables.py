"""The review stage's tables in the review store's database: the queue of items, batches and their items,
annotations, resolutions (adjudications, corrections), label proposals, gold items with their answers and the
reviewers' gold checks; the store's schema version. `hitl.review.store` is what reads and writes them."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hitl.db import Base
from hitl.db import now as _now

QUEUED, RESOLVED, DISPUTED, PROPOSED = "queued", "resolved", "disputed", "proposed"  # proposed: held for a new label
ERASED = "erased"  # its text erased (a deletion request, or past dataset.retention_days): in no later dataset version
SCHEMA_VERSION = "2"  # 2: random draws (inclusion probabilities, windows, strata), text groups, resolutions
OPEN, SUBMITTED, EXPIRED = "open", "submitted", "expired"
MAX_REVIEWER_CHARS = 100  # the reviewer columns' width


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
    # JSON [[label, probability], ...]: the champion's top labels when sampled (hitl.review.forms shows them);
    # None for items stored before (added to an existing store on open: hitl.db.add_nullable_columns)
    suggestions: Mapped[str | None] = mapped_column(Text, nullable=True)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    required_annotations: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED, index=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # when the customer's trace was written (its timestamp), which `dataset.retention_days` counts from; None for
    # items stored before (added on open, as `suggestions`): those count from created_at, when they were queued
    traced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StoreMeta(Base):
    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


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


def suggestions_json(v) -> str | None:
    """A review item's suggestions as stored: JSON [[label, probability], ...] (from pairs, or such JSON), or
    None when it has none."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    pairs = json.loads(v) if isinstance(v, str) else v
    return json.dumps([[str(lab), float(p)] for lab, p in pairs]) if len(pairs) else None


def suggestions_of(stored: str | None) -> list[list] | None:
    """The stored suggestions back as [[label, probability], ...], or None (for NULL, read as None or NaN)."""
    return json.loads(stored) if isinstance(stored, str) and stored else None


def item_dict(it: Item) -> dict:
    return {
        "trace_id": it.trace_id, "input": it.input, "output": it.output, "context": it.context,
        "prediction": it.prediction, "confidence": it.confidence, "model_version": it.model_version,
        "selection_reason": it.selection_reason, "evaluator_reasons": it.evaluator_reasons,
        "inclusion_prob": it.inclusion_prob, "window": it.window, "stratum": it.stratum,
        "suggestions": suggestions_of(it.suggestions), **json.loads(it.cohorts),
    }
