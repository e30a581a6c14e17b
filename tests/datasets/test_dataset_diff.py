"""`hitl datasets diff` on fixed data: added, removed, relabelled (superseded), moved, distribution shifts."""

from __future__ import annotations

import pandas as pd

from hitl.datasets.diff import diff

A = pd.DataFrame({"trace_id": ["t1", "t2", "t3", "t4"], "label": ["x", "y", "y", "z"],
                  "split": ["train", "train", "regression", "hard_case"], "channel": ["app", "web", "web", "app"]})
B = pd.DataFrame({"trace_id": ["t1", "t2", "t3", "t5", "t6"], "label": ["x", "x", "y", "z", "z"],
                  "split": ["train", "train", "regression", "train", "regression"],
                  "channel": ["app", "web", "web", "voice", "app"]})


def test_diff_on_fixed_versions():
    d = diff(A, B, ["channel"])
    assert d.summary == {"added": 2, "removed": 1, "relabelled": 1, "moved_split": 0}
    assert list(d.added["trace_id"]) == ["t5", "t6"] and list(d.removed["trace_id"]) == ["t4"]
    assert d.relabelled.to_dict("records") == [{"trace_id": "t2", "label_a": "y", "label_b": "x", "split": "train"}]
    labels = d.labels.set_index("label")
    assert labels.loc["x"].tolist() == [1, 2, 1] and labels.loc["y"].tolist() == [2, 1, -1]
    assert labels.loc["z"].tolist() == [1, 2, 1]
    ch = d.cohorts.set_index("value")
    assert ch.loc["voice", ["a", "b", "change"]].tolist() == [0, 1, 1]
    assert ch.loc["app", ["a", "b", "change"]].tolist() == [2, 2, 0]


def test_split_moves_are_reported():
    b = A.copy()
    b.loc[0, "split"] = "regression"
    d = diff(A, b, [])
    assert d.moved.to_dict("records") == [{"trace_id": "t1", "split_a": "train", "split_b": "regression"}]
    assert d.summary["relabelled"] == 0 and d.cohorts.empty


def test_identical_versions_differ_in_nothing():
    d = diff(A, A.sample(frac=1.0, random_state=0), ["channel"])
    assert d.summary == {"added": 0, "removed": 0, "relabelled": 0, "moved_split": 0}
    assert (d.labels["change"] == 0).all()
