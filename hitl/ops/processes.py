"""Process supervision for the local stack: POSIX processes started detached (own session and process group)
with their output in a log file and their PID in a pid file; liveness that tells our process from a reused
PID; stopping a process group (SIGTERM, then SIGKILL); health endpoints and free ports.

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
from pathlib import Path
from typing import Protocol

import httpx


class Launchable(Protocol):
    """What `launch` needs of a service (hitl/ops/stack.py's specs)."""

    name: str
    argv: list[str]  # argv[0] is the console script's name, resolved by `executable`
    env: dict[str, str]
    log: Path
    pid_file: Path


STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 20

# Popen objects of the servers this process started: kept so they can be reaped (no zombies, no
# ResourceWarning) and so their liveness is read from the child's exit status.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be started (a port is taken, a server did not become healthy, ...)."""


def executable(name: str) -> str:
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


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def alive(pid: int) -> bool:
    """True while process `pid` runs (zombies count as dead)."""
    proc = CHILDREN.get(pid)
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


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_our_server(pid: int, name: str, marker: str = "server") -> bool:
    """A live process that looks like the `name` server or worker (guards against PIDs reused by the OS)."""
    if not alive(pid):
        return False
    cmd = cmdline(pid)
    if cmd is None:  # cannot inspect (no /proc, or another user's process): trust the pid file
        return True
    program = "prefect" if marker == "worker" else name
    return marker in cmd and any(Path(part).name == program for part in cmd)


def group_alive(pgid: int) -> bool:
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


def leads_own_group(pid: int) -> bool:
    """True when `pid` leads its own process group (our servers start their own session)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    return pgid == pid and pgid != os.getpgrp()


def send_signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_all(pids: list[int], timeout_s: float | None = None) -> list[int]:
    """SIGTERM each process group, wait up to `timeout_s` for all to go, then SIGKILL what is left; returns
    the pids that had to be killed."""
    timeout_s = STOP_TIMEOUT_S if timeout_s is None else timeout_s
    groups = {pid: leads_own_group(pid) for pid in pids}
    for pid, group in groups.items():
        send_signal(pid, signal.SIGTERM, group)

    def remaining() -> list[int]:
        # alive first: it reaps our own child, so a zombie leader does not keep its group "alive"
        return [pid for pid, group in groups.items() if alive(pid) or (group and group_alive(pid))]

    deadline = time.monotonic() + timeout_s
    left = remaining()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = remaining()
    for pid in left:
        send_signal(pid, signal.SIGKILL, groups[pid])
    end = time.monotonic() + 5.0
    while remaining() and time.monotonic() < end:
        time.sleep(0.1)
    for pid in pids:
        proc = CHILDREN.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
    return left


# exec'd first when this process ignores SIGINT: gives the service SIGINT's default action back, then runs it
_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


def service_argv(argv: list[str]) -> list[str]:
    """The command line that starts a service. A process started in the background by a non-interactive shell
    (`hitl up &` in a script, a CI step) ignores SIGINT, and its children inherit that; Prefect's worker stops
    on SIGTERM by sending itself SIGINT, so it would never stop and `down` would kill it after STOP_TIMEOUT_S
    (measured: 16 s per stack). Such a service is started through a one-line exec that restores the default."""
    argv = [executable(argv[0]), *argv[1:]]
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        return [sys.executable, "-c", _DEFAULT_SIGINT, *argv]
    return argv


def launch(spec: Launchable, cwd: Path) -> int:
    argv = service_argv(spec.argv)
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
            env=child_env(spec.env),
            cwd=str(cwd),
            start_new_session=True,
        )
    CHILDREN[proc.pid] = proc
    spec.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def health_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        # trust_env=False: a proxy from the environment must not intercept loopback health checks
        r = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def wait(url: str, timeout_s: float, pid: int | None = None, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if health_ok(url):
            return True
        if pid is not None and not alive(pid):
            return False  # exited before answering
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def wait_healthy(url: str, timeout_s: float) -> bool:
    """Poll GET `url` until it answers 200 (True) or `timeout_s` passes (False)."""
    return wait(url, timeout_s)


def port_free(host: str, port: int) -> bool:
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


def exit_note(pid: int) -> str:
    proc = CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return f" (the process exited with code {proc.returncode})"
    if not alive(pid):
        return " (the process exited)"
    return ""


def tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(lines[-n:]) if lines else "(log is empty)"
