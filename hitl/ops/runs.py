"""Flow runs of the deployed loop, read from the Prefect API: which are open, waiting (and why), and waiting
for one to end. Used by the review dispatch, `hitl status`, `hitl retrain --wait` and the demo."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

OPEN = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")  # state types of runs that are not over


@dataclass(frozen=True)
class RunView:
    id: str
    name: str
    deployment: str
    state_type: str  # SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, FAILED, CRASHED, ...
    state_name: str  # e.g. Suspended, Late, Scheduled, AwaitingConcurrencySlot
    expected_start: datetime | None

    @property
    def due(self) -> bool:
        """Started, or scheduled for now or earlier (future runs of a cron schedule are not due)."""
        return self.state_name != "Scheduled" or (self.expected_start is not None
                                                  and self.expected_start <= datetime.now(UTC))

    @property
    def waiting_for(self) -> str:
        """What an open run waits for, in words ("" when it is running or over)."""
        if self.state_type == "PAUSED":
            return ("a person (suspended: no worker held)" if self.state_name == "Suspended"
                    else "a person (paused in its process)")
        if self.state_name == "Late":
            return "a worker slot (past its start time: is the worker up, or the pool's concurrency full?)"
        if self.state_type in ("SCHEDULED", "PENDING"):
            return "its start time and a worker slot"
        return ""


def _view(run, deployments: dict) -> RunView:
    return RunView(str(run.id), run.name, deployments.get(run.deployment_id, "-"),
                   run.state.type.value if run.state else "?", run.state.name if run.state else "?",
                   run.expected_start_time)


def flow_runs(deployment_names: list[str] | None = None, states: tuple[str, ...] | None = None,
              tag: str | None = None, limit: int = 200) -> list[RunView]:
    """Runs of the named deployments (`flow/deployment`; all when None), newest first, optionally only those
    in the given state types or carrying `tag`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployments = {d.id: f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
        wanted = [i for i, n in deployments.items() if deployment_names is None or n in deployment_names]
        if not wanted:
            return []
        flt = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states]))
            if states else None,
            tags=FlowRunFilterTags(all_=[tag]) if tag else None)
        runs = client.read_flow_runs(flow_run_filter=flt, deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=wanted)), sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
    return [_view(r, deployments) for r in runs]


def waiting_tasks() -> list[tuple[str, str]]:
    """(task run name, flow run id) of task runs waiting for a concurrency slot (the CPU limit)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState, TaskRunFilterStateName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(state=TaskRunFilterState(
            name=TaskRunFilterStateName(any_=["AwaitingConcurrencySlot"]))), limit=100)
    return [(r.name, str(r.flow_run_id)) for r in runs]


def wait_any(flow_run_ids: list[str], timeout_s: float, poll_s: float = 2.0) -> list:
    """Poll until at least one of the flow runs is final; returns the final FlowRuns (TimeoutError after
    `timeout_s`)."""
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            done = [r for r in (client.read_flow_run(UUID(i)) for i in flow_run_ids) if r.state and r.state.is_final()]
            if done:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"None of {len(flow_run_ids)} flow runs ended within {timeout_s:.0f} s")
            time.sleep(poll_s)


def wait(flow_run_id: str | UUID, timeout_s: float, *, until_paused: bool = False, poll_s: float = 2.0):
    """Poll a flow run until it is final (or paused, with `until_paused`); returns the FlowRun.

    Raises TimeoutError naming the run and its state when `timeout_s` passes first."""
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(str(flow_run_id)))
            if run.state and (run.state.is_final() or (until_paused and run.state.is_paused())):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flow run {run.name} ({run.id}) is still {run.state.name if run.state else '?'} "
                                   f"after {timeout_s:.0f} s")
            time.sleep(poll_s)


@dataclass(frozen=True)
class DeploymentView:
    name: str  # flow/deployment
    schedule: str  # cron (timezone), or "on demand"
    next_run: str  # expected start of its next scheduled run, "" when none
    work_pool: str


def deployments() -> list[DeploymentView]:
    """Every deployment on the server with its schedules and next scheduled run."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    out = []
    with get_client(sync_client=True) as client:
        for d in client.read_deployments():
            crons = [f"{getattr(s.schedule, 'cron', s.schedule)} ({getattr(s.schedule, 'timezone', '')})"
                     for s in d.schedules if s.active]
            upcoming = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled"]))),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
            out.append(DeploymentView(f"{client.read_flow(d.flow_id).name}/{d.name}", "; ".join(crons) or "on demand",
                                      str(upcoming[0].expected_start_time) if upcoming else "", d.work_pool_name or ""))
    return sorted(out, key=lambda v: v.name)
