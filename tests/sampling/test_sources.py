"""Loading production traces (hitl/sampling/sources.py): every line ends up accepted or quarantined with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from helpers_domain import make_cfg, trace_record, without, write_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl.config import WorldConfig
from hitl.quarantine import write_quarantine
from hitl.sampling.sources import load_traces, normalize, trace_files
from hitl.sim import files, world
from hitl.vocabulary import REASON_COLUMN


def _reasons_by_source(result) -> dict[str, str]:
    q = result.quarantined
    return dict(zip(q["_source"], q[REASON_COLUMN], strict=True))


BROKEN = {
    # line number (1-based) -> (line, words its reason must contain)
    2: (b'{"trace_id": "tr-x", "input": "unterminated"', ["not valid JSON"]),
    3: (b'{"trace_id": "tr-\xff\xfe", "input": "latin-1 bytes"}', ["not valid UTF-8"]),
    4: (without(trace_record(4), "input"), ["'input'", "missing"]),
    5: (trace_record(5, confidence=1.7), ["'confidence'", "1.7"]),
    6: (trace_record(6, confidence="abc"), ["'confidence'", "not a number"]),
    7: (trace_record(7, timestamp="yesterday at noon"), ["'timestamp'", "ISO-8601"]),
    8: (trace_record(1, input="a second row with the first row's id"), ["duplicate trace_id"]),
    9: (trace_record(9, input=""), ["'input'", "is empty"]),
    10: (trace_record(10, metadata="{outcome: resolved"), ["metadata must be a JSON object"]),
    11: (trace_record(11, input=123), ["'input'", "must be a string"]),
    12: (b"[1, 2, 3]", ["not an object"]),
    13: (trace_record(13, channel=None), ["'channel'", "missing"]),
    14: (trace_record(14, metadata="[1, 2]"), ["metadata must be a JSON object"]),
}


@pytest.fixture
def broken_file(tmp_path):
    lines = [trace_record(1)] + [BROKEN[i][0] for i in sorted(BROKEN)] + [trace_record(15)]
    return write_lines(tmp_path / "traces" / "day1.jsonl", lines)


def test_each_broken_row_is_quarantined_with_a_reason_naming_the_problem(cfg, broken_file):
    result = load_traces(cfg, broken_file)
    assert sorted(result.accepted["trace_id"]) == ["tr-1", "tr-15"]
    reasons = _reasons_by_source(result)
    assert set(reasons) == {f"day1.jsonl:{i}" for i in BROKEN}
    for line, (_, words) in BROKEN.items():
        reason = reasons[f"day1.jsonl:{line}"]
        for w in words:
            assert w in reason, f"line {line}: {w!r} not in {reason!r}"


def test_counts_add_up_to_lines_read(cfg, broken_file):
    result = load_traces(cfg, broken_file)
    lines = [ln for ln in broken_file.read_bytes().split(b"\n") if ln.strip()]
    assert result.rows_in == len(lines) == len(BROKEN) + 2
    assert result.rows_in == len(result.accepted) + len(result.quarantined)
    assert result.summary == {"rows_in": len(lines), "accepted": 2, "quarantined": len(BROKEN)}
    assert result.files == [str(broken_file)]


def test_duplicate_trace_id_keeps_first(cfg, tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1, input="first"), trace_record(2), trace_record(1, input="second"),
        trace_record(1, input="third"),
    ])
    result = load_traces(cfg, path)
    acc = result.accepted.set_index("trace_id")
    assert acc.loc["tr-1", "input"] == "first"
    assert sorted(result.quarantined["input"]) == ["second", "third"]
    assert result.quarantined[REASON_COLUMN].str.contains("duplicate trace_id").all()


def test_accepted_rows_have_contract_types(cfg, tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1, confidence="0.25", metadata={"outcome": "escalated"}),
        trace_record(2, timestamp="2025-03-01T10:00:00+02:00"),
    ])
    result = load_traces(cfg, path)
    assert result.quarantined.empty
    acc = result.accepted.set_index("trace_id")
    assert acc.loc["tr-1", "confidence"] == pytest.approx(0.25)
    assert json.loads(acc.loc["tr-1", "metadata"]) == {"outcome": "escalated"}
    assert acc.loc["tr-2", "timestamp"] == pd.Timestamp("2025-03-01T08:00:00Z")
    assert str(acc["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert "_source" not in acc.columns  # unknown columns are filtered by the contract


def test_optional_columns_absent_from_the_file_get_defaults(cfg, tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [without(trace_record(i), "context", "metadata", "output")
                                              for i in range(2)])
    result = load_traces(cfg, path)
    assert result.quarantined.empty
    assert list(result.accepted["output"]) == ["", ""]
    assert list(result.accepted["metadata"]) == ["{}", "{}"]
    assert result.accepted["context"].isna().all()


def test_optional_columns_omitted_by_one_row_get_the_same_defaults(cfg, tmp_path):
    """`output`, `metadata` and `context` are optional (sources.OPTIONAL_COLUMNS). A row that leaves them
    out must be accepted whether or not other rows in the same file carry them."""
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1),
        without(trace_record(2), "metadata"),
        without(trace_record(3), "context"),
        without(trace_record(4), "output"),
    ])
    result = load_traces(cfg, path)
    assert result.quarantined.empty, list(result.quarantined[REASON_COLUMN])
    acc = result.accepted.set_index("trace_id")
    assert acc.loc["tr-2", "metadata"] == "{}"
    assert acc.loc["tr-4", "output"] == ""


def test_nothing_valid_still_yields_a_trace_shaped_accepted_frame(cfg, tmp_path):
    """When no row survives, `accepted` is empty but keeps the Trace columns, so the next stage
    (watermarks.load_new asks the store about each partition's accepted["trace_id"]) sees an empty window,
    not a KeyError."""
    path = write_lines(tmp_path / "t.jsonl", [b"not json", b"{also not json"])
    result = load_traces(cfg, path)
    assert result.summary == {"rows_in": 2, "accepted": 0, "quarantined": 2}
    assert {"trace_id", "input", "confidence", "timestamp"} <= set(result.accepted.columns)


def test_blank_lines_are_not_rows(cfg, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(trace_record(1)) + "\n\n   \n" + json.dumps(trace_record(2)) + "\n")
    result = load_traces(cfg, path)
    assert result.summary == {"rows_in": 2, "accepted": 2, "quarantined": 0}


def test_column_map_renames_a_teams_columns(tmp_path):
    cfg = make_cfg(tmp_path, source={"kind": "files", "column_map": {"id": "trace_id", "text": "input",
                                                                      "score": "confidence"}})
    recs = []
    for i in range(3):
        r = trace_record(i)
        r["id"], r["text"], r["score"] = r.pop("trace_id"), r.pop("input"), r.pop("confidence")
        recs.append(r)
    path = write_lines(tmp_path / "theirs.jsonl", recs)
    result = load_traces(cfg, path)
    assert result.quarantined.empty
    assert list(result.accepted["trace_id"]) == ["tr-0", "tr-1", "tr-2"]
    assert list(result.accepted["input"]) == [trace_record(i)["input"] for i in range(3)]
    assert set(result.accepted["confidence"]) == {0.8}


def test_file_missing_a_required_column_quarantines_all_its_rows(cfg, tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [without(trace_record(i), "input") for i in range(4)])
    result = load_traces(cfg, path)
    assert result.accepted.empty
    assert len(result.quarantined) == result.rows_in == 4
    assert set(result.quarantined[REASON_COLUMN]) == {"missing required column 'input' (file t.jsonl has none)"}


def test_traces_without_what_production_predicted_are_accepted(cfg, tmp_path):
    """Any labelled set can stand in for production: the champion scores every trace itself."""
    rows = [without(trace_record(i), "prediction", "confidence", "model_version") for i in range(3)]
    rows.append(trace_record(3, prediction=None, confidence=None))
    result = load_traces(cfg, write_lines(tmp_path / "t.jsonl", rows))
    assert len(result.accepted) == 4 and result.quarantined.empty
    assert result.accepted["prediction"].isna().all() and result.accepted["confidence"].isna().all()


def test_missing_cohort_column_is_named(tmp_path):
    cfg = make_cfg(tmp_path, cohorts=["channel", "region"], selection={"strata": ["channel"]})
    path = write_lines(tmp_path / "t.jsonl", [trace_record(i) for i in range(2)])
    result = load_traces(cfg, path)
    assert result.accepted.empty
    assert result.quarantined[REASON_COLUMN].str.contains("'region'").all()


def test_directory_of_jsonl_and_parquet(cfg, tmp_path):
    d = tmp_path / "traces"
    write_lines(d / "a.jsonl", [trace_record(1), trace_record(2, confidence=5)])
    (d / "sub").mkdir()
    pd.DataFrame([trace_record(3), trace_record(4)]).to_parquet(d / "sub" / "b.parquet", index=False)
    (d / "notes.txt").write_text("ignored")
    assert [p.name for p in trace_files(d)] == ["a.jsonl", "b.parquet"]
    result = load_traces(cfg, d)
    assert sorted(result.accepted["trace_id"]) == ["tr-1", "tr-3", "tr-4"]
    assert list(result.quarantined["trace_id"]) == ["tr-2"]
    assert result.rows_in == 4


def test_missing_source_path_is_a_clear_error(cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="source.path"):
        load_traces(cfg, tmp_path / "nope")


def test_write_quarantine_round_trips_reasons(cfg, broken_file):
    result = load_traces(cfg, broken_file)
    out = write_quarantine(result.quarantined, cfg, "sample")
    assert out is not None and out.exists()
    assert out.parent == cfg.quarantine_dir and out.name.startswith("sample-") and out.suffix == ".parquet"
    back = pd.read_parquet(out)
    assert len(back) == len(result.quarantined)
    assert list(back[REASON_COLUMN]) == list(result.quarantined[REASON_COLUMN])
    assert list(back["_source"]) == list(result.quarantined["_source"])
    assert back[REASON_COLUMN].map(lambda r: isinstance(r, str) and r != "").all()


def test_write_quarantine_of_nothing_writes_nothing(cfg):
    assert write_quarantine(pd.DataFrame(columns=[REASON_COLUMN]), cfg, "x") is None
    assert not cfg.quarantine_dir.exists()


def test_normalize_reports_wrong_types_without_raising(cfg):
    df = pd.DataFrame([trace_record(1), trace_record(2, trace_id=7), trace_record(3, locale=["en"])])
    good, bad = normalize(df, cfg)
    assert list(good["trace_id"]) == ["tr-1"]
    assert set(bad[REASON_COLUMN]) == {"column 'trace_id' must be a string (got int)",
                                       "column 'locale' must be a string (got list)"}


def test_world_window_quarantines_exactly_the_corrupted_extras(tmp_path):
    wcfg = WorldConfig(seed=5, production_size=300, invalid_share=0.05)
    cfg = make_cfg(tmp_path, labels=list(world.INTENTS), world=wcfg.model_dump())
    requests, truth = world.production_requests(wcfg, datetime(2025, 3, 1, tzinfo=UTC))
    preds = list(truth["label"])
    records = world.simulate_production(requests, truth, preds, [0.9] * len(preds), "v1", wcfg)
    path = files.write_jsonl(records, tmp_path / "world" / "window.jsonl")
    k = world.corrupted_count(len(requests), wcfg.invalid_share)
    assert k == 15 and len(records) == 315
    result = load_traces(cfg, path)
    assert result.rows_in == len(records)
    assert len(result.quarantined) == k
    assert sorted(result.accepted["trace_id"]) == sorted(requests["trace_id"])
    assert result.quarantined[REASON_COLUMN].map(bool).all()


def test_window_keeps_only_rows_inside_it(cfg, tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1, timestamp="2025-03-01T08:00:00Z"),
        trace_record(2, timestamp="2025-03-02T08:00:00Z"),
        trace_record(3, timestamp="2025-03-02T09:00:00Z", confidence=3.0),
    ])
    since, until = datetime(2025, 3, 2, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)
    result = load_traces(cfg, path, since=since, until=until)
    assert list(result.accepted["trace_id"]) == ["tr-2"]
    assert list(result.quarantined["trace_id"]) == ["tr-3"]
    assert result.rows_in == 2


def test_rows_outside_the_window_are_never_quarantined(cfg, tmp_path):
    """load_traces' docstring: rows outside since/until are neither accepted nor quarantined nor counted.

    A row from another day is left out when its confidence is 3.0 (a schema failure) but must also be left
    out when its confidence is "abc" (a type failure found by normalize before the window is applied).
    """
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1, timestamp="2025-03-02T08:00:00Z"),
        trace_record(2, timestamp="2025-03-05T08:00:00Z", confidence=3.0),
        trace_record(3, timestamp="2025-03-05T08:00:00Z", confidence="abc"),
        trace_record(4, timestamp="2025-03-05T08:00:00Z", input=123),
    ])
    since, until = datetime(2025, 3, 2, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)
    result = load_traces(cfg, path, since=since, until=until)
    assert list(result.accepted["trace_id"]) == ["tr-1"]
    assert result.quarantined.empty, list(result.quarantined["trace_id"])
    assert result.rows_in == 1


def test_escaped_lone_surrogate_is_quarantined_not_raised(cfg, tmp_path):
    r"""A JSON line with an escaped lone surrogate ("\ud800") is valid JSON but not encodable text.

    load_traces promises never to raise on a bad row; that line must be quarantined, the others kept.
    """
    path = write_lines(tmp_path / "t.jsonl", [
        trace_record(1),
        json.dumps(trace_record(2, input="broken \ud800 text")),  # json.dumps escapes it as \ud800
    ])
    assert b"\\ud800" in path.read_bytes()
    result = load_traces(cfg, path)
    assert list(result.accepted["trace_id"]) == ["tr-1"]
    assert len(result.quarantined) == 1
    assert result.quarantined[REASON_COLUMN].iloc[0]


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_timestamp_outside_the_nanosecond_range_is_quarantined_not_raised(cfg, tmp_path, ts):
    """Go's zero time (0001-01-01) or a far-future sentinel parses as a date but does not fit the contract's
    datetime64[ns]: that row must be quarantined (naming the timestamp), the others kept."""
    path = write_lines(tmp_path / "t.jsonl", [trace_record(1), trace_record(2, timestamp=ts)])
    result = load_traces(cfg, path)
    assert list(result.accepted["trace_id"]) == ["tr-1"]
    assert list(result.quarantined["trace_id"]) == ["tr-2"]
    assert "timestamp" in result.quarantined[REASON_COLUMN].iloc[0]


# ---- property: random mixes of valid and invalid rows ----

FIELDS = list(trace_record(0))
# Left out on purpose, each has its own test above: lone surrogates in text, and values that parse as a
# date outside datetime64[ns] (integers/text in the timestamp field; row_strategy).
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
row_strategy = st.one_of(
    st.tuples(st.just("valid"), st.text(min_size=1, max_size=30).filter(str.strip),
              st.floats(min_value=0, max_value=1)),
    st.tuples(st.just("mutate"), st.sampled_from([f for f in FIELDS if f != "timestamp"]), json_values),
    st.tuples(st.just("mutate"), st.just("timestamp"),
              st.one_of(st.none(), st.booleans(), st.floats(), st.just("not-a-date"), st.just(""),
                        st.just("2025-03-01 08:00"), st.just("2025-13-01T00:00:00Z"))),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("garbage"), st.binary(max_size=40), st.none()),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row_strategy, min_size=1, max_size=15))
def test_property_random_mix_never_raises_and_counts_add_up(cfg, tmp_path, rows):
    lines: list[bytes | dict] = []
    valid_ids = []
    for i, (kind, a, b) in enumerate(rows):
        if kind == "valid":
            lines.append(trace_record(i, input=a, confidence=b))
            valid_ids.append(f"tr-{i}")
        elif kind == "mutate":
            lines.append(trace_record(i, **{a: b}))
        elif kind == "drop":
            lines.append(without(trace_record(i), a))
        else:
            lines.append(a.replace(b"\n", b" ").replace(b"\r", b" "))
    path = write_lines(tmp_path / "prop.jsonl", lines)
    n_lines = sum(1 for ln in path.read_bytes().split(b"\n") if ln.strip())

    result = load_traces(cfg, path)

    assert result.rows_in == n_lines
    assert len(result.accepted) + len(result.quarantined) == n_lines
    assert result.quarantined[REASON_COLUMN].map(lambda r: isinstance(r, str) and r.strip() != "").all()
    acc = result.accepted
    if len(acc):  # (an empty accepted frame without columns has its own test above)
        assert acc["trace_id"].is_unique
        assert (acc["confidence"].isna() | acc["confidence"].between(0, 1)).all()  # optional: re-scored anyway
        assert (acc["input"].str.len() > 0).all()
    # a valid row whose id nobody else uses is always accepted
    all_ids = [ln.get("trace_id") for ln in lines if isinstance(ln, dict)]
    accepted_ids = set(acc["trace_id"]) if len(acc) else set()
    for t in valid_ids:
        if all_ids.count(t) == 1:
            assert t in accepted_ids
