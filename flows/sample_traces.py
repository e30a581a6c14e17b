"""Flow: sample production traces for human review.

load + validate (quarantine) -> score with @champion -> evaluators -> selection policy -> review queue
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from tasks import sampling
from tasks.common import load_model, setup
from tasks.training import CHAMPION


@flow(name="sample-traces", log_prints=True)
def sample_traces(config_path: str = "configs/demo.yaml", since: datetime | None = None,
                  until: datetime | None = None) -> dict:
    cfg = setup(config_path)
    loaded = sampling.load(cfg, since, until)
    fresh = sampling.drop_considered(loaded.accepted, cfg)
    if fresh.empty:
        print(f"No new valid traces in the window ({loaded.summary}); nothing to sample.")
        return {**loaded.summary, "selected": 0, "enqueued": 0}
    scored = sampling.score(load_model(cfg, CHAMPION), fresh, cfg)
    results, evaluated = sampling.evaluate(scored, cfg)
    selected, new = sampling.select_and_enqueue(evaluated, cfg)
    return sampling.publish(cfg, loaded, results, evaluated, selected, new)


if __name__ == "__main__":
    sample_traces()
