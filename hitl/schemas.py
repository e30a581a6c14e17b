"""Data contracts of the loop, as pandera models, and the one function every boundary validates with.

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
from pandera.typing import Series

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


class Trace(pa.DataFrameModel):
    """One production interaction as the logging system recorded it."""

    trace_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1, "max_value": 200})
    timestamp: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs={"unit": "ns", "tz": "UTC"})
    input: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": MAX_TEXT_CHARS})
    output: Series[str] = pa.Field(str_length={"max_value": MAX_TEXT_CHARS})
    model_version: Series[str] = pa.Field(nullable=True)  # what production logged; optional: the
    prediction: Series[str] = pa.Field(nullable=True, str_length={"min_value": 1})  # champion re-scores
    confidence: Series[float] = pa.Field(nullable=True, ge=0.0, le=1.0, coerce=True)  # every trace anyway
    context: Series[str] = pa.Field(nullable=True, str_length={"max_value": MAX_TEXT_CHARS})
    metadata: Series[str]
    # the share of its window the source took (an MLflow window over source.max_traces); absent: every trace
    source_rate: Series[float] | None = pa.Field(nullable=True, gt=0.0, le=1.0, coerce=True)

    @pa.check("metadata", name="json_object", error="metadata must be a JSON object string")
    def _metadata_is_json(cls, s: Series[str]) -> Series[bool]:
        return s.map(_is_json_object)

    class Config:
        strict = "filter"  # unknown columns are dropped, not errors
        coerce = False


class EvaluationResult(pa.DataFrameModel):
    """One evaluator's verdict on one trace."""

    trace_id: Series[str]
    evaluator: Series[str]
    evaluator_version: Series[str]
    score: Series[float] = pa.Field(ge=0.0, le=1.0)
    passed: Series[bool]
    reason: Series[str]


class ReviewItem(pa.DataFrameModel):
    """A trace selected for human review, with why it was selected."""

    trace_id: Series[str] = pa.Field(unique=True)
    input: Series[str]
    output: Series[str]
    prediction: Series[str]
    confidence: Series[float] = pa.Field(ge=0.0, le=1.0)
    selection_reason: Series[str] = pa.Field(isin=list(SELECTION_REASONS))
    evaluator_reasons: Series[str]
    priority: Series[float]
    required_annotations: Series[int] = pa.Field(ge=1, le=2)
    inclusion_prob: Series[float] = pa.Field(nullable=True, gt=0.0, le=1.0)  # the random draw's items only
    window: Series[str] = pa.Field(nullable=True)
    stratum: Series[str] = pa.Field(nullable=True)
    # the champion's top labels, [(label, probability), ...] most probable first; absent or None: none to show
    suggestions: Series[object] | None = pa.Field(nullable=True)

    @pa.check("suggestions", name="label_probability_pairs", error="suggestions must be (label, probability) pairs")
    def _suggestions_are_pairs(cls, s: Series[object]) -> Series[bool]:
        return s.map(_is_suggestions)


class Annotation(pa.DataFrameModel):
    """A reviewer's label for one item."""

    trace_id: Series[str]
    reviewer: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 100})
    label: Series[str]
    rationale: Series[str] = pa.Field(nullable=True)
    batch_id: Series[str]


class DatasetRecord(pa.DataFrameModel):
    """One row of a registered dataset version: a human label for a trace, and its split."""

    trace_id: Series[str] = pa.Field(unique=True)
    text: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": MAX_TEXT_CHARS})
    label: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLITS))
    selection_reason: Series[str] = pa.Field(isin=list(SELECTION_REASONS))
    text_group: Series[str] = pa.Field(str_length={"min_value": 1})
    inclusion_prob: Series[float] = pa.Field(nullable=True, gt=0.0, le=1.0)
    window: Series[str] = pa.Field(nullable=True)
    stratum: Series[str] = pa.Field(nullable=True)
    reviewers: Series[str]
    annotation_ids: Series[str]
    source: Series[str]


class CohortRegression(pa.DataFrameModel):
    """Champion vs challenger fail rate on one cohort of the hold-out."""

    cohort: Series[str]
    value: Series[str]
    n: Series[int] = pa.Field(ge=0)
    champion_fail_rate: Series[float] = pa.Field(ge=0.0, le=1.0, nullable=True)
    challenger_fail_rate: Series[float] = pa.Field(ge=0.0, le=1.0, nullable=True)
    delta: Series[float] = pa.Field(nullable=True)


def _with_cohorts(schema: pa.DataFrameSchema, cfg: Config) -> pa.DataFrameSchema:
    return schema.add_columns({c: pa.Column(str, nullable=False) for c in cfg.cohorts})


def _with_labels(schema: pa.DataFrameSchema, column: str, cfg: Config) -> pa.DataFrameSchema:
    return schema.update_column(column, checks=[pa.Check.isin(cfg.labels)])


def trace_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(Trace.to_schema(), cfg)


def review_item_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(ReviewItem.to_schema(), cfg)


def annotation_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_labels(Annotation.to_schema(), "label", cfg)


def dataset_schema(cfg: Config) -> pa.DataFrameSchema:
    return _with_cohorts(_with_labels(DatasetRecord.to_schema(), "label", cfg), cfg)


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
