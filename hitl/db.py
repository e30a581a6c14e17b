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


def utc(t: datetime) -> datetime:
    """`t` in UTC; a naive time is taken as UTC (SQLite hands stored times back naive)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


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


def add_nullable_columns(engine: Engine) -> list[str]:
    """Add to the existing tables the nullable columns `Base` has gained since they were created (ALTER TABLE ...
    ADD COLUMN, in one transaction), so a store keeps working across such a change; rows stored before read NULL.
    Returns the "table.column" names added. A missing column that is not nullable cannot be added this way:
    ValueError, nothing added."""
    from sqlalchemy import inspect

    with engine.begin() as conn:
        insp = inspect(conn)
        have = {name: {c["name"] for c in insp.get_columns(name)} for name in insp.get_table_names()}
        missing = [(t, c) for t in Base.metadata.sorted_tables if t.name in have
                   for c in t.columns if c.name not in have[t.name]]
        required = [f"{t.name}.{c.name}" for t, c in missing if not c.nullable]
        if required:
            raise ValueError(f"columns {required} are missing and not nullable")
        quote = conn.dialect.identifier_preparer.quote
        for t, c in missing:
            conn.exec_driver_sql(f"ALTER TABLE {quote(t.name)} ADD COLUMN {quote(c.name)} "
                                 f"{c.type.compile(conn.dialect)}")
    return [f"{t.name}.{c.name}" for t, c in missing]


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
