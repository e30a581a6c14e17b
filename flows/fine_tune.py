"""Flow: fine-tune the champion on a dataset version's train split and register it as `@challenger`."""

from __future__ import annotations

import pandas as pd
from prefect import flow

from hitl.datasets import versions
from tasks import training
from tasks.common import load_model, setup


@flow(name="fine-tune", log_prints=True)
def fine_tune(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """Dataset version (digest-checked) -> train split (+ launch replay) -> Trainer -> `@challenger`."""
    cfg = setup(config_path)
    records, dv = versions.load(cfg, dataset_version)
    train = records[records["split"] == "train"][["text", "label"]]
    if cfg.training.replay_launch:
        train = pd.concat([train, training.launch_data(cfg)[["text", "label"]]], ignore_index=True)
    model = load_model(cfg, training.CHAMPION)
    parent = model.version
    metrics = training.train(model, train, cfg, f"{dv.name}-v{dv.version}")
    ds = versions.as_mlflow_dataset(records, dv.ref, dv.run_id)
    params = {"dataset": dv.ref, "parent_model_version": parent, "epochs": cfg.training.epochs,
              "learning_rate": cfg.training.learning_rate, "train_rows": len(train),
              "replay_launch": cfg.training.replay_launch}
    tags = {"hitl.stage": "fine_tune", "hitl.dataset": dv.ref, "hitl.dataset_run_id": dv.run_id,
            "hitl.parent_model_version": parent}
    version = training.register_model(model, cfg, training.CHALLENGER, params, metrics, tags, ds)
    return {"challenger_version": version, "dataset": dv.ref, "train_rows": len(train), **metrics}


if __name__ == "__main__":
    fine_tune()
