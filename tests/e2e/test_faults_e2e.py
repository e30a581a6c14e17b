"""Faults on the real stack, through the `hitl` commands: kill -9 during sampling, a server lost before and
during a run, and a backup restored into a fresh state dir. After each, the command is run again and the
loop's invariants are checked: no duplicate queue items, no lost or duplicated labels, no partial dataset
version, and the loop goes on where it was.

Fault points are armed with HITL_FAULT (hitl/faults.py); promotion's and rollback's are killed here against
the MLflow server, the other points (dataset registration, fine-tuning) without servers in
tests/ops/test_faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import (
    REPO,
    api,
    check_restored,
    clone_config,
    hitl,
    seed_prefect_database,
    snapshot,
    stop_stack,
    truth,
    write_config,
)

from hitl.config import Config, load_config
from hitl.ops import processes, stack
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e

QUICK_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def _env(fault: str | None = None, stop: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "HITL_FAULT"))}
    env.update(QUICK_RETRIES)  # a lost server is reported after one retry here (the default backs off ~30 s)
    if fault:
        env["HITL_FAULT"] = fault
    if stop:
        env["HITL_FAULT_SIGNAL"] = "STOP"
    return env


def _hitl(path: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`hitl ARGS -c path` in a fresh process, whatever its exit status."""
    return subprocess.run([sys.executable, "-m", "hitl.cli", *args, "-c", str(path)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=_env(fault))


def _kill_server(cfg: Config, name: str) -> None:
    """kill -9 a server's process group, as a crash would."""
    (svc,) = [s for s in stack.status(cfg) if s.name == name]
    os.killpg(svc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(s.name == name and s.healthy for s in stack.status(cfg)) and time.monotonic() < deadline:
        time.sleep(0.2)


def _states(cfg: Config, flow: str) -> list[str]:
    """State types of the runs of `flow`, sorted."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with api(cfg), get_client(sync_client=True) as c:
        runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))
    return sorted(r.state.type.value for r in runs)


def _process_tags(cfg: Config, flow: str) -> tuple[int, int]:
    """How many runs of `flow`, and how many of their task runs, carry a `hitl` command's process tag."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    from hitl.ops.orphans import TAG_PREFIX

    def tagged(run) -> bool:
        return any(t.startswith(TAG_PREFIX) for t in run.tags)

    with api(cfg), get_client(sync_client=True) as c:
        runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))
        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])))
    assert tasks, f"no task runs of {flow}"
    return sum(map(tagged, runs)), sum(map(tagged, tasks))


def _one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with one line naming `needles`, and printed no traceback of its own."""
    assert p.returncode == 1, f"{p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    last = p.stdout.strip().splitlines()[-1]
    assert all(n in last for n in needles), p.stdout[-3000:]
    assert "Traceback (most recent call last)" not in p.stdout, p.stdout[-3000:]
    return last


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A stack with a champion and one day of traffic; the servers only (the flows run in the commands)."""
    tmp = tmp_path_factory.mktemp("faults")
    path = write_config(tmp)
    cfg = load_config(path)
    restored = tmp / "clone" / "e2e.yaml"  # the fresh clone of the backup drill
    seed_prefect_database(cfg)
    stack.up(cfg)
    try:
        hitl(path, "bootstrap")
        hitl(path, "produce")
        yield cfg, path, restored
    finally:
        stop_stack(cfg)
        if restored.exists():
            stop_stack(load_config(restored))


def test_sampling_killed_before_and_after_enqueue(loop):
    """kill -9 after scoring and selection, before the queue is written: nothing stored. kill -9 right after
    the enqueue: the whole selection stored once. The re-run then finds nothing new: 30 items (the budget,
    as in an uninterrupted run), each trace once, the random draw recorded once; it marks the two runs the
    kills left Running as Crashed."""
    cfg, path, _ = loop
    store = ReviewStore(cfg.store_url)
    p = _hitl(path, "sample", fault="sampling:before-enqueue")
    assert p.returncode == -signal.SIGKILL, p.stdout[-2000:] + p.stderr[-2000:]
    assert store.items().empty and not store.known_trace_ids() and store.draws().empty
    assert _states(cfg, "sample-traces") == ["RUNNING"]  # the killed run, until the next command

    p = _hitl(path, "sample", fault="sampling:after-enqueue")
    assert p.returncode == -signal.SIGKILL, p.stdout[-2000:] + p.stderr[-2000:]
    items, draws = store.items(), store.draws()
    assert len(items) == 30 and items["trace_id"].is_unique and len(store.known_trace_ids()) > 30

    assert _states(cfg, "sample-traces") == ["CRASHED", "RUNNING"]
    hitl(path, "sample")
    assert _states(cfg, "sample-traces") == ["COMPLETED", "CRASHED", "CRASHED"]
    flow_tags, task_tags = _process_tags(cfg, "sample-traces")
    assert flow_tags == 3 and task_tags == 0  # on every run, on none of their tasks (hitl/ops/orphans.py)
    after = store.items()
    assert len(after) == 30 and set(after["trace_id"]) == set(items["trace_id"])
    assert store.draws().drop(columns="created_at").equals(draws.drop(columns="created_at"))


def test_a_lost_mlflow_server_loses_no_label_and_leaves_no_partial_version(loop):
    """MLflow killed while `register-dataset` is between the parquet and the version's seal (the command
    frozen there, MLflow killed, the command let go): its clients retry, then one line names MLflow and
    `hitl up`; the labels are untouched and no version exists. Started while MLflow is down, a command says
    the same at once. After `hitl up`, the re-run registers version 1 whole."""
    import mlflow

    from hitl.datasets import versions

    cfg, path, _ = loop
    store = ReviewStore(cfg.store_url)
    if store.items().empty:  # run on its own (-k)
        hitl(path, "sample")
    known = truth(cfg)
    batch = store.take_batch(100)
    store.submit(batch.id, "tester", {it["trace_id"]: (known[it["trace_id"]], None) for it in batch.items}, cfg.labels)
    labels = store.annotations()
    assert len(labels) == 30

    _one_line_error(_lose_server_mid_registration(cfg, path, "mlflow"), "MLflow", "stopped answering", "hitl up")
    _one_line_error(_hitl(path, "register-dataset"), "MLflow", "hitl up")
    assert store.annotations().equals(labels)
    assert _states(cfg, "register-dataset") == ["FAILED"]  # Prefect, still up, recorded the loss

    stack.up(cfg)  # what `hitl up` does first: start the server that is down (the drill runs `hitl up` itself)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    assert versions.list_versions(cfg) == []
    hitl(path, "register-dataset")
    (v1,) = versions.list_versions(cfg)
    records, _ = versions.load(cfg, 1)
    assert v1.rows == len(records) == 30 and set(records["trace_id"]) == set(labels["trace_id"])
    exp = mlflow.get_experiment_by_name(cfg.dataset_experiment)
    statuses = [r.data.tags[versions.TAG + "status"] for r in mlflow.MlflowClient().search_runs([exp.experiment_id])]
    assert sorted(statuses) == [versions.ABANDONED, versions.COMPLETE]


def test_a_lost_prefect_server_is_named_and_its_orphan_run_marked_crashed(loop):
    """Prefect killed while `register-dataset` is between the parquet and the seal: the version is finished
    in MLflow, then the run cannot report and the command names Prefect and `hitl up`. Started while Prefect
    is down, a command says so at once. After the restart, the next command marks the run that lost its
    server Crashed, and its re-run registers nothing twice."""
    from hitl.datasets import versions

    cfg, path, _ = loop
    store = ReviewStore(cfg.store_url)
    target = store.annotations()["trace_id"].iloc[0]
    relabel = next(lab for lab in cfg.labels if lab != truth(cfg)[target])
    store.resolve(target, relabel, "dave", "a correction", "correction", cfg.labels)  # new content to register
    before = versions.list_versions(cfg)

    _one_line_error(_lose_server_mid_registration(cfg, path, "prefect"), "Prefect", "stopped answering", "hitl up")
    _one_line_error(_hitl(path, "register-dataset"), "Prefect", "hitl up")
    after = versions.list_versions(cfg)
    assert after[:-1] == before and after[-1].version == before[-1].version + 1  # finished in MLflow

    stack.up(cfg)
    assert _states(cfg, "register-dataset") == ["COMPLETED", "FAILED", "RUNNING"]  # the orphan: still Running
    out = hitl(path, "register-dataset").stdout
    assert "marked Crashed" in out and "'created': False" in out
    assert _states(cfg, "register-dataset") == ["COMPLETED", "COMPLETED", "CRASHED", "FAILED"]
    assert versions.list_versions(cfg) == after


def test_a_concurrency_lease_outlives_a_prefect_restart(loop):
    """A slot of a concurrency limit taken under a lease (as the CPU tag's tasks take theirs), then the Prefect
    server killed and started again: the lease is still known, so it can be renewed and released, and it would
    expire if its holder had died. Kept in the server's memory (Prefect's default) the lease was gone after the
    restart while the slot stayed taken: the tag's tasks then waited forever."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    cfg, _, _ = loop
    name = "lease-restart-check"
    with api(cfg), get_client(sync_client=True) as c:
        c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        lease_id = c.increment_concurrency_slots_with_lease([name], 1, "concurrency", lease_duration=60
                                                            ).json()["lease_id"]
    _kill_server(cfg, "prefect")
    deadline = time.monotonic() + 60  # the killed group's socket can outlive its health endpoint for a moment
    while not processes.port_free(cfg.stack.host, cfg.stack.prefect_port) and time.monotonic() < deadline:
        time.sleep(0.5)
    stack.up(cfg)
    with api(cfg), get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name(name).active_slots == 1
        c.renew_concurrency_lease(lease_id, lease_duration=60)  # 404 when the restart forgot the lease
        c.release_concurrency_slots_with_lease(lease_id)
        assert c.read_global_concurrency_limit_by_name(name).active_slots == 0
        c.delete_global_concurrency_limit_by_name(name)


def _lose_server_mid_registration(cfg: Config, path: Path, server: str) -> subprocess.CompletedProcess:
    """`hitl register-dataset` frozen at `dataset:after-artifact`, `server` killed, the command let go on.
    Its output goes to files, not pipes: a full pipe would block it before its fault point."""
    env = {**_env("dataset:after-artifact", stop=True), "PREFECT_CLIENT_MAX_RETRIES": "1"}
    out_path, err_path = path.parent / f"lose-{server}.out", path.parent / f"lose-{server}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hitl.cli", "register-dataset", "-c", str(path)], cwd=REPO,
                                env=env, stdout=out, stderr=err, text=True)
        try:
            _wait_stopped(proc, out_path, err_path)
            _kill_server(cfg, server)
            os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=300)
        finally:
            proc.kill() if proc.poll() is None else None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_path.read_text(), err_path.read_text())


def _wait_stopped(proc: subprocess.Popen, out: Path, err: Path, timeout: float = 300) -> None:
    """Wait until `proc` stopped itself at its fault point (state T); if it ends first, show what it said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "T":
            return
        time.sleep(0.2)
    said = f"{out.read_text()[-3000:]}\n{err.read_text()[-3000:]}"
    raise AssertionError(f"`hitl register-dataset` never reached its fault point (exit {proc.poll()}):\n{said}")


def test_rollbacks_killed_half_way_on_the_real_registry(loop):
    """`hitl rollback` killed (kill -9) between its registry writes, at each of its three points, against the
    stack's MLflow server: `@champion` is always the old version or the one the decision names; the same
    command again finishes the move. Then it refuses to bring back a version that was rolled back unless it is
    named, `hitl audit verify` passes with every rollback in the chain, and `hitl status` and the report's trend
    show them. (Promotion's kill points on the server: tests/e2e/test_deployed.py.)"""
    import mlflow
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from hitl.cli import app
    from hitl.learning import promotion
    from tasks import evaluation

    cfg, path, _ = loop
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    client, name = MlflowClient(), cfg.model.registered_name
    v1 = client.get_model_version_by_alias(name, "champion")
    assert str(v1.version) == "1"
    for v in ("2", "3", "4"):  # approved releases with the launch model's files (a real one: test_deployed.py)
        client.create_model_version(name, source=v1.source, run_id=v1.run_id,
                                    model_id=v1.model_id or v1.source.removeprefix("models:/"))
        client.set_model_version_tag(name, v, promotion.APPROVED_BY, "ann")
    client.set_registered_model_alias(name, promotion.PREVIOUS, "3")
    client.set_registered_model_alias(name, promotion.CHAMPION, "4")

    def aliases() -> dict[str, str]:
        return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}

    runner = CliRunner()
    why = "v{} misroutes card_lost since the release"
    for old, new, to, point in (("4", "3", None, "decided"), ("3", "2", "2", "previous-moved"),
                                ("2", "1", "1", "champion-moved")):
        args = ["rollback", "--by", "bo", "--reason", why.format(old), *(["--to", to] if to else [])]
        p = _hitl(path, *args, fault=f"rollback:{point}")
        assert p.returncode == -signal.SIGKILL, p.stdout[-2000:] + p.stderr[-2000:]
        assert aliases()["champion"] in (old, new), point
        again = runner.invoke(app, [*args, "-c", str(path)])  # the same command again finishes it
        assert again.exit_code == 0 and "Finished the interrupted rollback" in again.output, again.output
        assert aliases() == {"champion": new, "previous": old}
        assert client.get_model_version(name, old).tags[promotion.ROLLED_BACK["by"]] == "bo"

    refused = runner.invoke(app, ["rollback", "--by", "bo", "--reason", why.format(1), "-c", str(path)])
    assert refused.exit_code == 1 and "was rolled back by bo" in refused.output and "--to" in refused.output
    verified = runner.invoke(app, ["audit", "verify", "-c", str(path)])
    assert verified.exit_code == 0, verified.output
    with api(cfg):  # this process's Prefect client on the stack (else it would start a server of its own)
        status = runner.invoke(app, ["status", "-c", str(path)]).output
    assert "rolled back by bo" in status and "v4 -> v3 by bo" in status, status
    trend = evaluation.trend.fn(cfg, client)
    rows = trend[trend["decision"].str.startswith("rollback")]
    assert rows[["champion_version", "challenger_version"]].values.tolist() == [["4", "3"], ["3", "2"], ["2", "1"]]


def test_backup_and_restore_drill(loop):
    """Back up the running stack, restore into the state dir of a fresh clone (refused over a running
    stack), start it: queue, labels, dataset versions and aliases are as they were; sampling finds nothing
    new to queue, and a correction goes into the next dataset version, whose parent is the latest restored."""


    cfg, path, clone = loop
    archive = path.parent / "backup.tar.gz"
    out = hitl(path, "backup", "-o", str(archive)).stdout
    print(out.strip())  # size and time, for docs/reliability.md (pytest -s)
    assert "review.db" in out and "mlflow.db" in out and "prefect.db" in out
    _one_line_error(_hitl(path, "restore", str(archive), "--replace"), "running", "hitl down")

    before = snapshot(cfg)
    hitl(path, "down")

    clone_config(path, clone)
    hitl(clone, "restore", str(archive))
    check_restored(clone, before)
