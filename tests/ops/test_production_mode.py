"""Production mode without servers: what `hitl up` deploys, the daily window, the idempotent lease a resumed
review relies on, the dispatch's demand, what `hitl status` says a run waits for, the PostgreSQL URLs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from helpers_domain import COHORTS, LABELS, review_items

from hitl.config import Config, DeploymentsConfig, StackConfig
from hitl.ops import deploy, stack
from hitl.ops.runs import RunView
from hitl.review.store import ReviewStore
from hitl.sampling.windows import previous_day


def _cfg(tmp_path, **kw) -> Config:
    return Config(labels=["a", "b"], state_dir=str(tmp_path), **kw)


def test_every_deployment_of_prefect_yaml_gets_the_configs_path_and_schedules(tmp_path):
    cfg = _cfg(tmp_path)
    found = {s.name: s for s in deploy.specs(cfg, tmp_path / "c.yaml")}
    assert set(found) >= {"sample-traces", "review-dispatch", "review-batch", "adjudicate", "register-dataset",
                          "fine-tune", "regression-eval"}
    assert found["fine-tune"].cron == "0 3 1 1,4,7,10 *" and found["regression-eval"].cron is None
    assert found["sample-traces"].parameters == {"window": "previous_day", "config_path": str(tmp_path / "c.yaml")}
    assert found["review-batch"].full_name == "review-batch/review-batch"
    for s in found.values():  # each entrypoint names a real flow function
        path, func = s.entrypoint.split(":")
        assert f"def {func}(" in (deploy.REPO / path).read_text()


def test_a_schedule_for_an_unknown_deployment_is_refused(tmp_path):
    cfg = _cfg(tmp_path, deployments=DeploymentsConfig(schedules={"fine-tnue": "0 3 * * *"}))
    with pytest.raises(deploy.DeployError, match="schedules names.*fine-tnue"):
        deploy.specs(cfg, tmp_path / "c.yaml")


def test_the_config_overrides_a_deployments_parameters(tmp_path):
    cfg = _cfg(tmp_path, deployments=DeploymentsConfig(parameters={"sample-traces": {"window": "all"}}))
    found = {s.name: s for s in deploy.specs(cfg, tmp_path / "c.yaml")}
    assert found["sample-traces"].parameters == {"window": "all", "config_path": str(tmp_path / "c.yaml")}
    assert found["fine-tune"].parameters == {"config_path": str(tmp_path / "c.yaml")}
    typo = _cfg(tmp_path, deployments=DeploymentsConfig(parameters={"sample-trace": {"window": "all"}}))
    with pytest.raises(deploy.DeployError, match="parameters names.*sample-trace"):
        deploy.specs(typo, tmp_path / "c.yaml")


@pytest.mark.parametrize("at, day", [
    (datetime(2026, 3, 2, 2, 0, tzinfo=UTC), "2026-03-01"),
    (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), "2026-03-01"),
    (datetime(2026, 1, 1, 23, 59), "2025-12-31"),  # naive = UTC; across a year
])
def test_the_daily_run_takes_the_previous_utc_day(at, day):
    since, until = previous_day(at)
    assert since.strftime("%Y-%m-%d") == day and (until - since).days == 1 and until.hour == 0
    assert since.tzinfo is not None


def test_a_run_gets_its_own_batch_back_and_leases_nothing_new(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path}/r.db")
    store.enqueue(review_items(10), COHORTS)
    first = store.take_batch(4, flow_run_id="run-1")
    again = store.take_batch(4, flow_run_id="run-1")
    assert not first.resumed and again.resumed
    assert again.id == first.id and [i["trace_id"] for i in again.items] == [i["trace_id"] for i in first.items]
    other = store.take_batch(4, flow_run_id="run-2")
    assert other.id != first.id and not {i["trace_id"] for i in other.items} & {i["trace_id"] for i in first.items}
    store.submit(first.id, "alice", {i["trace_id"]: (LABELS[0], None) for i in first.items}, LABELS)
    after = store.take_batch(4, flow_run_id="run-1")  # a re-run after the submission: still its own batch
    assert after.id == first.id and after.status == "submitted"
    assert len(store.batches()) == 2


def test_batches_wanted_counts_unleased_annotations(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path}/r.db")
    assert store.batches_wanted(4) == 0
    store.enqueue(review_items(6, required=[2, 2, 1, 1, 1, 1]), COHORTS)
    assert store.batches_wanted(4) == 2  # 8 annotations in batches of 4
    store.take_batch(4)
    assert store.batches_wanted(4) == 1
    store.enqueue(review_items(1, prefix="x", required=2), COHORTS)
    assert store.batches_wanted(10) == 2  # an item needing two labels needs two batches


@pytest.mark.parametrize("state_type, name, words", [
    ("PAUSED", "Suspended", "no worker held"),
    ("SCHEDULED", "Late", "worker slot"),
    ("RUNNING", "Running", ""),
])
def test_what_an_open_run_waits_for(state_type, name, words):
    run = RunView("id", "run", "review-batch/review-batch", state_type, name, None)
    assert (words in run.waiting_for) if words else run.waiting_for == ""


def test_postgres_urls_per_role_and_refusals(tmp_path):
    cfg = _cfg(tmp_path, project="My-Team", stack=StackConfig(database_url="postgresql://u:pw@db:5433"))
    assert cfg.prefect_database_url == "postgresql+asyncpg://u:pw@db:5433/my_team_prefect"
    assert cfg.mlflow_backend_url == "postgresql+psycopg2://u:pw@db:5433/my_team_mlflow"
    assert cfg.store_url == "postgresql+psycopg2://u:pw@db:5433/my_team_review"
    sqlite = _cfg(tmp_path)
    assert sqlite.store_url.startswith("sqlite:///") and sqlite.prefect_database_url.startswith("sqlite+aiosqlite")
    with pytest.raises(ValueError, match="postgresql://"):
        StackConfig(database_url="mysql://u:pw@db/x")
    from hitl.ops.databases import safe

    assert "pw" not in safe(cfg.store_url) and "***" in safe(cfg.store_url)


def test_mlflow_backend_url_travels_in_the_environment_not_argv(tmp_path):
    cfg = _cfg(tmp_path, stack=StackConfig(database_url="postgresql://u:secret-pw@db:5433"))
    mlflow_spec = next(s for s in stack._specs(cfg) if s.name == "mlflow")
    assert not any("secret-pw" in a for a in mlflow_spec.argv)
    assert "secret-pw" in mlflow_spec.env["MLFLOW_BACKEND_STORE_URI"]


def test_stop_worker_when_none_runs(tmp_path):
    assert stack.stop_worker(_cfg(tmp_path)) is False
