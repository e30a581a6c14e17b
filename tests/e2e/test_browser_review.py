"""A reviewer resolves a paused review batch in the Prefect UI, in headless Chromium, as a person would:
open the run page, Resume, pick a label per item, name, submit. The labels land in the review store. An
adjudicator settles a dispute the same way. Issue 25's check: on a large label set (BANKING77's 77), an item whose
answer is among the champion's suggestions takes at most 3 interactions (clicks and keystrokes, counted by the
scripted reviewer of `python -m bench --review-form`); a blind item shows none.

One stack for the module, on BANKING77's labels. Each test enqueues its own items; the adjudication test runs
last: an adjudicated item becomes a gold item, which a later batch would show."""

from __future__ import annotations

import pytest
import yaml
from e2e_helpers import REPO, api, finish, running_stack, start, wait_completed, wait_paused
from helpers_domain import COHORTS

from bench.review_form import Pick, ScriptedReviewer, browser, items
from hitl.review.forms import NONE_FITS, SUGGESTION, alphabetical, trace_ids_from_schema
from hitl.review.store import ReviewStore
from hitl.vocabulary import RANDOM

pytestmark = pytest.mark.e2e
LABELS = yaml.safe_load((REPO / "configs" / "banking77.yaml").read_text())["labels"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    yield from running_stack(
        tmp_path_factory.mktemp("browser"), project="browser", labels=LABELS,
        model={"registered_name": "browser-intent", "max_length": 32},
        review={"batch_size": 4, "overlap_share": 0.0, "blind_share": 0.0, "poll_interval_s": 1, "timeout_s": 600},
    )


def _resume_in_ui(driver, cfg, run, labels: dict[str, str], name_title: str, name: str, shot) -> dict[str, Pick]:
    """Open the paused run's page, Resume, pick `labels[field]` per item, sign as `name`, submit (again after
    an error toast, as a person would: ScriptedReviewer.sign_and_submit); the picks by field."""
    reviewer = ScriptedReviewer(driver, list(cfg.labels))
    reviewer.open(cfg.prefect_ui_url, run.id)
    picks = reviewer.label(labels)
    driver.save_screenshot(str(shot))
    refused = reviewer.sign_and_submit(name_title, name)
    if refused:
        print(f"Resume clicked {len(refused) + 1} times; the UI said: {refused}")
    return picks


def test_reviewer_resumes_a_suspended_batch_in_the_prefect_ui(ui, tmp_path):
    """The review run comes from its deployment on the worker and is suspended (no process) when the reviewer
    resumes it in the UI; the worker then runs it to the end.

    The batch's items are enqueued directly: sampling into the queue runs end to end in test_e2e_loop.py (the
    commands) and test_deployed.py (the worker); this test is about the suspended run and the UI."""
    from helpers_domain import review_items

    from hitl.ops import deploy, runs

    cfg, path = ui
    queued = review_items(2, prefix="ui-")
    ReviewStore(cfg.store_url).enqueue(queued, COHORTS)
    known = {t: cfg.labels[i + 1] for i, t in enumerate(queued["trace_id"])}  # not the items' prediction
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
    assert len(ann) == len(fields) == 2 and set(ann["reviewer"]) == {"ui-reviewer"}  # the module's first labels
    assert all(ann.loc[t, "label"] == known[t] for t in fields.values())


def test_an_answer_among_the_suggestions_takes_at_most_three_interactions(ui, tmp_path):
    """Three policy items (answer 1st, 2nd and 3rd suggestion) and one random-draw item (blind) in one batch,
    labelled in the UI; the labels land in the store."""
    from hitl.ops import deploy

    cfg, path = ui
    batch, ranks = items(4, LABELS, prefix="s-")
    batch.loc[3, "selection_reason"] = RANDOM  # the random draw: blind, whatever its stored suggestions
    answers = dict(zip(batch["trace_id"], batch["answer"], strict=True))
    ReviewStore(cfg.store_url).enqueue(batch.drop(columns="answer").assign(locale="en-US"), COHORTS)
    with api(cfg):
        started = deploy.trigger(cfg, path, "review-batch")
    run = wait_paused(cfg, "ReviewForm")
    assert run.id == str(started.id)
    fields = trace_ids_from_schema(run.schema)
    driver = browser()
    try:
        picked = _resume_in_ui(driver, cfg, run, {f: answers[t] for f, t in fields.items()}, "Reviewer",
                               "ui-reviewer", tmp_path / "suggestions-filled.png")
        picks = {fields[f]: p for f, p in picked.items()}
        wait_completed(cfg, run.id)
    finally:
        driver.save_screenshot(str(tmp_path / "suggestions.png"))
        driver.quit()
    suggested = [t for t in fields.values() if t != str(batch.loc[3, "trace_id"])]
    assert sorted(ranks[t] for t in suggested) == [1, 2, 3]
    for t in suggested:  # the answer was a suggestion, picked as one, in at most 3 interactions
        p = picks[t]
        assert SUGGESTION.fullmatch(p.offered[ranks[t] - 1]) and p.offered[5] == NONE_FITS, p.offered[:7]
        assert SUGGESTION.fullmatch(p.choice), p
        assert p.interactions <= 3, p
    blind_id = str(batch.loc[3, "trace_id"])
    blind = picks[blind_id]  # one A-Z list, no suggestion, NONE_FITS last
    assert blind.offered == [*alphabetical(LABELS), NONE_FITS] and blind.choice == answers[blind_id]
    got = ReviewStore(cfg.store_url).annotations().set_index("trace_id")["label"]
    assert {t: got[t] for t in fields.values()} == answers
    print({t: (ranks[t], p.clicks, p.keys, f"{p.seconds:.1f} s") for t, p in picks.items()})


def test_adjudicator_settles_a_dispute_in_the_prefect_ui(ui, tmp_path):
    """Two reviewers disagreed; the adjudicator decides in the Prefect UI form and that label holds."""
    from helpers_domain import review_items

    cfg, path = ui
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
