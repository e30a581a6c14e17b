"""Start, stop and inspect the local stack: a Prefect server and an MLflow tracking server on loopback.

Both run as detached background processes (their own session and process group), write their output to
`<state>/logs/<name>.log`, and leave their PID in `<state>/pids/<name>.pid`. `up` is idempotent: a service
whose PID is alive and whose health endpoint answers is reused. `down` stops each process group.

Only light imports here: the servers are started as executables, never imported.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from hitl import credentials
from hitl.config import Config

SERVER_NAMES = ("prefect", "mlflow")
SERVICE_NAMES = (*SERVER_NAMES, "worker")
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 20

# Popen objects of the servers this process started: kept so they can be reaped (no zombies, no
# ResourceWarning) and so their liveness is read from the child's exit status.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be started (a port is taken, a server did not become healthy, ...)."""


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
    argv: list[str]  # argv[0] is the console script's name, resolved by _executable at launch
    env: dict[str, str]
    log: Path
    pid_file: Path
    marker: str = "server"  # a word of its command line that tells our process from a reused PID


# ---------------------------------------------------------------- paths and commands


def _logs_dir(cfg: Config) -> Path:
    return cfg.state / "logs"


def _pids_dir(cfg: Config) -> Path:
    return cfg.state / "pids"


def _executable(name: str) -> str:
    """The console script `name` installed next to this interpreter (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(
        f"Cannot find the `{name}` executable next to {sys.executable} or on PATH. "
        f"Install the project into this environment (pip install -e .)."
    )


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


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
    }
    # The server reads the database URL under its newer name first; set both so a stray value of either
    # in the caller's environment cannot point it at another database.
    prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_env = {
        # The server's job runner inherits these; keep them on this server.
        "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
        # in the environment, not argv: a PostgreSQL URL carries a password (argv shows in `ps` and the log)
        "MLFLOW_BACKEND_STORE_URI": cfg.mlflow_backend_url,
    }
    mlflow_app: list[str] = []
    if cfg.stack.auth:  # the secrets themselves are added at launch only (_with_credentials)
        mlflow_env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_ini(cfg))
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


# ---------------------------------------------------------------- processes


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    """True while process `pid` runs (zombies count as dead)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check has to do
    # state is the field right after "(comm)"; comm may contain spaces and parentheses
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def _is_our_server(pid: int, name: str, marker: str = "server") -> bool:
    """A live process that looks like the `name` server or worker (guards against PIDs reused by the OS)."""
    if not _alive(pid):
        return False
    cmd = _cmdline(pid)
    if cmd is None:  # cannot inspect (no /proc, or another user's process): trust the pid file
        return True
    program = "prefect" if marker == "worker" else name
    return marker in cmd and any(Path(part).name == program for part in cmd)


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process is left in process group `pgid`."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state ppid pgrp ...
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _leads_own_group(pid: int) -> bool:
    """True when `pid` leads its own process group (our servers start their own session)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    return pgid == pid and pgid != os.getpgrp()


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _stop_all(pids: list[int], timeout_s: float | None = None) -> None:
    """SIGTERM each process group, wait up to `timeout_s` for all to go, then SIGKILL what is left."""
    timeout_s = STOP_TIMEOUT_S if timeout_s is None else timeout_s
    groups = {pid: _leads_own_group(pid) for pid in pids}
    for pid, group in groups.items():
        _signal(pid, signal.SIGTERM, group)

    def remaining() -> list[int]:
        # _alive first: it reaps our own child, so a zombie leader does not keep its group "alive"
        return [pid for pid, group in groups.items() if _alive(pid) or (group and _group_alive(pid))]

    deadline = time.monotonic() + timeout_s
    left = remaining()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = remaining()
    for pid in left:
        _signal(pid, signal.SIGKILL, groups[pid])
    end = time.monotonic() + 5.0
    while remaining() and time.monotonic() < end:
        time.sleep(0.1)
    for pid in pids:
        proc = _CHILDREN.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)


def _launch(spec: _Spec, cwd: Path) -> int:
    argv = [_executable(spec.argv[0]), *spec.argv[1:]]
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n===== {stamp} starting {spec.name}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(spec.env),
            cwd=str(cwd),
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    spec.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


# ---------------------------------------------------------------- health and ports


def _health_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        # trust_env=False: a proxy from the environment must not intercept loopback health checks
        r = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _wait(url: str, timeout_s: float, pid: int | None = None, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if _health_ok(url):
            return True
        if pid is not None and not _alive(pid):
            return False  # exited before answering
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def wait_healthy(url: str, timeout_s: float) -> bool:
    """Poll GET `url` until it answers 200 (True) or `timeout_s` passes (False)."""
    return _wait(url, timeout_s)


def _port_free(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise StackError(
            f"Invalid stack.host {host!r}: {e}. Use a loopback address such as 127.0.0.1."
        ) from e
    family, socktype, proto, _, sockaddr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError:
            return False
    return True


def _exit_note(pid: int) -> str:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return f" (the process exited with code {proc.returncode})"
    if not _alive(pid):
        return " (the process exited)"
    return ""


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(lines[-n:]) if lines else "(log is empty)"


# ---------------------------------------------------------------- authentication (stack.auth)


def _auth_ini(cfg: Config) -> Path:
    return cfg.state / "mlflow" / "basic_auth.ini"


def _auth_db(cfg: Config) -> Path:
    return cfg.state / "mlflow" / "basic_auth.db"


def _write_auth_ini(cfg: Config) -> None:
    """MLflow's basic-auth settings, without a secret: the admin's password comes from the environment and
    only creates that user when its store is new; other users get no permission by default. Checked
    credentials are cached for 5 minutes (one worker: no stale copy elsewhere), else every request pays a
    PBKDF2 hash. The user store (password hashes) is readable by its owner only."""
    _auth_db(cfg).touch(mode=0o600)  # SQLite takes an empty file as an empty database
    _auth_db(cfg).chmod(0o600)
    _auth_ini(cfg).write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{_auth_db(cfg)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )


def _with_credentials(spec: _Spec, creds: credentials.Credentials | None) -> _Spec:
    """`spec` with the secrets its process needs, in its environment only (never argv, files or logs)."""
    if creds is None:
        return spec
    env = {**spec.env, **credentials.client_env(creds)}  # servers' own background jobs are clients too
    if spec.name == "prefect":
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.auth_string
    elif spec.name == "mlflow":
        env.update({"MLFLOW_AUTH_ADMIN_USERNAME": creds.username, "MLFLOW_AUTH_ADMIN_PASSWORD": creds.password,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})
    return replace(spec, env=env)


def protected_urls(cfg: Config) -> dict[str, str]:
    """One endpoint per server that needs credentials when `stack.auth` is on (health endpoints stay open)."""
    return {"prefect": f"{cfg.prefect_api_url}/admin/version",
            "mlflow": f"{cfg.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"}


def _status_code(url: str, auth: tuple[str, str] | None = None) -> int | None:
    try:
        return httpx.get(url, auth=auth, timeout=10.0, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def _auth_problems(cfg: Config, creds: credentials.Credentials) -> list[str]:
    """What is wrong with the running servers' authentication: each must refuse a request without
    credentials (401) and accept the configured ones (200)."""
    problems = []
    for spec in _specs(cfg):
        url = protected_urls(cfg)[spec.name]
        anonymous = _status_code(url)
        if anonymous != 401:
            problems.append(f"The {spec.title} answered {url} without credentials (HTTP {anonymous}): it runs "
                            "without stack.auth; run `hitl down`, then `hitl up`.")
        signed = _status_code(url, (creds.username, creds.password))
        if signed != 200:
            hint = (f"its user store {_auth_db(cfg)} was created with another password for {creds.username!r}: "
                    "use those credentials, or stop the stack, delete that file and start again"
                    if spec.name == "mlflow" else "it runs with other credentials: run `hitl down`, then `hitl up`")
            problems.append(f"The {spec.title} refused the configured credentials at {url} (HTTP {signed}); {hint}.")
    return problems


# ---------------------------------------------------------------- public API


def status(cfg: Config) -> list[Service]:
    """Each service with its PID (None when not running), URL, health and log path. Changes nothing."""
    out = []
    for spec in _all_specs(cfg):
        pid = _read_pid(spec.pid_file)
        if pid is not None and not _is_our_server(pid, spec.name, spec.marker):
            pid = None
        healthy = pid is not None and _health_ok(spec.health_url)
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
        _write_auth_ini(cfg)
    specs = _specs(cfg)

    reused: list[_Spec] = []
    pending: dict[str, int] = {}  # name -> pid of a live server of ours that does not answer yet
    to_start: list[_Spec] = []
    for spec in specs:
        pid = _read_pid(spec.pid_file)
        if pid is not None and not _is_our_server(pid, spec.name):
            console_print(
                f"{spec.title}: removing stale pid file {spec.pid_file} "
                f"(process {pid} is gone or is not a {spec.name} server)"
            )
            spec.pid_file.unlink(missing_ok=True)
            pid = None
        if pid is None:
            to_start.append(spec)
        elif _health_ok(spec.health_url):
            console_print(f"{spec.title}: reusing pid {pid} at {spec.url}")
            reused.append(spec)
        else:
            console_print(f"{spec.title}: pid {pid} is running but not answering yet; waiting for it")
            pending[spec.name] = pid

    # Check every port before launching anything, so a clash leaves nothing half-started.
    for spec in to_start:
        if not _port_free(cfg.stack.host, spec.port):
            other = (
                f" Something already answers {spec.health_url}: probably a server started with another "
                f"state dir (stop it with `hitl stack down` and that config)."
                if _health_ok(spec.health_url)
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
            pid = _launch(_with_credentials(spec, creds), cwd=state)
            started[spec.name] = pid
            console_print(f"{spec.title}: started pid {pid}, log {spec.log}")
    except BaseException:
        _stop_all(list(started.values()), timeout_s=5.0)
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
                name: pool.submit(_wait, by_name[name].health_url, timeout, pid)
                for name, pid in waiting.items()
            }
            results = {name: f.result() for name, f in futures.items()}
    failed = [name for name, ok in results.items() if not ok]
    if failed:
        exited = {name: _exit_note(waiting[name]) for name in failed}
        # stop what this call started, and any of ours that never answered
        victims = sorted({*started.values(), *(waiting[n] for n in failed)})
        _stop_all(victims, timeout_s=5.0)
        for name, pid in waiting.items():
            if pid in victims:
                by_name[name].pid_file.unlink(missing_ok=True)
        parts = []
        for name in failed:
            spec = by_name[name]
            parts.append(
                f"The {spec.title} did not become healthy at {spec.health_url} within {timeout:.0f} s"
                f"{exited[name]}. Last lines of {spec.log}:\n{_tail(spec.log)}"
            )
        raise StackError(
            "\n\n".join(parts)
            + "\n\nRead the log above; fix the cause (a port clash, a broken environment, a corrupt "
            f"database under {state}), or raise stack.start_timeout_s on a slow machine; then run "
            "`hitl stack up` again (`hitl stack down` first if anything is left running)."
        )
    problems = _auth_problems(cfg, creds) if creds is not None else []
    if problems:
        _stop_all(list(started.values()), timeout_s=5.0)
        for name in started:
            by_name[name].pid_file.unlink(missing_ok=True)
        raise StackError(" ".join(problems))
    if waiting:
        console_print(f"stack healthy after {time.monotonic() - t0:.1f} s")
    return [s for s in status(cfg) if s.name in SERVER_NAMES]  # the worker starts later (start_worker)


def down(cfg: Config) -> list[str]:
    """Stop each running service (process group SIGTERM, then SIGKILL after ~15 s); remove PID files.

    Returns the names of the services that were stopped; no error when nothing runs.
    """
    worker = stop_worker(cfg)
    targets: list[tuple[_Spec, int]] = []
    for spec in _specs(cfg):
        pid = _read_pid(spec.pid_file)
        if pid is not None and _is_our_server(pid, spec.name):
            targets.append((spec, pid))
        spec.pid_file.unlink(missing_ok=True)
    _stop_all([pid for _, pid in targets])
    return [*(["worker"] if worker else []), *(spec.name for spec, _ in targets)]


def start_worker(cfg: Config, *, console_print: Callable[[str], None] = print) -> Service:
    """Start (or reuse) the worker of the config's pool and wait until its health endpoint answers.

    Call after `up` and `deploy.apply`: the worker needs the server and its pool.
    """
    spec = _worker_spec(cfg)
    pid = _read_pid(spec.pid_file)
    if pid is not None and _is_our_server(pid, spec.name, spec.marker) and _health_ok(spec.health_url):
        console_print(f"{spec.title}: reusing pid {pid} on {spec.url}")
        return next(s for s in status(cfg) if s.name == spec.name)
    if pid is not None and _is_our_server(pid, spec.name, spec.marker):
        console_print(f"{spec.title}: pid {pid} is running but not answering yet; waiting for it")
    else:
        spec.pid_file.unlink(missing_ok=True)
        if not _port_free("127.0.0.1", spec.port):
            raise StackError(f"Cannot start the {spec.title}: port {spec.port} on 127.0.0.1 (its health endpoint) "
                             f"is in use by another process. Set {spec.port_key} to a free port in the config.")
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        for line in _release_orphaned_runs(cfg):
            console_print(f"{spec.title}: a run the last worker left behind: {line}")
        pid = _launch(spec, cwd=cfg.state)
        console_print(f"{spec.title}: started pid {pid} on {spec.url}, log {spec.log}")
    if not _wait(spec.health_url, cfg.stack.start_timeout_s, pid):
        note = _exit_note(pid)
        _stop_all([pid], timeout_s=5.0)
        spec.pid_file.unlink(missing_ok=True)
        raise StackError(f"The {spec.title} did not become healthy at {spec.health_url} within "
                         f"{cfg.stack.start_timeout_s:.0f} s{note}. Last lines of {spec.log}:\n{_tail(spec.log)}")
    return next(s for s in status(cfg) if s.name == spec.name)


def _release_orphaned_runs(cfg: Config) -> list[str]:
    """Runs a dead worker left Pending (holding a pool slot) or Running on this host (hitl/ops/orphans.py)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hitl.ops import orphans

    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
        return orphans.release_pool_runs(cfg.deployments.pool)


def stop_worker(cfg: Config, sig: int = signal.SIGTERM) -> bool:
    """Stop the worker (SIGKILL with `sig=signal.SIGKILL`, as a crash would); False when none ran.

    Runs suspended for people are unaffected: they hold no process. A run the worker was executing is
    reported crashed by Prefect and can be re-run; its finished, persisted tasks are not redone.
    """
    spec = _worker_spec(cfg)
    pid = _read_pid(spec.pid_file)
    spec.pid_file.unlink(missing_ok=True)
    if pid is None or not _is_our_server(pid, spec.name, spec.marker):
        return False
    if sig == signal.SIGKILL:
        _signal(pid, signal.SIGKILL, _leads_own_group(pid))
    _stop_all([pid])
    return True
