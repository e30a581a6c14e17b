"""Adjudication: which disputed items an adjudicator sees next, and who may settle them."""

from __future__ import annotations

from hitl.review.store import ReviewError
from hitl.vocabulary import RANDOM


def next_batch(disputed: list[dict], batch_size: int) -> list[dict]:
    """Up to one batch of disputed items, random-draw items first (they are the release verdict); otherwise in
    the store's order."""
    items = sorted(disputed, key=lambda it: it["selection_reason"] != RANDOM)
    return items[:batch_size]


def check_adjudicator(adjudicator: str, adjudicators: list[str]) -> None:
    """Refuse (ReviewError) a name outside `review.adjudicators`; an empty list lets anyone adjudicate."""
    if adjudicators and adjudicator not in adjudicators:
        raise ReviewError(f"{adjudicator!r} is not an adjudicator (review.adjudicators: {adjudicators})")
