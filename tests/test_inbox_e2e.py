"""`hitl inbox` on a real stack: a paused review batch is listed with its Prefect UI link, the time left before
its wait times out and the command that answers it, and is gone once a reviewer resumes it."""

from __future__ import annotations

import json

import pytest
from e2e_helpers import finish, hitl, resume, running_stack, start, wait_paused
from helpers_domain import COHORTS, review_items

from hitl.review.forms import trace_ids_from_schema
from hitl.review.prefect_api import REVIEW_FORM
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    yield from running_stack(tmp_path_factory.mktemp("inbox"), project="inbox",
                             review={"batch_size": 2, "overlap_share": 0.0, "poll_interval_s": 1, "timeout_s": 600})


def _inbox(path, *args: str) -> dict:
    return json.loads(hitl(path, "inbox", "--json", *args).stdout)


def test_a_paused_batch_is_in_the_inbox_until_it_is_resumed(small):
    cfg, path = small
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(2, prefix="inbox-"), COHORTS)  # one batch's worth: nothing left for the dispatch
    before = _inbox(path, "--as", "alice")
    assert before["empty"] and before["queued_items"] == 2

    proc = start(path, "review-batch")
    try:
        run = wait_paused(cfg, REVIEW_FORM)
        box = _inbox(path, "--as", "alice")
        assert not box["empty"] and box["queued_items"] == 0
        [waiting] = [w for w in box["waiting"] if w["run_id"] == run.id]
        assert waiting["kind"] == "review" and waiting["items"] == 2
        assert waiting["link"] == cfg.flow_run_url(run.id) == f"{cfg.prefect_ui_url}/runs/flow-run/{run.id}"
        assert waiting["command"] == f"hitl review --run {run.id} --reviewer alice -c {path}"
        assert waiting["expires_at"] and 0 < waiting["seconds_left"] <= cfg.review.timeout_s
        table = hitl(path, "inbox", "--as", "alice").stdout
        assert "Waiting for alice" in table and cfg.flow_run_url(run.id) in table

        fields = trace_ids_from_schema(run.schema)
        resume(cfg, run.id, {"reviewer": "alice", **dict.fromkeys(fields, cfg.labels[0])})
        out = finish(proc)
        assert proc.returncode == 0, out[-3000:]
    finally:
        proc.kill() if proc.poll() is None else None
    after = _inbox(path, "--as", "alice")
    assert run.id not in [w["run_id"] for w in after["waiting"]]
    assert after["empty"] and after["queued_items"] == 0
    assert "Nothing waits for alice now." in hitl(path, "inbox", "--as", "alice").stdout
