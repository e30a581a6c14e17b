"""Stable, seed-free keys: the same trace_id always lands in the same bucket, and texts that differ only in
case, punctuation or spacing share one group."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def stable_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) derived only from `salt` and `key` (sha256), uniform across keys."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normalize_text(text: str) -> str:
    """Lower-case, Unicode-normalised (NFKC), punctuation dropped, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", t)).strip()


def text_group(text: str) -> str:
    """The group of every text with the same normalised form (16 hex digits of its sha256)."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), streamed: dataset versions, the backup manifests, the audit chain and
    the watermarks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
