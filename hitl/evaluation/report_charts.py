"""The report's charts, as base64 PNGs for the self-contained HTML page: axes scaled to the data shown."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from hitl.evaluation.estimates import OVERALL
from hitl.evaluation.inference import FAIL, INCONCLUSIVE, PASS
from hitl.evaluation.summary import ROLLBACK


def heading(cohort: str) -> str:
    return "Overall" if cohort == OVERALL else f"By {cohort.replace('_', ' ')}"


def _figure(width: float, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _png(plt, fig) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _top(*highs: np.ndarray) -> float:
    """An axis that follows the data: a little above the highest bound shown (at most 100%)."""
    vals = np.concatenate([np.asarray(h, float).ravel() for h in highs])
    vals = vals[np.isfinite(vals)]
    return float(min(1.0, max(0.01, 1.15 * vals.max()))) if vals.size else 1.0


def chart_png(table: pd.DataFrame, cohort: str, level: str) -> str:
    """Grouped bars: estimated fail rate of champion and challenger per value of one cohort, with intervals."""
    part = table[(table["cohort"] == cohort) & (table["n"] > 0)]
    x = np.arange(len(part))
    plt, fig, ax = _figure(min(10, max(4, 1.1 * len(part) + 2)))
    for off, who, color in ((-0.2, "champion", "#9aa5b1"), (0.2, "challenger", "#2f6fde")):
        rate = part[who].to_numpy(float)
        err = np.vstack([rate - part[f"{who}_low"].to_numpy(float), part[f"{who}_high"].to_numpy(float) - rate])
        ax.bar(x + off, rate, 0.4, yerr=np.clip(np.nan_to_num(err), 0.0, None), capsize=3, label=who, color=color)
    many = len(part) > 6
    ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(part["value"], part["n"], strict=True)], fontsize=8,
                  rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("estimated production fail rate")
    ax.set_ylim(0, _top(part["champion_high"], part["challenger_high"]))
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}")
    ax.set_title(f"{heading(cohort)} ({level} intervals)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def trend_png(trend: pd.DataFrame, level: str) -> str:
    """Estimated overall fail rate of the champion and the challenger at every regression eval so far, and a
    dashed line at each rollback (summary.releases)."""
    plt, fig, ax = _figure(min(10, max(5, 0.8 * len(trend) + 3)))
    x = np.arange(len(trend))
    for who, color, off in (("champion", "#9aa5b1", -0.08), ("challenger", "#2f6fde", 0.08)):
        rate = trend[who].to_numpy(float)
        err = np.vstack([rate - trend[f"{who}_low"].to_numpy(float), trend[f"{who}_high"].to_numpy(float) - rate])
        ax.errorbar(x + off, rate, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o-", color=color, label=who,
                    capsize=3)
    rolled = trend["decision"].astype(str).str.startswith(ROLLBACK).to_numpy()
    for i in x[rolled]:  # no estimates there: a dashed line where @champion went back
        ax.axvline(i, color="#b42318", ls="--", lw=1, label="rollback" if i == x[rolled][0] else None)
    ax.set_xticks(x, [f"{w}\n{'rollback ' if r else ''}v{a}→v{b}" for w, a, b, r in zip(
        trend["when"], trend["champion_version"], trend["challenger_version"], rolled, strict=True)], fontsize=7)
    ax.set_ylim(0, _top(trend["champion_high"], trend["challenger_high"]))
    ax.set_ylabel("estimated production fail rate")
    ax.set_title(f"Overall, across regression evals\n(each at its own level; this report's: {level})", fontsize=9)
    ax.legend(fontsize=8)
    return _png(plt, fig)


OUTCOME_COLORS = {PASS: "#0b7a3e", FAIL: "#b42318", INCONCLUSIVE: "#b08800"}


def change_limits(low: np.ndarray, high: np.ndarray, margin: float) -> tuple[float, float]:
    """x limits in points that follow the data: every interval, 0 and the margin, with a little room."""
    vals = 100 * np.concatenate([np.asarray(low, float), np.asarray(high, float), [0.0, margin]])
    vals = vals[np.isfinite(vals)]
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.06 * (hi - lo), 0.2)
    return lo - pad, hi + pad


def change_axes(changes: pd.DataFrame, margin: float, level: str):
    """Dot-and-whisker chart of challenger minus champion (points) per row of `changes` (summary.chart_rows),
    the overall row on top, coloured by outcome, with the zero line and the margin. Returns (plt, fig, ax)."""
    from matplotlib.lines import Line2D

    rows = changes.iloc[::-1].reset_index(drop=True)
    plt, fig, ax = _figure(9.5, 1.0 + min(0.27, 3.2 / max(len(rows), 1)) * max(len(rows), 1))  # at most 4.2 in
    y = np.arange(len(rows))
    lo, hi = change_limits(rows["delta_low"], rows["delta_high"], margin)
    ax.axvspan(100 * margin, hi, color="#fde8e8", zorder=0)
    ax.axvline(0, color="#52606d", lw=1, zorder=1)
    ax.axvline(100 * margin, color="#b42318", lw=1, ls="--", zorder=1)
    for i, r in enumerate(rows.itertuples()):
        color = OUTCOME_COLORS.get(r.outcome, "#52606d")
        ax.hlines(i, 100 * r.delta_low, 100 * r.delta_high, color=color, lw=2, zorder=2)
        ax.plot(100 * r.delta, i, "o", color=color, ms=6 if r.cohort == OVERALL else 5, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(y, rows["label"], fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows.itertuples(), strict=True):
        tick.set_fontweight("bold" if r.cohort == OVERALL else "normal")
    ax.set_xlabel("challenger minus champion fail rate, points   (← challenger better | worse →)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#e4e7eb", lw=0.6)
    ax.set_axisbelow(True)
    shown = [k for k in OUTCOME_COLORS if (rows["outcome"] == k).any()]
    handles = [Line2D([], [], color=OUTCOME_COLORS[k], marker="o", lw=2, label=k) for k in shown]
    handles.append(Line2D([], [], color="#b42318", ls="--", lw=1, label=f"margin +{100 * margin:.1f} pts"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(f"Change per cohort (overall at {level}; cohorts at Holm's level)", fontsize=9)
    return plt, fig, ax


def change_png(changes: pd.DataFrame, margin: float, level: str) -> str:
    plt, fig, _ = change_axes(changes, margin, level)
    return _png(plt, fig)
