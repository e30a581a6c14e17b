"""The production horizon: which draws of a growing regression set the report estimates production from, and a
simulation that the estimate over the horizon covers the latest quarter's truth while the estimate over every
window does not once traffic has drifted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hitl.evaluation import horizon, inference, regression
from hitl.vocabulary import RANDOM


def _draw(windows: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(len(windows))], "window": windows,
                         "selection_reason": RANDOM, "inclusion_prob": 0.5})


def test_the_horizon_keeps_whole_day_windows_within_its_days_of_the_latest():
    s = _draw(["2026-01-01", "2026-03-31", "2026-04-01", "2026-06-30", "2026-06-30"])
    h = horizon.of(s, 91)
    assert h.mask.tolist() == [False, False, True, True, True]  # 2026-04-01 is 90 days before 06-30; 03-31 is 91
    assert (h.first, h.last, h.older, h.undated) == ("2026-04-01", "2026-06-30", 2, 0)
    assert "traffic of the 91 days up to 2026-06-30" in h.describe() and "2 older rows" in h.describe()
    every = horizon.of(s, None)
    assert every.mask.all() and every.older == 0 and "every window" in every.describe()


def test_windows_that_are_not_days_always_count_and_are_named():
    s = _draw(["run-abc", "2025-01-01", "2026-06-30", None])
    h = horizon.of(s, 30)
    assert h.mask.tolist() == [True, False, True, True]
    assert h.undated == 2 and h.older == 1 and "not days" in h.describe()
    runs = horizon.of(_draw(["run-a", "run-b"]), 30)
    assert runs.mask.all() and runs.undated == 2


def test_random_draw_reads_the_random_rows_inside_the_horizon_only():
    records = pd.concat([_draw(["2026-01-01", "2026-06-30"]),
                         _draw(["2026-06-30"]).assign(trace_id="p", selection_reason="uncertain")], ignore_index=True)
    sample, h = horizon.random_draw(records, 91)
    assert list(sample["trace_id"]) == ["t1"] and h.older == 1
    assert len(horizon.random_draw(records.iloc[0:0], 91)[0]) == 0


DRAWS, PER_WINDOW, QUARTERS, WINDOWS_PER_QUARTER = 2000, 25, 4, 6


def _quarters() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, float]]:
    """A regression set grown over four quarters: six day windows a quarter, 25 draws each, window sizes
    varying tenfold; the champion fails 8% of early traffic and 25% of the last quarter's (a new channel), the
    challenger 6% and 10%. Returns the draw, each row's population size over draws (its weight), its
    (champion fail, challenger fail) probabilities, and the last quarter's true rates."""
    rng = np.random.default_rng(7)
    rows, truth_sizes = [], []
    start = pd.Timestamp("2026-01-01")
    for q in range(QUARTERS):
        for k in range(WINDOWS_PER_QUARTER):
            day = (start + pd.Timedelta(days=91 * q + 15 * k)).strftime("%Y-%m-%d")
            size = float(rng.integers(100, 1000))
            pa, pb = (0.25, 0.10) if q == QUARTERS - 1 else (0.08, 0.06)
            rows += [{"window": day, "stratum": "all", "inclusion_prob": PER_WINDOW / size, "pa": pa, "pb": pb,
                      "last": q == QUARTERS - 1}] * PER_WINDOW
            truth_sizes.append((size, pa, pb, q == QUARTERS - 1))
    sample = pd.DataFrame(rows)
    last = [(n, a, b) for n, a, b, is_last in truth_sizes if is_last]
    total = sum(n for n, _, _ in last)
    truth = {"champion": sum(n * a for n, a, _ in last) / total, "challenger": sum(n * b for n, _, b in last) / total}
    return sample, sample["pa"].to_numpy(), sample["pb"].to_numpy(), truth


@pytest.mark.parametrize(("days", "low", "high"), [(91, 0.93, 0.975), (None, 0.0, 0.5)])
def test_over_the_horizon_the_interval_covers_the_latest_quarter_and_over_every_window_it_does_not(days, low, high):
    sample, pa, pb, truth = _quarters()
    h = horizon.of(sample, days)
    kept = sample[h.mask].reset_index(drop=True)
    assert kept["last"].all() if days else len(kept) == len(sample)
    w, strata = 1.0 / kept["inclusion_prob"].to_numpy(), regression.strata_of(kept)
    rng = np.random.default_rng(11)
    # independent outcomes per row (the draws' fail indicators), the two models' failures drawn apart
    a = (rng.random((DRAWS, len(kept))) < pa[h.mask]).astype(float)
    b = (rng.random((DRAWS, len(kept))) < pb[h.mask]).astype(float)
    est = inference.paired(a, b, w, strata, None, 0.05)
    for who in ("champion", "challenger"):
        lo, hi = inference.rate_interval(getattr(est, who), getattr(est, f"{who}_var"), est.n, est.n_eff, 0.05)
        coverage = float(((lo <= truth[who]) & (truth[who] <= hi)).mean())
        print(days, who, coverage)
        assert low <= coverage <= high, (days, who, coverage)


def test_holds_selects_the_traces_of_the_horizons_days():
    h = horizon.of(_draw(["2026-01-01", "2026-06-30"]), 91)
    ts = pd.Series(pd.to_datetime(["2026-03-31T23:59:00Z", "2026-04-01T00:00:01Z", "2026-06-30T12:00:00Z",
                                   "2026-07-01T00:00:00Z"], utc=True))
    assert h.holds(ts).tolist() == [False, True, True, False]
    assert horizon.of(_draw(["run-a"]), 91).holds(ts).all()
    assert horizon.of(_draw(["2026-01-01", "2026-06-30"]), None).holds(ts).tolist() == [True, True, True, False]
