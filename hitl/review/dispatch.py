"""Review dispatch: how many review-batch runs to start so the queue drains without too many open at once."""

from __future__ import annotations

from collections.abc import Iterable

NOT_LEASED = ("SCHEDULED", "PENDING")  # state types of review runs that have not leased their batch yet


def reviews_to_start(batches_wanted: int, open_review_states: Iterable[str], open_limit: int) -> tuple[int, int]:
    """(review runs to start, batches still wanted). The queue's wanted batches, less the open runs that will
    still lease one; never more runs open than `open_limit` (`deployments.open_reviews`)."""
    states = list(open_review_states)
    wanted = batches_wanted - sum(s in NOT_LEASED for s in states)
    room = open_limit - len(states)
    return max(0, min(wanted, room)), max(wanted, 0)


def adjudication_to_start(any_disputed: bool, adjudication_open: bool) -> bool:
    """One adjudication run at a time, and only when items are disputed."""
    return bool(any_disputed) and not adjudication_open
