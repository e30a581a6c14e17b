"""Shared wiring for tasks: config loading, the MLflow client setup, and the models in the registry."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config, apply_environment, load_config
from hitl.learning import modeling, promotion


def setup(config_path: str) -> Config:
    """Load the config and point this process's MLflow client (and any child process) at the configured
    stack. Prefect reads its API URL when first imported: `flows/__init__.py` and the CLI set it earlier."""
    cfg = load_config(config_path)
    apply_environment(cfg)
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow_uri)
    return cfg


@task(name="load-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def load_model(cfg: Config, alias: str) -> modeling.IntentModel:
    """Load `models:/<registered_name>@alias` and check it predicts the configured label set. A promotion a
    crash interrupted is finished first, so the aliases are where the approval put them."""
    finished = promotion.finish_pending(cfg.model.registered_name)
    if finished:
        get_run_logger().warning("Finished promoting %s v%s to @champion (approved by %s), which a crash had "
                                 "interrupted", cfg.model.registered_name, finished.promoted, finished.approver)
    model = modeling.load_registered(cfg.model.registered_name, alias)
    modeling.check_labels(model, cfg)
    get_run_logger().info("Loaded %s@%s (version %s)", cfg.model.registered_name, alias, model.version)
    return model
