"""Gold items: messages with a known label, mixed into review batches to measure each reviewer.

Known labels come from adjudications (the deciding label of a dispute) or from a seeded labelled file
(`review.gold_path`). A gold item looks exactly like the others in the form; its answer goes to the gold
answers, never to annotations or datasets. A reviewer is flagged when, with at least `gold_min_answers`
answers, the upper Wilson bound of their cumulative gold accuracy is below `gold_min_accuracy`: then even the
most favourable reading of the evidence says they are below the bar (one bad batch of four is not evidence).

Pure helpers; the review store keeps the tables and calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class GoldCheck:
    reviewer: str
    answers: int
    correct: int
    low: float
    high: float
    enough: bool  # at least the configured minimum of answers
    ok: bool  # not enough evidence counts as ok

    @property
    def accuracy(self) -> float:
        return self.correct / self.answers if self.answers else float("nan")


def check(reviewer: str, answers: int, correct: int, min_answers: int, min_accuracy: float) -> GoldCheck:
    """Flag a reviewer only when the upper 95% Wilson bound of their gold accuracy is below `min_accuracy`
    with at least `min_answers` answers."""
    from hitl.evaluation.estimates import wilson_interval  # with scipy: only a submission checks gold answers

    low, high = wilson_interval(correct / answers, answers) if answers else (float("nan"), float("nan"))
    enough = answers >= min_answers
    return GoldCheck(reviewer, answers, correct, low, high, enough, ok=not (enough and high < min_accuracy))


def how_many(real_items: int, share: float, available: int) -> int:
    """Gold items to add to a batch of `real_items` so that they make up about `share` of it."""
    if real_items == 0 or share <= 0 or available == 0:
        return 0
    return int(min(available, max(1, round(real_items * share / (1.0 - share)))))


def positions(n_real: int, n_gold: int, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle gold among the batch: (positions of the real items in order, positions of the gold items)."""
    order = np.random.default_rng(seed).permutation(n_real + n_gold)
    gold_slots = sorted(int(p) for p in order[:n_gold])
    real_slots = [p for p in range(n_real + n_gold) if p not in set(gold_slots)]
    return real_slots, gold_slots


def read_seed_file(path: str | Path) -> pd.DataFrame:
    """A labelled file (JSONL, CSV or Parquet) with `input` (or `text`) and `label`, optionally `trace_id`,
    `prediction`, `confidence` and cohort columns. Rows without a text or a label are refused."""
    import pandas as pd

    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"review.gold_path {p} does not exist: point it at a labelled JSONL/CSV/Parquet file")
    df = (pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p) if p.suffix == ".csv"
          else pd.read_json(p, lines=True))
    df = df.rename(columns={"text": "input"})
    missing = {"input", "label"} - set(df.columns)
    if missing:
        raise ValueError(f"Gold file {p} lacks column(s) {sorted(missing)}: it needs input (or text) and label")
    bad = df["input"].isna() | df["label"].isna()
    if bad.any():
        raise ValueError(f"Gold file {p}: rows {list(df.index[bad][:5] + 1)} have no text or no label")
    if "trace_id" not in df.columns:
        df["trace_id"] = [f"{p.stem}-{i + 1}" for i in range(len(df))]
    return df
