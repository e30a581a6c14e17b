"""Automated evaluators: each looks at scored traces and returns one EvaluationResult row per trace.

An evaluator is a plain function `(traces, cfg) -> DataFrame[EvaluationResult]`, registered by name in
`EVALUATORS`. A trace is *flagged* when an evaluator of the outcome (not a model signal) fails it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pandas as pd

from hitl.config import Config
from hitl.schemas import EvaluationResult

Evaluator = Callable[[pd.DataFrame, Config], pd.DataFrame]

ESCALATION_CUES = re.compile(
    r"\b(human agent|transfer you|escalat\w*|i('m| am) not sure|could not help|cannot help|can't help)\b",
    re.IGNORECASE,
)


def _result(traces: pd.DataFrame, name: str, version: str, score: pd.Series, passed: pd.Series,
            reason: pd.Series) -> pd.DataFrame:
    out = pd.DataFrame({
        "trace_id": traces["trace_id"].to_numpy(),
        "evaluator": name,
        "evaluator_version": version,
        "score": score.astype(float).clip(0.0, 1.0).to_numpy(),
        "passed": passed.astype(bool).to_numpy(),
        "reason": reason.astype(str).to_numpy(),
    })
    return EvaluationResult.validate(out, lazy=True)


def uncertainty_of(traces: pd.DataFrame, cfg: Config) -> pd.Series:
    """1 - margin between the champion's top two labels, or normalised entropy, per `selection.uncertainty`."""
    kind = cfg.selection.uncertainty
    return (1.0 - traces["margin"].astype(float)) if kind == "margin" else traces["entropy"].astype(float)


def uncertainty_cut(traces: pd.DataFrame, cfg: Config) -> float:
    """The window's quantile above which `uncertainty` fails a trace."""
    return _cut(uncertainty_of(traces, cfg), cfg)


def _cut(raw: pd.Series, cfg: Config) -> float:
    return float(raw.quantile(1.0 - cfg.evaluators.uncertain_quantile)) if len(raw) else 1.0


def uncertainty(traces: pd.DataFrame, cfg: Config, cut: float | None = None) -> pd.DataFrame:
    """Fails the most uncertain `uncertain_quantile` share of the window (`uncertainty_of`). A quantile of the
    window, not a fixed probability: with many labels top-1 confidence is low everywhere and a fixed cut flags
    it all. `cut`: the window's (`uncertainty_cut`) when `traces` is one partition of it."""
    kind = cfg.selection.uncertainty
    raw = uncertainty_of(traces, cfg)
    cut = _cut(raw, cfg) if cut is None else cut
    passed = raw < cut
    label = "1 - margin" if kind == "margin" else "normalised entropy"
    reason = raw.map(lambda u: f"{label} {u:.2f} {'<' if u < cut else '>='} window "
                               f"p{100 * (1 - cfg.evaluators.uncertain_quantile):.0f} {cut:.2f}")
    return _result(traces, "uncertainty", "2", raw, passed, reason)


def _completion(metadata: str, output: str) -> tuple[float, str]:
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError:
        meta = {}
    outcome = str(meta.get("outcome", "")).lower()
    if outcome in {"escalated", "abandoned", "failed"}:
        return 0.0, f"conversation outcome was '{outcome}'"
    cue = ESCALATION_CUES.search(output or "")
    if cue:
        return 0.2, f"reply contains escalation cue '{cue.group(0)}'"
    if outcome in {"resolved", "completed"}:
        return 1.0, f"conversation outcome was '{outcome}'"
    return 0.7, "no outcome recorded and no escalation cue in the reply"


def task_completion(traces: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Rule-based: did the conversation reach its goal? Uses outcome metadata, then reply text cues."""
    pairs = [_completion(m, o) for m, o in zip(traces["metadata"], traces["output"], strict=True)]
    score = pd.Series([p[0] for p in pairs], dtype=float)
    reason = pd.Series([p[1] for p in pairs], dtype=str)
    passed = score >= cfg.evaluators.task_completion_threshold
    return _result(traces, "task_completion", "1", score, passed, reason)


EVALUATORS: dict[str, Evaluator] = {"uncertainty": uncertainty, "task_completion": task_completion}
MODEL_SIGNALS = frozenset({"uncertainty"})  # the selection policy ranks these itself; they do not flag a trace


def run_evaluators(traces: pd.DataFrame, cfg: Config, names: list[str] | None = None,
                   cut: float | None = None) -> pd.DataFrame:
    """Run the named evaluators (default: all) and return their results stacked (long format). `cut`: the
    window's uncertainty cut when `traces` is one partition of the window."""
    names = names or list(EVALUATORS)
    unknown = sorted(set(names) - set(EVALUATORS))
    if unknown:
        raise ValueError(f"Unknown evaluator(s) {unknown}; available: {sorted(EVALUATORS)}")
    return pd.concat([uncertainty(traces, cfg, cut) if n == "uncertainty" else EVALUATORS[n](traces, cfg)
                      for n in names], ignore_index=True)


def summarize(traces: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Per trace: flagged (an evaluator of the outcome failed it; model signals such as uncertainty do not
    flag) and every failing evaluator's reason joined."""
    failing = results[~results["passed"]]
    reasons = failing.groupby("trace_id")["reason"].agg(
        lambda s: "; ".join(f"{e}: {r}" for e, r in zip(failing.loc[s.index, "evaluator"], s, strict=True))
    )
    out = traces[["trace_id"]].copy()
    flagging = failing[~failing["evaluator"].isin(MODEL_SIGNALS)]
    out["flagged"] = out["trace_id"].isin(set(flagging["trace_id"]))
    out["evaluator_reasons"] = out["trace_id"].map(reasons).fillna("all evaluators passed")
    return out
