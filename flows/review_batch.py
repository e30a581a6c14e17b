"""Flow: take one batch from the review queue and wait until a reviewer resumes it with labels.

Deployed, the run suspends (no worker held) and the resume re-runs it from the top: the lease is the run's own
batch again and the labels are stored once (both keyed by the flow run)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout

from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from tasks import review
from tasks.common import setup, wait_for_people


@flow(name="review-batch", log_prints=True, on_crashed=[retry_crashed])
def review_batch(config_path: str = "configs/demo.yaml") -> dict:
    """Lease a batch, pause with its form (Prefect UI or `hitl review`), store the labels on resume."""
    cfg = setup(config_path)
    flow_run_id = str(get_run_context().flow_run.id)
    store = ReviewStore(cfg.store_url)  # one store for the run, passed down
    batch = review.lease_batch(cfg, store, flow_run_id)
    if batch is None:
        get_run_logger().info("The review queue is empty: nothing to review.")
        return {"status": "empty", "stored": 0}
    form = review.build_form(batch, cfg)
    get_run_logger().info(
        "Waiting for a reviewer: open %s/v2/runs/flow-run/%s and use Resume (⋮ menu), or run `hitl review -c %s`",
        cfg.prefect_ui_url, flow_run_id, config_path)
    try:
        answer = wait_for_people(form, cfg, key=f"review-{batch.id}")
    except FlowPauseTimeout:
        review.release_batch(cfg, store, batch, f"nobody resumed it within {cfg.review.timeout_s}s")
        raise
    values = answer.model_dump()
    result = review.store_labels(cfg, store, batch, values)
    review.publish_metrics(cfg, store, batch.id)
    review.write_back_labels(cfg, store)
    return {"status": "submitted", "batch_id": batch.id, "stored": result.stored,
            "skipped": len(result.skipped), "reviewer": values["reviewer"]}


if __name__ == "__main__":
    review_batch()
