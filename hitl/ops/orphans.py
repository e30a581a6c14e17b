"""Flow runs whose process died without reporting: marked Crashed by the next `hitl` command.

A `hitl` command that runs a flow in its own process tags the run (and its subflows) with its host and pid.
If that process is killed (kill -9, out of memory) or gives up because it lost the Prefect server, the run
stays Running in Prefect. Before running a flow, a command marks such runs on this host whose process is
gone as Crashed, with what to do. Runs of the deployments belong to the worker, which reports its own.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

TAG_PREFIX = "hitl-process:"


def process_tag() -> str:
    """The tag naming this process: `hitl-process:<host>:<pid>`."""
    return f"{TAG_PREFIX}{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    """A live `hitl` process (a pid reused by another program counts as gone)."""
    if not _process_exists(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: the signal check has to do
    return stat[stat.rfind(")") + 2] != "Z" and b"hitl" in cmdline


def mark_crashed() -> list[str]:
    """Mark Running or Pending runs tagged by a gone process of this host as Crashed; returns their names."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    host, marked = socket.gethostname(), []
    states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(state=states), limit=200):
            tag = next((t for t in run.tags if t.startswith(TAG_PREFIX)), None)
            run_host, _, pid = tag[len(TAG_PREFIX):].rpartition(":") if tag else ("", "", "")
            if run_host != host or not pid.isdigit() or _alive(int(pid)):
                continue
            client.set_flow_run_state(run.id, Crashed(message=f"its process {pid} ended without reporting (killed, "
                                                              "or it lost the Prefect server): run the command again; "
                                                              "finished work is kept"), force=True)
            marked.append(run.name)
    return marked


def release_pool_runs(pool: str, min_age_s: float = 20.0) -> list[str]:
    """Runs a dead worker of `pool` left behind, called before a new worker starts: a Pending run (claimed,
    never started) goes back to Scheduled, so it runs again and stops holding a pool slot; a Running run whose
    process on this host is gone is marked Crashed. Returns "name: what was done" for each.

    A run that entered its state less than `min_age_s` ago may be one another worker is starting right now:
    it is looked at again once it is that old (a dead worker's last claim, seconds before it was killed, would
    otherwise hold the slot for good)."""
    import time
    from datetime import UTC, datetime

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed, Scheduled

    host, done = socket.gethostname(), []
    states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
    with get_client(sync_client=True) as client:
        for attempt in range(2):
            young = []
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(state=states),
                                             work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
                                             limit=200):
                since = run.state.timestamp if run.state else None
                age = (datetime.now(UTC) - since).total_seconds() if since is not None else min_age_s
                if age < min_age_s:
                    young.append(min_age_s - age)
                    continue
                if run.state.is_pending():
                    client.set_flow_run_state(run.id, Scheduled(message="its worker died before starting it"),
                                              force=True)
                    done.append(f"{run.name}: back to Scheduled")
                    continue
                pid_host, _, pid = str(run.infrastructure_pid or "").rpartition(":")
                if pid.isdigit() and pid_host in ("", host) and not _process_exists(int(pid)):
                    client.set_flow_run_state(run.id, Crashed(message="its worker and process died; run it again "
                                                                      "(finished, persisted work is kept)"), force=True)
                    done.append(f"{run.name}: Crashed")
            if not young or attempt:
                break
            time.sleep(max(young) + 0.5)
    return done


def _process_exists(pid: int) -> bool:
    """Process `pid` exists (signal 0; one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
