"""The review store's database: one declarative base for the tables of the stages that keep their state there
(review, sampling), and the engine with the transaction discipline every writer relies on.

SQLite by default (WAL, BEGIN IMMEDIATE), any SQLAlchemy URL (e.g. PostgreSQL, one transaction at a time by an
advisory lock) by config.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def open_engine(url: str) -> Engine:
    """An engine on `url` whose transactions serialize across threads and processes."""
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    engine = create_engine(url, connect_args=connect_args)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    elif url.startswith("postgresql"):
        event.listen(engine, "begin", _postgres_serialize)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN itself (below)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn) -> None:
    """Take SQLite's write lock at the start of every transaction, so read-then-write sequences
    (leasing a batch, submitting one) are serialized across threads and processes."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_serialize(conn) -> None:
    """PostgreSQL's counterpart of BEGIN IMMEDIATE: one store transaction at a time across processes (a
    transaction-scoped advisory lock), so two runs never lease the same items."""
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727271)")
