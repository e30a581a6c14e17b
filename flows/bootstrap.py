"""Flow: fine-tune the launch model from the base encoder and register it as the champion."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger

from hitl.learning import abstention, modeling, promotion, registry
from hitl.learning.promotion import CHAMPION
from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from hitl.sim import world
from tasks import training
from tasks.common import setup


@flow(name="bootstrap", log_prints=True, on_crashed=[retry_crashed])
def bootstrap(config_path: str = "configs/demo.yaml", force: bool = False) -> dict:
    """Launch data -> fine-tune the base model -> register `@champion` (skipped if one exists)."""
    cfg = setup(config_path)
    client = MlflowClient()  # one for the run, passed down
    existing = registry.alias_version(cfg.model.registered_name, CHAMPION, client)
    if existing and not force:
        print(f"{cfg.model.registered_name}@champion already exists (version {existing}); pass force=True to retrain")
        return {"champion_version": existing, "skipped": True}
    data = training.launch_data(cfg, world.launch_data)
    model = modeling.load_base(cfg)
    metrics = training.train(model, data, cfg, "launch")
    if abstention.trains_fallback(data["label"], cfg.fallback_label):
        get_run_logger().warning(abstention.uncalibrated_warning(
            cfg.fallback_label, "The launch champion has no random draw of production traffic to calibrate "
            "abstention on"))
    ds = mlflow.data.from_pandas(data, name="launch-data", targets="label")
    params = {"base_model": str(modeling.base_model_path(cfg)), "rows": len(data),
              **training.recipe_params(cfg)}
    store = ReviewStore(cfg.store_url)  # the audit chain's, once for the run
    version = training.register_model(model, cfg, store, client, CHAMPION, params, metrics,
                                      {promotion.STAGE_TAG: promotion.BOOTSTRAP, "hitl.base": model.version}, ds,
                                      export_texts=data["text"].tolist())
    return {"champion_version": version, "rows": len(data), **metrics}


if __name__ == "__main__":
    bootstrap()
