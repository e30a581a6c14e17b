"""The adjudication batch (random-draw items first) and who may adjudicate, on plain lists."""

from __future__ import annotations

import pytest

from hitl.review import adjudication
from hitl.review.store import ReviewError
from hitl.vocabulary import RANDOM


def test_random_draw_items_come_first_then_the_store_order_up_to_a_batch():
    disputed = [{"trace_id": "p1", "selection_reason": "uncertainty"}, {"trace_id": "r1", "selection_reason": RANDOM},
                {"trace_id": "p2", "selection_reason": "disagreement"}, {"trace_id": "r2", "selection_reason": RANDOM}]
    batch = adjudication.next_batch(disputed, 3)
    assert [it["trace_id"] for it in batch] == ["r1", "r2", "p1"]
    assert [it["trace_id"] for it in disputed] == ["p1", "r1", "p2", "r2"]  # the caller's list is left alone
    assert adjudication.next_batch([], 3) == []


def test_only_listed_adjudicators_unless_nobody_is_listed():
    adjudication.check_adjudicator("ana", ["ana", "bo"])
    adjudication.check_adjudicator("anyone", [])
    with pytest.raises(ReviewError, match="not an adjudicator"):
        adjudication.check_adjudicator("eve", ["ana"])
