"""Flow (demo/test only): the synthetic world's production traffic, answered by the current champion.

Writes one window of trace JSONL as a logging system would, and the hidden ground truth apart from it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config
from hitl.learning import modeling
from hitl.learning.promotion import CHAMPION
from hitl.sim import world
from tasks.common import load_model, setup


@task(name="serve-window", cache_policy=NO_CACHE)
def serve_window(cfg: Config, model: modeling.IntentModel, window: int) -> dict:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=window)
    requests, truth = world.production_requests(cfg.world, start, seed_offset=window)
    s = modeling.score(model, requests["input"].tolist(), cfg.model.score_batch_size, cfg.model.max_length)
    records = world.simulate_production(requests, truth, s.prediction, s.confidence.tolist(),
                                        model.version, cfg.world)
    day = start.strftime("%Y-%m-%d")
    traces = world.write_jsonl(records, cfg.world_dir / "traces" / f"{day}.jsonl")
    truth_path = cfg.world_dir / "truth" / f"{day}.parquet"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth.to_parquet(truth_path, index=False)
    get_run_logger().info("Wrote %d trace records for %s to %s", len(records), day, traces)
    return {"traces": str(traces), "records": len(records), "day": day}


@flow(name="simulate-production", log_prints=True)
def simulate_production(config_path: str = "configs/demo.yaml", window: int = 0) -> dict:
    """One day of synthetic production traffic scored by `@champion`."""
    cfg = setup(config_path)
    return serve_window(cfg, load_model(cfg, CHAMPION), window)


if __name__ == "__main__":
    simulate_production()
