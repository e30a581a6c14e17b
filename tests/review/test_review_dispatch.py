"""Review dispatch arithmetic: runs to start from the queue's wanted batches, the open runs and the limit."""

from __future__ import annotations

from hitl.review.dispatch import adjudication_to_start, reviews_to_start


def test_open_runs_not_yet_leased_count_against_the_wanted_batches():
    assert reviews_to_start(5, ["SCHEDULED", "PAUSED"], 10) == (4, 4)
    assert reviews_to_start(5, ["PENDING", "SCHEDULED", "RUNNING"], 10) == (3, 3)


def test_never_more_runs_open_than_the_limit():
    assert reviews_to_start(9, ["PAUSED", "PAUSED"], 3) == (1, 9)
    assert reviews_to_start(9, ["PAUSED"] * 4, 3) == (0, 9)


def test_nothing_wanted_starts_nothing_and_reports_zero():
    assert reviews_to_start(0, ["SCHEDULED", "PENDING"], 5) == (0, 0)
    assert reviews_to_start(0, [], 5) == (0, 0)


def test_one_adjudication_at_a_time_and_only_for_disputes():
    assert adjudication_to_start([{"trace_id": "t"}], False)
    assert not adjudication_to_start([{"trace_id": "t"}], True)
    assert not adjudication_to_start([], False)
