"""Stable, seed-free assignment by id: the same trace_id always lands in the same bucket."""

from __future__ import annotations

import hashlib


def stable_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) derived only from `salt` and `key` (sha256), uniform across keys."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
