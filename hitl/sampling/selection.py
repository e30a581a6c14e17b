"""Selection policy: which evaluated traces go to human review, and why.

Order of filling the budget: a per-cohort minimum (so no cohort is invisible), then flagged traces, then
the most uncertain ones (active learning), and a reserved random share of passing traces (calibration:
reviewers must also see what "good" looks like).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.hashing import stable_fraction


def priority(flagged: pd.Series, confidence: pd.Series) -> pd.Series:
    """Higher first: any flagged trace outranks every unflagged one; within each, lower confidence first."""
    return flagged.astype(float) + (1.0 - confidence.astype(float))


def select_for_review(candidates: pd.DataFrame, cfg: Config, exclude: set[str] | frozenset[str] = frozenset()
                      ) -> pd.DataFrame:
    """Pick at most `selection.budget` traces from `candidates` (needs trace_id, confidence, flagged and the
    stratify column), skipping ids in `exclude`. Adds selection_reason, priority, required_annotations."""
    sel = cfg.selection
    pool = candidates[~candidates["trace_id"].isin(exclude)].copy()
    pool["priority"] = priority(pool["flagged"], pool["confidence"])
    pool = pool.sort_values(["priority", "trace_id"], ascending=[False, True])
    n_cal = min(round(sel.budget * sel.random_share), int((~pool["flagged"]).sum()))
    n_pri = sel.budget - n_cal
    chosen: list[pd.DataFrame] = []

    def take(frame: pd.DataFrame, reason_if_unflagged: str) -> None:
        frame = frame.copy()
        frame["selection_reason"] = np.where(frame["flagged"], "flagged", reason_if_unflagged)
        chosen.append(frame)

    if sel.stratify_by and sel.min_per_cohort and len(pool):
        groups = pool.groupby(sel.stratify_by, sort=True)
        quota = min(sel.min_per_cohort, n_pri // max(groups.ngroups, 1))
        quota_rows = groups.head(quota)
        take(quota_rows, "cohort_quota")
        pool = pool.drop(index=quota_rows.index)
        n_pri -= len(quota_rows)
    take(pool.head(max(n_pri, 0)), "uncertain")
    pool = pool.iloc[max(n_pri, 0):]
    successes = pool[~pool["flagged"]]
    if n_cal and len(successes):
        picked = successes.sample(n=min(n_cal, len(successes)), random_state=sel.seed)
        take(picked, "calibration")
        pool = pool.drop(index=picked.index)
    shortfall = sel.budget - sum(len(c) for c in chosen)
    if shortfall > 0:  # calibration slots nobody could fill go back to the priority order
        take(pool.head(shortfall), "uncertain")
    out = pd.concat(chosen) if chosen else pool.iloc[0:0].assign(selection_reason=pd.Series(dtype=str))
    out["required_annotations"] = [
        2 if stable_fraction(t, "overlap") < cfg.review.overlap_share else 1 for t in out["trace_id"]
    ]
    return out.sort_values(["priority", "trace_id"], ascending=[False, True]).reset_index(drop=True)


def counts_by_reason(selected: pd.DataFrame, cohort: str | None) -> pd.DataFrame:
    """A reason x cohort table of selected counts (for the run's artifact)."""
    if cohort is None or selected.empty:
        return selected.groupby("selection_reason").size().rename("count").reset_index()
    return pd.crosstab(selected["selection_reason"], selected[cohort], margins=True).reset_index()
