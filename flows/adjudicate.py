"""Flow: settle disputed items. One batch of items two reviewers labelled differently pauses until an
adjudicator resumes it with the deciding labels (Prefect UI or `hitl review`); those labels enter datasets,
the earlier ones stay in the store."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout

from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from tasks import review
from tasks.common import setup, wait_for_people


@flow(name="adjudicate", log_prints=True, on_crashed=[retry_crashed])
def adjudicate(config_path: str = "configs/demo.yaml") -> dict:
    cfg = setup(config_path)
    store = ReviewStore(cfg.store_url)  # one store for the run, passed down
    items = review.disputed_items(cfg, store)
    if not items:
        get_run_logger().info("No disputed items: nothing to adjudicate.")
        return {"status": "empty", "stored": 0}
    form = review.build_adjudication_form(items, cfg)
    get_run_logger().info("Waiting for an adjudicator: open %s/v2/runs/flow-run/%s and use Resume (⋮ menu), or run "
                          "`hitl review -c %s`", cfg.prefect_ui_url, get_run_context().flow_run.id, config_path)
    try:
        answer = wait_for_people(form, cfg, key="adjudication")
    except FlowPauseTimeout:
        get_run_logger().warning("Nobody adjudicated within %ss; the items stay disputed.", cfg.review.timeout_s)
        raise
    stored = review.store_adjudications(cfg, store, items, answer.model_dump())
    review.write_back_labels(cfg, store)
    return {"status": "adjudicated", **stored}


if __name__ == "__main__":
    adjudicate()
