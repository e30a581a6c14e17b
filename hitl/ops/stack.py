"""The local stack's lifecycle: a Prefect server and an MLflow tracking server on loopback, and the worker.

Both run as detached background processes (their own session and process group), write their output to
`<state>/logs/<name>.log`, and leave their PID in `<state>/pids/<name>.pid` (hitl/ops/processes.py). `up`
is idempotent: a service whose PID is alive and whose health endpoint answers is reused. `down` stops each
process group. With `stack.auth`, the servers get their credentials at launch (hitl/ops/stack_auth.py).

Only light imports here: the servers are started as executables, never imported.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hitl import credentials
from hitl.config import Config
from hitl.ops import processes, stack_auth
from hitl.ops.processes import StackError, wait_healthy

__all__ = ["SERVER_NAMES", "SERVICE_NAMES", "Service", "StackError", "down", "start_worker", "status", "stop_worker",
           "up", "wait_healthy"]

SERVER_NAMES = ("prefect", "mlflow")
SERVICE_NAMES = (*SERVER_NAMES, "worker")


@dataclass
class Service:
    name: str
    pid: int | None
    url: str
    healthy: bool
    log: Path


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    port: int
    port_key: str
    url: str  # what a person opens
    health_url: str
    argv: list[str]  # argv[0] is the console script's name, resolved by processes.executable at launch
    env: dict[str, str]
    log: Path
    pid_file: Path
    marker: str = "server"  # a word of its command line that tells our process from a reused PID


def _logs_dir(cfg: Config) -> Path:
    return cfg.state / "logs"


def _pids_dir(cfg: Config) -> Path:
    return cfg.state / "pids"


def _specs(cfg: Config) -> list[_Spec]:
    host = cfg.stack.host
    state = cfg.state
    prefect_home = state / "prefect"
    mlflow_dir = state / "mlflow"
    prefect_env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": cfg.prefect_database_url,
        "PREFECT_API_URL": cfg.prefect_api_url,
        "PREFECT_UI_API_URL": cfg.prefect_api_url,
        "PREFECT_UI_URL": cfg.prefect_ui_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Concurrency slots (the CPU tag's, deployments.cpu_slots) are held under leases. Prefect keeps them in the
        # server's memory by default: a restart forgets every lease while the slots stay taken, so no lease can
        # expire and the tag's tasks wait forever (found by the soak: every flow stalled after one restart). On
        # disk under PREFECT_HOME, a lease outlives a restart and expires if its holder died.
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
    }
    # The server reads the database URL under its newer name first; set both so a stray value of either
    # in the caller's environment cannot point it at another database.
    prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_env = {
        # The server's job runner inherits these; keep them on this server.
        "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
        # in the environment, not argv: a PostgreSQL URL carries a password (argv shows in `ps` and the log)
        "MLFLOW_BACKEND_STORE_URI": cfg.mlflow_backend_url,
        # hitl submits no MLflow server jobs (GenAI judges and prompt optimisation use them); the job runner would
        # start five huey processes that each import MLflow. A caller's own setting wins.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }
    mlflow_app: list[str] = []
    if cfg.stack.auth:  # the secrets themselves are added at launch only (stack_auth.with_credentials)
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] = str(stack_auth.auth_ini(cfg))
        mlflow_app = ["--app-name", "basic-auth"]
    return [
        _Spec(
            name="prefect",
            title="Prefect server",
            port=cfg.stack.prefect_port,
            port_key="stack.prefect_port",
            url=cfg.prefect_ui_url,
            health_url=f"{cfg.prefect_api_url}/health",
            argv=[
                "prefect",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(cfg.stack.prefect_port),
            ],
            env=prefect_env,
            log=_logs_dir(cfg) / "prefect.log",
            pid_file=_pids_dir(cfg) / "prefect.pid",
        ),
        _Spec(
            name="mlflow",
            title="MLflow tracking server",
            port=cfg.stack.mlflow_port,
            port_key="stack.mlflow_port",
            url=cfg.mlflow_uri,
            health_url=f"{cfg.mlflow_uri}/health",
            argv=[
                "mlflow",
                "server",
                "--host",
                host,
                "--port",
                str(cfg.stack.mlflow_port),
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
                *mlflow_app,
            ],
            env=mlflow_env,
            log=_logs_dir(cfg) / "mlflow.log",
            pid_file=_pids_dir(cfg) / "mlflow.pid",
        ),
    ]


def _worker_spec(cfg: Config) -> _Spec:
    """The Prefect worker pulling the config's work pool; its flow runs inherit its environment."""
    from hitl.ops.deploy import REPO

    port = cfg.stack.worker_port
    env = {
        "PREFECT_API_URL": cfg.prefect_api_url,
        "PREFECT_UI_API_URL": cfg.prefect_api_url,
        "PREFECT_UI_URL": cfg.prefect_ui_url,
        "PREFECT_LOCAL_STORAGE_PATH": str(cfg.results_dir),
        "PREFECT_WORKER_QUERY_SECONDS": str(cfg.deployments.worker_poll_s),
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
        "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        "PYTHONPATH": str(REPO),
        "HITL_REPO": str(REPO),
    }
    return _Spec(
        name="worker",
        title="Prefect worker",
        port=port,
        port_key="stack.worker_port",
        url=f"pool {cfg.deployments.pool}",
        health_url=f"http://127.0.0.1:{port}/health",
        argv=["prefect", "worker", "start", "--pool", cfg.deployments.pool, "--type", "process",
              "--name", f"{cfg.project}-{socket.gethostname()}", "--with-healthcheck"],
        env=env,
        log=_logs_dir(cfg) / "worker.log",
        pid_file=_pids_dir(cfg) / "worker.pid",
        marker="worker",
    )


def _all_specs(cfg: Config) -> list[_Spec]:
    return [*_specs(cfg), _worker_spec(cfg)]


def started_at(cfg: Config, name: str) -> float | None:
    """When the running `name` service was started (its PID file's time, epoch seconds); None when not ours."""
    spec = next(s for s in _all_specs(cfg) if s.name == name)
    pid = processes.read_pid(spec.pid_file)
    if pid is None or not processes.is_our_server(pid, spec.name, spec.marker):
        return None
    return spec.pid_file.stat().st_mtime


def status(cfg: Config) -> list[Service]:
    """Each service with its PID (None when not running), URL, health and log path. Changes nothing."""
    out = []
    for spec in _all_specs(cfg):
        pid = processes.read_pid(spec.pid_file)
        if pid is not None and not processes.is_our_server(pid, spec.name, spec.marker):
            pid = None
        healthy = pid is not None and processes.health_ok(spec.health_url)
        out.append(Service(spec.name, pid, spec.url, healthy, spec.log))
    return out


def up(cfg: Config, *, console_print: Callable[[str], None] = print) -> list[Service]:
    """Start the Prefect and MLflow servers unless they already run healthy; wait until both answer.

    Raises StackError (a RuntimeError) when a port is taken by something else, or when a server does not
    become healthy within `stack.start_timeout_s` (what this call started is stopped again). With
    `stack.auth`, also when the credentials are missing or exposed, or a server does not enforce them; off
    loopback, unless both auth and a TLS proxy are configured.
    """
    problem = credentials.binding_problem(cfg.stack)
    if problem:
        raise StackError(problem)
    try:
        creds = credentials.load(cfg.stack)
    except credentials.CredentialsError as e:
        raise StackError(str(e)) from e
    state = cfg.state
    for d in (_logs_dir(cfg), _pids_dir(cfg), state / "prefect", state / "mlflow" / "artifacts"):
        d.mkdir(parents=True, exist_ok=True)
    if creds is not None:
        stack_auth.write_auth_ini(cfg)
    specs = _specs(cfg)

    reused: list[_Spec] = []
    pending: dict[str, int] = {}  # name -> pid of a live server of ours that does not answer yet
    to_start: list[_Spec] = []
    for spec in specs:
        pid = processes.read_pid(spec.pid_file)
        if pid is not None and not processes.is_our_server(pid, spec.name):
            console_print(
                f"{spec.title}: removing stale pid file {spec.pid_file} "
                f"(process {pid} is gone or is not a {spec.name} server)"
            )
            spec.pid_file.unlink(missing_ok=True)
            pid = None
        if pid is None:
            to_start.append(spec)
        elif processes.health_ok(spec.health_url):
            console_print(f"{spec.title}: reusing pid {pid} at {spec.url}")
            reused.append(spec)
        else:
            console_print(f"{spec.title}: pid {pid} is running but not answering yet; waiting for it")
            pending[spec.name] = pid

    # Check every port before launching anything, so a clash leaves nothing half-started.
    for spec in to_start:
        if not processes.port_free(cfg.stack.host, spec.port):
            other = (
                f" Something already answers {spec.health_url}: probably a server started with another "
                f"state dir (stop it with `hitl stack down` and that config)."
                if processes.health_ok(spec.health_url)
                else ""
            )
            raise StackError(
                f"Cannot start the {spec.title}: port {spec.port} on {cfg.stack.host} is already in use by "
                f"another process.{other} Free the port or set {spec.port_key} to another port in the config."
            )

    if to_start and cfg.stack.database_url:
        from hitl.ops import databases

        try:
            created = databases.ensure(cfg)
        except databases.DatabaseError as e:
            raise StackError(str(e)) from e
        if created:
            console_print(f"PostgreSQL: created databases {', '.join(created)}")

    started: dict[str, int] = {}
    try:
        for spec in to_start:
            pid = processes.launch(stack_auth.with_credentials(spec, creds), cwd=state)
            started[spec.name] = pid
            console_print(f"{spec.title}: started pid {pid}, log {spec.log}")
    except BaseException:
        processes.stop_all(list(started.values()), timeout_s=5.0)
        for spec in to_start:
            if spec.name in started:
                spec.pid_file.unlink(missing_ok=True)
        raise

    waiting = {**pending, **started}
    by_name = {s.name: s for s in specs}
    timeout = cfg.stack.start_timeout_s
    t0 = time.monotonic()
    results: dict[str, bool] = {}
    if waiting:
        with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
            futures = {
                name: pool.submit(processes.wait, by_name[name].health_url, timeout, pid)
                for name, pid in waiting.items()
            }
            results = {name: f.result() for name, f in futures.items()}
    failed = [name for name, ok in results.items() if not ok]
    if failed:
        exited = {name: processes.exit_note(waiting[name]) for name in failed}
        # stop what this call started, and any of ours that never answered
        victims = sorted({*started.values(), *(waiting[n] for n in failed)})
        processes.stop_all(victims, timeout_s=5.0)
        for name, pid in waiting.items():
            if pid in victims:
                by_name[name].pid_file.unlink(missing_ok=True)
        parts = []
        for name in failed:
            spec = by_name[name]
            parts.append(
                f"The {spec.title} did not become healthy at {spec.health_url} within {timeout:.0f} s"
                f"{exited[name]}. Last lines of {spec.log}:\n{processes.tail(spec.log)}"
            )
        raise StackError(
            "\n\n".join(parts)
            + "\n\nRead the log above; fix the cause (a port clash, a broken environment, a corrupt "
            f"database under {state}), or raise stack.start_timeout_s on a slow machine; then run "
            "`hitl stack up` again (`hitl stack down` first if anything is left running)."
        )
    problems = stack_auth.auth_problems(cfg, creds, specs) if creds is not None else []
    if problems:
        processes.stop_all(list(started.values()), timeout_s=5.0)
        for name in started:
            by_name[name].pid_file.unlink(missing_ok=True)
        raise StackError(" ".join(problems))
    if waiting:
        console_print(f"stack healthy after {time.monotonic() - t0:.1f} s")
    return [s for s in status(cfg) if s.name in SERVER_NAMES]  # the worker starts later (start_worker)


def down(cfg: Config, *, console_print: Callable[[str], None] = print) -> list[str]:
    """Stop each running service (process group SIGTERM, then SIGKILL after ~15 s, said when it happens);
    remove PID files.

    Returns the names of the services that were stopped; no error when nothing runs.
    """
    worker = stop_worker(cfg, console_print=console_print)
    targets: list[tuple[_Spec, int]] = []
    for spec in _specs(cfg):
        pid = processes.read_pid(spec.pid_file)
        if pid is not None and processes.is_our_server(pid, spec.name):
            targets.append((spec, pid))
        spec.pid_file.unlink(missing_ok=True)
    killed = processes.stop_all([pid for _, pid in targets])
    for spec, pid in targets:
        if pid in killed:
            console_print(_killed(spec, pid))
    return [*(["worker"] if worker else []), *(spec.name for spec, _ in targets)]


def start_worker(cfg: Config, *, console_print: Callable[[str], None] = print) -> Service:
    """Start (or reuse) the worker of the config's pool and wait until its health endpoint answers.

    Call after `up` and `deploy.apply`: the worker needs the server and its pool.
    """
    spec = _worker_spec(cfg)
    pid = processes.read_pid(spec.pid_file)
    if (pid is not None and processes.is_our_server(pid, spec.name, spec.marker)
            and processes.health_ok(spec.health_url)):
        console_print(f"{spec.title}: reusing pid {pid} on {spec.url}")
        return next(s for s in status(cfg) if s.name == spec.name)
    if pid is not None and processes.is_our_server(pid, spec.name, spec.marker):
        console_print(f"{spec.title}: pid {pid} is running but not answering yet; waiting for it")
    else:
        spec.pid_file.unlink(missing_ok=True)
        if not processes.port_free("127.0.0.1", spec.port):
            raise StackError(f"Cannot start the {spec.title}: port {spec.port} on 127.0.0.1 (its health endpoint) "
                             f"is in use by another process. Set {spec.port_key} to a free port in the config.")
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        for line in _release_orphaned_runs(cfg):
            console_print(f"{spec.title}: a run the last worker left behind: {line}")
        pid = processes.launch(spec, cwd=cfg.state)
        console_print(f"{spec.title}: started pid {pid} on {spec.url}, log {spec.log}")
    if not processes.wait(spec.health_url, cfg.stack.start_timeout_s, pid):
        note = processes.exit_note(pid)
        processes.stop_all([pid], timeout_s=5.0)
        spec.pid_file.unlink(missing_ok=True)
        raise StackError(f"The {spec.title} did not become healthy at {spec.health_url} within "
                         f"{cfg.stack.start_timeout_s:.0f} s{note}. Last lines of {spec.log}:\n"
                         f"{processes.tail(spec.log)}")
    return next(s for s in status(cfg) if s.name == spec.name)


def _release_orphaned_runs(cfg: Config) -> list[str]:
    """Runs a dead worker left Pending (holding a pool slot) or Running on this host, and crashed runs no hook
    decided on (hitl/ops/orphans.py)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hitl.ops import orphans

    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
        return orphans.release_pool_runs(cfg.deployments.pool) + orphans.retry_lost_crashes(cfg)


def _killed(spec: _Spec, pid: int) -> str:
    return (f"{spec.title}: pid {pid} did not stop within {processes.STOP_TIMEOUT_S:.0f} s of SIGTERM; killed "
            f"(its log: {spec.log})")


def stop_worker(cfg: Config, sig: int = signal.SIGTERM, *, console_print: Callable[[str], None] = print) -> bool:
    """Stop the worker (SIGKILL with `sig=signal.SIGKILL`, as a crash would); False when none ran.

    Runs suspended for people are unaffected: they hold no process. A run the worker was executing is
    reported crashed by Prefect and can be re-run; its finished, persisted tasks are not redone.
    """
    spec = _worker_spec(cfg)
    pid = processes.read_pid(spec.pid_file)
    spec.pid_file.unlink(missing_ok=True)
    if pid is None or not processes.is_our_server(pid, spec.name, spec.marker):
        return False
    if sig == signal.SIGKILL:
        processes.send_signal(pid, signal.SIGKILL, processes.leads_own_group(pid))
    if processes.stop_all([pid]) and sig != signal.SIGKILL:
        console_print(_killed(spec, pid))
    return True
