"""Read production traces from JSONL/Parquet files into the Trace contract, quarantining what is broken.

`load_traces` never raises on a bad row: every line read ends up either accepted or quarantined with
a reason, and `LoadResult.rows_in == len(accepted) + len(quarantined)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from hitl.config import Config
from hitl.schemas import REASON_COLUMN, trace_schema, validate_split

STRING_COLUMNS = ("trace_id", "input", "output", "model_version", "prediction", "context", "metadata")
OPTIONAL_COLUMNS = {"context": None, "metadata": "{}", "output": "", "model_version": None, "prediction": None,
                    "confidence": None}
TS_MIN, TS_MAX = pd.Timestamp("1678-01-01", tz="UTC"), pd.Timestamp("2261-12-31", tz="UTC")


@dataclass
class LoadResult:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    files: list[str]

    @property
    def summary(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "accepted": len(self.accepted), "quarantined": len(self.quarantined)}


def trace_files(path: Path) -> list[Path]:
    """All .jsonl/.json/.parquet files under `path` (or `path` itself), in a stable order."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"Trace source {path} does not exist. Check source.path in the config.")
    files = [p for p in sorted(path.rglob("*")) if p.suffix in {".jsonl", ".json", ".parquet"}]
    return files


def _read_jsonl(path: Path) -> tuple[list[dict], list[dict]]:
    rows, bad = [], []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.append({"_raw": raw[:2000].decode("utf-8", "replace"), "_source": where,
                            REASON_COLUMN: f"line is not valid UTF-8 ({e.reason})"})
                continue
            except json.JSONDecodeError as e:
                bad.append({"_raw": raw[:2000].decode("utf-8", "replace"), "_source": where,
                            REASON_COLUMN: f"line is not valid JSON ({e.msg} at column {e.colno})"})
                continue
            if not isinstance(obj, dict):
                bad.append({"_raw": raw[:2000].decode("utf-8", "replace"), "_source": where,
                            REASON_COLUMN: "line is JSON but not an object"})
                continue
            try:  # JSON may escape lone surrogates (\ud800) that no UTF-8 text can hold
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                bad.append({"_raw": raw[:2000].decode("utf-8", "replace"), "_source": where,
                            REASON_COLUMN: "line holds invalid Unicode (an escaped lone surrogate)"})
                continue
            obj["_source"] = where
            rows.append(obj)
    return rows, bad


def _read_file(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        df["_source"] = [f"{path.name}:{i + 1}" for i in range(len(df))]
        return df, pd.DataFrame(columns=["_raw", "_source", REASON_COLUMN])
    rows, bad = _read_jsonl(path)
    return pd.DataFrame(rows), pd.DataFrame(bad, columns=["_raw", "_source", REASON_COLUMN])


def normalize(df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map columns, fill optional ones, check types that pandera would only see column-wide.

    Returns (candidates for schema validation, rows already rejected with a reason).
    """
    df = df.rename(columns=cfg.source.column_map).reset_index(drop=True)
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
        elif default is not None:  # absent in some rows only
            df[col] = df[col].astype(object).where(df[col].notna(), default)
    reasons: dict[int, list[str]] = {}

    def reject(mask: pd.Series, why: str) -> None:
        for i in df.index[mask]:
            reasons.setdefault(i, []).append(why)

    if "metadata" in df.columns:  # parquet/JSON may carry metadata as an object already
        df["metadata"] = df["metadata"].map(lambda v: json.dumps(v) if isinstance(v, dict) else v)
        df["metadata"] = df["metadata"].where(df["metadata"].notna(), "{}")
    for col in [*STRING_COLUMNS, *cfg.cohorts]:
        if col not in df.columns:
            continue
        values = df[col]
        wrong = values.notna() & ~values.map(lambda v: isinstance(v, str))
        reject(wrong, f"column '{col}' must be a string")
    if "timestamp" in df.columns:
        raw_ts = df["timestamp"]
        if pd.api.types.is_datetime64_any_dtype(raw_ts):  # parquet with a real timestamp column
            parsed = raw_ts.dt.tz_localize("UTC") if raw_ts.dt.tz is None else raw_ts.dt.tz_convert("UTC")
        else:
            is_text = raw_ts.map(lambda v: isinstance(v, str))
            parsed = pd.to_datetime(raw_ts.where(is_text).astype("string"), utc=True, errors="coerce",
                                    format="ISO8601")
        reject(raw_ts.notna() & parsed.isna(), "column 'timestamp' is not an ISO-8601 date-time string")
        out_of_range = parsed.notna() & ((parsed < TS_MIN) | (parsed > TS_MAX))
        reject(out_of_range, "column 'timestamp' is outside the supported range (1678-2261)")
        df["timestamp"] = parsed.where(~out_of_range).dt.as_unit("ns")
    if "confidence" in df.columns:
        conf = pd.to_numeric(df["confidence"], errors="coerce")
        reject(df["confidence"].notna() & conf.isna(), "column 'confidence' is not a number")
        df["confidence"] = conf.astype("float64")
    if "trace_id" in df.columns:
        dup = df["trace_id"].notna() & df["trace_id"].duplicated(keep="first")
        reject(dup, "duplicate trace_id (an earlier row has the same id)")
    bad_idx = sorted(reasons)
    bad = df.loc[bad_idx].copy()
    bad[REASON_COLUMN] = ["; ".join(reasons[i]) for i in bad_idx]
    good = df.drop(index=bad_idx)
    for col in [*STRING_COLUMNS, *cfg.cohorts]:
        if col in good.columns:
            good[col] = good[col].astype(object).where(good[col].notna(), None)
    return good, bad


def _in_window(df: pd.DataFrame, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """Rows whose timestamp falls in [since, until); rows without a usable timestamp are kept."""
    if df.empty or "timestamp" not in df.columns:
        return df
    ts = df["timestamp"]
    keep = ts.isna() | (((ts >= since) if since else True) & ((ts < until) if until else True))
    return df[keep]


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
        frames, rejected = [mlflow_traces.read(cfg)], []
    else:
        files = trace_files(path or cfg.traces_path)
        read = [_read_file(f) for f in files]
        frames, rejected = [df for df, _ in read], [bad for _, bad in read]
    raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    candidates, bad_types = normalize(raw, cfg) if len(raw) else (raw, raw)
    if since or until:  # rows outside the window are not this run's business, valid or not
        candidates, bad_types = _in_window(candidates, since, until), _in_window(bad_types, since, until)
    schema = trace_schema(cfg)
    accepted, bad_schema = validate_split(candidates, schema) if len(candidates) else (candidates, candidates)
    if accepted.empty:
        accepted = pd.DataFrame(columns=list(schema.columns))
    quarantined = pd.concat([*rejected, bad_types, bad_schema], ignore_index=True)
    if REASON_COLUMN not in quarantined.columns:
        quarantined[REASON_COLUMN] = pd.Series(dtype=str)
    rows_in = len(accepted) + len(quarantined)
    return LoadResult(accepted.reset_index(drop=True), quarantined, rows_in, [str(f) for f in files])


def write_quarantine(quarantined: pd.DataFrame, cfg: Config, stage: str) -> Path | None:
    """Persist quarantined rows (all values as text) with their reasons; returns the parquet path."""
    if quarantined.empty:
        return None
    cfg.quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = cfg.quarantine_dir / f"{stage}-{stamp}.parquet"
    as_text = quarantined.astype(object).map(lambda v: None if v is None or (v != v) else str(v))
    as_text.to_parquet(out, index=False)
    return out
