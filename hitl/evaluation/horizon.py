"""Which part of the regression set stands for production now.

The regression set only grows: every sampling run adds a random draw of its windows, and the rows are never
trained on, so after a year the set holds four quarters of traffic. Weighted by 1/inclusion probability, all of
it estimates the fail rate of *all that traffic*, most of which is gone: new intents, a new channel or a new
phrasing of the last quarter count for a quarter of the weight. The report estimates the traffic of the last
`evaluation.horizon_days` days instead: the draws of the day windows within that many days up to the latest
window that has draws. Whole windows are kept or left out, so each window's weights stay its own traffic's and
the estimate is design-unbiased for the horizon's traffic. Older draws stay in the hold-out (never trained on,
kept in every dataset version); they are only left out of the estimate.

A window that is not a day (`selection.window: run`) has no date: such draws are always in the estimate, and
the horizon's description says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hitl.vocabulary import RANDOM


@dataclass(frozen=True)
class Horizon:
    """The rows of a random draw inside the horizon, and what they cover."""

    mask: np.ndarray  # rows inside the horizon
    days: int | None  # the horizon (None: every window)
    first: str  # earliest and latest day window inside it ("" when there is none)
    last: str
    older: int  # dated draws before the horizon, left out of the estimate
    undated: int  # draws whose window is not a day (always in)

    def holds(self, timestamps: pd.Series) -> np.ndarray:
        """Which traces (by timestamp) fall in the horizon's traffic: their UTC day within its days up to its
        latest window (with no limit in days: every day up to it; with no dated window: every trace)."""
        if not self.last:
            return np.ones(len(timestamps), dtype=bool)
        day = pd.to_datetime(timestamps, utc=True).dt.floor("D")
        last = pd.Timestamp(self.last, tz="UTC")
        inside = day <= last
        if self.days is not None:
            inside &= day > last - pd.Timedelta(days=self.days)
        return inside.to_numpy()

    def describe(self) -> str:
        """One line for the report's lineage: the traffic the estimate stands for."""
        kept = int(self.mask.sum())
        if self.days is None:
            span = f" (windows {self.first} to {self.last})" if self.last else ""
            return f"every window of the random draw{span}: {kept} rows (evaluation.horizon_days: none)"
        text = (f"traffic of the {self.days} days up to {self.last} (windows {self.first} to {self.last}): {kept} "
                f"random-draw rows" if self.last else f"{kept} random-draw rows")
        if self.older:
            text += (f"; {self.older} older rows stay in the hold-out (never trained on) and out of the estimate "
                     "(evaluation.horizon_days)")
        if self.undated:
            text += f"; {self.undated} rows of windows that are not days (selection.window: run) always count"
        return text


def window_days(windows: pd.Series) -> pd.Series:
    """Each window as a UTC day (NaT for a window that is not a day, such as a run's key)."""
    return pd.to_datetime(windows.astype(object).where(windows.notna(), None), format="%Y-%m-%d", errors="coerce",
                          utc=True)


def of(sample: pd.DataFrame, days: int | None) -> Horizon:
    """The horizon of the random draw `sample` (a `window` column; absent: every row counts, undated)."""
    n = len(sample)
    if n == 0 or "window" not in sample:
        return Horizon(np.ones(n, dtype=bool), days, "", "", 0, n)
    day = window_days(sample["window"])
    dated = day.notna().to_numpy()
    if not dated.any():
        return Horizon(np.ones(n, dtype=bool), days, "", "", 0, n)
    last = day.max()
    inside = dated if days is None else dated & (day > last - pd.Timedelta(days=days)).to_numpy()
    first = day[inside].min()
    return Horizon(inside | ~dated, days, first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"),
                   int((dated & ~inside).sum()), int((~dated).sum()))


def random_draw(records: pd.DataFrame, days: int | None) -> tuple[pd.DataFrame, Horizon]:
    """A dataset version's random draw inside the horizon (index reset), and the horizon: the rows every
    production estimate and every threshold fitted to production's mix read."""
    sample = records[records["selection_reason"] == RANDOM].reset_index(drop=True)
    h = of(sample, days)
    return sample[h.mask].reset_index(drop=True), h
