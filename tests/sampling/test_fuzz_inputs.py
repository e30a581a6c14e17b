"""Bad input at scale (issue 17): trace files mixing valid rows with rows and files that carry exactly one
injected fault each. Whatever the mix, loading never raises, rows in = accepted + quarantined, every valid
row is accepted, and every quarantined entry's reason names the fault injected into it (and the file, for a
file that is broken as a whole).

The figures in docs/reliability.md ("Bad input") come from this module:
`.venv/bin/python -m pytest -q -s tests/sampling/test_fuzz_inputs.py tests/review/test_review_refusals.py`.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from helpers_domain import make_cfg, trace_record, without
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hitl.quarantine import write_quarantine
from hitl.sampling.sources import load_traces
from hitl.vocabulary import MAX_TEXT_CHARS, REASON_COLUMN

MIN_ROWS = 10_000  # the bar, over all examples of the property below
EXAMPLES = int(os.environ.get("HITL_FUZZ_EXAMPLES", "40"))  # more, and HITL_FUZZ_RANDOM=1: fuzz deeper
TALLY = {"examples": 0, "rows": 0, "accepted": 0, "quarantined": 0, "faults": 0, "file_faults": 0}
KINDS_TRIED: set[str] = set()

TS = "2025-03-01T08:00:00Z"
STRING_COLUMNS = ["trace_id", "input", "output", "model_version", "prediction", "context", "metadata",
                  "channel", "locale", "tier"]
REQUIRED = ["trace_id", "timestamp", "input", "channel", "locale", "tier"]
WRONG_VALUES = [123, 1.5, True, [1, 2], {"a": 1}, -7]
BAD_TIMESTAMPS = ["yesterday", "", "2025-13-01T00:00:00Z", "2025-02-30T10:00:00Z", 1740816000, 1.5, True,
                  ["2025-03-01"], {"t": 1}, "2025-03-01T25:00:00Z", "0001-01-01T00:00:00Z",
                  "9999-12-31T23:59:59Z", "2025-03-01T08:00:00+99:00", "01/03/2025 08:00", "now", "today",
                  "NaT", "2025-03-01T08:00:00Z[UTC]", "T08:00"]
VALID_TIMESTAMPS = [TS, "2025-03-01T10:00:00+02:00", "2025-03-01T08:00:00.123456Z", "2025-03-01T08:00:00",
                    "2025-03-01 08:00:00Z", "2025-03-01T03:00:00-05:00"]
OPTIONAL = ["output", "context", "metadata", "model_version", "prediction", "confidence"]


@dataclass
class Expected:
    """What the files hold: valid trace ids, and per quarantine `_source` the words its reason must contain."""

    valid: list[str] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)
    file_faults: int = 0
    junk: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (trace id, column of a random value)

    @property
    def rows(self) -> int:
        return len(self.valid) + len(self.faults) + len(self.junk)


def _pick(options: list, v: int):
    return options[v % len(options)]


def _valid(tid: str, text: str, v: int) -> dict:
    """A valid trace in one of several shapes the contract accepts."""
    rec = trace_record(0, trace_id=tid, input=text, timestamp=_pick(VALID_TIMESTAMPS, v))
    shape = (v // 7) % 8
    if shape == 1:
        rec = without(rec, *OPTIONAL[: 1 + v % len(OPTIONAL)])
    elif shape == 2:
        rec |= {k: None for k in OPTIONAL if k not in ("output", "metadata")}
    elif shape == 3:
        rec |= {"metadata": {"outcome": "escalated", "turns": v % 5}, "confidence": str(round((v % 100) / 100, 2))}
    elif shape == 4:
        rec |= {"extra_column": [v, "x"], "confidence": v % 2}
    elif shape == 5:
        rec["input"] = (text * MAX_TEXT_CHARS)[:MAX_TEXT_CHARS]  # exactly at the limit
    elif shape == 6:
        rec["input"] = f"{text} 🙂 مرحبا 你好 \x00 tab\tend"
    return rec


def _fault(kind: str, tid: str, text: str, v: int) -> tuple[bytes | dict, list[str]]:
    """One trace line carrying exactly one fault of `kind`, and the words its reason must contain."""
    rec = trace_record(0, trace_id=tid, input=text)
    if kind == "wrong_type":
        col = _pick(STRING_COLUMNS, v)
        value = _pick([w for w in WRONG_VALUES if not (col == "metadata" and isinstance(w, dict))], v // 10)
        return rec | {col: value}, [f"column '{col}'", "must be a string"]
    if kind == "confidence_not_number":
        return rec | {"confidence": _pick(["abc", True, False, [0.5], {"p": 0.5}, "", "inf", "nan"], v)}, \
            ["'confidence'", "not a number"]
    if kind == "confidence_out_of_range":
        return rec | {"confidence": _pick([1.7, -0.1, 1e30, 2, -5, 1.0000001], v)}, ["'confidence'"]
    if kind == "missing_column":
        col = _pick(REQUIRED, v)
        return without(rec, col), [f"'{col}'", "missing"]
    if kind == "null":
        col = _pick(REQUIRED, v)
        return rec | {col: None}, [f"'{col}'", "missing"]
    if kind == "nan":
        col = _pick(["input", "channel", "confidence", "trace_id", "timestamp", "output"], v)
        const = _pick([float("nan"), float("inf"), float("-inf")], v // 6)
        return json.dumps(rec | {col: const}).encode(), [f"'{col}'", "not valid JSON"]
    if kind == "empty_text":
        col = _pick(["input", "trace_id", "prediction"], v)
        return rec | {col: ""}, [f"'{col}'", "empty"]
    if kind == "huge_text":
        col = _pick(["input", "output", "context", "trace_id"], v)
        limit = 200 if col == "trace_id" else MAX_TEXT_CHARS
        return rec | {col: (f"{tid}:" + text * (limit + 1))[: limit + 1 + v % 40_000]}, [f"'{col}'", "too long"]
    if kind == "bad_utf8":
        junk = _pick([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc", b"\xf8\x88\x80\x80\x80"], v)
        line = json.dumps(rec).encode()
        cut = line.index(b'"input": "') + len(b'"input": "')
        return line[:cut] + junk + line[cut:], ["not valid UTF-8"]
    if kind == "bad_timestamp":
        return rec | {"timestamp": _pick(BAD_TIMESTAMPS, v)}, ["'timestamp'"]
    if kind == "broken_json":
        line = json.dumps(rec)
        return line[: 1 + v % (len(line) - 1)].encode(), ["not valid JSON"]
    if kind == "not_object":
        return _pick([b"[1, 2]", b"42", b'"text"', b"null", b"true", b"[]"], v), ["not an object"]
    if kind == "bad_metadata":
        return rec | {"metadata": _pick(["{not json", "[1, 2]", '"text"', "null", "", "{'single': 1}"], v)}, \
            ["metadata must be a JSON object"]
    if kind == "surrogate":
        return json.dumps(rec | {"input": f"{text} \ud800"}).encode(), ["invalid Unicode"]
    if kind == "deep_nesting":
        depth = 20_000 + v
        return json.dumps(without(rec, "metadata"))[:-1].encode() + b', "metadata": ' + b"[" * depth + \
            b"]" * depth + b"}", ["nested too deeply"]
    raise AssertionError(kind)


ROW_FAULTS = ["wrong_type", "confidence_not_number", "confidence_out_of_range", "missing_column", "null", "nan",
              "empty_text", "huge_text", "bad_utf8", "bad_timestamp", "broken_json", "not_object",
              "bad_metadata", "surrogate", "deep_nesting", "duplicate_id"]
FILE_FAULTS = ["none", "parquet_corrupt", "parquet_truncated", "parquet_missing_column", "parquet_wrong_type",
               "parquet_timestamp_numbers", "parquet_confidence_text", "utf16_file", "utf16_no_bom_file",
               "latin1_file", "broken_json_array"]
PARQUET_FAULTS = ["none"] + [f for f in FILE_FAULTS if f.startswith("parquet")]


def _line(entry: bytes | dict) -> bytes:
    return entry if isinstance(entry, bytes) else json.dumps(entry).encode()


def _write_jsonl(path: Path, label: str, plan: list[tuple[str, int]], texts: list[str], junk: list, exp: Expected,
                 crlf: bool, bom: bool) -> None:
    """A JSONL file: one line per plan entry (blank lines sprinkled in), each valid, carrying one fault, or
    holding a random JSON value in one column (valid or not: either accepted, or refused naming the column)."""
    lines: list[bytes] = []
    for i, (kind, v) in enumerate(plan):
        tid, text = f"{label}-{i}", _pick(texts, v)
        if v % 13 == 0:
            lines.append(b"   " if v % 2 else b"")  # blank lines are not rows
        where = f"{label}:{len(lines) + 1}"
        if kind == "duplicate_id" and exp.valid:
            lines.append(_line(_valid(_pick(exp.valid, v), text + " again", v)))
            exp.faults[where] = ["duplicate trace_id"]
        elif kind == "junk":
            col = _pick(JUNK_COLUMNS, v)
            lines.append(_line(trace_record(0, trace_id=tid, input=text) | {col: _pick(junk, v // 20)}))
            exp.junk[where] = (tid, col)
        elif kind in ("valid", "duplicate_id"):
            lines.append(_line(_valid(tid, text, v)))
            exp.valid.append(tid)
        else:
            entry, words = _fault(kind, tid, text, v)
            lines.append(_line(entry))
            exp.faults[where] = words
    data = (b"\r\n" if crlf else b"\n").join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + data)


def _write_parquet(path: Path, label: str, n: int, texts: list[str], fault: str, real_ts: bool,
                   exp: Expected) -> None:
    """A Parquet file of n valid rows, or with a fault of the file's schema (or bytes) that hits every row."""
    recs = [trace_record(0, trace_id=f"{label}-{i}", input=_pick(texts, i)) for i in range(n)]
    df = pd.DataFrame(recs)
    if real_ts:
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    words: list[str] | None = None
    if fault == "parquet_missing_column":
        col = _pick(REQUIRED, n)
        df, words = df.drop(columns=[col]), [f"missing required column '{col}'", label]
    elif fault == "parquet_wrong_type":
        col, value = _pick([("trace_id", 7), ("input", 3.5), ("channel", True), ("metadata", 1),
                            ("context", [1, 2])], n)
        df[col], words = [value] * len(df), [f"column '{col}' must be a string", label]
    elif fault == "parquet_timestamp_numbers":
        df["timestamp"], words = 1740816000 + df.index, ["'timestamp'", label]
    elif fault == "parquet_confidence_text":
        df["confidence"], words = "high", ["'confidence'", "not a number", label]
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    if fault in ("parquet_corrupt", "parquet_truncated"):
        data = path.read_bytes()
        path.write_bytes(b"PAR1 not really parquet" * (1 + n) if fault == "parquet_corrupt" else data[: len(data) // 2])
        exp.faults[label] = [label, "could not be read as Parquet"]
        exp.file_faults += 1
    elif words:
        exp.faults |= {f"{label}:{i + 1}": words for i in range(n)}
        exp.file_faults += 1
    else:
        exp.valid += list(df["trace_id"])


def _write_broken_file(root: Path, fault: str, n: int, texts: list[str], exp: Expected) -> None:
    """A file broken as a whole: another encoding, or a JSON document that does not parse."""
    recs = [trace_record(0, trace_id=f"whole-{i}", input=_pick(texts, i) + " café") for i in range(n)]
    text = "\n".join(json.dumps(r, ensure_ascii=fault != "latin1_file") for r in recs) + "\n"
    if fault in ("utf16_file", "utf16_no_bom_file"):
        (root / "whole.jsonl").write_bytes(text.encode("utf-16" if fault == "utf16_file" else "utf-16-le"))
        exp.faults["whole.jsonl"] = ["whole.jsonl", "UTF-16"]
    elif fault == "latin1_file":
        (root / "whole.jsonl").write_bytes(text.encode("latin-1", "replace"))  # every line holds 'é'
        exp.faults |= {f"whole.jsonl:{i + 1}": ["not valid UTF-8"] for i in range(n)}
    elif fault == "broken_json_array":
        doc = json.dumps(recs, indent=2)
        (root / "whole.json").write_text(doc[: len(doc) * 2 // 3])
        exp.faults["whole.json"] = ["whole.json", "not valid JSON"]
    else:
        return
    exp.file_faults += 1


def _valid_json_array(root: Path, n: int, texts: list[str], exp: Expected) -> None:
    recs = [_valid(f"arr-{i}", _pick(texts, i), i) for i in range(n)]
    (root / "zz" / "array.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "zz" / "array.json").write_text(json.dumps(recs, indent=1))
    exp.valid += [r["trace_id"] for r in recs]


row_plan = st.lists(st.tuples(st.sampled_from(["valid"] * len(ROW_FAULTS) + ROW_FAULTS + ["junk"] * 2),
                              st.integers(0, 10**6)), min_size=260, max_size=320)
texts = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
              st.sampled_from(["now", "2025-03-01", "0.5", "{}", "[]", "NaN", "", " "])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
JUNK_COLUMNS = [c for c in trace_record(0) if c != "trace_id"]


# Derandomized: the same examples on every run, so the figures in docs/reliability.md are reproducible. No
# shrinking: an example is hundreds of rows, and the failure message names the row and the reason anyway.
@pytest.mark.slow(reason="40 fuzzed trace folders of hundreds of rows, each loaded whole (docs/reliability.md)")
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("HITL_FUZZ_RANDOM"), database=None,
          phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(plan=row_plan, texts=texts, junk=st.lists(json_values, min_size=1, max_size=8),
       parquet_rows=st.integers(20, 60), real_ts=st.booleans(), crlf=st.booleans(), bom=st.booleans(),
       array_rows=st.integers(0, 8))
def test_fuzzed_files_never_crash_and_every_row_is_accounted_for(tmp_path_factory, plan, texts, junk, parquet_rows,
                                                                  real_ts, crlf, bom, array_rows):
    # the file-level faults take turns, so that every one is tried whatever the examples
    file_fault = FILE_FAULTS[TALLY["examples"] % len(FILE_FAULTS)]
    parquet_fault = PARQUET_FAULTS[TALLY["examples"] % len(PARQUET_FAULTS)]
    root = tmp_path_factory.mktemp("fuzz")
    cfg = make_cfg(root)
    traces, exp = root / "traces", Expected()
    split = len(plan) * 2 // 3
    _write_jsonl(traces / "a.jsonl", "a.jsonl", plan[:split], texts, junk, exp, crlf, bom)
    _write_parquet(traces / "b.parquet", "b.parquet", parquet_rows, texts, parquet_fault, real_ts, exp)
    _write_jsonl(traces / "sub" / "c.jsonl", "sub/c.jsonl", plan[split:], texts, junk, exp, not crlf, False)
    _write_broken_file(traces, file_fault, 5 + parquet_rows % 7, texts, exp)
    if array_rows:
        _valid_json_array(traces, array_rows, texts, exp)

    result = load_traces(cfg, traces)

    q = result.quarantined
    if len(q):  # the quarantine can always be written, whatever it holds
        assert len(pd.read_parquet(write_quarantine(q, cfg, "fuzz"))) == len(q)
    assert result.rows_in == len(result.accepted) + len(q) == exp.rows
    accepted = set(result.accepted["trace_id"])
    assert accepted >= set(exp.valid) and len(accepted) == len(result.accepted)
    assert accepted - set(exp.valid) <= {tid for tid, _ in exp.junk.values()}
    assert q["_source"].is_unique
    reasons = dict(zip(q["_source"], q[REASON_COLUMN], strict=True))
    refused_junk = {where: col for where, (tid, col) in exp.junk.items() if tid not in accepted}
    assert set(reasons) == set(exp.faults) | set(refused_junk)
    for where, col in refused_junk.items():
        assert col in reasons[where], f"{where}: {col!r} not in {reasons[where]!r}"
    for where, words in exp.faults.items():
        missing = [w for w in words if w not in reasons[where]]
        assert not missing, f"{where}: {missing} not in {reasons[where]!r}"
        assert "\n" not in reasons[where]
    KINDS_TRIED.update([kind for kind, _ in plan] + [file_fault, parquet_fault])
    TALLY["examples"] += 1
    TALLY["rows"] += result.rows_in
    TALLY["accepted"] += len(result.accepted)
    TALLY["quarantined"] += len(q)
    TALLY["faults"] += len(exp.faults) + len(refused_junk)
    TALLY["file_faults"] += exp.file_faults


@pytest.mark.slow(reason="the tally of the fuzz property above, which is slow: deselected with it")
def test_zz_the_fuzz_tried_at_least_ten_thousand_rows():
    """Runs after the property above (pytest keeps file order): the issue's bar of 10,000 generated rows."""
    if TALLY["examples"] == 0 and not os.environ.get("CI"):  # run on its own (-k); in CI the property runs first
        pytest.skip("the fuzz property did not run in this session")
    print(f"\nbad input fuzz: {TALLY['examples']} examples, {TALLY['rows']} rows in = {TALLY['accepted']} accepted "
          f"+ {TALLY['quarantined']} quarantined; {TALLY['faults']} malformed rows/files injected "
          f"({TALLY['file_faults']} whole-file faults), each quarantined with a reason naming its fault")
    assert TALLY["examples"] == EXAMPLES
    assert TALLY["rows"] >= MIN_ROWS
    assert TALLY["rows"] == TALLY["accepted"] + TALLY["quarantined"]
    assert TALLY["quarantined"] == TALLY["faults"]
    assert set(ROW_FAULTS) | set(FILE_FAULTS) <= KINDS_TRIED
