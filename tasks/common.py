"""Shared wiring for tasks: config loading, the MLflow client setup, and the models in the registry."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config, load_config
from hitl.environment import apply_environment
from hitl.ops import orphans

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hitl.learning import modeling


def setup(config_path: str) -> Config:
    """Load the config and point this process's MLflow client (and any child process) at the configured
    stack. Prefect reads its API URL when first imported: `flows/__init__.py` and the CLI set it earlier.

    MLflow reads its tracking URI from the environment when first used, so it is imported here only when this
    process already has it (its URI may then point elsewhere): a run that logs nothing to MLflow, such as a
    review run up to its suspend or a dispatch, does not pay for its import (about 2 s of CPU).

    A flow run a `hitl` command runs in its own process gets that process's tag here (hitl/ops/orphans.py)."""
    cfg = load_config(config_path)
    apply_environment(cfg)
    orphans.claim_current_run()
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(cfg.mlflow_uri)
    return cfg


@task(name="load-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def load_model(cfg: Config, alias: str, client: MlflowClient) -> modeling.IntentModel:
    """Load `models:/<registered_name>@alias` and check it predicts the configured label set. A promotion a
    crash interrupted is finished first, so the aliases are where the approval put them."""
    from hitl.learning import modeling, promotion, registry  # torch and MLflow: only the flows that load a model

    finished = promotion.finish_pending(cfg.model.registered_name, client)
    if finished:
        get_run_logger().warning("Finished the %s of %s v%s to @champion (decided by %s), which a crash had "
                                 "interrupted", finished.kind, cfg.model.registered_name, finished.promoted,
                                 finished.approver)
    model = registry.load_registered(cfg.model.registered_name, alias, client, engine=cfg.model.engine)
    modeling.check_labels(model, cfg)
    log = get_run_logger()
    log.info("Loaded %s@%s (version %s), scored by %s", cfg.model.registered_name, alias, model.version,
             model.serving_engine)
    if model.serving_engine != cfg.model.engine:
        log.warning("model.engine is %s but version %s is scored by %s: %s", cfg.model.engine, model.version,
                    model.serving_engine, "it was registered without an ONNX export" if model.engine is None
                    else "its int8 export was refused at the export check (see onnx/onnx.json)")
    return model


def deployed_top_level() -> bool:
    """True in a flow run started from a deployment and not as a subflow: the runs that may suspend."""
    from prefect.context import get_run_context

    run = get_run_context().flow_run
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None


def wait_for_people(form, cfg: Config, key: str):
    """Wait for a person to resume this run with `form` filled in, and return the answer.

    A deployed top-level run suspends: its process exits and frees the worker; the resume re-runs the flow
    from the top, and this call (same `key`) then returns the stored answer at once. Anywhere else (the
    in-process `hitl cycle`, tests) the run pauses in place. Either way the wait ends after
    `review.timeout_s` (a suspended run is then marked Failed; a paused one raises FlowPauseTimeout).
    """
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    if deployed_top_level():
        return suspend_flow_run(wait_for_input=form, timeout=cfg.review.timeout_s, key=key)
    return pause_flow_run(wait_for_input=form, timeout=cfg.review.timeout_s, key=key,
                          poll_interval=max(1, round(cfg.review.poll_interval_s)))


def start_deployment(cfg: Config, config_path: str, name: str, key: str, run_name: str | None = None,
                     tags: tuple[str, ...] = (), **parameters):
    """Start a run of deployment `name` (named `run_name`, with `tags`) without waiting for it and without a
    parent link (it may suspend). The idempotency key `<key>-<this flow run id>` makes a re-run of this flow start
    nothing new."""
    from prefect.context import get_run_context

    from hitl.ops import deploy

    run_id = get_run_context().flow_run.id
    run = deploy.trigger(cfg, config_path, name, idempotency_key=f"{key}-{run_id}", flow_run_name=run_name,
                         tags=[deploy.started_by(str(run_id)), *tags], **parameters)
    get_run_logger().info("Started %s run %s (%s)", name, run.name, cfg.flow_run_url(run.id))
    return run
