"""Data contracts (hitl/schemas.py): schema builders and validate_split's accept/quarantine split."""

from __future__ import annotations

import json

import pandas as pd
from helpers_domain import make_cfg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl.schemas import (
    annotation_schema,
    dataset_schema,
    review_item_schema,
    trace_schema,
    validate_split,
)
from hitl.vocabulary import REASON_COLUMN, SELECTION_REASONS


def _traces(n: int, **cols) -> pd.DataFrame:
    """n normalized, valid trace rows (the shape sources.normalize hands to the schema)."""
    df = pd.DataFrame({
        "trace_id": [f"tr-{i}" for i in range(n)],
        "timestamp": pd.to_datetime(["2025-03-01T08:00:00Z"] * n, utc=True).as_unit("ns"),
        "input": [f"message {i}" for i in range(n)],
        "output": "reply",
        "model_version": "v1",
        "prediction": "card_lost",
        "confidence": [0.5] * n,
        "context": pd.Series([None] * n, dtype=object),
        "metadata": json.dumps({"outcome": "resolved"}),
        "channel": "web_chat",
        "locale": "en-US",
        "tier": "free",
    })
    return df.assign(**cols)


def _records(n: int, cfg, **cols) -> pd.DataFrame:
    df = pd.DataFrame({
        "trace_id": [f"tr-{i}" for i in range(n)],
        "text": [f"text {i}" for i in range(n)],
        "label": [cfg.labels[i % len(cfg.labels)] for i in range(n)],
        "split": ["train" if i % 2 else "regression" for i in range(n)],
        "selection_reason": ["uncertain" if i % 2 else "random" for i in range(n)],
        "text_group": [f"g{i}" for i in range(n)],
        "inclusion_prob": [None if i % 2 else 0.1 for i in range(n)],
        "window": [None if i % 2 else "2026-01-01" for i in range(n)],
        "stratum": [None if i % 2 else "channel=web_chat" for i in range(n)],
        "reviewers": "alice",
        "annotation_ids": [str(i) for i in range(n)],
        "source": "human_review",
        "channel": "web_chat",
        "locale": "en-US",
        "tier": "free",
    })
    return df.assign(**cols)


def test_trace_schema_adds_configured_cohorts(tmp_path):
    cfg = make_cfg(tmp_path, cohorts=["channel", "region"], selection={"strata": ["region"]})
    cols = set(trace_schema(cfg).columns)
    assert {"trace_id", "timestamp", "input", "confidence", "metadata", "channel", "region"} <= cols
    assert "tier" not in cols


def test_valid_frame_is_accepted_whole(cfg):
    df = _traces(5)
    good, bad = validate_split(df, trace_schema(cfg))
    assert len(good) == 5
    assert bad.empty and REASON_COLUMN in bad.columns
    assert list(good["trace_id"]) == list(df["trace_id"])


def test_bad_rows_are_quarantined_with_reasons_and_rest_accepted(cfg):
    df = _traces(6)
    df.loc[1, "confidence"] = 1.7
    df.loc[2, "input"] = ""
    df.loc[3, "metadata"] = "{not json"
    df.loc[4, "metadata"] = "[1, 2]"  # JSON, but not an object
    good, bad = validate_split(df, trace_schema(cfg))
    assert len(good) + len(bad) == len(df)
    assert sorted(good["trace_id"]) == ["tr-0", "tr-5"]
    reasons = dict(zip(bad["trace_id"], bad[REASON_COLUMN], strict=True))
    assert set(reasons) == {"tr-1", "tr-2", "tr-3", "tr-4"}
    assert "confidence" in reasons["tr-1"] and "1.7" in reasons["tr-1"]
    assert reasons["tr-2"] == "column 'input' is empty"
    assert "metadata must be a JSON object" in reasons["tr-3"]
    assert "metadata must be a JSON object" in reasons["tr-4"]
    # quarantined rows keep their original values
    assert bad.set_index("trace_id").loc["tr-1", "confidence"] == 1.7


def test_null_in_required_column_is_named(cfg):
    df = _traces(3)
    df["channel"] = pd.Series(["web_chat", None, "app"], dtype=object)
    good, bad = validate_split(df, trace_schema(cfg))
    assert list(bad["trace_id"]) == ["tr-1"]
    assert bad[REASON_COLUMN].iloc[0] == "column 'channel' is missing (null)"
    assert len(good) == 2


def test_missing_required_column_quarantines_every_row(cfg):
    df = _traces(4).drop(columns=["prediction"])
    good, bad = validate_split(df, trace_schema(cfg))
    assert good.empty
    assert len(bad) == 4
    assert set(bad[REASON_COLUMN]) == {"missing required column 'prediction'"}


def test_unknown_columns_are_filtered_from_traces(cfg):
    good, bad = validate_split(_traces(2, debug_blob="x"), trace_schema(cfg))
    assert bad.empty
    assert "debug_blob" not in good.columns


def test_dataset_schema_checks_labels_split_and_uniqueness(cfg):
    df = _records(5, cfg)
    df.loc[1, "label"] = "not_a_label"
    df.loc[2, "split"] = "test"
    df.loc[4, "trace_id"] = "tr-3"
    good, bad = validate_split(df, dataset_schema(cfg))
    assert len(good) + len(bad) == 5
    reasons = dict(zip(bad.index, bad[REASON_COLUMN], strict=True))
    assert "isin" in reasons[1] and "not_a_label" in reasons[1]
    assert "'split'" in reasons[2] and "test" in reasons[2]
    assert "duplicated" in reasons[4]
    assert "tr-0" in set(good["trace_id"])
    assert "not_a_label" not in set(good["label"])


def test_annotation_schema_uses_config_labels(cfg):
    ann = pd.DataFrame({"trace_id": ["a", "b"], "reviewer": ["alice", "bob"],
                        "label": [cfg.labels[0], "other"], "rationale": [None, "x"], "batch_id": "b1"})
    good, bad = validate_split(ann, annotation_schema(cfg))
    assert list(good["trace_id"]) == ["a"]
    assert list(bad["trace_id"]) == ["b"]


def test_review_item_schema_restricts_reason_and_annotations(cfg):
    items = pd.DataFrame({
        "trace_id": ["a", "b", "c"], "input": "x", "output": "y", "prediction": "card_lost",
        "confidence": 0.4, "selection_reason": ["flagged", "because", "calibration"],
        "evaluator_reasons": "", "priority": 1.0, "required_annotations": [1, 2, 3],
        "inclusion_prob": float("nan"), "window": None, "stratum": None,
        "channel": "web_chat", "locale": "en-US", "tier": "free",
    })
    good, bad = validate_split(items, review_item_schema(cfg))
    assert list(good["trace_id"]) == ["a"]
    assert sorted(bad["trace_id"]) == ["b", "c"]
    assert set(SELECTION_REASONS) == {"random", "uncertain", "novel", "disagreement", "flagged", "consensus"}


_bad_values = {
    "confidence": st.sampled_from([1.7, -0.1, 12.0]),  # NaN is allowed: the champion re-scores every trace
    "input": st.sampled_from(["", "x" * 10_001, None]),
    "metadata": st.sampled_from(["{oops", "null", "[1]", '"str"', ""]),
    "channel": st.just(None),
    "trace_id": st.sampled_from(["", "x" * 201]),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n=st.integers(min_value=1, max_value=12))
def test_property_split_always_adds_up(cfg, data, n):
    df = _traces(n)
    df["input"] = df["input"].astype(object)
    df["channel"] = df["channel"].astype(object)
    df["trace_id"] = df["trace_id"].astype(object)
    df["metadata"] = df["metadata"].astype(object)
    broken = set()
    for i in range(n):
        col = data.draw(st.sampled_from([None, *_bad_values]))
        if col is not None:
            df.at[i, col] = data.draw(_bad_values[col])
            broken.add(f"tr-{i}" if col != "trace_id" else i)
    good, bad = validate_split(df, trace_schema(cfg))
    assert len(good) + len(bad) == n
    assert bad[REASON_COLUMN].map(lambda r: isinstance(r, str) and r.strip() != "").all()
    assert len(bad) == len(broken)
    if len(good):  # accepted rows satisfy the contract on their own
        trace_schema(cfg).validate(good)
