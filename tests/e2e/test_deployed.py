"""Production mode on real parts: `hitl up`'s deployments and worker, review runs that suspend (and hold no
worker), a worker and server restart while a review is suspended, and the fine-tune -> regression-eval chain.

The work pool's concurrency is 1 here: while the review waits, the one slot must stay free for other runs.
"""

from __future__ import annotations

import signal
import time

import mlflow
import pandas as pd
import pytest
from e2e_helpers import (
    api,
    deploy_and_start_worker,
    free_port,
    hitl,
    postgres_or_none,
    resume,
    running_stack,
    truth,
    wait_paused,
)

from hitl.datasets import versions
from hitl.ops import deploy, runs, stack
from hitl.review import forms
from hitl.review.prefect_api import APPROVAL_FORM, REVIEW_FORM
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The stack on PostgreSQL (Prefect server, MLflow server and review store); on SQLite files where no
    PostgreSQL answers outside CI. The other e2e modules run production mode on SQLite: test_e2e_loop (the
    fine-tune -> regression-eval chain on the worker), test_browser_review (a review run suspended on the
    worker, resumed), test_faults_e2e (servers killed and restarted with runs in flight)."""
    stack_cfg = {"prefect_port": free_port(), "mlflow_port": free_port(), "worker_port": free_port()}
    database_url = postgres_or_none("deployed")
    if database_url:
        stack_cfg["database_url"] = database_url
    yield from running_stack(tmp_path_factory.mktemp("deployed"), project="deployed", stack=stack_cfg,
                             deployments={"pool_concurrency": 1, "worker_poll_s": 1})


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


def test_up_deploys_every_flow_with_its_schedule(deployed):
    cfg, path = deployed
    if cfg.stack.database_url:  # every server and the store really are on PostgreSQL
        assert cfg.store_url.startswith("postgresql") and not list(cfg.state.rglob("*.db"))
    with api(cfg):
        found = {d.name: d for d in runs.deployments()}
    wanted = {s.full_name for s in deploy.specs(cfg, path)}
    assert wanted <= set(found)
    assert found["fine-tune/fine-tune"].schedule.startswith("0 3 1 1,4,7,10 *")
    assert found["sample-traces/sample-traces"].schedule.startswith("0 2 * * *")
    assert found["review-dispatch/review-dispatch"].schedule.startswith("0 * * * *")
    assert found["regression-eval/regression-eval"].schedule == "on demand"
    deadline = time.monotonic() + 180  # the server's scheduler queues runs on its own loop (60 s)
    while not found["fine-tune/fine-tune"].next_run and time.monotonic() < deadline:
        time.sleep(5)
        with api(cfg):
            found = {d.name: d for d in runs.deployments()}
    assert found["fine-tune/fine-tune"].next_run  # the next quarterly run is queued
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


def test_fine_tune_completion_starts_the_eval_which_waits_for_approval(deployed):
    cfg, path = deployed
    if ReviewStore(cfg.store_url).counts()["resolved"] == 0:
        pytest.skip("needs the labels of the suspended-review test")
    _run(cfg, path, "register-dataset")
    hitl(path, "retrain", "--wait", timeout=RUN_TIMEOUT_S)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    client = mlflow.MlflowClient()
    chall = client.get_model_version_by_alias("e2e-intent", "challenger")  # linked to the dataset it learned
    assert chall.version == "2" and chall.tags["hitl.dataset"] == "e2e-dataset@1"
    assert chall.tags["hitl.leakage_check"].startswith("passed")
    with api(cfg):
        tuned = runs.flow_runs(["fine-tune/fine-tune"], states=("COMPLETED",))
        assert len(tuned) == 1
        chained = runs.flow_runs(["regression-eval/regression-eval"], tag=deploy.started_by(tuned[0].id))
    assert len(chained) == 1 and chained[0].state_type == "PAUSED"
    approval = wait_paused(cfg, APPROVAL_FORM, timeout=60)
    assert approval.id == chained[0].id
    assert "of traffic wrong instead of" in approval.description and "By channel" in approval.description
    hitl(path, "approve", "--approver", "e2e-manager", "--reason", "chain works")
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
    assert "- dataset: e2e-dataset@1" in report and "- reviewers: tester" in report
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
