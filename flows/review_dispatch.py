"""Flow: drain the review queue without holding a worker (the hourly deployment).

Starts review-batch runs for the queued work, keeping at most `deployments.open_reviews` of them open, and
one adjudication run when items are disputed and none is open. Each started run leases its own batch and
suspends until a person resumes it; this run ends at once (fan-out, no waiting parent). It then runs again the
deployed runs whose crash no hook decided on (hitl/ops/orphans.py) and, with notifications on, sends the news
Prefect's automations lost (hitl/ops/notify_reconcile.py).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context

from hitl.ops import notify_reconcile, runs
from hitl.ops.orphans import retry_crashed
from hitl.review import dispatch
from hitl.review.store import ReviewStore
from tasks.common import setup, start_deployment
from tasks.review import catch_up_notifications, retry_lost_crashes

REVIEW, ADJUDICATE = "review-batch/review-batch", "adjudicate/adjudicate"


@flow(name="review-dispatch", log_prints=True, on_crashed=[retry_crashed])
def review_dispatch(config_path: str = "configs/demo.yaml") -> dict:
    cfg = setup(config_path)
    store = ReviewStore(cfg.store_url)
    open_runs = runs.flow_runs([REVIEW, ADJUDICATE], states=runs.OPEN)
    reviews = [r for r in open_runs if r.deployment == REVIEW]
    n_start, wanted = dispatch.reviews_to_start(store.batches_wanted(cfg.review.batch_size, cfg.review.gold_share),
                                                [r.state_type for r in reviews], cfg.deployments.open_reviews)
    this_run = str(get_run_context().flow_run.id)
    digest = notify_reconcile.digest_plan(cfg, n_start, this_run)  # many at once: one message lists them all
    started = [start_deployment(cfg, config_path, "review-batch", key=f"review-{i}",
                                **(digest.run(i) if digest else {})) for i in range(n_start)]
    if digest:
        notify_reconcile.announce_digest(cfg, digest, [(str(r.id), r.name) for r in started])
    started = [r.name for r in started]
    adjudication = None
    if dispatch.adjudication_to_start(store.disputed(), any(r.deployment == ADJUDICATE for r in open_runs)):
        adjudication = start_deployment(cfg, config_path, "adjudicate", key="adjudicate").name
    get_run_logger().info("Review runs open: %d, batches still wanted: %d, started: %d%s", len(reviews),
                          wanted, len(started), f"; adjudication {adjudication}" if adjudication else "")
    retry_lost_crashes(cfg)  # runs whose crash hook never ran (their process lost the Prefect server)
    catch_up_notifications(cfg)  # news a Prefect restart lost, sent once it has settled
    return {"started_reviews": started, "started_adjudication": adjudication, "open_reviews": len(reviews),
            "batches_wanted": wanted}


if __name__ == "__main__":
    review_dispatch()
