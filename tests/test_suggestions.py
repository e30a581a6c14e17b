"""A form that suggests (issue 25): the champion's top labels travel from scoring to the review item to its form,
come back from any choice as the plain label, and the metrics compare agreement with the champion with and without
them. Blind items: see also test_blind_review."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items
from sqlalchemy import create_engine, text

from hitl.db import add_nullable_columns
from hitl.learning.modeling import top_labels
from hitl.review import forms
from hitl.review.store import ReviewError, ReviewStore
from hitl.schemas import ReviewItem, validate_split

MANY = [f"label_{c}{i}" for c in "zyxwvutsrq" for i in range(15)]  # 150 labels, config order not A-Z
TOP = [["label_q3", 0.62], ["label_z0", 0.2], ["label_t7", 0.08], ["label_q4", 0.04], ["label_y1", 0.03],
       ["label_y2", 0.02], ["label_y3", 0.01]]


def _item(trace_id: str = "tr-1", **kw) -> dict:
    return {"trace_id": trace_id, "input": "my card never came", "prediction": "label_q3", "confidence": 0.62,
            "selection_reason": "uncertain", "evaluator_reasons": "", "channel": "voice", "locale": "en-GB",
            "tier": "free", "suggestions": TOP, **kw}


def _shown(cfg, n: int = 400, blind: bool = False) -> list[str]:
    """Trace ids of policy items that the config shows with suggestions (or, `blind`, hides)."""
    ids = [f"t{i}" for i in range(n)]
    return [t for t in ids if forms.is_blind(_item(t), cfg) == blind]


@pytest.fixture
def many(tmp_path):
    return make_cfg(tmp_path, labels=MANY, review={"blind_share": 0.2})


# ---- scoring -> review item ----

def test_top_labels_most_probable_first_ties_in_label_order_zeros_left_out():
    probs = np.array([[0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
    labels = ["a", "b", "c", "d"]
    assert top_labels(probs, labels, 2) == [[("b", 0.6), ("c", pytest.approx(0.3))], [("c", 0.5), ("a", 0.25)],
                                            [("c", 1.0)]]
    assert top_labels(probs, labels, 0) == [[], [], []]
    assert top_labels(np.zeros((0, 4)), labels, 5) == []


def test_review_suggestions_config_defaults_to_five_and_is_bounded(tmp_path):
    assert make_cfg(tmp_path).review.suggestions == 5
    for bad in (-1, 21):
        with pytest.raises(pydantic.ValidationError):
            make_cfg(tmp_path, review={"suggestions": bad})


def test_review_item_schema_takes_suggestions_optionally_and_checks_them(cfg):
    items = review_items(3).assign(selection_reason="uncertain", inclusion_prob=np.nan, window=None, stratum=None)
    ok, bad = validate_split(items.assign(suggestions=[[("card_lost", 0.7)], None, [("x", 1.5)]]),
                             ReviewItem.to_schema())
    assert list(ok["trace_id"]) == ["t000", "t001"] and "suggestions must be" in bad["_quarantine_reason"].iat[0]
    assert len(validate_split(items, ReviewItem.to_schema())[0]) == 3  # a frame without them is fine


def test_the_store_keeps_suggestions_and_gold_items_show_none(store):
    items = review_items(3)
    items["suggestions"] = [[("card_lost", 0.7), ("refund_request", 0.2)], "[]", None]
    store.enqueue(items, COHORTS)
    store.seed_gold(pd.DataFrame({"trace_id": ["g1"], "input": ["gold message"], "label": [LABELS[0]],
                                  "channel": "web_chat", "locale": "en-US", "tier": "free"}), COHORTS)
    batch = store.take_batch(4, gold_share=0.25)
    got = {it["trace_id"]: it["suggestions"] for it in batch.items}
    assert got == {"t000": [["card_lost", 0.7], ["refund_request", 0.2]], "t001": None, "t002": None, "g1": None}
    assert list(store.items()["suggestions"]) == [[["card_lost", 0.7], ["refund_request", 0.2]], None, None]


# ---- an existing store without the column ----

def test_an_old_store_gains_the_column_on_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    ReviewStore(url).enqueue(review_items(2), COHORTS)
    with create_engine(url).begin() as conn:  # what a store written before suggestions looks like
        conn.execute(text("ALTER TABLE review_items DROP COLUMN suggestions"))
    store = ReviewStore(url)
    assert add_nullable_columns(store.engine) == []  # added on open already, once
    more = review_items(1, prefix="n")
    more["suggestions"] = [[("card_arrival", 0.9)]]
    store.enqueue(more, COHORTS)
    items = store.take_batch(10).items
    old = [it for it in items if it["trace_id"].startswith("t")]
    assert [it["suggestions"] for it in old] == [None, None]
    assert next(it for it in items if it["trace_id"] == "n000")["suggestions"] == [["card_arrival", 0.9]]


def test_a_missing_column_that_is_not_nullable_is_refused_clearly(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    ReviewStore(url)
    with create_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE review_items DROP COLUMN evaluator_reasons"))
    with pytest.raises(ReviewError, match=r"cannot be upgraded in place: .*review_items.evaluator_reasons"):
        ReviewStore(url)

