"""Claims on the news the reconciliation sends, kept in the review store's database (hitl/ops/notify_reconcile.py).

The reconciliation runs at `hitl up` and at the end of every review-dispatch run, so two can run at once (two
dispatch runs the worker starts together after a restart, or `hitl up` beside one). Before a message goes out,
its (automation, triggering event, block) is claimed in one store transaction (serialised across processes:
hitl/db.py): a claim held by another reconciliation is left to it, one marked sent is never sent again, one whose
holder died before marking it (a run killed mid-send) is taken over once older than `stale_s`, and a block that
failed gives its claims back so that the next reconciliation tries again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hitl.db import Base, now, utc

STALE_S = 300.0  # a claim not marked sent within this long was left by a reconciliation that died


class Claim(Base):
    __tablename__ = "notification_claims"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)  # automation | triggering event | block
    owner: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def key(automation: str, event_id: str, block: str) -> str:
    return f"{automation}|{event_id}|{block}"


class Outbox:
    """The claims of one store database; `owner` names this reconciliation."""

    def __init__(self, url: str, owner: str | None = None):
        from hitl.review.store import ReviewStore

        # the store's own schema check and create_all make this table too (it is on the same Base)
        self.engine = ReviewStore(url).engine
        self.owner = owner or uuid.uuid4().hex

    def claim(self, keys: list[str], stale_s: float = STALE_S) -> list[str]:
        """The keys of `keys` this owner now holds: new ones, and stale unsent ones taken over."""
        held = []
        with Session(self.engine) as s, s.begin():
            t = now()
            found = {c.key: c for c in s.scalars(select(Claim).where(Claim.key.in_(keys)))}
            for k in dict.fromkeys(keys):
                c = found.get(k)
                if c is None:
                    s.add(Claim(key=k, owner=self.owner, claimed_at=t))
                elif c.sent_at is None and (c.owner == self.owner
                                            or utc(c.claimed_at) < t - timedelta(seconds=stale_s)):
                    c.owner, c.claimed_at = self.owner, t
                else:
                    continue
                held.append(k)
        return held

    def sent(self, keys: list[str]) -> None:
        """Mark this owner's claims on `keys` delivered."""
        self._update(keys, sent=True)

    def release(self, keys: list[str]) -> None:
        """Give this owner's unsent claims on `keys` back (the block failed: the next reconciliation tries)."""
        self._update(keys, sent=False)

    def _update(self, keys: list[str], sent: bool) -> None:
        with Session(self.engine) as s, s.begin():
            for c in s.scalars(select(Claim).where(Claim.key.in_(keys), Claim.owner == self.owner,
                                                  Claim.sent_at.is_(None))):
                if sent:
                    c.sent_at = now()
                else:
                    s.delete(c)

    def close(self) -> None:
        self.engine.dispose()
