"""Flow: turn resolved human labels into a new immutable dataset version in MLflow."""

from __future__ import annotations

from prefect import flow

from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from tasks import datasets
from tasks.common import setup


@flow(name="register-dataset", log_prints=True, on_crashed=[retry_crashed])
def register_dataset(config_path: str = "configs/demo.yaml") -> dict:
    cfg = setup(config_path)
    store = ReviewStore(cfg.store_url)  # one store for the run, passed down
    erased = datasets.apply_retention(cfg, store)
    records, stats = datasets.collect(cfg, store)
    stats["erased_by_retention"] = erased
    dv, created = datasets.register(records, cfg, store, stats)
    return {"dataset": dv.ref, "version": dv.version, "created": created, "rows": dv.rows, "run_id": dv.run_id,
            **stats}


if __name__ == "__main__":
    register_dataset()
