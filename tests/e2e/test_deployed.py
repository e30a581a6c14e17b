"""Production mode on real parts, on PostgreSQL: `hitl up`'s deployments and worker, review runs that suspend
(and hold no worker), a worker and server restart while a review is suspended, promotion kill points through the
MLflow server, a deployed run's process killed (run again once by its crash hook, then left Crashed saying why),
the fine-tune -> regression-eval chain with its report, and last the `hitl backup`/`restore` drill with pg_dump
(it stops the stack). One stack for all of them.

The work pool's concurrency is 1 here: while the review waits, the one slot must stay free for other runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pandas as pd
import pytest
from e2e_helpers import (
    REPO,
    api,
    check_restored,
    clone_config,
    deploy_and_start_worker,
    free_port,
    hitl,
    hitl_fails,
    postgres_or_none,
    resume,
    running_stack,
    snapshot,
    start_with_fault,
    stop_stack,
    stopped_process,
    truth,
    wait_paused,
)

from hitl.config import load_config
from hitl.datasets import versions
from hitl.ops import deploy, orphans, runs, stack
from hitl.review import forms
from hitl.review.prefect_api import APPROVAL_FORM, REVIEW_FORM
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600
PROJECT = "deployed"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The stack on PostgreSQL (Prefect server, MLflow server and review store); on SQLite files where no
    PostgreSQL answers outside CI. The other e2e modules run production mode on SQLite: test_e2e_loop (the
    in-process flows, pauses and the PII check), test_browser_review (review runs suspended on the worker,
    resumed), test_faults_e2e (servers killed and restarted with runs in flight). The module's last test, the
    backup drill, stops this stack and starts a restored clone of it (`clone/` beside the config): both are
    stopped here."""
    stack_cfg = {"prefect_port": free_port(), "mlflow_port": free_port(), "worker_port": free_port()}
    database_url = postgres_or_none(PROJECT)
    if database_url:
        stack_cfg["database_url"] = database_url
    tmp = tmp_path_factory.mktemp(PROJECT)
    clone = tmp / "clone" / "e2e.yaml"
    try:
        yield from running_stack(tmp, project=PROJECT, stack=stack_cfg,
                                 deployments={"pool_concurrency": 1, "worker_poll_s": 1})
    finally:
        if clone.exists():
            stop_stack(load_config(clone))
        if database_url:
            postgres_or_none(PROJECT)


def _run(cfg, path, name: str, **params):
    """Trigger deployment `name`, wait for it to end, return the final FlowRun (must have completed)."""
    with api(cfg):
        run = deploy.trigger(cfg, path, name, **params)
        done = runs.wait(run.id, RUN_TIMEOUT_S)
    assert done.state.is_completed(), f"{name} ended {done.state.name}: {done.state.message}"
    return done


def _history(cfg, run_id: str) -> list[str]:
    from uuid import UUID

    from prefect import get_client

    with api(cfg), get_client(sync_client=True) as c:
        return [s.name for s in c.read_flow_run_states(UUID(str(run_id)))]


def _state_objs(cfg, run_id) -> list:
    from prefect import get_client

    with api(cfg), get_client(sync_client=True) as client:
        return client.read_flow_run_states(run_id)


def _labelled(cfg) -> ReviewStore:
    """The review store with 30 labels (made unless an earlier test of the module made them)."""
    store = ReviewStore(cfg.store_url)
    if store.annotations().empty:
        known = truth(cfg)
        batch = store.take_batch(100)
        store.submit(batch.id, "tester", {it["trace_id"]: (known[it["trace_id"]], None) for it in batch.items},
                     cfg.labels)
    return store


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


def test_up_deploys_every_flow_with_its_schedule(deployed):
    cfg, path = deployed
    if cfg.stack.database_url:  # every server and the store really are on PostgreSQL
        assert cfg.store_url.startswith("postgresql") and not list(cfg.state.rglob("*.db"))
    with api(cfg):
        found = {d.name: d for d in runs.deployments()}
    wanted = {s.full_name for s in deploy.specs(cfg, path)}
    assert wanted <= set(found)
    # every schedule of the config (the test stack's never fire during a test: e2e_helpers.NEVER_IN_A_TEST)
    assert set(cfg.deployments.schedules) == {"fine-tune", "sample-traces", "review-dispatch", "register-dataset"}
    for name, cron in cfg.deployments.schedules.items():
        assert found[f"{name}/{name}"].schedule == f"{cron} ({cfg.deployments.timezone})", name
    assert found["regression-eval/regression-eval"].schedule == "on demand"
    deadline = time.monotonic() + 180  # the server's scheduler queues runs on its own loop (60 s)
    while not found["fine-tune/fine-tune"].next_run and time.monotonic() < deadline:
        time.sleep(5)
        with api(cfg):
            found = {d.name: d for d in runs.deployments()}
    assert found["fine-tune/fine-tune"].next_run  # its next run is queued
    out = hitl(path, "status").stdout
    assert "fine-tune/fine-tune" in out and "worker" in out and "up" in out


def test_suspended_review_holds_no_worker_and_survives_restarts(deployed):
    cfg, path = deployed
    _run(cfg, path, "bootstrap")
    _run(cfg, path, "simulate-production", window=0)
    _run(cfg, path, "sample-traces", window="all")
    store = ReviewStore(cfg.store_url)
    assert store.counts()["queued"] == 30

    dispatch = _run(cfg, path, "review-dispatch")
    paused = wait_paused(cfg, REVIEW_FORM, timeout=RUN_TIMEOUT_S)
    assert "Suspended" in _history(cfg, paused.id)
    assert len(store.batches()) == 1
    with api(cfg):
        review = runs.flow_runs(["review-batch/review-batch"], tag=deploy.started_by(str(dispatch.id)))
    assert [r.id for r in review] == [paused.id]

    # the pool runs one flow at a time; sampling still completes while the review waits
    sampled = _run(cfg, path, "sample-traces", window="all")
    with api(cfg):
        assert runs.flow_runs(["review-batch/review-batch"], states=("PAUSED",))[0].id == paused.id
    assert sampled.state.is_completed()

    # a worker killed (-9) and both servers restarted while the review is suspended
    assert stack.stop_worker(cfg, signal.SIGKILL)
    stack.down(cfg)
    stack.up(cfg)
    deploy_and_start_worker(cfg, path)
    again = wait_paused(cfg, REVIEW_FORM, timeout=60)
    assert again.id == paused.id

    fields = forms.trace_ids_from_schema(again.schema)
    known = truth(cfg)
    resume(cfg, again.id, {"reviewer": "tester", **{f: known[t] for f, t in fields.items()}})
    with api(cfg):
        done = runs.wait(again.id, RUN_TIMEOUT_S)
    assert done.state.is_completed(), done.state.message
    history = _history(cfg, again.id)
    assert history.count("Suspended") == 1 and history[-1] == "Completed"
    # labels stored once; the resumed run took its own batch back instead of leasing another
    ann = store.annotations()
    assert len(ann) == 30 and ann["trace_id"].is_unique and set(ann["reviewer"]) == {"tester"}
    assert len(store.batches()) == 1 and store.counts()["resolved"] == 30


def test_promotion_kill_points_against_the_mlflow_server(deployed):
    """kill -9 between the registry writes of a promotion, through the MLflow server (on PostgreSQL), at each of
    the three points: `@champion` is the old champion or the approved challenger, the decision is pending; the
    re-run in a fresh process (the recovery a model load does, or the approval promoted again) ends with champion
    v2 carrying its approval, previous v1, no challenger, nothing pending."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.learning import promotion

    cfg = deployed[0]
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


def test_a_killed_flow_run_process_is_run_again_then_left_crashed_with_its_reason(deployed):
    """kill -9 of a deployed `register-dataset` run's process (not the worker), between the parquet and the seal:
    the worker marks the run Crashed with the exit status, the flow's hook schedules it again, and the second
    attempt registers version 1 whole. A run killed again at its retry (crash_retries: 1) stays Crashed, its
    message saying it was not run again, why, and where to retry it; it leaves no version."""
    import mlflow

    from hitl.datasets import versions

    cfg, _ = deployed
    store = _labelled(cfg)
    run_id = start_with_fault(cfg, "register-dataset", "dataset:after-artifact")
    first = stopped_process(cfg, run_id)
    os.kill(first, signal.SIGKILL)
    second = stopped_process(cfg, run_id, other_than=first)  # the retry reached the same point
    os.kill(second, signal.SIGCONT)
    with api(cfg):
        done = runs.wait(run_id, 300)
    assert done.state.is_completed(), done.state.message
    states = _state_objs(cfg, run_id)
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
    run_id = start_with_fault(cfg, "register-dataset", "dataset:after-artifact")
    first = stopped_process(cfg, run_id)
    os.kill(first, signal.SIGKILL)
    os.kill(stopped_process(cfg, run_id, other_than=first), signal.SIGKILL)
    deadline = time.monotonic() + 120
    final = _state_objs(cfg, run_id)[-1]
    while "Not run again" not in (final.message or "") and time.monotonic() < deadline:
        time.sleep(1)
        final = _state_objs(cfg, run_id)[-1]
    assert final.is_crashed() and "crash_retries = 1" in final.message, final.message
    assert cfg.flow_run_url(run_id) in final.message and "-9" in final.message
    assert [s.name for s in _state_objs(cfg, run_id)].count("AwaitingRetry") == 1
    assert versions.list_versions(cfg) == [v1]


def test_fine_tune_completion_starts_the_eval_which_waits_for_approval(deployed):
    cfg, path = deployed
    if ReviewStore(cfg.store_url).counts()["resolved"] == 0:  # run on its own (-k); in CI the review test runs first
        if os.environ.get("CI"):
            pytest.fail("no resolved labels: the suspended-review test before this one left none")
        pytest.skip("needs the labels of the suspended-review test")
    _run(cfg, path, "register-dataset")
    hitl(path, "retrain", "--wait", timeout=RUN_TIMEOUT_S)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    client = mlflow.MlflowClient()
    latest = versions.list_versions(cfg)[-1]  # 2: the crash-retry test registered 1 and made a correction
    chall = client.get_model_version_by_alias("e2e-intent", "challenger")  # linked to the dataset it learned
    assert chall.version == "2" and chall.tags["hitl.dataset"] == latest.ref
    assert chall.tags["hitl.leakage_check"].startswith("passed")
    params = client.get_run(chall.run_id).data.params  # the base model afresh, to replace champion 1
    assert (params["training.start"], params["parent_model_version"]) == ("base", "1")
    with api(cfg):
        tuned = runs.flow_runs(["fine-tune/fine-tune"], states=("COMPLETED",))
        assert len(tuned) == 1
        chained = runs.flow_runs(["regression-eval/regression-eval"], tag=deploy.started_by(tuned[0].id))
    assert len(chained) == 1 and chained[0].state_type == "PAUSED"
    approval = wait_paused(cfg, APPROVAL_FORM, timeout=60)
    assert approval.id == chained[0].id
    assert "of traffic wrong instead of" in approval.description and "By channel" in approval.description
    hitl(path, "approve", "--approver", "e2e-manager", "--reason", "the deployed chain works end to end")
    with api(cfg):
        done = runs.wait(approval.id, RUN_TIMEOUT_S)
    assert done.state.is_completed(), done.state.message
    history = _history(cfg, approval.id)
    assert "Suspended" in history
    # approving moved @champion; the old one is @previous
    assert client.get_model_version_by_alias("e2e-intent", "champion").version == "2"
    assert client.get_model_version_by_alias("e2e-intent", "previous").version == "1"
    # the resumed run read its evaluation back: one regression-eval MLflow run for this eval, not two
    evals = mlflow.search_runs(experiment_names=[cfg.eval_experiment])
    assert len(evals) == 1
    # the report: approval, cohorts, lineage, the baseline; its estimate counts the dataset's random draw; the
    # first screen's sentence and gate are the same in the Markdown and in MLflow
    report = (cfg.reports_dir / "latest.md").read_text()
    assert "approved by e2e-manager" in report and "| voice |" in report
    assert f"- dataset: {latest.ref}" in report and re.search(r"- reviewers: .*tester", report)
    assert "- leakage guard: passed" in report and "Strongest simple baseline" in report
    records, _ = versions.load(cfg)
    eval_run = evals.iloc[0]["run_id"]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=eval_run,
                                                            artifact_path="report/production_estimates.csv"))
    overall = table[table["cohort"] == "overall"].iloc[0]
    assert overall["n"] == (records["selection_reason"] == "random").sum() > 0
    first_screen = mlflow.artifacts.load_dict(f"runs:/{eval_run}/report/summary.json")
    assert f"**{first_screen['sentence']}**" in report and first_screen["gate"] in report
    out = hitl(path, "status").stdout
    assert "champion" in out and "previous" in out
    # every stage ran on the worker from its deployment
    with api(cfg):
        completed = {r.deployment for r in runs.flow_runs(states=("COMPLETED",))}
    assert {"bootstrap/bootstrap", "sample-traces/sample-traces", "review-dispatch/review-dispatch",
            "review-batch/review-batch", "register-dataset/register-dataset", "fine-tune/fine-tune",
            "regression-eval/regression-eval"} <= completed


def test_a_run_a_dead_worker_claimed_seconds_before_is_released_once_old_enough(deployed):
    """The worker is killed seconds after claiming a run (Pending): the next worker's start waits until that
    claim is old enough to be no live worker's, then puts it back to Scheduled, so it does not hold the
    pool's one slot for good (seen when an hourly dispatch fired just before a kill)."""
    from uuid import UUID

    from prefect import get_client
    from prefect.states import Pending

    from hitl.ops import orphans

    cfg, path = deployed
    assert stack.stop_worker(cfg, signal.SIGKILL)
    try:
        with api(cfg), get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("review-dispatch/review-dispatch")
            run = client.create_flow_run_from_deployment(dep.id)
            client.set_flow_run_state(run.id, Pending(), force=True)
            started = time.monotonic()
            released = orphans.release_pool_runs(cfg.deployments.pool, min_age_s=5)
            waited = time.monotonic() - started
            assert f"{run.name}: back to Scheduled" in released and waited >= 4
            assert client.read_flow_run(UUID(str(run.id))).state.is_scheduled()
            client.delete_flow_run(run.id)
    finally:
        stack.start_worker(cfg)


def test_a_crash_no_hook_decided_on_is_run_again_once_then_left_crashed(deployed):
    """A run whose process gave up while the Prefect server was away is reported Crashed by the worker's fallback,
    which runs no hooks (Prefect 3.9): the sweep of review-dispatch and worker starts schedules it again, once
    across two concurrent sweeps, and leaves a crash with its retries spent (or decided by the hook) alone. A run
    that Failed because a server stopped answering is scheduled again the same way; one that failed for its own
    reasons is not."""
    from uuid import UUID

    from prefect import get_client
    from prefect.states import AwaitingRetry, Crashed, Failed

    from hitl.ops import orphans

    cfg, _ = deployed
    lost = "Flow run infrastructure exited with non-zero status code 1."
    unreachable = "Flow run encountered an exception: ConnectError: [Errno 111] Connection refused"
    assert stack.stop_worker(cfg, signal.SIGKILL)  # nothing picks the rescheduled runs up: they are deleted below
    try:
        with api(cfg), get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("review-dispatch/review-dispatch")
            fresh, spent, decided, cut_off, refused = (client.create_flow_run_from_deployment(dep.id)
                                                       for _ in range(5))
            client.set_flow_run_state(spent.id, AwaitingRetry(message=f"{orphans.CRASH_RETRY} (1 of 1): {lost}"),
                                      force=True)
            for run in (fresh, spent):
                client.set_flow_run_state(run.id, Crashed(message=lost), force=True)
            client.set_flow_run_state(decided.id, Crashed(message=f"{lost} {orphans.NOT_RUN_AGAIN}: ..."), force=True)
            client.set_flow_run_state(cut_off.id, Failed(message=unreachable), force=True)
            client.set_flow_run_state(refused.id, Failed(
                message="Flow run encountered an exception: ValueError: no annotations yet"), force=True)
            names = {fresh.name, spent.name, decided.name, cut_off.name, refused.name}

            def sweep(min_age_s: float = 0) -> list[str]:  # its lines on this test's runs
                with api(cfg):  # in a thread too: the API URL is a context setting
                    return sorted(line for line in orphans.retry_lost_crashes(cfg, min_age_s=min_age_s)
                                  if line.split(":")[0] in names)

            assert sweep(orphans.LOST_AFTER_S) == []  # too young: a hook may still act
            with ThreadPoolExecutor(2) as pool:
                lines = sum(pool.map(lambda _: sweep(), range(2)), [])
            said = {line.split(":")[0]: line for line in lines}
            assert len(lines) == 3 and sorted(said) == sorted([fresh.name, spent.name, cut_off.name]), lines
            assert said[fresh.name].startswith(f"{fresh.name}: run again"), lines  # once each
            assert said[spent.name].startswith(f"{spent.name}: left Crashed"), lines
            assert "crash_retries = 1" in said[spent.name], lines
            assert said[cut_off.name].startswith(f"{cut_off.name}: run again, as a server stopped answering"), lines
            state = client.read_flow_run(UUID(str(fresh.id))).state
            assert state.name == "AwaitingRetry" and state.message == f"{orphans.CRASH_RETRY} (1 of 1): {lost}"
            state = client.read_flow_run(UUID(str(cut_off.id))).state
            assert state.name == "AwaitingRetry" and state.message == f"{orphans.LOST_RETRY} (1 of 1): {unreachable}"
            assert [s.name for s in client.read_flow_run_states(spent.id)].count("Crashed") == 1
            assert client.read_flow_run(UUID(str(decided.id))).state.is_crashed()
            assert client.read_flow_run(UUID(str(refused.id))).state.is_failed()
            assert sweep() == []  # each run decided once
            for run in (fresh, spent, decided, cut_off, refused):
                client.delete_flow_run(run.id)
    finally:
        stack.start_worker(cfg)


def test_postgres_backup_and_restore_drill(deployed):
    """Back up the running stack (three pg_dump archives, each with its SHA-256), refuse a restore over it, stop
    it and lose every database; restore into a fresh clone's state dir and start it: queue, labels, dataset
    versions and aliases are as they were; sampling finds nothing new, and a correction goes into the next
    dataset version, whose parent is the latest restored one."""

    from hitl.datasets import versions

    cfg, path = deployed
    clone = path.parent / "clone" / "e2e.yaml"  # the fixture stops its stack too
    if not cfg.stack.database_url:
        pytest.skip("the PostgreSQL drill needs PostgreSQL (tests/e2e/test_faults_e2e.py drills SQLite files)")
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

    before = snapshot(cfg)
    assert before["counts"]["resolved"] == 30 and before["versions"]
    hitl(path, "down")
    postgres_or_none(PROJECT)  # the disaster: the server lost every database of the project

    clone_config(path, clone)
    out = hitl(clone, "restore", str(archive)).stdout
    assert f"PostgreSQL: {PROJECT}_prefect, {PROJECT}_mlflow, {PROJECT}_review" in out
    check_restored(clone, before)
