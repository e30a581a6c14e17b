"""What changed between two dataset versions, for a reviewer of the process: rows added, removed and
relabelled (a later adjudication or correction supersedes a label in the next version; the old version's
artifact never changes), rows that moved split, and the shift of the label and cohort distributions."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class DatasetDiff:
    added: pd.DataFrame  # rows of B whose trace is not in A
    removed: pd.DataFrame  # rows of A whose trace is not in B
    relabelled: pd.DataFrame  # trace_id, label_a, label_b (and the split in B)
    moved: pd.DataFrame  # trace_id, split_a, split_b
    labels: pd.DataFrame  # label, a, b, change
    cohorts: pd.DataFrame  # cohort, value, a, b, change (shares of rows)

    @property
    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "relabelled": len(self.relabelled),
                "moved_split": len(self.moved)}


def _shift(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    out = pd.concat([a.value_counts().rename("a"), b.value_counts().rename("b")], axis=1).fillna(0).astype(int)
    out["change"] = out["b"] - out["a"]
    return out.sort_index().rename_axis("value").reset_index()


def diff(a: pd.DataFrame, b: pd.DataFrame, cohorts: list[str]) -> DatasetDiff:
    """Compare version A (older) with version B by trace id."""
    ia, ib = a.set_index("trace_id"), b.set_index("trace_id")
    both = ia.index.intersection(ib.index)
    relabel = both[ia.loc[both, "label"].to_numpy() != ib.loc[both, "label"].to_numpy()]
    moved = both[ia.loc[both, "split"].to_numpy() != ib.loc[both, "split"].to_numpy()]
    shares = []
    for col in cohorts:
        if col in a.columns and col in b.columns:
            sh = _shift(a[col].astype(str), b[col].astype(str))
            shares.append(sh.assign(cohort=col)[["cohort", "value", "a", "b", "change"]])
    return DatasetDiff(
        added=b[~b["trace_id"].isin(ia.index)].reset_index(drop=True),
        removed=a[~a["trace_id"].isin(ib.index)].reset_index(drop=True),
        relabelled=pd.DataFrame({"trace_id": relabel, "label_a": ia.loc[relabel, "label"].to_numpy(),
                                 "label_b": ib.loc[relabel, "label"].to_numpy(),
                                 "split": ib.loc[relabel, "split"].to_numpy()}),
        moved=pd.DataFrame({"trace_id": moved, "split_a": ia.loc[moved, "split"].to_numpy(),
                            "split_b": ib.loc[moved, "split"].to_numpy()}),
        labels=_shift(a["label"], b["label"]).rename(columns={"value": "label"}),
        cohorts=pd.concat(shares, ignore_index=True) if shares else pd.DataFrame(
            columns=["cohort", "value", "a", "b", "change"]),
    )
