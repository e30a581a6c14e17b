"""Writing the simulated world's files: one atomic write (a temporary file beside the target, then os.replace,
so a reader never sees half a file) for JSON lines, CSV, Parquet and JSON alike, and timestamps as the traces
carry them (ISO-8601 UTC with milliseconds and a 'Z')."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def to_utc(start: datetime) -> pd.Timestamp:
    """`start` as a UTC timestamp; a naive datetime is taken to be UTC already."""
    ts = pd.Timestamp(start)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def iso(ts: Any) -> str:
    """ISO-8601 UTC with milliseconds and a 'Z' suffix."""
    return to_utc(pd.Timestamp(ts)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def json_default(value: Any) -> Any:
    """JSON fallback for numpy scalars and timestamps."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | pd.Timestamp):
        return iso(value)
    return str(value)


def atomic_write(path: Path, write_to: Callable[[Path], object]) -> Path:
    """Write `path` through `write_to(tmp)` (parent dirs created), then os.replace; nothing is left behind on
    failure. Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(records: Iterable[dict], path: Path) -> Path:
    """Write records as JSON lines (parent dirs created, atomic). Returns path."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, default=json_default) + "\n")

    return atomic_write(path, write)
