"""A sampling run's window in partitions on disk, so its memory grows with a partition, not with the window.

The traces are read and validated `source.partition_rows` at a time (`watermarks.load_new` with a sink), then
scored, evaluated and embedded a partition at a time; what selection reads stays in memory (`compact`: one
short row a trace, no text), the frozen vectors stay on disk (`vectors.PartitionedVectors`), and the full rows
of the few traces picked are read back at the end (`Spill.hydrate`). The window-wide statistics are computed
over the whole window, as before: the uncertainty evaluator's quantile, the selection's within-window ranks.

    <folder>/traces-00000.parquet   the new valid traces, as loaded
             scored-00000.parquet   ... after scoring (the stage before is deleted)
             evaluated-00000.parquet
             frozen/vectors-00000.npy   frozen-encoder vectors, row for row
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.hashing import text_group
from hitl.sampling import evaluators
from hitl.sampling.vectors import PartitionedVectors

# what the random draw and the policy read of every trace (plus the cohorts and the strata)
COMPACT_COLUMNS = ("trace_id", "timestamp", "prediction", "confidence", "margin", "entropy", "flagged",
                   "source_rate", "model_version")
STALE_S = 2 * 86400  # a run's folder left behind (its run failed) is deleted by a later run after this long


@dataclass
class Spill:
    """The partitions of one sampling run's window (the module's docstring)."""

    folder: Path
    parts: int = 0
    rows: int = 0
    vectors: PartitionedVectors | None = field(default=None, repr=False)

    @classmethod
    def create(cls, folder: Path) -> Spill:
        """An empty folder for the run (what an earlier attempt of the same run left is dropped), and the folders
        of runs that failed long ago are deleted."""
        folder = Path(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.is_dir():
            for old in folder.parent.iterdir():
                if old.is_dir() and time.time() - old.stat().st_mtime > STALE_S:
                    shutil.rmtree(old, ignore_errors=True)
        folder.mkdir(parents=True)
        return cls(folder)

    def path(self, stage: str, i: int) -> Path:
        return self.folder / f"{stage}-{i:05d}.parquet"

    def add(self, traces: pd.DataFrame) -> None:
        """One partition of new valid traces (a sink for `watermarks.load_new`)."""
        traces.to_parquet(self.path("traces", self.parts), index=False)
        self.parts += 1
        self.rows += len(traces)

    def read(self, stage: str, i: int, columns: list[str] | None = None) -> pd.DataFrame:
        return as_loaded(pd.read_parquet(self.path(stage, i), columns=columns))

    def advance(self, before: str, after: str, i: int, frame: pd.DataFrame) -> None:
        """Partition `i` of stage `after` written, that of `before` deleted."""
        frame.to_parquet(self.path(after, i), index=False)
        self.path(before, i).unlink(missing_ok=True)

    def hydrate(self, rows: pd.DataFrame, stage: str = "evaluated") -> pd.DataFrame:
        """The full rows of `rows` (by trace id, in their order), with the columns `rows` adds (the draw's window,
        stratum and inclusion probability)."""
        import pyarrow.parquet as pq

        if rows.empty:
            return rows.copy()
        ids = rows["trace_id"].tolist()
        found = [as_loaded(pq.read_table(self.path(stage, i), filters=[("trace_id", "in", ids)]).to_pandas())
                 for i in range(self.parts)]
        full = pd.concat(found, ignore_index=True).drop_duplicates("trace_id").set_index("trace_id")
        out = as_loaded(full.loc[ids].reset_index())
        if "suggestions" in out:
            out["suggestions"] = [_pairs(v) for v in out["suggestions"]]
        for col in rows.columns:
            if col not in out:
                out[col] = rows[col].to_numpy()
        return out

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def as_loaded(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as the loader gives them (Python str or None), not pandas' `str` dtype, whose missing value is
    NaN: a NaN would reach the store as a number (SQLite keeps it, PostgreSQL refuses it) and JSON as `NaN`."""
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.StringDtype) or frame[col].dtype == object:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def _pairs(v: object) -> list[tuple[str, float]] | None:
    return None if v is None else [(str(lab), float(p)) for lab, p in json.loads(v)]


def suggestions_text(pairs: list[list[tuple[str, float]]]) -> list[str]:
    """Suggestions as a partition keeps them (JSON): Parquet holds no (label, probability) tuples."""
    return [json.dumps([[lab, p] for lab, p in row]) for row in pairs]


def score_partitions(spill: Spill, score: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    for i in range(spill.parts):
        spill.advance("traces", "scored", i, score(spill.read("traces", i)))


def compact(evaluated: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """What the draw and the policy read of each trace: no text, its `text_group` instead."""
    keep = list(dict.fromkeys([*COMPACT_COLUMNS, *cfg.cohorts, *cfg.selection.strata]))
    out = evaluated[[c for c in keep if c in evaluated.columns]].copy()
    out["text_group"] = [text_group(t) for t in evaluated["input"]]
    return out


@dataclass
class Evaluated:
    traces: pd.DataFrame  # `compact` rows of the whole window, in partition order
    fails: pd.DataFrame  # evaluator x cohort: failed and seen (when there is a cohort to break down by)


def evaluate_partitions(spill: Spill, cfg: Config, cohort: str | None) -> Evaluated:
    """Every partition evaluated (the uncertainty evaluator at the window's quantile), each trace's summary
    (flagged, evaluator reasons) joined; returns the compact window and the fail counts by `cohort`."""
    margins = pd.concat([spill.read("scored", i, ["margin", "entropy"]) for i in range(spill.parts)],
                        ignore_index=True)
    cut = evaluators.uncertainty_cut(margins, cfg)
    del margins
    rows, counts = [], []
    for i in range(spill.parts):
        scored = spill.read("scored", i)
        results = evaluators.run_evaluators(scored, cfg, cut=cut)
        evaluated = scored.merge(evaluators.summarize(scored, results), on="trace_id", how="left")
        spill.advance("scored", "evaluated", i, evaluated)
        rows.append(compact(evaluated, cfg))
        if cohort is not None:
            both = results.merge(evaluated[["trace_id", cohort]], on="trace_id")
            counts.append(both.assign(failed=~both["passed"]).groupby(["evaluator", cohort])["failed"]
                          .agg(["sum", "count"]))
    fails = pd.concat(counts).groupby(level=[0, 1]).sum() if counts else pd.DataFrame()
    traces = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["trace_id", "text_group"])
    return Evaluated(traces, fails)


def fail_rates(fails: pd.DataFrame, cohort: str) -> pd.DataFrame:
    """Evaluator x cohort fail rates (rounded to 0.001) from `Evaluated.fails`."""
    rates = (fails["sum"] / fails["count"]).unstack(cohort).round(3)
    rates.index.name = "evaluator"
    return rates


def embed_partitions(spill: Spill, encode: Callable[[list[str]], np.ndarray]) -> PartitionedVectors:
    """The frozen vectors of every evaluated trace, a partition at a time, on disk."""
    spill.vectors = PartitionedVectors(spill.folder / "frozen")
    for i in range(spill.parts):
        spill.vectors.append(encode(spill.read("evaluated", i, ["input"])["input"].tolist()))
    return spill.vectors
