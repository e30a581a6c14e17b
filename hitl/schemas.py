"""Data contracts of the loop, as pandera schemas, and the one function every boundary validates with.

    trace -> evaluation -> review item -> annotation -> dataset record -> cohort regression row

Columns that depend on configuration (cohort columns, the label set) are added by the `*_schema(cfg)`
builders, so the config stays the single source of truth for them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from hitl.config import Config
from hitl.vocabulary import MAX_TEXT_CHARS, REASON_COLUMN, SELECTION_REASONS, SPLITS


def _is_json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except (TypeError, ValueError):
        return False


def _is_suggestions(v: object) -> bool:
    """None, or a list of (label, probability in [0, 1]) pairs."""
    if v is None or (isinstance(v, float) and v != v):
        return True
    try:
        return all(isinstance(lab, str) and 0.0 <= float(p) <= 1.0 for lab, p in v)
    except (TypeError, ValueError):
        return False


# The models are DataFrameSchema objects rather than DataFrameModel classes: building a class's schema makes
# pandera import dask.dataframe, installed here for prefect-dask (0.8 s of every process that validates).
Trace = pa.DataFrameSchema(
    {
        "trace_id": pa.Column(str, unique=True, checks=pa.Check.str_length(min_value=1, max_value=200)),
        "timestamp": pa.Column(pd.DatetimeTZDtype(unit="ns", tz="UTC")),
        "input": pa.Column(str, checks=pa.Check.str_length(min_value=1, max_value=MAX_TEXT_CHARS)),
        "output": pa.Column(str, checks=pa.Check.str_length(max_value=MAX_TEXT_CHARS)),
        # what production logged; optional: the champion re-scores every trace anyway
        "model_version": pa.Column(str, nullable=True),
        "prediction": pa.Column(str, nullable=True, checks=pa.Check.str_length(min_value=1)),
        "confidence": pa.Column(float, nullable=True, coerce=True,
                                checks=[pa.Check.ge(0.0), pa.Check.le(1.0)]),
        "context": pa.Column(str, nullable=True, checks=pa.Check.str_length(max_value=MAX_TEXT_CHARS)),
        "metadata": pa.Column(str, checks=pa.Check(lambda s: s.map(_is_json_object), name="json_object",
                                                   error="metadata must be a JSON object string")),
        # the share of its window the source took (an MLflow window over source.max_traces); absent: every trace
        "source_rate": pa.Column(float, nullable=True, coerce=True, required=False,
                                 checks=[pa.Check.gt(0.0), pa.Check.le(1.0)]),
    },
    strict="filter",  # unknown columns are dropped, not errors
    name="Trace",
    description="One production interaction as the logging system recorded it.",
)

EvaluationResult = pa.DataFrameSchema(
    {
        "trace_id": pa.Column(str),
        "evaluator": pa.Column(str),
        "evaluator_version": pa.Column(str),
        "score": pa.Column(float, checks=[pa.Check.ge(0.0), pa.Check.le(1.0)]),
        "passed": pa.Column(bool),
        "reason": pa.Column(str),
    },
    name="EvaluationResult",
    description="One evaluator's verdict on one trace.",
)

ReviewItem = pa.DataFrameSchema(
    {
        "trace_id": pa.Column(str, unique=True),
        "input": pa.Column(str),
        "output": pa.Column(str),
        "prediction": pa.Column(str),
        "confidence": pa.Column(float, checks=[pa.Check.ge(0.0), pa.Check.le(1.0)]),
        "selection_reason": pa.Column(str, checks=pa.Check.isin(list(SELECTION_REASONS))),
        "evaluator_reasons": pa.Column(str),
        "priority": pa.Column(float),
        "required_annotations": pa.Column(int, checks=[pa.Check.ge(1), pa.Check.le(2)]),
        # the trace's own time, which `dataset.retention_days` counts from (absent: from when it is queued)
        "timestamp": pa.Column(pd.DatetimeTZDtype(unit="ns", tz="UTC"), nullable=True, required=False, coerce=True),
        # the random draw's items only
        "inclusion_prob": pa.Column(float, nullable=True, checks=[pa.Check.gt(0.0), pa.Check.le(1.0)]),
        "window": pa.Column(str, nullable=True),
        "stratum": pa.Column(str, nullable=True),
        # the champion's top labels, [(label, probability), ...] most probable first; absent or None: none to show
        "suggestions": pa.Column(object, nullable=True, required=False,
                                 checks=pa.Check(lambda s: s.map(_is_suggestions), name="label_probability_pairs",
                                                 error="suggestions must be (label, probability) pairs")),
    },
    name="ReviewItem",
    description="A trace selected for human review, with why it was selected.",
)

Annotation = pa.DataFrameSchema(
    {
        "trace_id": pa.Column(str),
        "reviewer": pa.Column(str, checks=pa.Check.str_length(min_value=1, max_value=100)),
        "label": pa.Column(str),
        "rationale": pa.Column(str, nullable=True),
        "batch_id": pa.Column(str),
    },
    name="Annotation",
    description="A reviewer's label for one item.",
)

DatasetRecord = pa.DataFrameSchema(
    {
        "trace_id": pa.Column(str, unique=True),
        "text": pa.Column(str, checks=pa.Check.str_length(min_value=1, max_value=MAX_TEXT_CHARS)),
        "label": pa.Column(str),
        "split": pa.Column(str, checks=pa.Check.isin(list(SPLITS))),
        "selection_reason": pa.Column(str, checks=pa.Check.isin(list(SELECTION_REASONS))),
        "text_group": pa.Column(str, checks=pa.Check.str_length(min_value=1)),
        "inclusion_prob": pa.Column(float, nullable=True, checks=[pa.Check.gt(0.0), pa.Check.le(1.0)]),
        "window": pa.Column(str, nullable=True),
        "stratum": pa.Column(str, nullable=True),
        "reviewers": pa.Column(str),
        "annotation_ids": pa.Column(str),
        "source": pa.Column(str),
    },
    name="DatasetRecord",
    description="One row of a registered dataset version: a human label for a trace, and its split.",
)

CohortRegression = pa.DataFrameSchema(
    {
        "cohort": pa.Column(str),
        "value": pa.Column(str),
        "n": pa.Column(int, checks=pa.Check.ge(0)),
        "champion_fail_rate": pa.Column(float, nullable=True, checks=[pa.Check.ge(0.0), pa.Check.le(1.0)]),
        "challenger_fail_rate": pa.Column(float, nullable=True, checks=[pa.Check.ge(0.0), pa.Check.le(1.0)]),
        "delta": pa.Column(float, nullable=True),
    },
    name="CohortRegression",
    description="Champion vs challenger fail rate on one cohort of the hold-out.",
)


def _with_cohorts(schema: pa.DataFrameSchema, cfg: Config) -> pa.DataFrameSchema:
    return schema.add_columns({c: pa.Column(str, nullable=False) for c in cfg.cohorts})


def _with_labels(schema: pa.DataFrameSchema, column: str, cfg: Config) -> pa.DataFrameSchema:
    return schema.update_column(column, checks=[pa.Check.isin(cfg.labels)])


def trace_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(Trace, cfg)


def review_item_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(ReviewItem, cfg)


def annotation_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_labels(Annotation, "label", cfg)


def dataset_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(_with_labels(DatasetRecord, "label", cfg), cfg)


def _describe(row: pd.Series) -> str:
    col = row.get("column")
    check = str(row.get("check"))
    case = row.get("failure_case")
    where = f"column '{col}'" if isinstance(col, str) else "row"
    if check.startswith("column_in_dataframe"):
        return f"missing required column '{case}'"
    if check == "not_nullable":
        return f"{where} is missing (null)"
    if "coerce_dtype" in check or check.startswith("dtype("):
        return f"{where} has the wrong type ({case!r}, expected {check})"
    if check == "field_uniqueness" or check == "unique":
        return f"{where} value {case!r} is duplicated"
    if (bounds := re.fullmatch(r"str_length\((\w+), (\w+)\)", check)) and isinstance(case, str):
        low, high = (int(b) if b.isdigit() else None for b in bounds.groups())
        if high is not None and len(case) > high:
            return f"{where} is too long ({len(case)} characters, at most {high})"
        return f"{where} is empty" if not case else f"{where} is too short ({len(case)} characters, at least {low})"
    return f"{where} failed {check} (value {str(case)[:80]!r})"


def validate_split(df: pd.DataFrame, schema: pa.DataFrameSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate lazily and split `df` into (accepted, quarantined).

    Quarantined rows keep their original values plus a `_quarantine_reason` column; when the frame as a
    whole is unusable (a required column is missing) every row is quarantined with that reason.
    `len(accepted) + len(quarantined) == len(df)` always holds.
    """
    try:
        return schema.validate(df, lazy=True), df.iloc[0:0].assign(**{REASON_COLUMN: pd.Series(dtype=str)})
    except SchemaErrors as err:
        cases = err.failure_cases
    reasons: dict[object, list[str]] = defaultdict(list)
    frame_reasons: list[str] = []
    for _, case in cases.iterrows():
        idx = case.get("index")
        text = _describe(case)
        if idx is None or (isinstance(idx, float) and pd.isna(idx)):
            frame_reasons.append(text)
        else:
            reasons[idx].append(text)
    if frame_reasons:
        msg = "; ".join(sorted(set(frame_reasons)))
        bad = df.assign(**{REASON_COLUMN: msg})
        return df.iloc[0:0], bad
    bad_idx = df.index.isin(list(reasons))
    bad = df[bad_idx].copy()
    bad[REASON_COLUMN] = [("; ".join(dict.fromkeys(reasons[i]))) for i in bad.index]
    good = schema.validate(df[~bad_idx], lazy=True) if (~bad_idx).any() else df.iloc[0:0]
    return good, bad
