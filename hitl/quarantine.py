"""The quarantine: rows a stage refused (traces, review items, annotations, dataset records), kept with their
reasons as parquet files under `state/quarantine/`. Every stage that validates writes here, so it is core."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from hitl.config import Config


def write_quarantine(quarantined: pd.DataFrame, cfg: Config, stage: str) -> Path | None:
    """Persist quarantined rows (all values as text) with their reasons; returns the parquet path."""
    if quarantined.empty:
        return None
    cfg.quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = cfg.quarantine_dir / f"{stage}-{stamp}.parquet"
    as_text = quarantined.astype(object).map(_text)
    as_text.to_parquet(out, index=False)
    return out


def _text(v: object) -> str | None:
    """A quarantined value as text; None for a missing one."""
    missing = v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))
    return None if missing else str(v)
