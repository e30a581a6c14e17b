"""Tiny Markdown helpers (pandas' to_markdown needs the optional tabulate package)."""

from __future__ import annotations

import math

import pandas as pd


def _fmt(v: object, pct: bool) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.1%}" if pct else f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(df: pd.DataFrame, pct_columns: tuple[str, ...] = ()) -> str:
    """A GitHub-style Markdown table of `df`; columns named in `pct_columns` are shown as percentages."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c in pct_columns) for c, v in zip(cols, row, strict=True)) + " |")
    return "\n".join(lines)
