"""Issue 25's browser check: on a large label set (BANKING77's 77), a reviewer in the Prefect UI's Resume form
labels an item whose answer is among the champion's suggestions in at most 3 interactions (clicks and
keystrokes, counted by the scripted reviewer of `python -m bench --review-form`); a blind item shows none."""

from __future__ import annotations

import pytest
import yaml
from e2e_helpers import REPO, api, running_stack, wait_completed, wait_paused
from helpers_domain import COHORTS

from bench.review_form import ScriptedReviewer, browser, items
from hitl.review.forms import NONE_FITS, SUGGESTION, alphabetical, trace_ids_from_schema
from hitl.review.store import ReviewStore
from hitl.vocabulary import RANDOM

pytestmark = pytest.mark.e2e
LABELS = yaml.safe_load((REPO / "configs" / "banking77.yaml").read_text())["labels"]


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    yield from running_stack(
        tmp_path_factory.mktemp("suggestions"), project="suggestions", labels=LABELS,
        model={"registered_name": "suggestions-intent", "max_length": 32},
        review={"batch_size": 4, "overlap_share": 0.0, "blind_share": 0.0, "poll_interval_s": 1, "timeout_s": 600},
    )


def test_an_answer_among_the_suggestions_takes_at_most_three_interactions(large, tmp_path):
    """Three policy items (answer 1st, 2nd and 3rd suggestion) and one random-draw item (blind) in one batch,
    labelled in the UI; the labels land in the store."""
    from hitl.ops import deploy

    cfg, path = large
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
        reviewer = ScriptedReviewer(driver, LABELS)
        reviewer.open(cfg.prefect_ui_url, run.id)
        picks = {fields[f]: p for f, p in reviewer.label({f: answers[t] for f, t in fields.items()}).items()}
        print("Resume refused first:", reviewer.sign_and_submit("Reviewer", "ui-reviewer"))  # retried, as a person
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

