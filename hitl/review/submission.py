"""One review submission, however it arrives: the reviewer's form resuming the review flow (`tasks/review.py
store_labels`), or the terminal after the run stopped waiting (`hitl review`, late). Both parse the answer
against the batch's items, store the labels with the same validation, gold policy and rationale limit, and
record the batch in the audit chain, so neither can skip what the other records.

The audit chain sits a floor above the review stage, so the caller hands in how to record the batch:
`functools.partial(evidence.record_review, log)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hitl.config import Config
from hitl.review import forms
from hitl.review.store import ReviewStore, SubmitResult

RecordReview = Callable[[ReviewStore, str, str], object]  # (store, batch id, reviewer): one audit entry


@dataclass(frozen=True)
class Submission:
    reviewer: str
    labels: dict[str, tuple[str, str | None]]  # trace_id -> (label, rationale), as answered
    result: SubmitResult


def submit(cfg: Config, store: ReviewStore, batch_id: str, items: list[dict], answer: Mapping[str, object],
           record: RecordReview) -> Submission:
    """Store one reviewer's answer to a batch and record it in the audit chain (once, however often retried).
    Raises ReviewError, storing nothing, when the answer is refused."""
    reviewer, labels = forms.parse_answer(answer, items, cfg.labels)
    result = store.submit(batch_id, reviewer, labels, cfg.labels,
                          gold_policy=(cfg.review.gold_min_answers, cfg.review.gold_min_accuracy),
                          max_rationale_chars=cfg.review.max_rationale_chars)
    record(store, batch_id, reviewer)
    return Submission(reviewer, labels, result)
