"""Flow: sample production traces for human review.

load + validate (quarantine) -> score with @champion -> evaluators -> representative draw per window + selection
policy -> review queue, a partition of the window at a time (hitl/sampling/stream.py)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.context import get_run_context

from hitl.config import Config
from hitl.learning.modeling import IntentModel
from hitl.learning.promotion import CHAMPION
from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from hitl.sampling.stream import Spill
from hitl.sampling.windows import previous_day
from hitl.sim import world
from tasks import sampling, training
from tasks.common import load_model, setup


@flow(name="sample-traces", log_prints=True, on_crashed=[retry_crashed])
def sample_traces(config_path: str = "configs/demo.yaml", since: datetime | None = None,
                  until: datetime | None = None, window: Literal["all", "previous_day"] = "all") -> dict:
    """`since`/`until` bound the trace timestamps; without them, `window="previous_day"` (the daily
    deployment) takes the UTC day before the run's scheduled time, so a late or re-run run reads the same day."""
    cfg = setup(config_path)
    client = MlflowClient()  # one for the run, passed down
    if window == "previous_day" and since is None and until is None:
        since, until = previous_day(get_run_context().flow_run.expected_start_time)
        get_run_logger().info("Window: %s to %s (the day before the scheduled time)", since, until)
    store = ReviewStore(cfg.store_url)  # one store for the run, passed down
    return sample_window(cfg, store, lambda: load_model(cfg, CHAMPION, client), since, until)


def sample_window(cfg: Config, store: ReviewStore, champion: Callable[[], IntentModel], since: datetime | None,
                  until: datetime | None) -> dict:
    """The flow's stages on one window, a partition at a time (hitl/sampling/stream.py); `champion` loads the
    model that scores it (only when there is something to score). Inside a flow run (benchmarks call it too)."""
    spill = Spill.create(sampling.spill_folder(cfg))
    loaded = sampling.load(cfg, store, since, until, spill)
    if not spill.rows:
        spill.remove()
        print(f"No new valid traces in the window ({loaded.summary}); nothing to sample.")
        return {**loaded.summary, "selected": 0, "enqueued": 0}
    sampling.score(champion(), spill, cfg)
    evaluated = sampling.evaluate(spill, cfg)
    reference = sampling.reference_rows(cfg, store, training.launch_data(cfg, world.launch_data))
    chosen, new = sampling.select_and_enqueue(evaluated.traces, reference, cfg, store, sampling.run_window_key(),
                                              spill)
    return sampling.publish(cfg, store, loaded, evaluated, chosen, new, spill)

if __name__ == "__main__":
    sample_traces()
