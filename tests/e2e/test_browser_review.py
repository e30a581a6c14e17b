"""A reviewer resolves a paused review batch in the Prefect UI, in headless Chromium, as a person would:
open the run page, Resume, pick a label per item, name, submit. The labels land in the review store."""

from __future__ import annotations

import pytest
from e2e_helpers import api, finish, running_stack, start, wait_completed, wait_paused

from bench.review_form import ScriptedReviewer, browser
from hitl.review.forms import trace_ids_from_schema
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    yield from running_stack(
        tmp_path_factory.mktemp("browser"),
        project="browser",
        model={"registered_name": "browser-intent", "max_length": 32},
        review={"batch_size": 2, "overlap_share": 0.0, "poll_interval_s": 1, "timeout_s": 600},
    )


def _resume_in_ui(driver, cfg, run, labels: dict[str, str], name_title: str, name: str, shot) -> None:
    """Open the paused run's page, Resume, pick `labels[field]` per item, sign as `name`, submit (again after
    an error toast, as a person would: ScriptedReviewer.sign_and_submit)."""
    reviewer = ScriptedReviewer(driver, list(cfg.labels))
    reviewer.open(cfg.prefect_ui_url, run.id)
    reviewer.label(labels)
    driver.save_screenshot(str(shot))
    refused = reviewer.sign_and_submit(name_title, name)
    if refused:
        print(f"Resume clicked {len(refused) + 1} times; the UI said: {refused}")


def test_reviewer_resumes_a_suspended_batch_in_the_prefect_ui(small, tmp_path):
    """The review run comes from its deployment on the worker and is suspended (no process) when the reviewer
    resumes it in the UI; the worker then runs it to the end.

    The batch's items are enqueued directly: sampling into the queue runs end to end in test_e2e_loop.py (the
    commands) and test_deployed.py (the worker); this test is about the suspended run and the UI."""
    from helpers_domain import COHORTS, review_items

    from hitl.ops import deploy, runs

    cfg, path = small
    items = review_items(2, prefix="ui-")
    ReviewStore(cfg.store_url).enqueue(items, COHORTS)
    known = {t: cfg.labels[i + 1] for i, t in enumerate(items["trace_id"])}  # not the items' prediction
    driver = browser()
    try:
        with api(cfg):
            started = deploy.trigger(cfg, path, "review-batch")
        run = wait_paused(cfg, "ReviewForm")
        assert run.id == str(started.id)
        with api(cfg):
            assert runs.flow_runs(["review-batch/review-batch"], states=("PAUSED",))[0].state_name == "Suspended"
        fields = trace_ids_from_schema(run.schema)
        _resume_in_ui(driver, cfg, run, {f: known[t] for f, t in fields.items()}, "Reviewer", "ui-reviewer",
                      tmp_path / "filled.png")
        wait_completed(cfg, run.id)
    finally:
        driver.save_screenshot(str(tmp_path / "last.png"))
        driver.quit()
    ann = ReviewStore(cfg.store_url).annotations().set_index("trace_id")
    assert len(ann) == len(fields) == 2 and set(ann["reviewer"]) == {"ui-reviewer"}
    assert all(ann.loc[t, "label"] == known[t] for t in fields.values())


def test_adjudicator_settles_a_dispute_in_the_prefect_ui(small, tmp_path):
    """Two reviewers disagreed; the adjudicator decides in the Prefect UI form and that label holds."""
    from helpers_domain import COHORTS, review_items

    cfg, path = small
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(2, prefix="dispute-", required=2), COHORTS)
    for who, label in (("ann", cfg.labels[0]), ("bob", cfg.labels[1])):
        batch = store.take_batch(2)
        store.submit(batch.id, who, {it["trace_id"]: (label, None) for it in batch.items}, cfg.labels)
    assert len(store.disputed()) == 2
    decided = cfg.labels[2]
    driver = browser()
    proc = start(path, "adjudicate")
    try:
        run = wait_paused(cfg, "AdjudicationForm")
        fields = trace_ids_from_schema(run.schema)
        assert "ann said" in run.fields["item_01"]["description"]  # both earlier labels are shown
        _resume_in_ui(driver, cfg, run, dict.fromkeys(fields, decided), "Adjudicator", "ui-lead",
                      tmp_path / "adjudication-filled.png")
        out = finish(proc)  # 300 s: a loaded 2-core machine (xdist runs two e2e modules at once)
        assert proc.returncode == 0, out[-3000:]
    finally:
        driver.save_screenshot(str(tmp_path / "adjudication.png"))
        driver.quit()
        proc.kill() if proc.poll() is None else None
    res = store.resolutions()
    assert set(res["trace_id"]) == set(fields.values()) and set(res["reviewer"]) == {"ui-lead"}
    assert set(res["label"]) == {decided} and set(res["kind"]) == {"adjudication"}
    assert not store.disputed() and len(store.annotations().query("reviewer in ['ann', 'bob']")) == 4
