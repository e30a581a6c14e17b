"""The representative draw of a sampling run, window by window.

Traffic is estimated per window (a UTC day of the trace timestamps, or the whole run). A window's first
sampling run makes its main draw: the run's random budget is shared among its new windows in proportion to
their size, and each window is drawn stratified (hitl/sampling/representative.py). Traces that arrive
late, after their window's main draw, get a supplemental draw at the main draw's per-stratum rates, so
every trace of a window had the same chance it would have had on time. Each drawn trace carries its
window, stratum and inclusion probability; each stratum's population and draw size is recorded. A trace the
source took with a `source_rate` below 1 (an MLflow window over `source.max_traces`) has that share in its
inclusion probability; the records keep the draw's own rates among the traces taken, which late traces of the
window (taken at the same share) are drawn at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import numpy as np
import pandas as pd

from hitl.db import utc
from hitl.sampling import representative

MAIN, SUPPLEMENTAL = "main", "supplemental"


def window_keys(timestamps: pd.Series, how: str, run_key: str) -> pd.Series:
    """The window of each trace: its UTC day ("2026-01-05") or, with how="run", the run's own key."""
    if how == "run":
        return pd.Series(run_key, index=timestamps.index)
    ts = pd.to_datetime(timestamps, utc=True)
    return ts.dt.strftime("%Y-%m-%d")


@dataclass
class Draw:
    items: pd.DataFrame  # drawn traces with window, stratum, inclusion_prob
    records: list[dict]  # one per (window, stratum): window, kind, stratum, population, drawn, rate


def draw(pool: pd.DataFrame, strata: list[str], n: int, prior_rates: Mapping[str, Mapping[str, float]],
         rng: np.random.Generator, min_per_stratum: int = 2) -> Draw:
    """Draw from `pool` (needs a `window` column). Windows in `prior_rates` (window -> stratum -> rate of
    its main draw) get a supplemental draw; the other windows share what is left of `n` by size."""
    parts, records = [], []
    by_window = dict(tuple(pool.groupby("window", sort=True))) if len(pool) else {}
    late = {w: f for w, f in by_window.items() if prior_rates.get(w)}
    fresh = {w: f for w, f in by_window.items() if w not in late}
    for w, frame in late.items():
        rates = dict(prior_rates[w])
        default = float(np.mean(list(rates.values())))
        got = representative.supplemental_draw(frame, strata, rates, default, rng)
        parts.append(got)
        records += _records(frame, strata, got, w, SUPPLEMENTAL, rates, default)
    left = max(0, n - sum(len(p) for p in parts))
    shares = representative.allocate({w: len(f) for w, f in fresh.items()}, left, min_per_stratum=0) if fresh else {}
    for w, frame in fresh.items():
        got = representative.stratified_draw(frame, strata, shares.get(w, 0), rng, min_per_stratum)
        parts.append(got)
        records += _records(frame, strata, got, w, MAIN, representative.draw_rates(got), 0.0)
    parts = [_with_source_rate(p) for p in parts]
    items = pd.concat(parts) if parts else pool.iloc[0:0].assign(stratum=pd.Series(dtype=str),
                                                                   inclusion_prob=pd.Series(dtype=float))
    return Draw(items, records)


def _with_source_rate(got: pd.DataFrame) -> pd.DataFrame:
    """The draw's inclusion probabilities times the share of its window the source took (absent: 1)."""
    if "source_rate" not in got.columns or got.empty:
        return got
    return got.assign(inclusion_prob=got["inclusion_prob"] * got["source_rate"].fillna(1.0).astype(float))


def _records(frame: pd.DataFrame, strata: list[str], got: pd.DataFrame, window: str, kind: str,
             rates: Mapping[str, float], default: float) -> list[dict]:
    """What the estimator needs to know later about each stratum of one window's draw."""
    sizes = representative.stratum_key(frame, strata).value_counts()
    drawn = got["stratum"].value_counts() if len(got) else pd.Series(dtype=int)
    return [{"window": window, "kind": kind, "stratum": str(h), "population": int(size),
             "drawn": int(drawn.get(h, 0)), "rate": float(rates.get(h, default if kind == SUPPLEMENTAL else
                                                                    (drawn.get(h, 0) / size)))}
            for h, size in sizes.items()]


def day_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until) cut at UTC midnights: the windows of a day-by-day backfill. Naive times are UTC."""
    since, until = utc(since), utc(until)
    if since >= until:
        raise ValueError(f"--since {since:%Y-%m-%d %H:%M} is not before --until {until:%Y-%m-%d %H:%M}")
    out, start = [], since
    while start < until:
        end = min(until, datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=UTC))
        out.append((start, end))
        start = end
    return out


def previous_day(at: datetime) -> tuple[datetime, datetime]:
    """The UTC day before the one holding `at`: the window of a daily run scheduled at `at`."""
    midnight = datetime.combine(utc(at).date(), time(), tzinfo=UTC)
    return midnight - timedelta(days=1), midnight
