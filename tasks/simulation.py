"""Tasks of the simulated production (demo and tests only): the flow passes in the synthetic world's function,
so production tasks never import the demo world."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config
from hitl.learning import modeling

ServeWindow = Callable[[Config, modeling.IntentModel, int], dict]  # hitl/sim/serving.py serve_window


@task(name="serve-window", cache_policy=NO_CACHE)
def serve_window(cfg: Config, model: modeling.IntentModel, window: int, serve: ServeWindow) -> dict:
    """One day of synthetic traffic answered by `model` and written as trace files (`serve`)."""
    out = serve(cfg, model, window)
    get_run_logger().info("Wrote %d trace records for %s to %s", out["records"], out["day"], out["traces"])
    return out
