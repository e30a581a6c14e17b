"""The synthetic world's production traffic answered by a model: one day of trace JSONL as a logging system
would write it, and the hidden ground truth apart from it (the demo's and the tests' production)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hitl.config import Config
from hitl.learning import modeling
from hitl.sim import files, world


def serve_window(cfg: Config, model: modeling.IntentModel, window: int) -> dict:
    """Day `window` (from 2026-01-01) of requests scored by `model`: writes `traces/<day>.jsonl` and
    `truth/<day>.parquet` under the world's folder; returns the traces path, the records written and the day."""
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=window)
    requests, truth = world.production_requests(cfg.world, start, seed_offset=window)
    s = modeling.score(model, requests["input"].tolist(), cfg.model.score_batch_size, cfg.model.max_length)
    records = world.simulate_production(requests, truth, s.prediction, s.confidence.tolist(),
                                        model.version, cfg.world)
    day = start.strftime("%Y-%m-%d")
    traces = files.write_jsonl(records, cfg.world_dir / "traces" / f"{day}.jsonl")
    truth_path = cfg.world_dir / "truth" / f"{day}.parquet"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth.to_parquet(truth_path, index=False)
    return {"traces": str(traces), "records": len(records), "day": day}
