"""Flow: drain the review queue without holding a worker (the hourly deployment).

Starts review-batch runs for the queued work, keeping at most `deployments.open_reviews` of them open, and
one adjudication run when items are disputed and none is open. Each started run leases its own batch and
suspends until a person resumes it; this run ends at once (fan-out, no waiting parent).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from hitl.ops import runs
from hitl.review import dispatch
from hitl.review.store import ReviewStore
from tasks.common import setup, start_deployment

REVIEW, ADJUDICATE = "review-batch/review-batch", "adjudicate/adjudicate"


@flow(name="review-dispatch", log_prints=True)
def review_dispatch(config_path: str = "configs/demo.yaml") -> dict:
    cfg = setup(config_path)
    store = ReviewStore(cfg.store_url)
    open_runs = runs.flow_runs([REVIEW, ADJUDICATE], states=runs.OPEN)
    reviews = [r for r in open_runs if r.deployment == REVIEW]
    n_start, wanted = dispatch.reviews_to_start(store.batches_wanted(cfg.review.batch_size),
                                                [r.state_type for r in reviews], cfg.deployments.open_reviews)
    started = []
    for i in range(n_start):
        started.append(start_deployment(cfg, config_path, "review-batch", key=f"review-{i}").name)
    adjudication = None
    if dispatch.adjudication_to_start(store.disputed(), any(r.deployment == ADJUDICATE for r in open_runs)):
        adjudication = start_deployment(cfg, config_path, "adjudicate", key="adjudicate").name
    get_run_logger().info("Review runs open: %d, batches still wanted: %d, started: %d%s", len(reviews),
                          wanted, len(started), f"; adjudication {adjudication}" if adjudication else "")
    return {"started_reviews": started, "started_adjudication": adjudication, "open_reviews": len(reviews),
            "batches_wanted": wanted}


if __name__ == "__main__":
    review_dispatch()
