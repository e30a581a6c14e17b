"""Start, stop and inspect the local stack: a Prefect server and an MLflow tracking server on loopback.

Both run as detached background processes (their own session and process group), write their output to
`<state>/logs/<name>.log`, and leave their PID in `<state>/pids/<name>.pid`. `up` is idempotent: a service
whose PID is alive and whose health endpoint answers is reused. `down` stops each process group.

Only light imports here: the servers are started as executables, never imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from hitl.config import Config

SERVICE_NAMES = ("prefect", "mlflow")
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
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
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
    }
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
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            env=mlflow_env,
            log=_logs_dir(cfg) / "mlflow.log",
            pid_file=_pids_dir(cfg) / "mlflow.pid",
        ),
    ]


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


def _is_our_server(pid: int, name: str) -> bool:
    """A live process that looks like the `name` server (guards against PIDs reused by the OS)."""
    if not _alive(pid):
        return False
    cmd = _cmdline(pid)
    if cmd is None:  # cannot inspect (no /proc, or another user's process): trust the pid file
        return True
    return "server" in cmd and any(Path(part).name == name for part in cmd)


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


# ---------------------------------------------------------------- public API


def status(cfg: Config) -> list[Service]:
    """Each service with its PID (None when not running), URL, health and log path. Changes nothing."""
    out = []
    for spec in _specs(cfg):
        pid = _read_pid(spec.pid_file)
        if pid is not None and not _is_our_server(pid, spec.name):
            pid = None
        healthy = pid is not None and _health_ok(spec.health_url)
        out.append(Service(spec.name, pid, spec.url, healthy, spec.log))
    return out


def up(cfg: Config, *, console_print: Callable[[str], None] = print) -> list[Service]:
    """Start the Prefect and MLflow servers unless they already run healthy; wait until both answer.

    Raises StackError (a RuntimeError) when a port is taken by something else, or when a server does not
    become healthy within `stack.start_timeout_s` (what this call started is stopped again).
    """
    state = cfg.state
    for d in (_logs_dir(cfg), _pids_dir(cfg), state / "prefect", state / "mlflow" / "artifacts"):
        d.mkdir(parents=True, exist_ok=True)
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

    started: dict[str, int] = {}
    try:
        for spec in to_start:
            pid = _launch(spec, cwd=state)
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
    if waiting:
        console_print(f"stack healthy after {time.monotonic() - t0:.1f} s")
    return status(cfg)


def down(cfg: Config) -> list[str]:
    """Stop each running service (process group SIGTERM, then SIGKILL after ~15 s); remove PID files.

    Returns the names of the services that were stopped; no error when nothing runs.
    """
    targets: list[tuple[_Spec, int]] = []
    for spec in _specs(cfg):
        pid = _read_pid(spec.pid_file)
        if pid is not None and _is_our_server(pid, spec.name):
            targets.append((spec, pid))
        spec.pid_file.unlink(missing_ok=True)
    _stop_all([pid for _, pid in targets])
    return [spec.name for spec, _ in targets]
