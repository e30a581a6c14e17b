"""A late submission from the terminal (`hitl review` after the run stopped waiting) goes the same way as the
form's: stored with the gold policy and recorded in the audit chain, so `hitl audit verify` passes and the
entry is there (issue 23). A SQLite store and the audit log; the Prefect server is stood in for by a paused
run that no longer waits."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from helpers_domain import LABELS, review_items
from typer.testing import CliRunner

from hitl.audit import evidence
from hitl.config import load_config
from hitl.review import prefect_api
from hitl.review.store import ReviewStore


@pytest.fixture
def late_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tasks.review import build_form

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"labels": LABELS, "state_dir": str(tmp_path / "state")}))
    cfg = load_config(config)
    cfg.state.mkdir(parents=True)
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(2), cfg.cohorts)
    batch = store.take_batch(2)
    run_id = str(uuid.uuid4())
    store.attach_flow_run(batch.id, run_id)
    run = prefect_api.PausedRun(run_id, "review-batch-x", "review-batch", prefect_api.REVIEW_FORM,
                                build_form(batch, cfg).model_json_schema(), "## Review batch", "2026-01-01T00:00:00")
    store.expire_batch(batch.id)  # the run's wait ended while the reviewer was labelling

    def resume(flow_run_id, values, response_key=""):
        raise prefect_api.NotWaiting(f"Flow run {flow_run_id} timed out before it was resumed.")

    monkeypatch.setattr(prefect_api, "paused_runs", lambda form=None: [run])
    monkeypatch.setattr(prefect_api, "resume", resume)
    monkeypatch.setattr("hitl.cli.reviewer._stack_ready", lambda cfg: None)
    monkeypatch.setattr("hitl.cli.apply_environment", lambda cfg: None)
    return config, cfg, store, batch


def _hitl(config: Path, *args: str, input: str | None = None):
    from hitl.cli import app

    return CliRunner().invoke(app, [*args, "-c", str(config)], input=input)


def test_a_late_terminal_submission_is_in_the_audit_chain(late_batch):
    config, cfg, store, batch = late_batch
    result = _hitl(config, "review", "--reviewer", "alice", input="1\n\n2\n\n")
    assert result.exit_code == 0, result.output
    assert "Late:" in result.output and "Merged 2 of your 2 labels" in result.output
    assert len(store.annotations()) == 2

    entry = evidence.open_log(cfg, store).find("review", f"review batch {batch.id}")
    assert entry is not None and entry.actor == "alice" and entry.ref["annotations"] == 2
    verified = _hitl(config, "audit", "verify", "--offline")
    assert verified.exit_code == 0, verified.output
    assert "Audit chain intact: 1 entries" in verified.output
