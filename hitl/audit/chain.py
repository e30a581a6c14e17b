"""The audit chain itself: entries, how they are hashed and anchored with the key, the log that appends them
in the review store's database, the check of one entry's place in the chain, and export.

What each kind of entry refers to, and how `verify` checks it against the live objects, is `evidence`.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Integer, String, Text, UniqueConstraint, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from hitl.hashing import file_sha256 as sha256_file  # one file digest for the chain, backups and watermarks

if TYPE_CHECKING:
    from hitl.review.store import ReviewStore

GENESIS = "0" * 64
KINDS = ("review", "adjudication", "correction", "dataset", "model", "gate", "report", "decision", "rollback",
         "erasure", "prune")
FIELDS = ["seq", "at", "kind", "actor", "subject", "ref", "payload_sha256", "prev_sha256", "entry_sha256", "anchor"]


class AuditError(RuntimeError):
    """The audit chain cannot be read or written (no key, unreadable export); nothing was changed."""


class _AuditBase(DeclarativeBase):
    pass


class AuditRow(_AuditBase):
    __tablename__ = "audit_entries"
    __table_args__ = (UniqueConstraint("kind", "subject", "payload_sha256"),)  # the same record twice: one entry
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601, UTC
    kind: Mapped[str] = mapped_column(String(20), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(400), index=True)
    ref: Mapped[str] = mapped_column(Text)  # canonical JSON: ids of what the entry refers to
    payload_sha256: Mapped[str] = mapped_column(String(64))
    prev_sha256: Mapped[str] = mapped_column(String(64))
    entry_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    anchor: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256(key, entry_sha256)


@dataclass(frozen=True)
class Entry:
    seq: int
    at: str
    kind: str
    actor: str
    subject: str
    ref: dict
    payload_sha256: str
    prev_sha256: str
    entry_sha256: str
    anchor: str

    def body(self) -> dict:
        """The fields `entry_sha256` covers (everything but the hash and its anchor)."""
        return {"seq": self.seq, "at": self.at, "kind": self.kind, "actor": self.actor, "subject": self.subject,
                "ref": self.ref, "payload_sha256": self.payload_sha256, "prev_sha256": self.prev_sha256}

    @property
    def short(self) -> str:
        return f"#{self.seq} (sha256 {self.entry_sha256[:12]})"

    def record(self) -> dict:
        return {**self.body(), "entry_sha256": self.entry_sha256, "anchor": self.anchor}


# ---- hashing ----
def canonical(obj: object) -> bytes:
    """Canonical JSON (sorted keys, no spaces, UTF-8): the bytes every hash here is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o)).encode("utf-8")


def sha256_json(obj: object) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def sha256_tree(folder: Path, skip: Iterable[str] = ()) -> str:
    """One hash over every file under `folder`: relative paths and their contents."""
    skip = set(skip)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip)
    return sha256_json({p.relative_to(folder).as_posix(): sha256_file(p) for p in files})


def entry_hash(body: dict) -> str:
    return sha256_json(body)


def sign(key: bytes, entry_sha256: str) -> str:
    return hmac.new(key, entry_sha256.encode(), hashlib.sha256).hexdigest()


# ---- the key and the head, outside the store ----
def load_key(path: Path, create: bool) -> bytes:
    """The HMAC key in `path` (hex); with `create`, a new random one written 0600 when there is none."""
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise AuditError(f"No audit key at {path} ({e.strerror}): the chain's HMAC anchors cannot be checked") from e
    if not text:
        raise AuditError(f"The audit key {path} is empty")
    return bytes.fromhex(text) if all(c in "0123456789abcdefABCDEF" for c in text) else text.encode()


def head_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.stem + ".head")


def read_head(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_head(path: Path, entry: Entry) -> None:
    """Record the head beside the key; never moves it back (appends from other processes may race)."""
    current = read_head(path)
    if current is not None and int(current.get("seq", 0)) >= entry.seq:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-head-")
    with os.fdopen(fd, "w") as f:
        json.dump({"seq": entry.seq, "entry_sha256": entry.entry_sha256, "anchor": entry.anchor}, f)
    os.replace(tmp, path)


# ---- the log ----
def _entry(row: AuditRow) -> Entry:
    try:
        ref = json.loads(row.ref)
    except ValueError:
        ref = {"unreadable": row.ref}
    return Entry(row.seq, row.at, row.kind, row.actor, row.subject, ref, row.payload_sha256, row.prev_sha256,
                 row.entry_sha256, row.anchor)


def _sealed(key: bytes, seq: int, prev: str, kind: str, actor: str, subject: str, ref: dict,
            payload_sha256: str) -> Entry:
    """A new entry after `prev`: stamped now, hashed, and anchored with the key."""
    body = {"seq": seq, "at": datetime.now(UTC).isoformat(timespec="milliseconds"), "kind": kind, "actor": actor,
            "subject": subject, "ref": ref, "payload_sha256": payload_sha256, "prev_sha256": prev}
    digest = entry_hash(body)
    return Entry(**body, entry_sha256=digest, anchor=sign(key, digest))


class AuditLog:
    """The chain on a review store's database. Appends run in the store's transactions (BEGIN IMMEDIATE on
    SQLite; on other databases a clash on `seq` is retried), so concurrent appends serialize."""

    def __init__(self, engine: Engine, key_file: Path):
        self.engine, self.key_file, self.head_file = engine, Path(key_file), head_path(Path(key_file))
        _AuditBase.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def of(cls, store: ReviewStore, key_file: Path) -> AuditLog:
        return cls(store.engine, key_file)

    def key(self, create: bool = False) -> bytes:
        return load_key(self.key_file, create)

    def append(self, kind: str, actor: str, subject: str, ref: dict, payload_sha256: str) -> tuple[Entry, bool]:
        """Append an entry; returns (entry, created). The same (kind, subject, payload) again appends nothing
        and returns the existing entry, so retried tasks and re-run flows record each thing once."""
        if kind not in KINDS:
            raise ValueError(f"Unknown audit entry kind {kind!r}; one of {KINDS}")
        key, ref = self.key(create=True), json.loads(canonical(ref))
        for attempt in range(5):
            try:
                with self._session.begin() as s:
                    same = s.scalar(select(AuditRow).where(AuditRow.kind == kind, AuditRow.subject == subject,
                                                           AuditRow.payload_sha256 == payload_sha256))
                    if same is not None:
                        return _entry(same), False
                    last = s.scalar(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1).with_for_update())
                    entry = _sealed(key, last.seq + 1 if last else 1, last.entry_sha256 if last else GENESIS,
                                    kind, actor, subject, ref, payload_sha256)
                    s.add(AuditRow(**{**entry.record(), "ref": canonical(ref).decode()}))
                break
            except IntegrityError:  # another writer took this seq (databases without SQLite's write lock)
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        _write_head(self.head_file, entry)
        return entry, True

    def entries(self) -> list[Entry]:
        with self._session() as s:
            return [_entry(r) for r in s.scalars(select(AuditRow).order_by(AuditRow.seq))]

    def find(self, kind: str, subject: str) -> Entry | None:
        """The latest entry of `kind` about `subject`."""
        with self._session() as s:
            row = s.scalar(select(AuditRow).where(AuditRow.kind == kind, AuditRow.subject == subject)
                           .order_by(AuditRow.seq.desc()).limit(1))
            return _entry(row) if row is not None else None

    def head(self) -> Entry | None:
        with self._session() as s:
            row = s.scalar(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1))
            return _entry(row) if row is not None else None


def chain_problem(e: Entry, prev: str, expected_seq: int, key: bytes | None) -> str | None:
    """Why entry `e` does not belong where it is in the chain, or None: its own hash, its link, its anchor."""
    if e.seq != expected_seq:
        return f"sequence jumps from #{expected_seq - 1} to #{e.seq}: entries were removed"
    actual = entry_hash(e.body())
    if actual != e.entry_sha256:
        return f"its content does not match its hash (sha256 {actual[:12]} != recorded {e.entry_sha256[:12]}): edited"
    if e.prev_sha256 != prev:
        return f"its previous-entry hash {e.prev_sha256[:12]} is not entry #{e.seq - 1}'s {prev[:12]}"
    if key is not None and not hmac.compare_digest(sign(key, e.entry_sha256), e.anchor):
        return "its HMAC anchor does not match: the chain was rewritten without the audit key"
    return None


# ---- export ----
def export(entries: list[Entry], path: Path, fmt: str) -> int:
    """Write the entries as JSONL (one object a line) or CSV (`ref` as JSON). Returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps(e.record(), ensure_ascii=False, sort_keys=True) + "\n")
    elif fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            for e in entries:
                w.writerow({**e.record(), "ref": canonical(e.ref).decode()})
    else:
        raise ValueError(f"Unknown export format {fmt!r}: jsonl or csv")
    return len(entries)


def read_export(path: Path) -> list[Entry]:
    """Entries from an `export` file (JSONL or CSV, by suffix): check them with `chain_problem`."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".csv":
            rows = [{**r, "seq": int(r["seq"]), "ref": json.loads(r["ref"])} for r in csv.DictReader(text.splitlines())]
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [Entry(**{k: r[k] for k in FIELDS}) for r in rows]
    except (OSError, ValueError, KeyError) as e:
        raise AuditError(f"{path} is not an audit export: {e}") from e
