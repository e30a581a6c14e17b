"""Flow: sample production traces for human review.

load + validate (quarantine) -> score with @champion -> evaluators -> representative draw per window + selection
policy -> review queue
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from tasks import sampling, training
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
    reference = sampling.reference_rows(cfg, training.launch_data(cfg))
    chosen, new = sampling.select_and_enqueue(evaluated, reference, cfg, sampling.run_window_key())
    return sampling.publish(cfg, loaded, results, evaluated, chosen, new)


if __name__ == "__main__":
    sample_traces()
