"""Flow (demo/test only): the synthetic world's production traffic, answered by the current champion.

Writes one window of trace JSONL as a logging system would, and the hidden ground truth apart from it.
"""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import flow

from hitl.learning.promotion import CHAMPION
from hitl.ops.orphans import retry_crashed
from hitl.sim import serving
from tasks import simulation
from tasks.common import load_model, setup


@flow(name="simulate-production", log_prints=True, on_crashed=[retry_crashed])
def simulate_production(config_path: str = "configs/demo.yaml", window: int = 0) -> dict:
    """One day of synthetic production traffic scored by `@champion`."""
    cfg = setup(config_path)
    client = MlflowClient()
    return simulation.serve_window(cfg, load_model(cfg, CHAMPION, client), window, serving.serve_window)


if __name__ == "__main__":
    simulate_production()
