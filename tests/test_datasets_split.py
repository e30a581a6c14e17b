"""Dataset records (hitl/datasets/versions.py, pure parts): stable train/hold-out split and label validation."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.datasets.versions import assign_split, build_records
from hitl.review.store import ReviewStore
from hitl.schemas import REASON_COLUMN


def _ids(n: int, prefix: str = "tr") -> pd.Series:
    return pd.Series([f"{prefix}-{i:06d}" for i in range(n)])


def _resolved(n: int, labels: list[str] | None = None, **cols) -> pd.DataFrame:
    """Rows shaped like ReviewStore.resolved()."""
    labels = labels or [LABELS[i % len(LABELS)] for i in range(n)]
    df = pd.DataFrame({
        "trace_id": [f"tr-{i:03d}" for i in range(n)],
        "input": [f"message {i}" for i in range(n)],
        "label": labels,
        "reviewers": "alice",
        "annotation_ids": [str(i + 1) for i in range(n)],
        "channel": "web_chat", "locale": "en-US", "tier": "free",
        "prediction": "card_lost", "confidence": 0.4,
    })
    for k, v in cols.items():
        df[k] = v
    return df


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, dataset={"holdout_share": 0.3})


def test_assign_split_is_deterministic_and_order_free():
    ids = _ids(500)
    a = assign_split(ids, 0.3)
    b = assign_split(ids.iloc[::-1].reset_index(drop=True), 0.3).iloc[::-1].reset_index(drop=True)
    assert set(a) == {"train", "holdout"}
    assert list(a) == list(b)
    assert list(a.index) == list(ids.index)


def test_assign_split_honours_the_share():
    ids = _ids(10_000)
    for share in (0.1, 0.3, 0.5):
        assert (assign_split(ids, share) == "holdout").mean() == pytest.approx(share, abs=0.02)
    assert set(assign_split(ids.head(100), 0.0)) == {"train"}
    assert set(assign_split(ids.head(100), 1.0)) == {"holdout"}


def test_a_trace_never_changes_split_as_versions_grow():
    v1 = _ids(1000)
    v2 = pd.concat([v1, _ids(3000, prefix="later")], ignore_index=True).sample(frac=1.0, random_state=1)
    s1 = pd.Series(assign_split(v1, 0.35).to_numpy(), index=v1)
    s2 = pd.Series(assign_split(v2, 0.35).to_numpy(), index=v2.to_numpy())
    assert (s2.loc[v1] == s1).all()


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=30, unique=True),
       extra=st.lists(st.text(min_size=1, max_size=30), max_size=30),
       share=st.floats(min_value=0.01, max_value=0.99))
def test_property_split_depends_only_on_the_trace(ids, extra, share):
    alone = assign_split(pd.Series(ids), share)
    grown = assign_split(pd.Series(extra + ids), share).iloc[len(extra):]
    assert list(alone) == list(grown)
    assert set(alone) <= {"train", "holdout"}


def test_build_records_shape(cfg):
    good, bad = build_records(_resolved(6), cfg)
    assert bad.empty
    assert len(good) == 6
    assert list(good["trace_id"]) == sorted(good["trace_id"])
    assert {"trace_id", "text", "label", "split", "reviewers", "annotation_ids", "source", *COHORTS} <= set(good)
    assert set(good["source"]) == {"human_review"}
    assert list(good["text"]) == [f"message {i}" for i in range(6)]
    expected = assign_split(good["trace_id"], cfg.dataset.holdout_share)
    assert list(good["split"]) == list(expected)


def test_build_records_quarantines_labels_outside_the_label_set(cfg):
    labels = [LABELS[0], "retired_intent", LABELS[1], LABELS[2]]
    good, bad = build_records(_resolved(4, labels=labels), cfg)
    assert list(bad["trace_id"]) == ["tr-001"]
    assert "label" in bad[REASON_COLUMN].iloc[0] and "retired_intent" in bad[REASON_COLUMN].iloc[0]
    assert sorted(good["trace_id"]) == ["tr-000", "tr-002", "tr-003"]
    assert set(good["label"]) <= set(cfg.labels)


def test_build_records_quarantines_empty_text(cfg):
    resolved = _resolved(3)
    resolved.loc[2, "input"] = ""
    good, bad = build_records(resolved, cfg)
    assert list(bad["trace_id"]) == ["tr-002"]
    assert len(good) == 2


def test_build_records_of_nothing(cfg):
    good, bad = build_records(pd.DataFrame(columns=["trace_id", "label"]), cfg)
    assert good.empty and bad.empty
    assert {"trace_id", "text", "label", "split", *COHORTS} <= set(good.columns)


def test_build_records_from_the_review_store(cfg, tmp_path):
    """Labels resolved in the store become records; a label since dropped from the config is quarantined."""
    store = ReviewStore(f"sqlite:///{tmp_path}/r.db")
    store.enqueue(review_items(4, channel="voice"), COHORTS)
    batch = store.take_batch(4)
    answers = dict(zip([it["trace_id"] for it in batch.items], LABELS + [LABELS[0]], strict=True))
    store.submit(batch.id, "alice", {t: (lab, None) for t, lab in answers.items()}, LABELS)
    narrowed = make_cfg(tmp_path, labels=LABELS[:2] + ["new_intent"])
    good, bad = build_records(store.resolved(), narrowed)
    assert len(good) + len(bad) == 4
    assert set(bad["label"]) == {LABELS[2]}
    assert set(good["channel"]) == {"voice"}
    assert set(good["reviewers"]) == {"alice"}
    assert good["annotation_ids"].str.fullmatch(r"\d+").all()
