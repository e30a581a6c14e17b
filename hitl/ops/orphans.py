"""Flow runs whose process died without reporting: marked Crashed by the next `hitl` command.

A `hitl` command that runs a flow in its own process tags the run (and its subflows) with its host and pid.
If that process is killed (kill -9, out of memory) or gives up because it lost the Prefect server, the run
stays Running in Prefect. Before running a flow, a command marks such runs on this host whose process is
gone as Crashed, with what to do.

Runs of the deployments belong to the worker: when a run's process dies, the worker marks it Crashed with the
exit status and runs the flow's `on_crashed` hooks. `retry_crashed`, the hook of every deployed flow, then
runs it again (`deployments.crash_retries` times; what finished and was persisted is not redone), or leaves it
Crashed saying why it was not retried and what to do.

The worker runs no hooks for a run whose process gave up because the Prefect server was away (Prefect 3.9 runs
`on_crashed` only when the run's own Crashed report reaches the server; the worker's fallback report, "Flow run
infrastructure exited with non-zero status code 1", runs none). `retry_lost_crashes`, at every review-dispatch and
at a worker's start, applies the hook's rule to such runs, and to runs that Failed because a server stopped
answering (`lost_server_failure`: the Prefect API or the MLflow server unreachable, or the CPU slot not granted
while the Prefect server restarted), which Prefect ends Failed rather than Crashed: their retries come out of the
same `deployments.crash_retries`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

TAG_PREFIX = "hitl-process:"
CRASH_RETRY = "Crashed: run again"  # the message prefix of a crash retry's AwaitingRetry state
LOST_RETRY = "Lost a server: run again"  # the same for a run Failed by a server that stopped answering
# What a Failed run's message says (Prefect's "Flow run encountered an exception: <type>: <text>") when a server
# stopped answering: httpx's, the Prefect client's, for its API; urllib3's, under MLflow's client, for MLflow's
# server; Prefect's, for a CPU slot it could not grant while it restarted. A run failed by anything else, its own
# refusals included, is left to a person.
LOST_SERVER_SIGNS = ("ConnectError:", "ConnectTimeout:", "RemoteProtocolError:", "ConcurrencySlotAcquisitionError:",
                     "Failed to establish a new connection")
NOT_RUN_AGAIN = "Not run again"  # in the message of the Crashed state the hook sets once the retries are spent
# A crash no hook decided on within this long had none: the hook's detached rescheduler (below) acts within 63 s.
LOST_AFTER_S = 120.0
LOST_MAX_AGE_S = 86_400.0  # an older crash is left to a person: the sweep does not rerun history


_CLAIMING: ContextVar[bool] = ContextVar("hitl_claiming_runs", default=False)


def process_tag() -> str:
    """The tag naming this process: `hitl-process:<host>:<pid>`."""
    return f"{TAG_PREFIX}{socket.gethostname()}:{os.getpid()}"


@contextmanager
def claiming() -> Iterator[None]:
    """Within: every flow run that calls `claim_current_run` (each flow's first step) carries `process_tag`."""
    token = _CLAIMING.set(True)
    try:
        yield
    finally:
        _CLAIMING.reset(token)


def claim_current_run() -> None:
    """Put `process_tag` on the running flow run when a `hitl` command runs it in this process (`claiming`).

    The tag goes on the flow run only. Under Prefect's `tags()` its task runs would carry it too, and Prefect asks
    the server for a concurrency slot for every tagged task run: a request that a busy SQLite-backed server can
    answer 503 ("database is locked"), which the client retries after about 2 s (measured: 4 such stalls in one
    sampling run of 28 s)."""
    if not _CLAIMING.get():
        return
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return
    tag = process_tag()
    if tag not in run.tags:
        ctx.client.update_flow_run(run.id, tags=[*run.tags, tag])  # the engine's client (sync: every flow here is)
        run.tags.append(tag)


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


def lost_server_failure(message: str | None) -> bool:
    """Whether a Failed run's state message says a server stopped answering (`LOST_SERVER_SIGNS`)."""
    return any(sign in (message or "") for sign in LOST_SERVER_SIGNS)


def crash_retry_due(retried: int, allowed: int) -> bool:
    """Whether a run that crashed after `retried` crash retries gets another (`deployments.crash_retries`)."""
    return retried < allowed


def retry_crashed(flow, flow_run, state) -> None:
    """`on_crashed` hook of the deployed flows, which the worker runs once a run's process died: have the run
    scheduled again (`AwaitingRetry`, same run id and parameters), or, once its crash retries are spent, mark it
    Crashed with the reason and what to do. Runs outside a deployment, and subflows, are left alone.

    The worker reports the crash a second time after its hooks return (Prefect 3.9's process worker), and that
    report would overwrite a retry scheduled in the hook: a detached process (`python -m hitl.ops.orphans`)
    schedules it once this hook's process has ended."""
    import subprocess
    import sys

    from prefect import get_client
    from prefect.logging.loggers import flow_run_logger
    from prefect.states import Crashed

    from hitl.config import load_config

    if flow_run.deployment_id is None or flow_run.parent_task_run_id is not None:
        return
    log = flow_run_logger(flow_run, flow)
    try:
        cfg = load_config(flow_run.parameters["config_path"])
    except Exception as e:  # noqa: BLE001 - a hook must not fail: say why, leave the run Crashed
        log.error("Not run again after its crash: its config could not be read (%s)", e)
        return
    why = state.message or "its process ended without reporting"
    with get_client(sync_client=True) as client:
        again, message = _crash_decision(client, cfg, flow_run.id, why)
        if again:
            subprocess.Popen([sys.executable, "-m", "hitl.ops.orphans", str(flow_run.id), str(os.getpid()), message],
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            log.warning("Its process died (%s): it runs again in a few seconds (crash retry %s)", why,
                        message[len(CRASH_RETRY):].split(":", 1)[0].strip(" ()"))
            return
        client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
        log.error(message)


def _crash_decision(client, cfg, run_id, why: str, lost: bool = False) -> tuple[bool, str]:
    """(run again?, the message saying so) for a deployed run that crashed with `why`, or (`lost`) failed because a
    server stopped answering: a retry while `deployments.crash_retries` last, counted (both kinds) in the run's
    state history."""
    allowed = cfg.deployments.crash_retries
    history = client.read_flow_run_states(run_id)
    retried = sum(1 for s in history if s.name == "AwaitingRetry"
                  and (s.message or "").startswith((CRASH_RETRY, LOST_RETRY)))
    if crash_retry_due(retried, allowed):
        return True, f"{LOST_RETRY if lost else CRASH_RETRY} ({retried + 1} of {allowed}): {why}"
    cause = ("Check that both servers answer (`hitl status`; `hitl up` starts what is down)" if lost else
             "Look for the cause in the worker log (memory?)")
    return False, (f"{why} {NOT_RUN_AGAIN}: {retried} crash retr{'y' if retried == 1 else 'ies'} spent "
                   f"(deployments.crash_retries = {allowed}). {cause}, then retry the run from its page: "
                   f"{cfg.flow_run_url(run_id)}")


def retry_lost_crashes(cfg, min_age_s: float = LOST_AFTER_S, max_age_s: float = LOST_MAX_AGE_S) -> list[str]:
    """Apply the crash hook's rule to the Crashed runs of the config's work pool that no hook decided on (their
    process gave up while the Prefect server was away: see the module docstring), and to its runs Failed because a
    server stopped answering (`lost_server_failure`): schedule each again while its crash retries last, else leave
    it as it is (its end was reported once already) and say so. A run is looked at from `min_age_s` to `max_age_s`
    after it ended, and decided once across concurrent sweeps (a claim in the review store:
    hitl/ops/notify_outbox.py). Returns "name: what was done" for each."""
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
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import AwaitingRetry

    from hitl.ops.notify_outbox import Outbox

    ended = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.CRASHED, StateType.FAILED])))
    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[cfg.deployments.pool]))
    with get_client(sync_client=True) as client:
        now = datetime.now(UTC)
        lost = {f"crash-sweep|{r.id}|{r.state.id}": r
                for r in client.read_flow_runs(flow_run_filter=ended, work_pool_filter=pool,
                                               sort=FlowRunSort.END_TIME_DESC, limit=200)
                if r.deployment_id is not None and r.parent_task_run_id is None and r.state is not None
                and (r.state.is_crashed() or lost_server_failure(r.state.message))
                and NOT_RUN_AGAIN not in (r.state.message or "")
                and min_age_s <= (now - r.state.timestamp).total_seconds() <= max_age_s}
        if not lost:
            return []
        outbox, done = Outbox(cfg.store_url), []
        try:
            for key in outbox.claim(list(lost)):
                run = lost[key]
                failed = run.state.is_failed()
                why = run.state.message or "its process ended without reporting"
                again, message = _crash_decision(client, cfg, run.id, why, lost=failed)
                if again:
                    client.set_flow_run_state(run.id, AwaitingRetry(scheduled_time=datetime.now(UTC),
                                                                    message=message), force=True)
                    done.append(f"{run.name}: run again, as "
                                f"{'a server stopped answering' if failed else 'its crash hook never ran'} "
                                f"({message})")
                else:
                    done.append(f"{run.name}: left {'Failed' if failed else 'Crashed'}. {message}")
                outbox.sent([key])
        finally:
            outbox.close()
    return done


def _reschedule_after(run_id: str, hook_pid: int, message: str, settle_s: float = 3.0, max_wait_s: float = 60.0
                      ) -> None:
    """Once process `hook_pid` (the hook) has ended and the worker has had `settle_s` to report the crash again,
    schedule the run to run again now, unless its state moved on meanwhile (a person retried or cancelled it)."""
    import time
    from datetime import UTC, datetime
    from uuid import UUID

    from prefect import get_client
    from prefect.states import AwaitingRetry

    deadline = time.monotonic() + max_wait_s
    while _process_exists(hook_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(settle_s)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        if run.state is not None and run.state.is_crashed():
            client.set_flow_run_state(run.id, AwaitingRetry(scheduled_time=datetime.now(UTC), message=message),
                                      force=True)


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


if __name__ == "__main__":  # started by retry_crashed: RUN_ID HOOK_PID MESSAGE
    import sys

    _reschedule_after(sys.argv[1], int(sys.argv[2]), sys.argv[3])
