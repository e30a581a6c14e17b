"""Read production traces from JSONL/JSON/Parquet files into the Trace contract, quarantining what is broken.

`load_traces` never raises on a bad row or a bad file: every line (JSONL), element (a JSON array file) or row
(Parquet) read ends up either accepted or quarantined with a reason that names what is wrong, a file that
cannot be read at all is one quarantined entry naming the file, and
`LoadResult.rows_in == len(accepted) + len(quarantined)`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import numbers
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from hitl.config import Config
from hitl.schemas import trace_schema, validate_split
from hitl.vocabulary import REASON_COLUMN

STRING_COLUMNS = ("trace_id", "input", "output", "model_version", "prediction", "context", "metadata")
OPTIONAL_COLUMNS = {"context": None, "metadata": "{}", "output": "", "model_version": None, "prediction": None,
                    "confidence": None}
ISO_START = re.compile(r"\s*[0-9]{4}")
TS_MIN, TS_MAX = pd.Timestamp("1678-01-01", tz="UTC"), pd.Timestamp("2261-12-31", tz="UTC")
SUFFIXES = (".jsonl", ".json", ".parquet")
REFUSED_COLUMNS = ["_raw", "_source", REASON_COLUMN]
RAW_CHARS = 2000  # of a refused line kept in the quarantine


@dataclass
class LoadResult:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    files: list[str]  # the files read
    skipped: list[str] = field(default_factory=list)  # files not read again (hitl/sampling/watermarks.py)
    seen_before: int = 0  # rows read again whose trace was considered, or whose fault was counted, before
    pending: list = field(default_factory=list)  # watermarks.FileMark to commit once the traces are stored
    mlflow: object = None  # an MLflow source's mlflow_traces.Read: windows read, traces paged and fetched, caps
    spilled: int = 0  # accepted traces handed to a sink as they were read (watermarks.load_new), not in `accepted`

    @property
    def not_taken(self) -> int:
        """Traces an MLflow source left out of capped windows (source.max_traces), however many windows it read."""
        return sum(w.in_window - w.taken for w in self.mlflow.windows) if self.mlflow is not None else 0

    @property
    def summary(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "accepted": len(self.accepted) + self.spilled,
                "quarantined": len(self.quarantined)}


@dataclass
class FileRows:
    """What one file yielded: its rows as read (each with `_source`, "file:line"), and what was refused before
    it became a row (an unparseable line, or the whole file when it cannot be read), with reasons."""

    label: str
    rows: pd.DataFrame
    refused: pd.DataFrame
    typed: bool = False  # Parquet: each column has one type, the file's schema
    digests: dict[str, str] = field(default_factory=dict)  # `_source` -> hash of the line (element) as read


def trace_files(path: Path) -> list[Path]:
    """All .jsonl/.json/.parquet files under `path` (or `path` itself), in a stable order."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"Trace source {path} does not exist. Check source.path in the config.")
    return [p for p in sorted(path.rglob("*")) if p.suffix in SUFFIXES and p.is_file()]


def file_label(path: Path, root: Path) -> str:
    """How quarantine reasons name a file: its path under the source folder (its name for a single file)."""
    return path.relative_to(root).as_posix() if root.is_dir() and path.is_relative_to(root) else path.name


def _refused(raw: bytes | str, where: str, why: str) -> dict:
    text = raw[:RAW_CHARS].decode("utf-8", "replace") if isinstance(raw, bytes) else raw[:RAW_CHARS]
    return {"_raw": text, "_source": where, REASON_COLUMN: why}


def _not_utf8_text(head: bytes) -> str | None:
    """Why a file, judged by its first bytes, is not UTF-8 text at all; None when it may be."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "is UTF-32 text (byte order mark), not UTF-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "is UTF-16 text (byte order mark), not UTF-8"
    if len(head) >= 16 and any(half.count(0) >= 0.9 * len(half) for half in (head[0::2], head[1::2])):
        return "is not UTF-8 text (every other byte is NUL: UTF-16 without a byte order mark?)"
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _constant_name(value: object) -> str | None:
    """'NaN' or '(-)Infinity' when `value` holds such a number anywhere (Python's JSON reader accepts them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return next((c for v in value if (c := _constant_name(v))), None)
    return None


def _object_problem(obj: object, what: str) -> str | None:
    """Why a parsed JSON value cannot be a trace row, or None."""
    if not isinstance(obj, dict):
        return f"{what} is JSON but not an object"
    for key, value in obj.items():
        if const := _constant_name(value):
            return f"column '{key}' is {const}, which is not valid JSON"
        try:  # JSON may escape lone surrogates (\ud800) that no UTF-8 text can hold
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return f"column '{key}' holds invalid Unicode (an escaped lone surrogate)"
    return None


def _read_jsonl(path: Path, label: str) -> FileRows:
    return next(_jsonl_chunks(path, label, None))


def _jsonl_chunks(path: Path, label: str, chunk_rows: int | None) -> Iterator[FileRows]:
    """The file's lines, `chunk_rows` lines at a time (all at once for None)."""
    rows, bad, digests = [], [], {}
    with path.open("rb") as fh:
        if why := _not_utf8_text(fh.read(4096)):
            yield FileRows(label, pd.DataFrame(), pd.DataFrame([_refused(b"", label, f"file {label} {why}")]))
            return
        fh.seek(0)
        for lineno, raw in enumerate(fh, start=1):
            if chunk_rows and len(rows) + len(bad) >= chunk_rows:
                yield FileRows(label, pd.DataFrame(rows), pd.DataFrame(bad, columns=REFUSED_COLUMNS), digests=digests)
                rows, bad, digests = [], [], {}
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            where = f"{label}:{lineno}"
            digests[where] = _digest(raw.rstrip(b"\r\n"))
            try:
                obj = json.loads(raw.decode("utf-8"))
                why = _object_problem(obj, "line")
            except UnicodeDecodeError as e:
                why = f"line is not valid UTF-8 ({e.reason})"
            except json.JSONDecodeError as e:
                why = f"line is not valid JSON ({e.msg} at column {e.colno})"
            except RecursionError:
                why = "line is not valid JSON (nested too deeply)"
            if why:
                bad.append(_refused(raw, where, why))
                continue
            rows.append({**obj, "_source": where})
    yield FileRows(label, pd.DataFrame(rows), pd.DataFrame(bad, columns=REFUSED_COLUMNS), digests=digests)


def _read_json_array(path: Path, label: str) -> FileRows:
    """A .json file holding one array of trace objects; a file that is not valid JSON is refused as a whole."""
    data = path.read_bytes()
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        return FileRows(label, pd.DataFrame(), pd.DataFrame([_refused(
            data, label, f"file {label} is not valid UTF-8 ({e.reason} at byte {e.start})")]))
    except json.JSONDecodeError as e:
        return FileRows(label, pd.DataFrame(), pd.DataFrame([_refused(
            data, label, f"file {label} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")]))
    except RecursionError:
        return FileRows(label, pd.DataFrame(), pd.DataFrame([_refused(
            data, label, f"file {label} is not valid JSON (nested too deeply)")]))
    if not isinstance(doc, list):
        return _read_jsonl(path, label)  # one object per line after all (a .json JSONL file)
    rows, bad, digests = [], [], {}
    for i, obj in enumerate(doc, start=1):
        where = f"{label}:{i}"
        digests[where] = _digest(json.dumps(obj, sort_keys=True, default=str).encode("utf-8", "replace"))
        if why := _object_problem(obj, "element"):
            bad.append(_refused(json.dumps(obj, default=str)[:RAW_CHARS], where, why))
        else:
            rows.append({**obj, "_source": where})
    return FileRows(label, pd.DataFrame(rows), pd.DataFrame(bad, columns=REFUSED_COLUMNS), digests=digests)


def read_file(path: Path, label: str | None = None) -> FileRows:
    """Read one trace file without validating it; never raises: an unreadable file is one refused entry."""
    return next(read_file_chunks(path, label, None))


def read_file_chunks(path: Path, label: str | None = None, chunk_rows: int | None = None) -> Iterator[FileRows]:
    """`read_file`, `chunk_rows` lines (JSONL) or rows (Parquet) at a time, so a large file is never held whole; a
    JSON array file is read whole. A file that fails part-way yields what it read, then one refused entry."""
    label = label or path.name
    try:
        if path.suffix == ".parquet" and chunk_rows:
            import pyarrow.parquet as pq

            done = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                df = batch.to_pandas()
                df["_source"] = [f"{label}:{done + i + 1}" for i in range(len(df))]
                done += len(df)
                yield FileRows(label, df, pd.DataFrame(columns=REFUSED_COLUMNS), typed=True)
            return
        if path.suffix != ".parquet" and path.suffix != ".json":
            yield from _jsonl_chunks(path, label, chunk_rows)
            return
        yield _read_whole(path, label)
    except Exception as e:  # noqa: BLE001  a corrupt file may make pyarrow raise anything; the other files go on
        yield _unreadable(path, label, e)


def _read_whole(path: Path, label: str) -> FileRows:
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            df["_source"] = [f"{label}:{i + 1}" for i in range(len(df))]
            return FileRows(label, df, pd.DataFrame(columns=REFUSED_COLUMNS), typed=True)
        if path.suffix == ".json":
            with path.open("rb") as fh:
                if fh.read(64).lstrip(codecs.BOM_UTF8 + b" \t\r\n")[:1] == b"[":
                    return _read_json_array(path, label)
        return _read_jsonl(path, label)
    except Exception as e:  # noqa: BLE001  a corrupt file may make pyarrow raise anything; the other files go on
        return _unreadable(path, label, e)


def _unreadable(path: Path, label: str, e: Exception) -> FileRows:
    kind = "as Parquet" if path.suffix == ".parquet" else ""
    why = f"file {label} could not be read {kind} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    return FileRows(label, pd.DataFrame(), pd.DataFrame([_refused(b"", label, " ".join(why.split()))]))


def required_columns(cfg: Config) -> list[str]:
    """Columns every trace must carry (the contract's non-nullable columns without a default)."""
    return [c for c, col in trace_schema(cfg).columns.items() if not col.nullable and c not in OPTIONAL_COLUMNS]


def parse_timestamps(raw: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(UTC timestamps in ns, NaT where unusable; mask of values that are not ISO-8601 date-time strings;
    mask of dates outside datetime64[ns]). Parquet timestamp columns and datetime objects are taken as such."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
    else:
        text = raw.map(lambda v: v.isoformat() if isinstance(v, datetime) else v if _iso_like(v) else None)
        try:
            parsed = pd.to_datetime(text.astype("string"), utc=True, errors="coerce", format="ISO8601")
        except (ValueError, TypeError, OverflowError):  # one odd value must not cost the others
            parsed = pd.Series([_one_timestamp(v) for v in text], index=raw.index, dtype="datetime64[us, UTC]")
    not_iso = raw.notna() & parsed.isna()
    out_of_range = parsed.notna() & ((parsed < TS_MIN) | (parsed > TS_MAX))
    return parsed.where(~out_of_range).dt.as_unit("ns"), not_iso, out_of_range


def _iso_like(v: object) -> bool:
    """Text that starts like an ISO-8601 date (a four-digit year): pandas would also read "now" or "today"."""
    return isinstance(v, str) and ISO_START.match(v) is not None


def _one_timestamp(v: str | None) -> pd.Timestamp:
    try:
        return pd.to_datetime(v, utc=True, format="ISO8601") if v is not None else pd.NaT
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _number(v: object) -> float | None:
    """A confidence as a float (numbers and numeric text), None when it is none (or not finite)."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v) if isinstance(v, str | numbers.Real) else None
    except (ValueError, OverflowError):
        return None
    return f if f is not None and math.isfinite(f) else None


def _check_types(df: pd.DataFrame, cfg: Config, label: str | None = None, typed: bool = False) -> pd.DataFrame:
    """Map columns, fill optional ones, check what pandera would only see column-wide (types, timestamps,
    numbers, missing columns) in one file's rows. Adds REASON_COLUMN: None, or why the row is refused.
    For a `typed` file (Parquet) a wrong type is the file's schema, and the reason says so."""
    df = df.rename(columns=cfg.source.column_map).reset_index(drop=True)
    reasons: dict[int, list[str]] = {}

    def reject(mask: pd.Series, why: str) -> None:
        for i in df.index[mask]:
            reasons.setdefault(i, []).append(why)

    everything = pd.Series(True, index=df.index)
    for col in required_columns(cfg):
        if col not in df.columns:
            reject(everything, f"missing required column '{col}'" + (f" (file {label} has none)" if label else ""))
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
        elif default is not None:  # absent in some rows only
            df[col] = df[col].astype(object).where(df[col].notna(), default)
    if "metadata" in df.columns:  # parquet/JSON may carry metadata as an object already
        df["metadata"] = df["metadata"].map(lambda v: json.dumps(v, default=str) if isinstance(v, dict) else v)
    for col in [*STRING_COLUMNS, *cfg.cohorts]:
        if col not in df.columns:
            continue
        values = df[col]
        wrong = values.notna() & ~values.map(lambda v: isinstance(v, str))
        stored = f", file {label} stores {values.dtype}" if typed else ""
        for i in df.index[wrong]:
            why = f"column '{col}' must be a string (got {type(values[i]).__name__}{stored})"
            reasons.setdefault(i, []).append(why)
    if "timestamp" in df.columns:
        parsed, not_iso, out_of_range = parse_timestamps(df["timestamp"])
        stored = f" (file {label} stores {df['timestamp'].dtype})" if typed else ""
        reject(not_iso, f"column 'timestamp' is not an ISO-8601 date-time string{stored}")
        reject(out_of_range, "column 'timestamp' is outside the supported range (1678-2261)")
        df["timestamp"] = parsed
    if "confidence" in df.columns:
        conf = df["confidence"].map(_number)
        for i in df.index[df["confidence"].notna() & conf.isna()]:
            v = df.at[i, "confidence"]
            stored = f", file {label} stores {df['confidence'].dtype}" if typed else ""
            reasons.setdefault(i, []).append(f"column 'confidence' is not a number (got {type(v).__name__} "
                                             f"{str(v)[:40]!r}{stored})")
        df["confidence"] = conf.astype("float64")
    df[REASON_COLUMN] = [("; ".join(reasons[i]) if i in reasons else None) for i in df.index]
    return df


def _reject_duplicates(df: pd.DataFrame, seen: set[str] | None = None) -> pd.DataFrame:
    """The second and later rows with a trace_id get a reason; the first one stays (maybe refused otherwise).
    Ids that are no id (not text, or empty) are refused for that, not as duplicates. `seen`: the ids of the rows
    read before these (in earlier partitions of the same read); updated."""
    if "trace_id" not in df.columns:
        return df
    ids = df["trace_id"].where(df["trace_id"].map(lambda v: isinstance(v, str) and v != ""))
    dup = ids.notna() & ids.duplicated(keep="first")
    if seen is not None:
        dup |= ids.isin(seen)
        seen.update(ids.dropna())
    why = "duplicate trace_id (an earlier row has the same id)"
    df.loc[dup, REASON_COLUMN] = [f"{r}; {why}" if isinstance(r, str) else why for r in df.loc[dup, REASON_COLUMN]]
    return df


def _split(df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    bad_mask = df[REASON_COLUMN].notna()
    bad, good = df[bad_mask].copy(), df[~bad_mask].drop(columns=[REASON_COLUMN])
    for col in [*STRING_COLUMNS, *cfg.cohorts]:
        if col in good.columns:
            good[col] = good[col].astype(object).where(good[col].notna(), None)
    return good, bad


def normalize(df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map columns, fill optional ones, check types that pandera would only see column-wide, and refuse
    duplicate trace ids. Returns (candidates for schema validation, rows already rejected with a reason)."""
    return _split(_reject_duplicates(_check_types(df, cfg)), cfg)


def _in_window(df: pd.DataFrame, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """Rows whose timestamp falls in [since, until); rows without a usable timestamp are kept."""
    if df.empty or "timestamp" not in df.columns or not pd.api.types.is_datetime64_any_dtype(df["timestamp"]):
        return df
    ts = df["timestamp"]
    keep = ts.isna() | (((ts >= since) if since else True) & ((ts < until) if until else True))
    return df[keep]


def validate(parts: list[FileRows], cfg: Config, since: datetime | None = None, until: datetime | None = None,
             seen_ids: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted Trace rows, quarantined rows with reasons) of the files' rows inside [since, until). `seen_ids`:
    trace ids of rows validated before these in the same read (a later row with one is a duplicate); updated."""
    checked = [_check_types(p.rows, cfg, p.label, p.typed) for p in parts if len(p.rows)]
    rows = _reject_duplicates(pd.concat(checked, ignore_index=True), seen_ids) if checked else pd.DataFrame()
    candidates, bad_types = _split(rows, cfg) if len(rows) else (rows, rows)
    refused = [p.refused for p in parts if len(p.refused)]
    if since or until:  # rows outside the window are not this run's business, valid or not
        candidates, bad_types = _in_window(candidates, since, until), _in_window(bad_types, since, until)
    schema = trace_schema(cfg)
    accepted, bad_schema = validate_split(candidates, schema) if len(candidates) else (candidates, candidates)
    if accepted.empty:
        accepted = pd.DataFrame(columns=list(schema.columns))
    quarantined = pd.concat([f for f in (*refused, bad_types, bad_schema) if len(f)] or
                            [pd.DataFrame(columns=REFUSED_COLUMNS)], ignore_index=True)
    return accepted.reset_index(drop=True), quarantined


def load_traces(cfg: Config, path: Path | None = None, since: datetime | None = None,
                until: datetime | None = None) -> LoadResult:
    """Load and validate every trace under `path` (default: the configured source: files, or the traces of an
    MLflow experiment).

    `since`/`until` (UTC) select a window by timestamp; rows outside it are neither accepted nor
    quarantined and are not counted in rows_in.
    """
    if cfg.source.kind == "mlflow" and path is None:
        from hitl.sampling import mlflow_traces

        files: list = [f"mlflow experiment {cfg.source.experiment}"]
        parts = [FileRows(files[0], mlflow_traces.read(cfg), pd.DataFrame(columns=REFUSED_COLUMNS))]
    else:
        root = path or cfg.traces_path
        files = trace_files(root)
        parts = [read_file(f, file_label(f, root)) for f in files]
    accepted, quarantined = validate(parts, cfg, since, until)
    return LoadResult(accepted, quarantined, len(accepted) + len(quarantined), [str(f) for f in files])
