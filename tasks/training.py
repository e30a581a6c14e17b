"""Tasks of the training stage: launch data, fine-tuning with Trainer, logging and registering models."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config
from hitl.learning import modeling
from hitl.sim import world

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


@task(name="launch-data", cache_policy=NO_CACHE)
def launch_data(cfg: Config) -> pd.DataFrame:
    """The labelled data the launch model is trained on: a file from config, or the synthetic world's."""
    if cfg.source.launch_path:
        p = Path(cfg.source.launch_path)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    else:
        df = world.launch_data(cfg.world)
    unknown = sorted(set(df["label"]) - set(cfg.labels))
    if unknown:
        raise ValueError(f"Launch data has labels outside the config's label set: {unknown}")
    return df


@task(name="fine-tune-model", cache_policy=NO_CACHE)
def train(model: modeling.IntentModel, data: pd.DataFrame, cfg: Config, tag: str) -> dict[str, float]:
    out = cfg.work_dir / "trainer" / tag
    out.mkdir(parents=True, exist_ok=True)
    log = get_run_logger()
    log.info("Fine-tuning %s on %d rows for %s epochs", model.version, len(data), cfg.training.epochs)
    metrics = modeling.fine_tune(model, data["text"].tolist(), data["label"].tolist(), cfg.training, out,
                                 cfg.model.max_length)
    log.info("Trained: loss %.4f, %.1f samples/s, %.1fs", metrics.get("train_loss", float("nan")),
             metrics.get("train_samples_per_second", 0.0), metrics.get("train_runtime", 0.0))
    return metrics


@task(name="log-and-register-model", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def register_model(model: modeling.IntentModel, cfg: Config, alias: str, params: dict, metrics: dict,
                   tags: dict[str, str], dataset=None) -> str:
    """One MLflow run in the training experiment: params, metrics, dataset input, model, alias."""
    import mlflow

    mlflow.set_experiment(cfg.training_experiment)
    with mlflow.start_run(run_name=f"train-{alias}", tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if dataset is not None:
            mlflow.log_input(dataset, context="training")
        version = modeling.log_and_register(model, cfg.model.registered_name, alias,
                                            {**tags, "training_run_id": run.info.run_id})
    get_run_logger().info("Registered %s version %s as @%s", cfg.model.registered_name, version, alias)
    return version
