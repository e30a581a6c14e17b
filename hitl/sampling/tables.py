"""Sampling's state in the review store's database: the random draws (population and inclusion probability per
stratum), every trace a sampling run considered, and the watermarks of file sources (files and windows read,
quarantined rows counted). `hitl.sampling.state` reads and writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hitl.db import Base
from hitl.db import now as _now


class Draw(Base):
    """One stratum of one random draw: the population it was drawn from and the inclusion probability."""

    __tablename__ = "random_draws"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    window: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # main | supplemental (late traces)
    stratum: Mapped[str] = mapped_column(String(400))
    population: Mapped[int] = mapped_column(Integer)
    drawn: Mapped[int] = mapped_column(Integer)
    rate: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ConsideredTrace(Base):
    """Every trace a sampling run looked at: each trace is considered for review once."""

    __tablename__ = "considered_traces"
    trace_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    considered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SourceFile(Base):
    """A trace file as last read (hitl/sampling/watermarks.py): its content and the span of its timestamps."""

    __tablename__ = "source_files"
    __table_args__ = (UniqueConstraint("source", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500))  # the source folder (or file)
    path: Mapped[str] = mapped_column(String(1000))  # the file, under the source
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)  # entries read: rows, refused lines, or 1 for an unreadable file
    ts_min: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # ns since the epoch (UTC); None: no
    ts_max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # usable timestamp in the file
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SourceWindow(Base):
    """A window [since, until) (ns since the epoch, UTC; None: open) in which every row of one content of a file
    was read and its traces stored as considered: that content is not read again for that window. For an MLflow
    experiment, a window read (and read again until it is closed, hitl/sampling/watermarks.py)."""

    __tablename__ = "source_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500), index=True)
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    since: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)  # MLflow: its latest read
    take_below: Mapped[float | None] = mapped_column(Float, nullable=True)  # MLflow: the window's cap; None: all


class QuarantinedRow(Base):
    """A row refused by validation, recorded (and counted) once however often its file or window is read."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("source", "path", "row_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(String(1000))
    row_key: Mapped[str] = mapped_column(String(200))  # where in the file, and a hash of what it held
    reason: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
