"""Tasks of the training stage: launch data, fine-tuning with Trainer, logging and registering models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.audit import evidence
from hitl.config import Config, WorldConfig
from hitl.datasets import splits, versions
from hitl.learning import abstention, modeling, promotion, recipe, registry
from hitl.ops.deploy import CPU_TAG
from hitl.review.store import ReviewStore

if TYPE_CHECKING:
    from mlflow import MlflowClient

SyntheticLaunch = Callable[[WorldConfig], pd.DataFrame]  # the synthetic world's launch set, given by a flow


def dataset_of(cfg: Config, client: MlflowClient, model_version: str) -> int:
    """The dataset version a registered model was fine-tuned on (its `hitl.dataset` tag)."""
    tags = client.get_model_version(cfg.model.registered_name, model_version).tags
    version = versions.ref_version(tags.get(versions.DATASET_TAG, ""))
    if version is None:
        raise LookupError(f"{cfg.model.registered_name} v{model_version} has no dataset tag: pass --dataset-version")
    return version


def recipe_params(cfg: Config) -> dict[str, object]:
    """The training recipe's settings as MLflow params (`training.*`)."""
    return {f"training.{k}": v for k, v in cfg.training.model_dump().items()}


@task(name="launch-data", cache_policy=NO_CACHE)
def launch_data(cfg: Config, synthetic: SyntheticLaunch | None = None) -> pd.DataFrame:
    """The labelled data the launch model is trained on: a file from config, else `synthetic(cfg.world)`, the
    synthetic world's launch set the flow passes in (the demo and tests; hitl/sim/world.py launch_data)."""
    if cfg.launch_path is not None:
        p = cfg.launch_path
        if not p.exists():
            raise FileNotFoundError(f"Launch data {p} not found: set source.launch_path (or run `hitl scenario` "
                                    "for a scenario config)")
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    elif synthetic is not None:
        df = synthetic(cfg.world)
    else:
        raise ValueError("No launch data: set source.launch_path")
    unknown = sorted(set(df["label"]) - set(cfg.labels))
    if unknown:
        raise ValueError(f"Launch data has labels outside the config's label set: {unknown}")
    return df


@task(name="training-rows", cache_policy=NO_CACHE)
def training_rows(records: pd.DataFrame, launch: pd.DataFrame, cfg: Config, dataset_ref: str
                  ) -> tuple[pd.DataFrame, splits.LeakageCheck]:
    """The train split (+ launch replay without texts of the regression set), checked against the regression
    set by trace id and normalised text: any overlap stops the fine-tune, names the ids and is recorded."""
    import mlflow

    log = get_run_logger()
    train, held_out, check = splits.training_rows(records, launch if cfg.training.replay_launch else None)
    if held_out:
        log.info("Launch replay: %d of %d rows left out because their text is in the regression set", held_out,
                 len(launch))
    log.info("Leakage guard %s", check.summary)
    if not check.passed:
        mlflow.set_experiment(cfg.training_experiment)
        with mlflow.start_run(run_name="train-challenger (stopped: leakage)",
                              tags={promotion.STAGE_TAG: "fine_tune", versions.DATASET_TAG: dataset_ref,
                                    "hitl.leakage_check": check.summary}):
            mlflow.log_dict({"shared_ids": check.shared_ids, "shared_texts": check.shared_texts}, "leakage.json")
        splits.require_no_leakage(check)
    return train, check


@task(name="calibrate-abstention", tags=[CPU_TAG], cache_policy=NO_CACHE)
def calibrate_abstention(model: modeling.IntentModel, records: pd.DataFrame, cfg: Config) -> float | None:
    """With a fallback label: the scale of the in-scope parts on the random draw's in-scope rows
    (`abstention.fit_scale`), then the threshold on the in-scope score (`modeling.Scores.in_scope`) that maximises
    weighted accuracy there, or refuses its in-scope rows at `model.abstention_rate`."""
    sample, weights = abstention.calibration_rows(records, cfg.evaluation.horizon_days)
    if cfg.fallback_label is None:
        return None
    if sample.empty:
        get_run_logger().warning(abstention.uncalibrated_warning(
            cfg.fallback_label, "No random-draw rows in the production horizon to calibrate abstention on"))
        return None
    model.abstain_threshold, model.in_scope_scale = None, None
    s = modeling.score(model, sample["text"].tolist(), cfg.model.score_batch_size, cfg.model.max_length)
    answers = abstention.in_scope_top(s.probs, model.labels, cfg.fallback_label)  # what it answers above the threshold
    model.in_scope_scale, thr = abstention.fit_served(s.in_scope_parts, answers, sample["label"].to_numpy(),
                                                      cfg.fallback_label, weights, cfg.model.abstention_rate)
    model.abstain_threshold = thr
    get_run_logger().info("Abstention threshold %.3f on the in-scope score (%s; predict %s below it), calibrated on "
                          "%d random-draw rows", thr, "nearest reference row alone" if model.in_scope_scale is None
                          else "mean rank of the nearest reference row and the top in-scope probability",
                          cfg.fallback_label, len(sample))
    return thr


# log_prints off: dill, under datasets, prints bytecode
@task(name="fine-tune-model", tags=[CPU_TAG], cache_policy=NO_CACHE, log_prints=False)
def train(model: modeling.IntentModel, data: pd.DataFrame, cfg: Config, tag: str) -> dict[str, float]:
    """The recipe (hitl/learning/recipe.py) on `data` (text, label); the model learns in place."""
    out = cfg.work_dir / "trainer" / tag
    out.mkdir(parents=True, exist_ok=True)
    log = get_run_logger()
    counts = data["label"].value_counts()
    log.info("Fine-tuning %s on %d rows of %d labels (fewest: %d rows) for at most %s epochs",
             model.version, len(data), len(counts), int(counts.min()), cfg.training.epochs)
    metrics = recipe.fine_tune(model, data["text"].tolist(), data["label"].tolist(), cfg.training, out,
                               cfg.model.max_length, cfg.fallback_label)
    for lab, n in counts.items():
        model.trained_counts[str(lab)] = model.trained_counts.get(str(lab), 0) + int(n)
    if "best_epoch" in metrics:
        log.info("Early stopping chose %.0f epoch(s) (validation balanced accuracy %.3f on %d held-out rows)%s",
                 metrics["best_epoch"], metrics["best_validation_balanced_accuracy"], int(metrics["validation_rows"]),
                 "; refitted on every row" if "refit_train_runtime" in metrics else "")
    log.info("Trained on %d rows: %d new head rows, %.1f samples/s, %.0fs in all", int(metrics["train_rows"]),
             int(metrics["new_head_rows"]), metrics.get("train_samples_per_second", 0.0),
             metrics.get("train_runtime", 0.0) + metrics.get("refit_train_runtime", 0.0))
    return metrics


@task(name="log-and-register-model", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def register_model(model: modeling.IntentModel, cfg: Config, store: ReviewStore, client: MlflowClient, alias: str,
                   params: dict, metrics: dict, tags: dict[str, str], dataset=None,
                   export_texts: list[str] | None = None) -> str:
    """One MLflow run in the training experiment: params, metrics, dataset input, model, alias. With an ONNX
    `model.engine`, the model's ONNX export (checked against torch on `export_texts`) is logged beside it."""
    import mlflow

    mlflow.set_experiment(cfg.training_experiment)
    with mlflow.start_run(run_name=f"train-{alias}", tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if dataset is not None:
            mlflow.log_input(dataset, context="training")
        export = export_texts if cfg.model.engine != "torch" and export_texts else None
        version = registry.log_and_register(model, cfg.model.registered_name, alias,
                                            {**tags, "training_run_id": run.info.run_id}, client, export,
                                            cfg.model.score_batch_size, cfg.model.max_length)
    entry = evidence.record_model(evidence.open_log(cfg, store), cfg.model.registered_name, version)
    evidence.tag_release(cfg.model.registered_name, version, entry, client)
    get_run_logger().info("Registered %s version %s as @%s (audit entry %s)", cfg.model.registered_name, version,
                          alias, entry.short)
    return version
