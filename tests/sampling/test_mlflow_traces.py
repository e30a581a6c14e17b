"""The MLflow trace source's pure parts (the server round trip is in tests/e2e/test_e2e_loop.py)."""

from __future__ import annotations

import pandas as pd

from hitl.sampling import mlflow_traces


def test_the_message_is_the_request_key_or_the_only_string_input():
    assert mlflow_traces._message({"query": "lost card", "user": 7}, None) == "lost card"
    assert mlflow_traces._message({"query": "lost card", "lang": "en"}, None) is None  # ambiguous: quarantined
    assert mlflow_traces._message({"query": "lost card", "lang": "en"}, "query") == "lost card"
    assert mlflow_traces._message("lost card", None) == "lost card"
    assert mlflow_traces._decoded('{"a": 1}') == {"a": 1} and mlflow_traces._decoded("plain") == "plain"


def test_verdicts_carry_the_deciding_reason_else_the_reviewers_rationales():
    resolved = pd.DataFrame({"trace_id": ["t1", "t2"], "label": ["a", "b"], "reviewers": ["ann,bob", "ann,cat"]})
    ann = pd.DataFrame({"trace_id": ["t1", "t1", "t2", "t2"], "reviewer": ["ann", "bob", "ann", "cat"],
                        "label": ["a", "a", "a", "b"], "rationale": ["says lost", None, "unsure", "refund asked"]})
    res = pd.DataFrame({"trace_id": ["t2"], "kind": ["adjudication"], "reviewer": ["lead"], "label": ["b"],
                        "reason": ["the customer asks for money back"]})
    v = mlflow_traces.verdicts(resolved, ann, res).set_index("trace_id")
    assert v.loc["t1", "rationale"] == "says lost" and v.loc["t2", "rationale"] == "the customer asks for money back"
