"""Tests for hitl.ops.stack: PID files, port checks, failure reports, and (e2e) the real servers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from e2e_helpers import free_port
from helpers_domain import serving

from hitl.config import Config, StackConfig
from hitl.ops import processes, stack


def _cfg(tmp_path: Path, **stack_kw) -> Config:
    kw = {"prefect_port": free_port(), "mlflow_port": free_port()}
    kw.update(stack_kw)
    return Config(labels=["a", "b"], state_dir=str(tmp_path), stack=StackConfig(**kw))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        text = stat.read_text()
        return text[text.rfind(")") + 2] == "Z"
    return False


def _write_pid(cfg: Config, name: str, pid: int) -> Path:
    f = cfg.state / "pids" / f"{name}.pid"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"{pid}\n")
    return f


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything would be started."""

    def boom(*a, **k):
        raise AssertionError("a server was launched although up() should have stopped before")

    monkeypatch.setattr(processes, "launch", boom)


@contextlib.contextmanager
def _occupied(port: int):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield s


# ------------------------------------------------------------------ fast unit tests


def test_free_ports_drawn_at_once_by_several_processes_never_meet(tmp_path):
    """Test stacks on xdist workers take their ports from `free_port`; the OS alone once gave two workers the
    same port. Without the registry 600 such draws met 8 to 17 times in three trials (bind to port 0 hands out
    ports of one parity only, about 14,000 of them)."""
    draw = "from e2e_helpers import free_port; print(*(free_port() for _ in range(150)))"
    env = {**os.environ, "HITL_TEST_PORTS_FILE": str(tmp_path / "ports.txt"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", draw], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    ports = [int(p) for proc in procs for p in proc.communicate(timeout=120)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(ports) == 600 and len(set(ports)) == 600


def test_status_when_nothing_runs(tmp_path):
    cfg = _cfg(tmp_path)
    services = stack.status(cfg)
    assert [s.name for s in services] == ["prefect", "mlflow", "worker"]
    for s in services:
        assert s.pid is None
        assert s.healthy is False
        assert s.log == cfg.state / "logs" / f"{s.name}.log"
    assert services[0].url == cfg.prefect_ui_url
    assert services[1].url == cfg.mlflow_uri


def test_down_when_nothing_runs(tmp_path):
    cfg = _cfg(tmp_path)
    assert stack.down(cfg) == []
    assert stack.down(cfg) == []  # twice, still fine


def test_stale_pid_files_are_ignored_and_removed(tmp_path, no_launch):
    cfg = _cfg(tmp_path)
    files = [_write_pid(cfg, name, _dead_pid()) for name in ("prefect", "mlflow")]
    assert all(s.pid is None for s in stack.status(cfg))  # status reads, does not act
    assert all(f.exists() for f in files)

    printed: list[str] = []
    with _occupied(cfg.stack.prefect_port), pytest.raises(stack.StackError):
        stack.up(cfg, console_print=printed.append)  # removes stale files, then stops at the port check
    assert not any(f.exists() for f in files)
    assert sum("stale pid file" in line for line in printed) == 2

    files = [_write_pid(cfg, name, _dead_pid()) for name in ("prefect", "mlflow")]
    assert stack.down(cfg) == []
    assert not any(f.exists() for f in files)


def test_pid_file_naming_an_unrelated_process_is_not_ours(tmp_path):
    cfg = _cfg(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        f = _write_pid(cfg, "mlflow", sleeper.pid)
        assert stack.status(cfg)[1].pid is None
        assert stack.down(cfg) == []
        assert not f.exists()
        time.sleep(0.2)
        assert sleeper.poll() is None, "down() must not kill a process that is not our server"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("name,key", [("prefect", "stack.prefect_port"), ("mlflow", "stack.mlflow_port")])
def test_port_in_use_is_reported_before_anything_starts(tmp_path, no_launch, name, key):
    cfg = _cfg(tmp_path)
    port = getattr(cfg.stack, f"{name}_port")
    with _occupied(port), pytest.raises(RuntimeError) as ei:
        stack.up(cfg, console_print=lambda _: None)
    msg = str(ei.value)
    assert str(port) in msg
    assert key in msg
    assert "already in use" in msg
    assert not list((cfg.state / "pids").glob("*.pid"))


def _fake_exe(bin_dir: Path, name: str, body: str) -> Path:
    p = bin_dir / name
    p.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return p


def test_failed_start_names_service_url_and_log_and_stops_the_rest(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fakes = {
        # never answers its health URL
        "prefect": _fake_exe(
            bin_dir, "prefect", "import time\nprint('fake prefect idling', flush=True)\ntime.sleep(300)\n"
        ),
        # dies at once with a message
        "mlflow": _fake_exe(
            bin_dir, "mlflow", "import sys\nprint('fake mlflow exploded', file=sys.stderr)\nsys.exit(3)\n"
        ),
    }
    monkeypatch.setattr(processes, "executable", lambda name: str(fakes[name]))
    cfg = _cfg(tmp_path / "state", start_timeout_s=3.0)
    printed: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as ei:
        stack.up(cfg, console_print=printed.append)
    assert time.monotonic() - t0 < 20
    msg = str(ei.value)
    assert "MLflow tracking server" in msg and f"{cfg.mlflow_uri}/health" in msg
    assert "fake mlflow exploded" in msg and "code 3" in msg
    assert "Prefect server" in msg and f"{cfg.prefect_api_url}/health" in msg
    assert "fake prefect idling" in msg
    assert "stack.start_timeout_s" in msg  # says what to do
    pids = [int(line.split("started pid ")[1].split(",")[0]) for line in printed if "started pid" in line]
    assert len(pids) == 2
    assert all(_gone(pid) for pid in pids)
    assert not list((cfg.state / "pids").glob("*.pid"))
    assert all(s.pid is None for s in stack.status(cfg))


def test_down_kills_the_whole_group_and_escalates_to_sigkill(tmp_path, monkeypatch):
    """A server that ignores SIGTERM (and has a child) is SIGKILLed with its group after the timeout."""
    monkeypatch.setattr(processes, "STOP_TIMEOUT_S", 1.0)
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    child_file = tmp_path / "child.pid"
    fake = _fake_exe(
        bin_dir,
        "prefect",
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        c = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        open({str(child_file)!r}, "w").write(str(c.pid))
        time.sleep(300)
        """,
    )
    cfg = _cfg(tmp_path / "state")
    proc = subprocess.Popen([str(fake), "server", "start"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not child_file.exists() or not child_file.read_text():
            assert time.monotonic() < deadline, "fake server did not start its child"
            time.sleep(0.05)
        child = int(child_file.read_text())
        _write_pid(cfg, "prefect", proc.pid)
        assert stack.status(cfg)[0].pid == proc.pid
        t0 = time.monotonic()
        assert stack.down(cfg) == ["prefect"]
        assert 0.9 < time.monotonic() - t0 < 10
        assert _gone(proc.pid) and _gone(child)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not (cfg.state / "pids" / "prefect.pid").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_service_started_where_sigint_is_ignored_gets_its_default_back():
    """`hitl up &` from a script ignores SIGINT, which children inherit; Prefect's worker stops on SIGTERM by
    sending itself SIGINT, so it must be started with SIGINT's default action (else `down` waits 15 s and
    kills it)."""
    probe = ["python3", "-c", "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"]
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the suite itself may run with SIGINT ignored
    try:
        inherited = subprocess.run([processes.executable("python3"), *probe[1:]], capture_output=True, text=True)
        started = subprocess.run(processes.service_argv(probe), capture_output=True, text=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        plain = processes.service_argv(probe)
    finally:
        signal.signal(signal.SIGINT, before)
    assert inherited.stdout.strip() == "True"  # what a plain start gives the service
    assert started.stdout.strip() == "False", started.stderr
    assert plain == [processes.executable("python3"), *probe[1:]]  # not ignored: started as is


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *a):
        pass


def test_wait_healthy():
    with serving(_Health) as base:
        assert stack.wait_healthy(f"{base}/health", 5) is True
        t0 = time.monotonic()
        assert stack.wait_healthy(f"{base}/other", 1.0) is False  # answers, but not 200
        assert time.monotonic() - t0 >= 1.0
    assert stack.wait_healthy(f"http://127.0.0.1:{free_port()}/health", 0.5) is False


# ------------------------------------------------------------------ end to end: the real servers


@pytest.mark.e2e
def test_real_stack_up_is_idempotent_and_down_stops_it(tmp_path):
    cfg = _cfg(tmp_path, start_timeout_s=180.0)
    try:
        t0 = time.monotonic()
        first = stack.up(cfg, console_print=lambda _: None)
        started_s = time.monotonic() - t0
        assert [s.name for s in first] == ["prefect", "mlflow"]
        assert all(s.healthy and s.pid for s in first), first
        assert httpx.get(f"{cfg.prefect_api_url}/health", trust_env=False).status_code == 200
        assert httpx.get(f"{cfg.mlflow_uri}/health", trust_env=False).status_code == 200
        # the servers use the state dir, not the defaults
        assert (cfg.state / "prefect" / "prefect.db").exists()
        assert (cfg.state / "mlflow" / "mlflow.db").exists()
        print(f"stack up in {started_s:.1f} s")

        printed: list[str] = []
        t0 = time.monotonic()
        second = stack.up(cfg, console_print=printed.append)
        assert time.monotonic() - t0 < 5
        assert [s.pid for s in second] == [s.pid for s in first]
        assert sum("reusing" in line for line in printed) == 2

        assert [s.pid for s in stack.status(cfg)] == [*(s.pid for s in first), None]  # no worker: not deployed
        stopped = stack.down(cfg)
        assert sorted(stopped) == ["mlflow", "prefect"]
        for s in first:
            assert _gone(s.pid)
        assert all(s.pid is None and not s.healthy for s in stack.status(cfg))
        assert not stack.wait_healthy(f"{cfg.mlflow_uri}/health", 0.5)
        assert not list((cfg.state / "pids").glob("*.pid"))
    finally:
        stack.down(cfg)
