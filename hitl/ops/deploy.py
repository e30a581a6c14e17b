"""Production mode: the work pool, the CPU concurrency limit and every deployment of deployments/prefect.yaml,
created on the configured Prefect server with the config's schedules; and triggering those deployments.

`apply(cfg, config_path)` is idempotent (`hitl up` calls it every time): the pool and limit are created or
updated, each deployment is upserted (its schedules replaced by the config's). Deployments run the code of
this checkout (a `set_working_directory` pull step), so workers on other machines need the same checkout
at the same path, or a pull step of their own (docs/operations.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hitl.config import Config

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
CPU_TAG = "hitl-cpu"  # tag of the torch-heavy tasks; its concurrency limit is deployments.cpu_slots


class DeployError(RuntimeError):
    """The deployments could not be created (a bad schedule, an unknown deployment name, ...)."""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str  # deployment name, as in prefect.yaml
    flow_name: str  # the @flow(name=...) of its entrypoint
    entrypoint: str
    parameters: dict[str, Any]
    cron: str | None

    @property
    def full_name(self) -> str:
        """`flow-name/deployment-name`, what `run_deployment` takes."""
        return f"{self.flow_name}/{self.name}"


def specs(cfg: Config, config_path: str | os.PathLike[str]) -> list[DeploymentSpec]:
    """The deployments of deployments/prefect.yaml with this config's path and schedules."""
    from prefect.flows import load_flow_arguments_from_entrypoint

    raw = yaml.safe_load(PREFECT_YAML.read_text())
    names = [d["name"] for d in raw["deployments"]]
    for setting in ("schedules", "parameters"):
        unknown = sorted(set(getattr(cfg.deployments, setting)) - set(names))
        if unknown:
            raise DeployError(f"deployments.{setting} names {unknown}, which are not in {PREFECT_YAML.name}; "
                              f"known: {names}")
    out = []
    for d in raw["deployments"]:
        entry = d["entrypoint"]
        path, func = entry.rsplit(":", 1)
        flow_args = load_flow_arguments_from_entrypoint(f"{REPO / path}:{func}", arguments={"name"})
        params = {**(d.get("parameters") or {}), **cfg.deployments.parameters.get(d["name"], {}),
                  "config_path": str(Path(config_path).resolve())}
        out.append(DeploymentSpec(d["name"], flow_args.get("name") or func.replace("_", "-"), entry, params,
                                  cfg.deployments.schedules.get(d["name"])))
    return out


def spec(cfg: Config, config_path: str | os.PathLike[str], name: str) -> DeploymentSpec:
    for s in specs(cfg, config_path):
        if s.name == name:
            return s
    raise DeployError(f"No deployment {name!r} in {PREFECT_YAML}")


def _ensure_pool(client, cfg: Config) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    d = cfg.deployments
    try:
        client.read_work_pool(d.pool)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=d.pool, type="process", concurrency_limit=d.pool_concurrency,
            base_job_template=ProcessWorker.get_default_base_job_template(),
            description="hitl-loop flows; runs suspended for people hold no slot"))
        return
    client.update_work_pool(d.pool, WorkPoolUpdate(concurrency_limit=d.pool_concurrency))


def apply(cfg: Config, config_path: str | os.PathLike[str]) -> list[DeploymentSpec]:
    """Create/update the work pool, the CPU tag limit and every deployment; returns what was deployed."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    deployments = specs(cfg, config_path)
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    with get_client(sync_client=True) as client:
        _ensure_pool(client, cfg)
        client.create_concurrency_limit(tag=CPU_TAG, concurrency_limit=cfg.deployments.cpu_slots)
        for s in deployments:
            path, func = s.entrypoint.rsplit(":", 1)
            try:
                schedules = [DeploymentScheduleCreate(schedule=CronSchedule(cron=s.cron,
                                                                            timezone=cfg.deployments.timezone))
                             ] if s.cron else []
            except ValueError as e:
                raise DeployError(f"deployments.schedules[{s.name!r}] = {s.cron!r} is not a valid cron "
                                  f"schedule: {e}") from e
            flow_id = client.create_flow_from_name(s.flow_name)
            client.create_deployment(
                flow_id=flow_id, name=s.name, entrypoint=s.entrypoint, path=str(REPO), pull_steps=pull,
                parameters=s.parameters, schedules=schedules, work_pool_name=cfg.deployments.pool,
                work_queue_name="default", enforce_parameter_schema=True, tags=["hitl", cfg.project],
                parameter_openapi_schema=parameter_schema_from_entrypoint(
                    f"{REPO / path}:{func}").model_dump_for_openapi(),
                description=f"hitl-loop {s.name} ({cfg.project}); schedule: {s.cron or 'on demand'}")
    return deployments


def trigger(cfg: Config, config_path: str | os.PathLike[str], name: str, *, wait: bool = False,
            idempotency_key: str | None = None, tags: list[str] | None = None, flow_run_name: str | None = None,
            **parameters: Any):
    """Start a run of deployment `name` (never as a subflow: a run that suspends must have no parent).

    With `wait`, block until the run is final (a run that suspends for people is not final: use
    `wait_until` to stop at Paused). Returns the FlowRun.
    """
    from prefect.deployments import run_deployment

    s = spec(cfg, config_path, name)
    params = {**s.parameters, **parameters}
    return run_deployment(s.full_name, parameters=params, as_subflow=False, idempotency_key=idempotency_key,
                          tags=tags, timeout=None if wait else 0, poll_interval=2, flow_run_name=flow_run_name)


def started_by(flow_run_id: str) -> str:
    """The tag of runs another run started (e.g. the regression eval a fine-tune started)."""
    return f"started-by:{flow_run_id}"
