"""MLflow traces in and out: production traces logged to an MLflow experiment as a trace source, and the
human verdict written back to each trace as an assessment.

In: `mlflow.search_traces` over `source.experiment`; a trace's request (its root span's inputs) gives the
message (`source.request_key`, or the only string input), its response the model's answer (`prediction_key`,
`confidence_key`), its tags the cohorts. Rows go through the same validation and quarantine as files.

Out: `write_back` logs each resolved label with `mlflow.log_feedback` (source HUMAN, the reviewers, their
rationale), once per trace and label: a re-run writes nothing twice; a later correction adds the new verdict.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd

from hitl.config import Config


def _decoded(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _message(request: object, key: str | None) -> object:
    """The customer's text: `key` of a dict request, the only string value, or the request itself."""
    if isinstance(request, dict):
        if key:
            return request.get(key)
        texts = [v for v in request.values() if isinstance(v, str)]
        return texts[0] if len(texts) == 1 else None
    return request


def read(cfg: Config) -> pd.DataFrame:
    """Every trace of the configured experiment as a raw row of the trace contract (validated downstream);
    `_source` names the trace for quarantine reasons."""
    import mlflow

    src = cfg.source
    exp = mlflow.get_experiment_by_name(src.experiment or "")
    if exp is None:
        raise ValueError(f"No MLflow experiment named {src.experiment!r} at {cfg.mlflow_uri}: set "
                         "source.experiment to the experiment your application logs its traces to.")
    rows = []
    for t in mlflow.search_traces(locations=[exp.experiment_id], return_type="list", max_results=src.max_traces):
        if "IN_PROGRESS" in str(getattr(t.info, "state", "")):
            continue  # still being written: read at the next run
        request, response = _decoded(t.data.request), _decoded(t.data.response)
        tags = {k: v for k, v in (t.info.tags or {}).items() if not k.startswith("mlflow.")}
        answer = response if isinstance(response, dict) else {}
        rows.append({
            "trace_id": t.info.trace_id,
            "timestamp": datetime.fromtimestamp(t.info.request_time / 1000, UTC).isoformat(),
            "input": _message(request, src.request_key),
            "output": response if isinstance(response, str) else json.dumps(response, default=str),
            "prediction": answer.get(src.prediction_key), "confidence": answer.get(src.confidence_key),
            **{c: tags.get(c) for c in cfg.cohorts},
            "metadata": json.dumps({k: v for k, v in tags.items() if k not in cfg.cohorts}),
            "_source": f"mlflow trace {t.info.trace_id}",
        })
    return pd.DataFrame(rows)


def verdicts(resolved: pd.DataFrame, annotations: pd.DataFrame, resolutions: pd.DataFrame) -> pd.DataFrame:
    """trace_id, label, reviewers, rationale of every resolved item: the deciding reason of an adjudication or
    correction, else the rationales reviewers gave for the agreed label."""
    out = resolved[["trace_id", "label", "reviewers"]].copy()
    why = {}
    for r in annotations.dropna(subset=["rationale"]).itertuples():
        why.setdefault(r.trace_id, {}).setdefault(r.label, []).append(str(r.rationale))
    decided = resolutions.dropna(subset=["reason"]).drop_duplicates("trace_id", keep="last")
    decided = dict(zip(decided["trace_id"], decided["reason"], strict=True))
    out["rationale"] = [decided.get(t) or "; ".join(why.get(t, {}).get(lab, [])) or None
                        for t, lab in zip(out["trace_id"], out["label"], strict=True)]
    return out


def write_back(cfg: Config, resolved: pd.DataFrame) -> int:
    """Log each resolved label (`trace_id`, `label`, `reviewers`, `rationale`) on its MLflow trace as a HUMAN
    assessment named `source.assessment_name`, unless that trace already carries this label under that name.
    Returns how many assessments were written."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    exp = mlflow.get_experiment_by_name(cfg.source.experiment or "")
    if exp is None or resolved.empty:
        return 0
    name = cfg.source.assessment_name
    present: dict[str, set[str]] = {}
    for t in mlflow.search_traces(locations=[exp.experiment_id], return_type="list", include_spans=False,
                                  max_results=cfg.source.max_traces):
        present[t.info.trace_id] = {str(a.feedback.value) for a in (t.info.assessments or [])
                                    if a.name == name and a.feedback is not None}
    written = 0
    for r in resolved.itertuples():
        if r.trace_id not in present or str(r.label) in present[r.trace_id]:
            continue  # not an MLflow trace of this experiment, or its verdict is there already
        reviewers = str(r.reviewers).replace(",", ", ") if isinstance(r.reviewers, str) else ""
        mlflow.log_feedback(trace_id=r.trace_id, name=name, value=str(r.label),
                            source=AssessmentSource(AssessmentSourceType.HUMAN, reviewers or "unknown"),
                            rationale=(r.rationale or None) if isinstance(r.rationale, str) else None,
                            metadata={"hitl.project": cfg.project})
        present[r.trace_id].add(str(r.label))
        written += 1
    return written
