"""The MLflow source read window by window, on a local SQLite MLflow (hitl/sampling/mlflow_traces.py and the
MLflow part of hitl/sampling/watermarks.py): traces logged through MLflow's tracing API with the client's
timestamps, `source.max_traces` below a window's count, late traces, and a count of what each run read."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg

from hitl.review.store import ReviewStore
from hitl.sampling import mlflow_traces, windows
from hitl.sampling.mlflow_traces import WindowPlan, take_key
from hitl.sampling.watermarks import commit, load_new, mlflow_plan, mlflow_report, ns

D1 = datetime(2026, 1, 5, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
COUNTS = (40, 40, 12)  # traces per day; max_traces 30 caps the first two days, not the third
CAP = 30


def day(i: int) -> tuple[datetime, datetime]:
    return D1 + (i - 1) * DAY, D1 + i * DAY


@pytest.fixture(scope="module")
def experiment(local_mlflow):
    """An experiment of three days of traces logged through the tracing API (synchronously: the async queue
    drops traces when full), plus one trace whose request is ambiguous (quarantined)."""
    from mlflow import MlflowClient

    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    client = MlflowClient()
    exp_id = client.create_experiment("prod-windows")
    ids = {i: [log_trace(client, exp_id, day(i)[0] + timedelta(minutes=20 * j + 1), j) for j in range(n)]
           for i, n in enumerate(COUNTS, start=1)}
    bad = log_trace(client, exp_id, day(3)[0] + 5 * HOUR, 0, request={"query": "lost card", "lang": "en"})
    yield client, exp_id, ids, bad
    os.environ.pop("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", None)


def log_trace(client, exp_id: str, at: datetime, j: int, request: dict | None = None) -> str:
    t = int(pd.Timestamp(at).value)
    root = client.start_trace("classify-intent", inputs=request or {"query": f"I lost my card number {j}"},
                              tags={"channel": ("app", "voice")[j % 2], "locale": "en-US", "tier": "free"},
                              experiment_id=exp_id, start_time_ns=t)
    client.end_trace(root.trace_id, outputs={"intent": "card_lost", "confidence": 0.8}, end_time_ns=t + 10**7)
    return root.trace_id


def sample(cfg, store: ReviewStore, i: int, now: datetime):
    """One daily sampling run's load of day `i` at `now`, its traces stored as the flow stores them."""
    loaded = load_new(cfg, store, *day(i), now=now)
    store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=loaded.accepted["trace_id"])
    commit(store, loaded.pending)
    return loaded


def read_of(loaded) -> dict:
    """(since day, until day) -> (traces in the window, taken, new) of each window a run read."""
    return {(pd.Timestamp(w.since, tz="UTC").day, pd.Timestamp(w.until, tz="UTC").day): (w.in_window, w.taken, w.new)
            for w in loaded.mlflow.windows}


def test_runs_read_their_window_cap_it_and_still_take_late_traces(experiment, tmp_path):
    client, exp_id, ids, bad = experiment
    cfg = make_cfg(tmp_path, source={"kind": "mlflow", "experiment": "prod-windows", "max_traces": CAP,
                                     "lateness_hours": 24})
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")

    first = sample(cfg, store, 1, day(1)[1] + HOUR)
    assert read_of(first) == {(5, 6): (40, CAP, CAP)}
    assert first.mlflow.infos == 40 and first.mlflow.fetched == CAP  # its window only, not the experiment's 93
    assert len(first.accepted) == CAP and first.not_taken == 10
    assert first.accepted["source_rate"].nunique() == 1
    below = first.accepted["source_rate"].iat[0]
    assert set(first.accepted["trace_id"]) == {t for t in ids[1] if take_key(t, cfg.selection.seed) < below}
    assert any(line.startswith("Capped: window 2026-01-05 00:00 to 2026-01-06 00:00") and "took a seeded 30"
               in line for line in mlflow_report(cfg, first))

    late = [log_trace(client, exp_id, day(1)[0] + 23 * HOUR, 100 + k) for k in range(6)]  # day 1, logged late
    second = sample(cfg, store, 2, day(2)[1] + HOUR)
    late_taken = {t for t in late if take_key(t, cfg.selection.seed) < below}  # day 1 keeps its cap
    assert read_of(second) == {(5, 6): (46, CAP + len(late_taken), len(late_taken)), (6, 7): (40, CAP, CAP)}
    assert second.mlflow.infos == 86 and second.mlflow.fetched == CAP + len(late_taken)
    assert late_taken <= set(second.accepted["trace_id"]) and second.not_taken == 16 + 10 - len(late_taken)

    late2 = log_trace(client, exp_id, day(2)[0] + 2 * HOUR, 7)  # day 2 is still open
    third = sample(cfg, store, 3, day(3)[1] + HOUR)  # day 1 closed at the second run: not read again
    assert set(read_of(third)) == {(6, 7), (7, 8)}
    assert read_of(third)[(7, 8)] == (13, 13, 13) and len(third.quarantined) == 1  # uncapped; bad request
    assert third.mlflow.infos == 41 + 13
    assert (late2 in set(third.accepted["trace_id"])) == (take_key(late2, cfg.selection.seed) < cap_of(store, 2))

    fourth = sample(cfg, store, 4, day(4)[1] + HOUR)  # day 3 re-read within the allowance: bad counted once
    assert set(read_of(fourth)) == {(7, 8), (8, 9)} and fourth.summary["quarantined"] == 0
    assert fourth.seen_before == 1 and fourth.mlflow.fetched == 1  # only the quarantined trace, fetched again

    again = sample(cfg, store, 1, day(6)[0])  # a re-run of a closed day reads nothing of it
    assert (5, 6) not in read_of(again) and again.rows_in == 0
    assert bad not in store.known_trace_ids()


def cap_of(store: ReviewStore, i: int) -> float:
    """The cap day `i` got at its first read (1.0: every trace)."""
    w = next(w for w in store.source_windows("mlflow experiment prod-windows") if w["since"] == ns(day(i)[0]))
    return 1.0 if w["take_below"] is None else w["take_below"]


def test_a_late_trace_of_an_uncapped_window_is_taken_at_the_next_run(experiment, tmp_path):
    client, exp_id, _, _ = experiment
    cfg = make_cfg(tmp_path, source={"kind": "mlflow", "experiment": "prod-windows", "max_traces": 1000,
                                     "lateness_hours": 6})
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    first = sample(cfg, store, 5, day(5)[1] + HOUR)
    assert first.rows_in == 0 and first.mlflow.infos == 0
    late = log_trace(client, exp_id, day(5)[0] + 3 * HOUR, 1)
    second = sample(cfg, store, 6, day(6)[0] + 2 * HOUR)  # day 5 was read 1 h after its end: open
    assert late in set(second.accepted["trace_id"]) and second.accepted["source_rate"].eq(1.0).all()
    third = sample(cfg, store, 6, day(6)[0] + 8 * HOUR)  # day 5 was read 2 h after: still open (< 6 h)
    assert set(read_of(third)) == {(9, 10), (10, 11)} and third.rows_in == 0
    fourth = sample(cfg, store, 6, day(6)[0] + 9 * HOUR)  # the third read, 8 h after, closed day 5
    assert set(read_of(fourth)) == {(10, 11)}


def test_the_plan_reads_open_windows_and_skips_closed_ones():
    h = 3600 * 10**9
    recorded = [{"since": 0, "until": 24 * h, "read_at": 25 * h, "take_below": 0.5},  # open: read 1 h after
                {"since": 24 * h, "until": 48 * h, "read_at": 72 * h, "take_below": None}]  # closed
    plans = mlflow_plan(recorded, (48 * h, 72 * h), lateness_ns=24 * h, now=73 * h)
    assert plans == [WindowPlan(0, 24 * h, 0.5, first=False), WindowPlan(48 * h, 72 * h)]
    assert mlflow_plan(recorded, (24 * h, 48 * h), 24 * h, 73 * h) == [WindowPlan(0, 24 * h, 0.5, first=False)]


def test_the_cap_is_a_seeded_sample_of_max_traces():
    keys = [take_key(f"tr-{i}", 7) for i in range(1000)]
    assert mlflow_traces.cap(keys, 1000) is None
    below = mlflow_traces.cap(keys, 200)
    assert sum(k < below for k in keys) == 200 and 0.15 < below < 0.25
    assert take_key("tr-1", 7) != take_key("tr-1", 8)
    assert mlflow_traces.window_filter(1_500_000, None) == "trace.timestamp_ms >= 2"
    assert mlflow_traces.window_filter(None, 2 * 10**6) == "trace.timestamp_ms < 2"


def test_the_draw_counts_the_share_the_source_took():
    pool = pd.DataFrame({"trace_id": [f"t{i}" for i in range(100)], "channel": ["app"] * 100, "window": "w",
                         "source_rate": 0.25})
    drawn = windows.draw(pool, ["channel"], 10, {}, np.random.default_rng(0), 2)
    assert np.allclose(drawn.items["inclusion_prob"], 10 / 100 * 0.25)
    assert drawn.records[0]["rate"] == pytest.approx(0.1)  # late traces, taken at 0.25 too, are drawn at 0.1


def test_write_back_reaches_every_resolved_trace_whatever_max_traces(experiment, tmp_path):
    """Verdicts go back onto the traces named, not onto the first `max_traces` of the experiment."""
    _, _, ids, _ = experiment
    cfg = make_cfg(tmp_path, source={"kind": "mlflow", "experiment": "prod-windows", "max_traces": 2})
    named = ids[3][:3]
    resolved = pd.DataFrame({"trace_id": [*named, "tr-not-in-this-experiment"], "label": "card_lost",
                             "reviewers": "rita", "rationale": "clear from the text"})
    assert mlflow_traces.write_back(cfg, resolved) == 3
    assert mlflow_traces.write_back(cfg, resolved) == 0  # once per trace and label


def test_a_window_larger_than_a_page_is_read_whole_across_pages(experiment, monkeypatch):
    """Pages of 7 over day 1 (40 traces and the late ones other tests added; the server's page is 500): the same
    traces as one page, each once, none outside the window; the fetch in chunks of 9 returns each whole once."""
    client, exp_id, ids, _ = experiment
    since, until = (ns(d) for d in day(1))
    whole, _ = mlflow_traces.page_infos(client, exp_id, since, until)
    monkeypatch.setattr(mlflow_traces, "PAGE", 7)
    monkeypatch.setattr(mlflow_traces, "FETCH", 9)
    infos, returned = mlflow_traces.page_infos(client, exp_id, since, until)
    assert returned == len(infos) == len(whole) >= COUNTS[0] and set(infos) == set(whole) >= set(ids[1])
    assert all(since <= info.timestamp_ms * 10**6 < until for info in infos.values())
    fetched = mlflow_traces.fetch(client, exp_id, sorted(infos))
    assert sorted(t.info.trace_id for t in fetched) == sorted(infos)
