"""Tasks of the review stage: lease a batch, build its reviewer form, store the answers."""

from __future__ import annotations

from functools import partial
from typing import Literal

import pydantic
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE, RUN_ID, TASK_SOURCE
from prefect.input import RunInput

from hitl.audit import evidence
from hitl.config import Config
from hitl.evaluation.decision import GATE_CHOICES, MIN_OVERRIDE_REASON
from hitl.review import adjudication, forms, submission
from hitl.review.store import BatchView, ReviewError, ReviewStore, SubmitResult


class ReviewForm(RunInput):
    """Base class of every review batch form (fields are added per batch)."""

    model_config = pydantic.ConfigDict(extra="forbid")


class ApprovalForm(RunInput):
    """An explicit approve/reject decision on a high-risk step."""

    decision: Literal["approve", "reject"] = pydantic.Field(title="Decision")
    approver: str = pydantic.Field(title="Approver", min_length=1, max_length=100)
    reason: str = pydantic.Field(title="Reason", min_length=1, max_length=2000)


class AdjudicationForm(RunInput):
    """Base class of every adjudication form (fields are added per batch of disputed items)."""

    model_config = pydantic.ConfigDict(extra="forbid")


def _form(name: str, base: type[RunInput], specs: list[forms.FieldSpec], description: str, cfg: Config):
    """A RunInput subclass: a required choice per item (and per choice field), optional rationales."""
    fields: dict[str, tuple] = {}
    for spec in specs:
        common = {"title": spec.title, "description": spec.description}
        if spec.trace_id is not None:
            common["json_schema_extra"] = {"trace_id": spec.trace_id}
        if spec.choices:
            fields[spec.name] = (Literal[spec.choices], pydantic.Field(..., **common))  # type: ignore[valid-type]
        elif spec.required:
            fields[spec.name] = (str, pydantic.Field(..., min_length=1, max_length=100, **common))
        else:  # optional text: a plain textarea in the UI, "" when left empty
            fields[spec.name] = (str, pydantic.Field("", max_length=cfg.review.max_rationale_chars, **common))
    form = pydantic.create_model(name, __base__=base, **fields)
    form._description = description
    return form


def build_form(batch: BatchView, cfg: Config) -> type[ReviewForm]:
    """The reviewer's form for a batch: one required label per item, optional rationales."""
    return _form("ReviewForm", ReviewForm, forms.form_fields(batch.items, cfg),
                 forms.describe_batch(batch.id, batch.items, cfg), cfg)


def build_adjudication_form(items: list[dict], cfg: Config) -> type[AdjudicationForm]:
    """The adjudicator's form: the deciding label per disputed item, with every earlier label shown."""
    return _form("AdjudicationForm", AdjudicationForm, forms.adjudication_fields(items, cfg),
                 forms.describe_adjudication(items, cfg), cfg)


def approval_form(description: str, gate: str = "PASS") -> type[ApprovalForm]:
    """The release approval: approve/reject after a PASS; after INCONCLUSIVE the same choices, with a written
    reason; after a FAIL only reject or a break-glass override, with a written reason."""
    if gate == "PASS":
        form = pydantic.create_model("ApprovalForm", __base__=ApprovalForm)
    else:
        form = pydantic.create_model(
            "ApprovalForm", __base__=ApprovalForm,
            decision=(Literal[GATE_CHOICES[gate]], pydantic.Field(title="Decision")),  # type: ignore[valid-type]
            reason=(str, pydantic.Field(title="Reason (required: the gate did not PASS)",
                                        min_length=MIN_OVERRIDE_REASON, max_length=2000)))
    form._description = description
    return form


@task(name="lease-review-batch", cache_policy=NO_CACHE)
def lease_batch(cfg: Config, store: ReviewStore, flow_run_id: str) -> BatchView | None:
    requeued = store.requeue_proposals(cfg.labels)
    if requeued:
        get_run_logger().info("%d items held for a proposed label that is now in the label set are back in the "
                              "queue", requeued)
    if cfg.review.gold_path:
        from hitl.review import gold

        store.seed_gold(gold.read_seed_file(cfg.review.gold_path), cfg.cohorts)
    batch = store.take_batch(cfg.review.batch_size, lease_s=cfg.review.timeout_s + cfg.review.lease_grace_s,
                             gold_share=cfg.review.gold_share, flow_run_id=flow_run_id)
    if batch is not None:
        get_run_logger().info("%s batch %s with %d items", "Resumed with" if batch.resumed else "Leased",
                              batch.id, len(batch.items))
    return batch


@task(name="store-labels", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_labels(cfg: Config, store: ReviewStore, batch: BatchView, answer: dict) -> SubmitResult:
    sub = submission.submit(cfg, store, batch.id, batch.items, answer,
                            partial(evidence.record_review, evidence.open_log(cfg, store)))
    reviewer, result = sub.reviewer, sub.result
    log = get_run_logger()
    if result.check is not None and not result.check.ok:  # which items were gold is never logged
        c = result.check
        log.warning("Reviewer %s: gold accuracy %d/%d (95%% CI %.0f%%-%.0f%%) is below %.0f%%; %d of their labels "
                    "since their last good check went to adjudication (run `hitl adjudicate`).", reviewer, c.correct,
                    c.answers, 100 * c.low, 100 * c.high, 100 * cfg.review.gold_min_accuracy,
                    result.sent_to_adjudication)
    log.info("Batch %s: stored %d labels from %s%s", batch.id, result.stored, reviewer,
             " (already submitted: nothing new)" if result.already_submitted else
             " (late: the batch had expired; merged where items still needed labels)" if result.late else "")
    for trace_id, why in result.skipped.items():
        log.warning("Trace %s not stored: %s", trace_id, why)
    return result


@task(name="write-labels-to-mlflow-traces", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def write_back_labels(cfg: Config, store: ReviewStore) -> int:
    """With an MLflow trace source: every resolved label as a HUMAN assessment on its trace (idempotent)."""
    if cfg.source.kind != "mlflow":
        return 0
    import mlflow

    from hitl.sampling import mlflow_traces

    ann = store.annotations()
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    n = mlflow_traces.write_back(cfg, mlflow_traces.verdicts(store.resolved(ann), ann, store.resolutions()))
    get_run_logger().info("Wrote %d human assessments ('%s') to MLflow traces of %s", n,
                          cfg.source.assessment_name, cfg.source.experiment)
    return n


@task(name="publish-review-metrics", cache_policy=NO_CACHE)
def publish_metrics(cfg: Config, store: ReviewStore, batch_id: str) -> dict[str, float]:
    """Reviewer metrics after a batch: a Prefect artifact and an MLflow run in the review experiment."""
    try:
        return _publish_metrics(cfg, store, batch_id)
    except Exception as e:  # reporting must not fail a review whose labels are already stored
        get_run_logger().warning("Reviewer metrics were not published (%s: %s); the labels are stored. "
                                 "`hitl metrics` shows them from the store.", type(e).__name__, e)
        return {}


def _publish_metrics(cfg: Config, store: ReviewStore, batch_id: str) -> dict[str, float]:
    from datetime import UTC, datetime

    import mlflow
    from prefect.artifacts import create_markdown_artifact

    from hitl.review import metrics

    m = metrics.from_store(store, cfg, datetime.now(UTC))
    page = metrics.markdown(m)
    create_markdown_artifact(key="reviewer-metrics", markdown=page, description=f"After batch {batch_id[:8]}")
    mlflow.set_experiment(cfg.review_experiment)
    with mlflow.start_run(run_name=f"review-batch-{batch_id[:8]}"):
        mlflow.log_metrics(m.as_mlflow_metrics())
        mlflow.log_text(page, "reviewer_metrics.md")
    return m.as_mlflow_metrics()


@task(name="take-disputed-items", cache_policy=TASK_SOURCE + RUN_ID, persist_result=True)
def disputed_items(cfg: Config, store: ReviewStore) -> list[dict]:
    """Up to one batch of disputed items, random-draw items first (they are the release verdict).

    Persisted per flow run: a suspended adjudication resumed later answers the items its form showed, even if
    more disputes arrived meanwhile. The key is the task's source and the run, never `store`."""
    return adjudication.next_batch(store.disputed(), cfg.review.batch_size)


@task(name="store-adjudications", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_adjudications(cfg: Config, store: ReviewStore, items: list[dict], answer: dict) -> dict[str, int]:
    """Resolve each disputed item with the adjudicator's label; items settled meanwhile are skipped."""
    adjudicator, labels = forms.parse_answer(answer, items, cfg.labels)
    adjudication.check_adjudicator(adjudicator, cfg.review.adjudicators)
    log = get_run_logger()
    stored = skipped = 0
    for trace_id, (label, reason) in labels.items():
        try:
            store.resolve(trace_id, label, adjudicator, reason, "adjudication", cfg.labels)
            stored += 1
        except ReviewError as e:  # e.g. settled by another adjudication meanwhile
            log.warning("Trace %s not adjudicated: %s", trace_id, e)
            skipped += 1
    evidence.record_adjudications(evidence.open_log(cfg, store), store, labels, adjudicator)
    log.info("Adjudicated %d disputed items as %s (%d skipped)", stored, adjudicator, skipped)
    return {"stored": stored, "skipped": skipped}


@task(name="release-review-batch", cache_policy=NO_CACHE)
def release_batch(cfg: Config, store: ReviewStore, batch: BatchView, why: str) -> None:
    store.expire_batch(batch.id)
    get_run_logger().warning("Batch %s released back to the queue: %s", batch.id, why)


@task(name="catch-up-notifications", cache_policy=NO_CACHE)
def catch_up_notifications(cfg: Config) -> int:
    """Send the news Prefect's automations lost (an event dropped by a server restart): the reconciliation `hitl up`
    runs, here at every dispatch, so lost news is late by one dispatch interval at most. It never fails the
    dispatch: what it could not send is tried again next time. Returns how many sends succeeded (a combined message
    counts once)."""
    from hitl.ops import notify_reconcile

    log = get_run_logger()
    if not cfg.notifications.enabled:
        return 0
    try:
        lines = notify_reconcile.reconcile(cfg)
    except Exception as e:  # noqa: BLE001 - the next dispatch (or `hitl up`) tries again
        log.warning("Could not catch up on notifications (the next dispatch tries again): %s",
                    " ".join(str(e).split())[:300])
        return 0
    for line in lines:
        (log.info if line.startswith("sent") else log.warning)("notifications: %s", line)
    return sum(line.startswith("sent") for line in lines)


@task(name="retry-lost-crashes", cache_policy=NO_CACHE)
def retry_lost_crashes(cfg: Config) -> int:
    """Run again the deployed runs that crashed with no hook deciding (their process gave up while the Prefect
    server was away) or failed because a server stopped answering (hitl/ops/orphans.py). Like the catch-up, it never
    fails the dispatch. Returns how many were scheduled again."""
    from hitl.ops import orphans

    log = get_run_logger()
    try:
        lines = orphans.retry_lost_crashes(cfg)
    except Exception as e:  # noqa: BLE001 - the next dispatch (or worker start) looks again
        log.warning("Could not look for crashed runs to run again (the next dispatch tries again): %s",
                    " ".join(str(e).split())[:300])
        return 0
    for line in lines:
        log.warning("crash retry: %s", line)
    return sum(": run again" in line for line in lines)
