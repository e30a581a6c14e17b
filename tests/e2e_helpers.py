"""Helpers for end-to-end tests: a config on free ports, `hitl` subprocesses, the reviewer's side of the
Prefect API."""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hitl.config import Config, DeploymentsConfig, load_config
from hitl.ops import stack

REPO = Path(__file__).resolve().parents[1]


# Ports `free_port` handed out, shared by every process of this user's test runs (xdist workers, parallel runs).
_PORTS_HANDED_OUT = Path(os.environ.get("HITL_TEST_PORTS_FILE")
                         or Path(tempfile.gettempdir()) / f"hitl-tests-ports-{os.getuid()}.txt")
_PORT_HELD_S = 3600.0


def free_port() -> int:
    """A TCP port free now and not handed out here in the last hour by any process of this user. Asking the OS
    alone (bind to port 0, close) once gave both xdist workers port 50321 seconds apart: one stack's server
    failed to bind, and its health check was answered by the other stack's server."""
    with open(_PORTS_HANDED_OUT, "a+") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)  # released when the file closes
        registry.seek(0)
        now = time.time()
        held = {}
        for line in registry.read().splitlines():
            port, _, at = line.partition(" ")
            if port.isdigit() and _is_number(at) and now - float(at) < _PORT_HELD_S:
                held[int(port)] = float(at)
        for _ in range(1000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in held:
                break
        else:
            raise RuntimeError(f"no free port outside the {len(held)} handed out in the last hour "
                               f"(listed in {_PORTS_HANDED_OUT}); delete that file if no test run is going")
        held[port] = now
        registry.seek(0)
        registry.truncate()
        registry.write("".join(f"{p} {at}\n" for p, at in held.items()))
        return port


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# A schedule that never fires during a test run (29 February, 03:00) for every scheduled deployment: a run the
# scheduler starts mid-test changes what the test sees. Seen: the hourly review-dispatch, which the worker takes
# 10 s before the hour, started as the notification test killed the Prefect server, crashed, and was reported.
NEVER_IN_A_TEST = "0 3 29 2 *"


def write_config(tmp: Path, **overrides) -> Path:
    """A config for a test stack: the demo's, on free ports in `tmp`, small; `overrides` replace top-level
    sections (`deployments` too, but its schedules stay `NEVER_IN_A_TEST` unless it names its own)."""
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    never = {"schedules": dict.fromkeys(DeploymentsConfig().schedules, NEVER_IN_A_TEST)}
    deployments = {**never, **overrides.pop("deployments", raw.get("deployments", {}))}
    raw.update({
        "project": "e2e", "state_dir": str(tmp / "state"),
        "stack": {"host": "127.0.0.1", "prefect_port": free_port(), "mlflow_port": free_port(),
                  "worker_port": free_port()},
        "world": {**raw["world"], "launch_per_intent": 12, "production_size": 300},
        "model": {**raw["model"], "registered_name": "e2e-intent"},
        # 30 annotations: 15 random-draw traces (the regression set) and 15 policy picks, each labelled once
        "selection": {"budget": 30, "random_share": 0.5, "random_annotations": 1, "strata": ["channel"],
                      "seed": 0},
        "review": {"batch_size": 30, "overlap_share": 0.0, "poll_interval_s": 1, "timeout_s": 600},
        "dataset": {"name": "e2e-dataset", "hard_case_share": 0.2, "min_rows": 10},
        "training": {"epochs": 1, "batch_size": 16, "seed": 42, "max_steps": 8},
        # the gate is not under test here (see test_regression.py): let every challenger through to approval
        "gate": {"margin": 1.0},
        "deployments": deployments,
    })
    raw.update(overrides)
    path = tmp / "e2e.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def seed_prefect_database(cfg: Config) -> None:
    """Give a new stack on SQLite a copy of a Prefect database that is migrated and has been served once, instead
    of an empty one: a server spends about 4 s of CPU more on its first start (migrations, block types), and the
    suite starts several stacks. The copy is made once per machine and Prefect version by Prefect's own server
    (`prefect server start` on an empty file, under a lock the pytest workers share); tests/ops/test_stack.py
    still starts a stack on nothing."""
    url = cfg.prefect_database_url
    if not url.startswith("sqlite"):
        return
    target = Path(url.split(":///", 1)[1])
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_sqlite(_prefect_template(), target)


def _prefect_template() -> Path:
    import prefect

    path = Path(tempfile.gettempdir()) / f"hitl-tests-prefect-{prefect.__version__}-{os.getuid()}.db"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(prefix="hitl-prefect-template-") as work:
            db, port = Path(work) / "prefect.db", free_port()
            env = {**os.environ, "PREFECT_HOME": str(Path(work) / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
                   "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}"}
            server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                                       "127.0.0.1", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                assert stack.wait_healthy(f"http://127.0.0.1:{port}/api/health", 120), "template Prefect server"
            finally:
                server.terminate()
                server.wait(60)
            partial = path.with_suffix(".partial")
            _copy_sqlite(db, partial)
            os.replace(partial, path)
    return path


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of SQLite database `source` (its WAL included), by SQLite's backup API."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def running_stack(tmp: Path, **overrides):
    """Generator for a module fixture: (cfg, config path) with the real stack up in production mode (servers,
    deployments, worker), as `hitl up` leaves it; stops it afterwards."""
    path = write_config(tmp, **overrides)
    cfg = load_config(path)
    seed_prefect_database(cfg)
    stack.up(cfg)
    import mlflow
    from helpers_domain import forget_mlflow_uris

    mlflow.set_tracking_uri(cfg.mlflow_uri)
    mlflow.set_registry_uri(cfg.mlflow_uri)  # not a registry another module's fixture left behind
    try:
        deploy_and_start_worker(cfg, path)
        yield cfg, path
    finally:
        stop_stack(cfg)
        forget_mlflow_uris()


def stop_stack(cfg: Config) -> None:
    """`hitl down` for a module's stack, once the events this test process emitted to it (Prefect sends them
    from a background worker, e.g. for each block loaded) are delivered: left queued, the next
    `prefect_test_harness` in this process drains them against a server that is gone (measured: 55-67 s of
    retries in tests/ops/test_runners.py's teardown)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30)
    stack.down(cfg)


TEST_DATABASE_URL = os.environ.get("HITL_TEST_DATABASE_URL", "postgresql://hitl:hitl@127.0.0.1:5432")


def postgres_or_none(project: str) -> str | None:
    """stack.database_url for a test on PostgreSQL, with `project`'s databases dropped (a clean start); None
    when no server answers (the test then runs on SQLite files).

    Under CI (`make test` sets one up with .ci/postgres) a missing server is an error: the PostgreSQL run
    must not silently disappear."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(f"{TEST_DATABASE_URL.replace('postgresql://', 'postgresql+psycopg2://')}/postgres",
                           isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            for role in ("prefect", "mlflow", "review"):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{project}_{role}" WITH (FORCE)'))
    except OperationalError as e:
        if os.environ.get("CI"):
            raise
        print(f"no PostgreSQL at {TEST_DATABASE_URL} (run .ci/postgres or set HITL_TEST_DATABASE_URL): "
              f"on SQLite instead: {e}")
        return None
    finally:
        engine.dispose()
    return TEST_DATABASE_URL


def deploy_and_start_worker(cfg: Config, path: Path) -> None:
    """What `hitl up` does after the servers answer: the pool, the deployments, a worker."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hitl.ops import deploy

    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
        deploy.apply(cfg, path)
    stack.start_worker(cfg)


def api(cfg: Config):
    """Context: this process's Prefect client pointed at the test stack."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url})


def hitl(path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `hitl ARGS -c path` in a fresh process; fail the test with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    p = subprocess.run([sys.executable, "-m", "hitl.cli", *args, "-c", str(path)], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO, env=env)
    assert p.returncode == 0, f"hitl {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def start(path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.Popen([sys.executable, "-m", "hitl.cli", *args, "-c", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a `start`ed process and return its output; past `timeout`, kill it and fail the test with the
    tail of what it printed (a bare TimeoutExpired says nothing about where it hung)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(map(str, proc.args[2:]))} still running after {timeout:.0f} s; "
                             f"its output:\n{(out or '')[-4000:]}") from None
    return out or ""


def wait_paused(cfg: Config, form: str, timeout: float = 180):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hitl.review import prefect_api

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
        while time.monotonic() < deadline:
            runs = prefect_api.paused_runs(form)
            if runs:
                return runs[0]
            time.sleep(1)
    raise AssertionError(f"no paused {form} run appeared within {timeout}s")


def wait_completed(cfg: Config, run_id: str, timeout: float = 300) -> None:
    """Wait for a flow run to finish; fail the test unless it completed."""
    from hitl.ops import runs

    with api(cfg):
        done = runs.wait(run_id, timeout)
    assert done.state.is_completed(), done.state.message


def resume(cfg: Config, run_id: str, values: dict, response_key: str = "") -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hitl.review import prefect_api

    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
        prefect_api.resume(run_id, values, response_key)


def flow_run_state(cfg: Config, run_id: str) -> str:
    from uuid import UUID

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}), get_client(sync_client=True) as c:
        return c.read_flow_run(UUID(run_id)).state.type.value


def truth(cfg: Config) -> dict[str, str]:
    from hitl.sim.reviewers import load_truth

    return load_truth(cfg)


def hitl_fails(path: Path, *args: str, needles: tuple[str, ...], env: dict[str, str] | None = None) -> str:
    """Run `hitl ARGS -c path` in a fresh process that must fail (exit 1) with one last line naming every one of
    `needles` and no traceback of its own; returns that line."""
    env = env or {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    p = subprocess.run([sys.executable, "-m", "hitl.cli", *args, "-c", str(path)], capture_output=True, text=True,
                       timeout=600, cwd=REPO, env=env)
    assert p.returncode == 1, f"hitl {' '.join(args)}: {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    last = p.stdout.strip().splitlines()[-1]
    assert all(n in last for n in needles) and "Traceback (most recent call last)" not in p.stdout, p.stdout[-3000:]
    return last


def start_with_fault(cfg, deployment: str, fault: str):
    """A run of `deployment` whose process (every attempt) stops itself at `fault` (HITL_FAULT_SIGNAL=STOP)."""
    from prefect import get_client

    env = {"HITL_FAULT": fault, "HITL_FAULT_SIGNAL": "STOP"}
    with api(cfg), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{deployment}/{deployment}")
        return client.create_flow_run_from_deployment(dep.id, job_variables={"env": env}).id


def stopped_process(cfg, run_id, other_than: int | None = None, timeout: float = 300) -> int:
    """The pid of the run's process (its infrastructure pid, or one under it) once stopped at the fault point."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with api(cfg), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            pid = str(run.infrastructure_pid or "").rpartition(":")[2]
            for p in process_tree(int(pid)) if pid.isdigit() else []:
                if p != other_than and proc_state(p) == "T":
                    return p
            time.sleep(0.5)
    raise AssertionError(f"no process of run {run_id} stopped at its fault point within {timeout:.0f} s "
                         f"(state {run.state.name})")


def proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        children.setdefault(int(text[text.rfind(")") + 2:].split()[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def snapshot(cfg: Config) -> dict:
    """What a restore must bring back: the queue's counts, the annotations, the dataset versions, the aliases."""
    import mlflow

    from hitl.datasets import versions
    from hitl.review.store import ReviewStore

    mlflow.set_tracking_uri(cfg.mlflow_uri)
    store = ReviewStore(cfg.store_url)
    try:
        return {"counts": store.counts(), "annotations": store.annotations(), "versions": versions.list_versions(cfg),
                "aliases": mlflow.MlflowClient().get_registered_model(cfg.model.registered_name).aliases}
    finally:
        store.engine.dispose()


def clone_config(path: Path, clone: Path) -> Config:
    """The config at `path` with its state dir moved under `clone`'s folder (a fresh machine's), written to `clone`."""
    clone.parent.mkdir()
    raw = yaml.safe_load(path.read_text())
    clone.write_text(yaml.safe_dump({**raw, "state_dir": str(clone.parent / "state")}))
    return load_config(clone)


def check_restored(clone: Path, before: dict) -> None:
    """Start the restored clone (`hitl up`): the snapshot is back; sampling finds nothing new; a correction goes
    into the next dataset version, whose parent is the latest restored one, and the restored version passes its
    digest check."""
    import mlflow

    from hitl.datasets import versions
    from hitl.review.store import ReviewStore

    fresh = load_config(clone)
    hitl(clone, "up")
    assert snapshot(fresh) | {"annotations": None} == before | {"annotations": None}
    store = ReviewStore(fresh.store_url)
    assert store.annotations().equals(before["annotations"])
    mlflow.set_tracking_uri(fresh.mlflow_uri)

    assert "'enqueued': 0" in hitl(clone, "sample").stdout
    assert store.counts() == before["counts"]
    target = store.annotations()["trace_id"].iloc[1]  # [0] may have been corrected before the backup
    relabel = next(lab for lab in fresh.labels if lab != truth(fresh)[target])
    hitl(clone, "relabel", target, relabel, "--reviewer", "dave", "--reason", "after the restore")
    hitl(clone, "register-dataset")
    *kept, new = versions.list_versions(fresh)
    last = before["versions"][-1]
    assert kept == before["versions"] and (new.version, new.parent) == (last.version + 1, last.version)
    assert versions.load(fresh, new.version)[0].set_index("trace_id").loc[target, "label"] == relabel
    versions.load(fresh, last.version)  # the restored artifact passes its digest check
