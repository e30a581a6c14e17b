"""Per-source watermarks (hitl/sampling/watermarks.py): files read once per window and content, late traces
picked up, backfills that miss nothing, and every quarantined row counted once."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from helpers_domain import make_cfg, trace_record, write_lines

from hitl.review.store import ReviewStore
from hitl.sampling import watermarks
from hitl.sampling.tables import QuarantinedRow
from hitl.sampling.watermarks import commit, covered, load_new, ns

D1 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def at(day: int, hour: int = 8) -> str:
    return (D1 + (day - 1) * DAY + timedelta(hours=hour)).isoformat()


def window(day: int) -> tuple[datetime, datetime]:
    return D1 + (day - 1) * DAY, D1 + day * DAY


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, source={"kind": "files", "path": str(tmp_path / "traces")})


def store_considered(store: ReviewStore, result) -> None:
    """What the sampling flow does after loading: the traces enqueued/considered, then the pending marks."""
    store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=result.accepted["trace_id"])
    commit(store, result.pending)


def run(cfg, store, day: int | None = None):
    """One sampling run's load over a UTC day (or everything), its traces stored as the flow would."""
    since, until = window(day) if day else (None, None)
    result = load_new(cfg, store, since, until)
    store_considered(store, result)
    return result


def names(paths: list[str]) -> list[str]:
    return sorted(os.path.basename(p) for p in paths)


def counted_quarantine(store: ReviewStore) -> int:
    with store._session() as s:
        return s.query(QuarantinedRow).count()


# ---- coverage of a window by windows read before ----

def test_covered_needs_every_timestamp_of_the_window_in_a_read_window():
    d = [ns(t) for t in (D1, D1 + DAY, D1 + 2 * DAY, D1 + 3 * DAY)]
    two_days = (d[0] + 1, d[2] - 1)  # first and last timestamp of a file holding days 1 and 2
    assert covered(two_days, [(d[0], d[1]), (d[1], d[2])], None, None)  # adjacent windows join
    assert not covered(two_days, [(d[0], d[1])], None, None)  # day 2 not read
    assert covered(two_days, [(d[0], d[1])], d[0], d[1])  # ...but day 1 was
    assert not covered(two_days, [(d[0], d[1])], d[1], d[2])
    assert covered(two_days, [], d[2], d[3])  # nothing of the file falls in day 3
    assert covered(two_days, [(None, None)], d[1], d[2])  # read once without a window
    assert covered(two_days, [(None, d[1]), (d[1], None)], None, None)
    assert not covered(two_days, [(d[0], d[1] - 5), (d[1], d[2])], None, None)  # a gap
    assert covered(None, [], d[0], d[1])  # no usable timestamp: its rows are counted at the first read


# ---- files ----

def test_an_unchanged_file_is_skipped_and_a_touched_one_too(cfg, store, tmp_path):
    path = write_lines(tmp_path / "traces" / "a.jsonl", [trace_record(i) for i in range(3)])
    first = run(cfg, store)
    assert first.summary == {"rows_in": 3, "accepted": 3, "quarantined": 0} and names(first.files) == ["a.jsonl"]
    again = run(cfg, store)
    assert again.summary == {"rows_in": 0, "accepted": 0, "quarantined": 0}
    assert again.files == [] and names(again.skipped) == ["a.jsonl"]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # same content, new mtime
    assert names(run(cfg, store).skipped) == ["a.jsonl"]


def test_a_file_whose_traces_were_not_stored_is_read_again(cfg, store, tmp_path):
    """A run that fails after loading (before the enqueue) leaves its files to be read again: nothing lost."""
    write_lines(tmp_path / "traces" / "a.jsonl", [trace_record(i) for i in range(3)])
    crashed = load_new(cfg, store)
    assert len(crashed.accepted) == 3 and [m.path for m in crashed.pending] == ["a.jsonl"]
    rerun = run(cfg, store)
    assert sorted(rerun.accepted["trace_id"]) == ["tr-0", "tr-1", "tr-2"] and rerun.skipped == []
    assert run(cfg, store).skipped  # now it is


def test_an_appended_file_is_read_again_and_only_its_new_rows_come_back(cfg, store, tmp_path):
    path = write_lines(tmp_path / "traces" / "a.jsonl", [trace_record(i) for i in range(4)] + [b"{broken"])
    first = run(cfg, store)
    assert first.summary == {"rows_in": 5, "accepted": 4, "quarantined": 1}
    with path.open("ab") as fh:
        fh.write((json.dumps(trace_record("late")) + "\n{also broken\n").encode())
    second = run(cfg, store)
    assert list(second.accepted["trace_id"]) == ["tr-late"]
    assert list(second.quarantined["_source"]) == ["a.jsonl:7"]
    assert second.seen_before == 5 and second.summary == {"rows_in": 2, "accepted": 1, "quarantined": 1}


def test_a_late_trace_inside_a_processed_window_is_picked_up(cfg, store, tmp_path):
    path = write_lines(tmp_path / "traces" / "a.jsonl",
                       [trace_record(1, timestamp=at(1)), trace_record(2, timestamp=at(2))])
    assert list(run(cfg, store, 1).accepted["trace_id"]) == ["tr-1"]
    assert run(cfg, store, 1).skipped  # the window is done
    with path.open("ab") as fh:
        fh.write((json.dumps(trace_record("late", timestamp=at(1, 23))) + "\n").encode())
    assert list(run(cfg, store, 1).accepted["trace_id"]) == ["tr-late"]
    assert list(run(cfg, store, 2).accepted["trace_id"]) == ["tr-2"]  # the new content read for day 2 too


def test_late_traces_of_an_earlier_day_come_with_the_next_daily_run(cfg, store, tmp_path):
    """The daily run asks for yesterday only; a late trace of a day processed before, appended to a file or in a
    new file, still comes with it."""
    d = tmp_path / "traces"
    path = write_lines(d / "a.jsonl", [trace_record(1, timestamp=at(1)), trace_record(2, timestamp=at(2))])
    for day in (1, 2):
        run(cfg, store, day)
    with path.open("ab") as fh:
        fh.write((json.dumps(trace_record("late-appended", timestamp=at(1, 20))) + "\n").encode())
    write_lines(d / "late.jsonl", [trace_record("late-new-file", timestamp=at(2, 23)),
                                   trace_record("day3", timestamp=at(3))])
    third = run(cfg, store, 3)
    assert sorted(third.accepted["trace_id"]) == ["tr-day3", "tr-late-appended", "tr-late-new-file"]
    assert names(third.files) == ["a.jsonl", "late.jsonl"]
    for day in (1, 2, 3):  # every window of both files is covered now
        assert run(cfg, store, day).files == []


def test_a_backfill_over_three_days_reads_each_file_only_as_needed_and_misses_nothing(cfg, store, tmp_path):
    d = tmp_path / "traces"
    for day in (1, 2, 3):
        write_lines(d / f"day{day}.jsonl", [trace_record(f"d{day}-{i}", timestamp=at(day, i)) for i in range(3)])
    write_lines(d / "all.jsonl", [trace_record(f"all-{day}", timestamp=at(day)) for day in (1, 2, 3)])
    read, accepted = {}, []
    for day in (1, 2, 3):
        result = run(cfg, store, day)
        read[day] = names(result.files)
        accepted += list(result.accepted["trace_id"])
    assert read == {1: ["all.jsonl", "day1.jsonl", "day2.jsonl", "day3.jsonl"],  # each file seen for the first time
                    2: ["all.jsonl", "day2.jsonl"], 3: ["all.jsonl", "day3.jsonl"]}
    expected = [f"tr-d{day}-{i}" for day in (1, 2, 3) for i in range(3)] + [f"tr-all-{day}" for day in (1, 2, 3)]
    assert sorted(accepted) == sorted(expected)  # every trace once
    for day in (1, 2, 3):  # the same backfill again reads nothing
        again = run(cfg, store, day)
        assert again.files == [] and again.accepted.empty
    assert run(cfg, store).files == []  # nor does a run over everything: the three days cover every file


def test_quarantined_rows_are_counted_once_across_windows_and_reruns(cfg, store, tmp_path):
    d = tmp_path / "traces"
    write_lines(d / "a.jsonl", [
        trace_record(1, timestamp=at(1)),
        trace_record(2, timestamp="yesterday"),  # no usable timestamp: in every window
        b"{not json",  # in every window
        trace_record(3, timestamp=at(2), confidence=1.7),  # day 2 only
        trace_record(4, timestamp=at(2)),
    ])
    pd.DataFrame([trace_record(5, timestamp=at(1), confidence="high")]).to_parquet(d / "b.parquet")
    quarantined = {day: list(run(cfg, store, day).quarantined["_source"]) for day in (1, 2, 3)}
    assert quarantined == {1: ["a.jsonl:3", "a.jsonl:2", "b.parquet:1"], 2: ["a.jsonl:4"], 3: []}
    assert counted_quarantine(store) == 4
    write_lines(d / "c.jsonl", [trace_record(6, timestamp=at(1), extra_column=[1])])  # another file, new columns
    with (d / "a.jsonl").open("ab") as fh:  # the file changes: read again, its old faults seen before
        fh.write((json.dumps(trace_record(7, timestamp=at(2))) + "\n").encode())
    for since_day in (None, 1, 2):
        result = run(cfg, store, since_day)
        assert result.quarantined.empty, list(result.quarantined["_source"])
    assert counted_quarantine(store) == 4


def test_an_unreadable_file_is_counted_once_until_its_content_changes(cfg, store, tmp_path):
    path = tmp_path / "traces" / "broken.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    assert list(run(cfg, store).quarantined["_source"]) == ["broken.parquet"]
    assert run(cfg, store).skipped == [str(path)]
    path.write_bytes(b"still not parquet, other bytes")
    assert list(run(cfg, store).quarantined["_source"]) == ["broken.parquet"]  # another fault: counted
    assert counted_quarantine(store) == 2


def test_traces_considered_by_an_earlier_run_are_dropped(cfg, store, tmp_path):
    write_lines(tmp_path / "traces" / "a.jsonl", [trace_record(i) for i in range(3)])
    store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=["tr-1"])
    result = load_new(cfg, store)
    assert sorted(result.accepted["trace_id"]) == ["tr-0", "tr-2"] and result.seen_before == 1


def test_a_file_with_nothing_new_is_covered_at_once(cfg, store, tmp_path):
    """The early return of the flow (no new trace) never reaches `commit`: such files need no pending mark."""
    write_lines(tmp_path / "traces" / "a.jsonl", [trace_record(1, timestamp=at(1))])
    write_lines(tmp_path / "traces" / "b.jsonl", [trace_record(2, timestamp=at(2))])
    result = load_new(cfg, store, *window(1))
    assert [m.path for m in result.pending] == ["a.jsonl"]  # b.jsonl has nothing in day 1: covered already
    assert names(load_new(cfg, store, *window(1)).skipped) == ["b.jsonl"]


def test_ns_takes_naive_times_as_utc():
    assert ns(datetime(2025, 3, 1)) == ns(D1) == pd.Timestamp("2025-03-01T00:00:00Z").value
    assert ns(None) is None and watermarks.ns(D1 + timedelta(microseconds=1)) == ns(D1) + 1000
