"""The representative draw window by window (hitl/sampling/windows.py): main draws share the random budget by
window size; late traces get a supplemental draw at the main draw's rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hitl.sampling import windows


def _pool(day: str, n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"trace_id": [f"{day}-{i}" for i in range(start, start + n)],
                         "timestamp": pd.Timestamp(f"{day}T08:00:00Z") + pd.to_timedelta(np.arange(n), unit="s"),
                         "channel": np.where(np.arange(n) % 4 == 0, "voice", "web")})


def test_window_keys_by_day_or_run():
    p = pd.concat([_pool("2026-01-01", 2), _pool("2026-01-02", 2)], ignore_index=True)
    assert list(windows.window_keys(p["timestamp"], "day", "r")) == ["2026-01-01"] * 2 + ["2026-01-02"] * 2
    assert set(windows.window_keys(p["timestamp"], "run", "run-x")) == {"run-x"}


def test_main_draws_share_the_budget_by_window_size():
    p = pd.concat([_pool("2026-01-01", 300), _pool("2026-01-02", 100)], ignore_index=True)
    p["window"] = windows.window_keys(p["timestamp"], "day", "")
    d = windows.draw(p, ["channel"], 40, {}, np.random.default_rng(0), min_per_stratum=2)
    per = d.items["window"].value_counts()
    assert per["2026-01-01"] == 30 and per["2026-01-02"] == 10
    assert {r["kind"] for r in d.records} == {"main"}
    recs = pd.DataFrame(d.records)
    assert recs["population"].sum() == 400 and recs["drawn"].sum() == 40
    merged = d.items.merge(recs, on=["window", "stratum"])
    assert np.allclose(merged["inclusion_prob"], merged["drawn"] / merged["population"])


def test_late_traces_get_a_supplemental_draw_at_the_main_rates():
    rates = {"channel=voice": 0.1, "channel=web": 0.05}
    late = _pool("2026-01-01", 4000, start=10_000)
    late["window"] = "2026-01-01"
    d = windows.draw(late, ["channel"], 0, {"2026-01-01": rates}, np.random.default_rng(1))
    assert {r["kind"] for r in d.records} == {"supplemental"}
    assert set(d.items["inclusion_prob"].round(6)) == {0.1, 0.05}
    voice = (late["channel"] == "voice").sum()
    assert (d.items["stratum"] == "channel=voice").sum() == pytest.approx(0.1 * voice, abs=2)


def test_empty_pool_draws_nothing():
    p = _pool("2026-01-01", 0).assign(window=pd.Series(dtype=str))
    d = windows.draw(p, ["channel"], 10, {}, np.random.default_rng(0))
    assert d.items.empty and d.records == []


def test_day_windows_cut_a_backfill_at_utc_midnights():
    from datetime import UTC, datetime

    from hitl.sampling.windows import day_windows

    got = day_windows(datetime(2026, 1, 5, 12), datetime(2026, 1, 7, 6))
    assert [(a.isoformat(), b.isoformat()) for a, b in got] == [
        ("2026-01-05T12:00:00+00:00", "2026-01-06T00:00:00+00:00"),
        ("2026-01-06T00:00:00+00:00", "2026-01-07T00:00:00+00:00"),
        ("2026-01-07T00:00:00+00:00", "2026-01-07T06:00:00+00:00")]
    assert day_windows(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)) == [
        (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))]
    with pytest.raises(ValueError, match="not before"):
        day_windows(datetime(2026, 1, 6), datetime(2026, 1, 5))


def test_sample_refuses_a_bad_range_before_touching_the_stack(tmp_path):
    from typer.testing import CliRunner

    from hitl.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"labels: [a, b]\nstate_dir: {tmp_path / 'state'}\n")
    out = CliRunner().invoke(app, ["sample", "-c", str(cfg), "--daily"])
    assert out.exit_code == 2 and "--daily needs both --since and --until" in out.output
    out = CliRunner().invoke(app, ["sample", "-c", str(cfg), "--since", "2026-01-06", "--until", "2026-01-05"])
    assert out.exit_code == 2 and "is not before" in out.output
