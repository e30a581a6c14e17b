"""Tasks of the review stage: lease a batch, build its reviewer form, store the answers."""

from __future__ import annotations

from typing import Literal

import pydantic
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput

from hitl.config import Config
from hitl.review import forms
from hitl.review.store import BatchView, ReviewStore, SubmitResult


class ReviewForm(RunInput):
    """Base class of every review batch form (fields are added per batch)."""

    model_config = pydantic.ConfigDict(extra="forbid")


class ApprovalForm(RunInput):
    """An explicit approve/reject decision on a high-risk step."""

    decision: Literal["approve", "reject"] = pydantic.Field(title="Decision")
    approver: str = pydantic.Field(title="Approver", min_length=1, max_length=100)
    reason: str = pydantic.Field(title="Reason", min_length=1, max_length=2000)


def build_form(batch: BatchView, cfg: Config) -> type[ReviewForm]:
    """A RunInput subclass for this batch: one required choice per item, optional rationales."""
    fields: dict[str, tuple] = {}
    for spec in forms.form_fields(batch.items, cfg):
        common = {"title": spec.title, "description": spec.description}
        if spec.trace_id is not None:
            common["json_schema_extra"] = {"trace_id": spec.trace_id}
        if spec.choices:
            fields[spec.name] = (Literal[spec.choices], pydantic.Field(..., **common))  # type: ignore[valid-type]
        elif spec.required:
            fields[spec.name] = (str, pydantic.Field(..., min_length=1, max_length=100, **common))
        else:  # optional text: a plain textarea in the UI, "" when left empty
            fields[spec.name] = (str, pydantic.Field("", max_length=cfg.review.max_rationale_chars, **common))
    form = pydantic.create_model("ReviewForm", __base__=ReviewForm, **fields)
    form._description = forms.describe_batch(batch.id, batch.items, cfg)
    return form


def approval_form(description: str) -> type[ApprovalForm]:
    form = pydantic.create_model("ApprovalForm", __base__=ApprovalForm)
    form._description = description
    return form


@task(name="lease-review-batch", cache_policy=NO_CACHE)
def lease_batch(cfg: Config, flow_run_id: str) -> BatchView | None:
    store = ReviewStore(cfg.store_url)
    batch = store.take_batch(cfg.review.batch_size, lease_s=cfg.review.timeout_s + cfg.review.lease_grace_s)
    if batch is not None:
        store.attach_flow_run(batch.id, flow_run_id)
        get_run_logger().info("Leased batch %s with %d items", batch.id, len(batch.items))
    return batch


@task(name="store-labels", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_labels(cfg: Config, batch: BatchView, answer: dict) -> SubmitResult:
    reviewer, labels = forms.parse_answer(answer, batch.items)
    result = ReviewStore(cfg.store_url).submit(batch.id, reviewer, labels, cfg.labels)
    log = get_run_logger()
    log.info("Batch %s: stored %d labels from %s%s", batch.id, result.stored, reviewer,
             " (already submitted: nothing new)" if result.already_submitted else "")
    for trace_id, why in result.skipped.items():
        log.warning("Trace %s not stored: %s", trace_id, why)
    return result


@task(name="release-review-batch", cache_policy=NO_CACHE)
def release_batch(cfg: Config, batch: BatchView, why: str) -> None:
    ReviewStore(cfg.store_url).expire_batch(batch.id)
    get_run_logger().warning("Batch %s released back to the queue: %s", batch.id, why)
