"""Faults on the real stack with every database on PostgreSQL: a promotion killed between its registry writes
through the MLflow server (tests/ops/test_faults.py does it on a SQLite file); a deployed flow run's process killed (the
worker reports the crash, the flow's hook runs it again, or leaves it Crashed saying why); and `hitl backup` /
`hitl restore` (pg_dump and pg_restore) drilled as tests/e2e/test_faults_e2e.py drills the SQLite stack, the
restore landing on a server that lost the databases (last: it stops the module's stack).

One stack for the module (Prefect, MLflow, the review store on PostgreSQL; deployments and a worker). Skipped
where no PostgreSQL answers at HITL_TEST_DATABASE_URL outside CI (an error under CI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from e2e_helpers import REPO, api, free_port, hitl, hitl_fails, postgres_or_none, running_stack, truth

from hitl.config import load_config
from hitl.ops import orphans, runs, stack
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e

PROJECT = "pgfaults"


@pytest.fixture(scope="module")
def pg_loop(tmp_path_factory):
    """The stack on PostgreSQL with a champion, a day of traffic and the review queue filled; the fresh clone's
    config path for the drill (its stack is stopped afterwards too)."""
    database_url = postgres_or_none(PROJECT)
    if database_url is None:
        pytest.skip("no PostgreSQL server (run .ci/postgres, or set HITL_TEST_DATABASE_URL)")
    tmp = tmp_path_factory.mktemp("pgfaults")
    clone = tmp / "clone" / "e2e.yaml"
    stack_cfg = {"prefect_port": free_port(), "mlflow_port": free_port(), "worker_port": free_port(),
                 "database_url": database_url}
    running = running_stack(tmp, project=PROJECT, stack=stack_cfg,
                            deployments={"pool_concurrency": 2, "worker_poll_s": 1})
    cfg, path = next(running)
    try:
        hitl(path, "bootstrap")
        hitl(path, "produce")
        hitl(path, "sample")
        yield cfg, path, clone
    finally:
        if clone.exists():
            stack.down(load_config(clone))
        running.close()
        postgres_or_none(PROJECT)


def _labelled(cfg) -> ReviewStore:
    """The review store with 30 labels (made unless an earlier test of the module made them)."""
    store = ReviewStore(cfg.store_url)
    if store.annotations().empty:
        known = truth(cfg)
        batch = store.take_batch(100)
        store.submit(batch.id, "tester", {it["trace_id"]: (known[it["trace_id"]], None) for it in batch.items},
                     cfg.labels)
    return store


def _start_with_fault(cfg, deployment: str, fault: str):
    """A run of `deployment` whose process (every attempt) stops itself at `fault` (HITL_FAULT_SIGNAL=STOP)."""
    from prefect import get_client

    env = {"HITL_FAULT": fault, "HITL_FAULT_SIGNAL": "STOP"}
    with api(cfg), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{deployment}/{deployment}")
        return client.create_flow_run_from_deployment(dep.id, job_variables={"env": env}).id


def _stopped_process(cfg, run_id, other_than: int | None = None, timeout: float = 300) -> int:
    """The pid of the run's process (its infrastructure pid, or one under it) once stopped at the fault point."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with api(cfg), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            pid = str(run.infrastructure_pid or "").rpartition(":")[2]
            for p in _tree(int(pid)) if pid.isdigit() else []:
                if p != other_than and _proc_state(p) == "T":
                    return p
            time.sleep(0.5)
    raise AssertionError(f"no process of run {run_id} stopped at its fault point within {timeout:.0f} s "
                         f"(state {run.state.name})")


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2]


def _tree(pid: int) -> list[int]:
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


def _states(cfg, run_id) -> list:
    from prefect import get_client

    with api(cfg), get_client(sync_client=True) as client:
        return client.read_flow_run_states(run_id)


PROMOTE = """
import sys
from hitl.learning import promotion
if sys.argv[2] == "promote":
    promotion.promote(sys.argv[1], promotion.Promotion("1", "2", "ann", "voice fixed", "eval-run"))
else:
    print(promotion.finish_pending(sys.argv[1]))
"""


def _promote(cfg, name: str, how: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`promotion.promote` (or `finish_pending`, the recovery a model load does) of `name` in a fresh process
    against the stack's MLflow server, with `fault` armed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HITL_FAULT"))}
    env.update({"MLFLOW_TRACKING_URI": cfg.mlflow_uri, "MLFLOW_REGISTRY_URI": cfg.mlflow_uri},
               **({"HITL_FAULT": fault} if fault else {}))
    return subprocess.run([sys.executable, "-c", PROMOTE, name, how], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def test_promotion_kill_points_against_the_mlflow_server(pg_loop):
    """kill -9 between the registry writes of a promotion, through the MLflow server (on PostgreSQL), at each of
    the three points: `@champion` is the old champion or the approved challenger, the decision is pending; the
    re-run in a fresh process (the recovery a model load does, or the approval promoted again) ends with champion
    v2 carrying its approval, previous v1, no challenger, nothing pending."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.learning import promotion

    cfg = pg_loop[0]
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    client = MlflowClient(cfg.mlflow_uri, registry_uri=cfg.mlflow_uri)
    exp = client.create_experiment(f"{PROJECT}-promotion")
    run = client.create_run(exp).info.run_id
    client.log_text(run, "weights", "model/weights.txt")
    for fault, rerun in [("promote:approved", "finish"), ("promote:previous-moved", "promote"),
                         ("promote:champion-moved", "finish")]:
        name = f"{PROJECT}-{fault.split(':')[1]}"
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, source=f"runs:/{run}/model", run_id=run)
        client.set_registered_model_alias(name, promotion.CHAMPION, "1")
        client.set_registered_model_alias(name, promotion.CHALLENGER, "2")

        killed = _promote(cfg, name, "promote", fault)
        assert killed.returncode == -signal.SIGKILL, f"{fault}: {killed.returncode}\n{killed.stderr[-2000:]}"
        champion = client.get_model_version_by_alias(name, promotion.CHAMPION)
        assert champion.version == "1" or champion.tags.get("hitl.approved_by") == "ann", fault
        assert promotion.PENDING_TAG in client.get_registered_model(name).tags, fault

        again = _promote(cfg, name, rerun)
        assert again.returncode == 0, f"{fault}: {again.stderr[-2000:]}"
        model = client.get_registered_model(name)
        assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "2", "previous": "1"}, fault
        assert promotion.PENDING_TAG not in model.tags, fault
        tags = client.get_model_version(name, "2").tags
        assert (tags["hitl.approved_by"], tags["hitl.eval_run_id"]) == ("ann", "eval-run"), fault
        assert promotion.finish_pending(name, client) is None


def test_a_killed_flow_run_process_is_run_again_then_left_crashed_with_its_reason(pg_loop):
    """kill -9 of a deployed `register-dataset` run's process (not the worker), between the parquet and the seal:
    the worker marks the run Crashed with the exit status, the flow's hook schedules it again, and the second
    attempt registers version 1 whole. A run killed again at its retry (crash_retries: 1) stays Crashed, its
    message saying it was not run again, why, and where to retry it; it leaves no version."""
    import mlflow

    from hitl.datasets import versions

    cfg, _, _ = pg_loop
    store = _labelled(cfg)
    run_id = _start_with_fault(cfg, "register-dataset", "dataset:after-artifact")
    first = _stopped_process(cfg, run_id)
    os.kill(first, signal.SIGKILL)
    second = _stopped_process(cfg, run_id, other_than=first)  # the retry reached the same point
    os.kill(second, signal.SIGCONT)
    with api(cfg):
        done = runs.wait(run_id, 300)
    assert done.state.is_completed(), done.state.message
    states = _states(cfg, run_id)
    names = [s.name for s in states]
    history = [(s.name, (s.message or "")[:90]) for s in states]
    assert names.count("Crashed") == 1 and names.count("AwaitingRetry") == 1, history  # reported once, run again
    crashed, retry = (next(s for s in states if s.name == n) for n in ("Crashed", "AwaitingRetry"))
    assert "-9" in crashed.message and retry.message.startswith(orphans.CRASH_RETRY), (crashed.message, retry.message)
    assert names.index("Crashed") < names.index("AwaitingRetry") < names.index("Completed"), names
    (v1,) = versions.list_versions(cfg)
    assert v1.rows == 30
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    exp = mlflow.get_experiment_by_name(cfg.dataset_experiment)
    tags = [r.data.tags[versions.TAG + "status"] for r in mlflow.MlflowClient().search_runs([exp.experiment_id])]
    assert sorted(tags) == [versions.ABANDONED, versions.COMPLETE]  # the killed attempt's half-written run

    target = store.annotations()["trace_id"].iloc[0]
    relabel = next(lab for lab in cfg.labels if lab != truth(cfg)[target])
    store.resolve(target, relabel, "dave", "a correction", "correction", cfg.labels)  # new content to register
    run_id = _start_with_fault(cfg, "register-dataset", "dataset:after-artifact")
    first = _stopped_process(cfg, run_id)
    os.kill(first, signal.SIGKILL)
    os.kill(_stopped_process(cfg, run_id, other_than=first), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while "Not run again" not in ((final := _states(cfg, run_id)[-1]).message or "") and time.monotonic() < deadline:
        time.sleep(1)
    assert final.is_crashed() and "crash_retries = 1" in final.message, final.message
    assert cfg.flow_run_url(run_id) in final.message and "-9" in final.message
    assert [s.name for s in _states(cfg, run_id)].count("AwaitingRetry") == 1
    assert versions.list_versions(cfg) == [v1]


def test_postgres_backup_and_restore_drill(pg_loop):
    """Back up the running stack (three pg_dump archives, each with its SHA-256), refuse a restore over it, stop
    it and lose every database; restore into a fresh clone's state dir and start it: queue, labels, dataset
    versions and aliases are as they were; sampling finds nothing new, and a correction goes into the next
    dataset version, whose parent is the latest restored one."""
    import mlflow

    from hitl.datasets import versions

    cfg, path, clone = pg_loop
    _labelled(cfg)
    if not versions.list_versions(cfg):  # run on its own (-k)
        hitl(path, "register-dataset")
    archive = path.parent / "backup.tar.gz"
    out = hitl(path, "backup", "-o", str(archive)).stdout
    print(out.strip())  # size and time, for docs/reliability.md (pytest -s)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(d["database"] for d in manifest["postgres"]) == [f"{PROJECT}_{r}" for r in
                                                                     ("mlflow", "prefect", "review")]
    assert not [d for d in manifest["databases"] if d["path"].endswith(("review.db", "mlflow.db", "prefect.db"))]
    hitl_fails(path, "restore", str(archive), "--replace", needles=("running", "hitl down"))

    mlflow.set_tracking_uri(cfg.mlflow_uri)
    store = ReviewStore(cfg.store_url)
    before = {"counts": store.counts(), "annotations": store.annotations(), "versions": versions.list_versions(cfg),
              "aliases": mlflow.MlflowClient().get_registered_model(cfg.model.registered_name).aliases}
    assert before["counts"]["resolved"] == 30 and before["versions"]
    store.engine.dispose()
    hitl(path, "down")
    postgres_or_none(PROJECT)  # the disaster: the server lost every database of the project

    clone.parent.mkdir()
    raw = yaml.safe_load(path.read_text())
    clone.write_text(yaml.safe_dump({**raw, "state_dir": str(clone.parent / "state")}))
    fresh = load_config(clone)
    out = hitl(clone, "restore", str(archive)).stdout
    assert f"PostgreSQL: {PROJECT}_prefect, {PROJECT}_mlflow, {PROJECT}_review" in out
    hitl(clone, "up")
    mlflow.set_tracking_uri(fresh.mlflow_uri)
    store = ReviewStore(fresh.store_url)
    assert store.counts() == before["counts"] and store.annotations().equals(before["annotations"])
    assert versions.list_versions(fresh) == before["versions"]
    assert mlflow.MlflowClient().get_registered_model(fresh.model.registered_name).aliases == before["aliases"]

    assert "'enqueued': 0" in hitl(clone, "sample").stdout
    assert store.counts() == before["counts"]
    target = store.annotations()["trace_id"].iloc[1]
    relabel = next(lab for lab in fresh.labels if lab != truth(fresh)[target])
    hitl(clone, "relabel", target, relabel, "--reviewer", "dave", "--reason", "after the restore")
    hitl(clone, "register-dataset")
    *kept, new = versions.list_versions(fresh)
    last = before["versions"][-1]
    assert kept == before["versions"] and (new.version, new.parent) == (last.version + 1, last.version)
    assert versions.load(fresh, new.version)[0].set_index("trace_id").loc[target, "label"] == relabel
    versions.load(fresh, last.version)  # the restored artifact passes its digest check
