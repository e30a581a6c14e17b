"""Faults on the real stack with every database on PostgreSQL: `hitl backup` / `hitl restore` (pg_dump and
pg_restore) drilled as tests/test_faults_e2e.py drills the SQLite stack, the restore landing on a server that
lost the databases.

One stack for the module (Prefect, MLflow, the review store on PostgreSQL; deployments and a worker). Skipped
where no PostgreSQL answers at HITL_TEST_DATABASE_URL outside CI (an error under CI)."""

from __future__ import annotations

import json
import tarfile

import pytest
import yaml
from e2e_helpers import free_port, hitl, hitl_fails, postgres_or_none, running_stack, truth

from hitl.config import load_config
from hitl.ops import stack
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


def _label_and_register(cfg, path) -> None:
    """30 labels and a dataset version, unless an earlier test of the module made them."""
    from hitl.datasets import versions

    store = ReviewStore(cfg.store_url)
    if store.annotations().empty:
        known = truth(cfg)
        batch = store.take_batch(100)
        store.submit(batch.id, "tester", {it["trace_id"]: (known[it["trace_id"]], None) for it in batch.items},
                     cfg.labels)
    if not versions.list_versions(cfg):
        hitl(path, "register-dataset")


def test_postgres_backup_and_restore_drill(pg_loop):
    """Back up the running stack (three pg_dump archives, each with its SHA-256), refuse a restore over it, stop
    it and lose every database; restore into a fresh clone's state dir and start it: queue, labels, dataset
    versions and aliases are as they were; sampling finds nothing new, and a correction goes into the next
    dataset version, whose parent is the latest restored one."""
    import mlflow

    from hitl.datasets import versions

    cfg, path, clone = pg_loop
    _label_and_register(cfg, path)
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
