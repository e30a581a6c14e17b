"""Reviewer metrics on scripted batches, against hand-computed values and the libraries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import krippendorff
import numpy as np
import pandas as pd
import pytest
from helpers_domain import COHORTS, review_items
from sklearn.metrics import cohen_kappa_score

from hitl.review import metrics
from hitl.review.store import ReviewStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _ann(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(trace_id, reviewer, label, batch_id) -> the store's annotations frame."""
    return pd.DataFrame([{"annotation_id": i, "trace_id": t, "reviewer": r, "label": lab, "rationale": None,
                          "batch_id": b, "created_at": T0} for i, (t, r, lab, b) in enumerate(rows)])


# ann and bob label four items; cat labels two of them. ann vs bob: 3 of 4 agree.
SCRIPT = _ann([("t1", "ann", "x", "b1"), ("t2", "ann", "x", "b1"), ("t3", "ann", "y", "b1"), ("t4", "ann", "y", "b1"),
               ("t1", "bob", "x", "b2"), ("t2", "bob", "y", "b2"), ("t3", "bob", "y", "b2"), ("t4", "bob", "y", "b2")])


def test_pair_kappa_is_hand_computed_and_matches_scikit_learn():
    pairs = metrics.pair_kappas(SCRIPT)
    row = pairs.iloc[0]
    # p_o = 3/4; p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert (row.reviewer_a, row.reviewer_b, row["items"]) == ("ann", "bob", 4)
    assert row.kappa == pytest.approx(0.5) and row.agreement == pytest.approx(0.75)
    assert row.kappa == pytest.approx(cohen_kappa_score(["x", "x", "y", "y"], ["x", "y", "y", "y"]))


def test_krippendorff_alpha_is_hand_computed_and_matches_the_library():
    alpha, n = metrics.krippendorff_alpha(SCRIPT)
    # 8 pairable values (x: 3, y: 5); D_o = 2/8, D_e = 2*3*5 / (8*7); alpha = 1 - D_o/D_e = 8/15
    assert n == 4 and alpha == pytest.approx(8 / 15)
    assert alpha == pytest.approx(krippendorff.alpha(reliability_data=[[0, 0, 1, 1], [0, 1, 1, 1]],
                                                     level_of_measurement="nominal"))
    rotating = pd.concat([SCRIPT, _ann([("t1", "cat", "x", "b3"), ("t2", "cat", "y", "b3")])])
    alpha3, _ = metrics.krippendorff_alpha(rotating)
    assert alpha3 == pytest.approx(krippendorff.alpha(
        reliability_data=[[0, 0, 1, 1], [0, 1, 1, 1], [0, 1, np.nan, np.nan]], level_of_measurement="nominal"))


def test_label_kappas_measure_each_label_against_the_rest():
    per = metrics.label_kappas(SCRIPT).set_index("label")
    # "x or not": ann [1,1,0,0], bob [1,0,0,0] -> p_o 3/4, p_e (2/4)(1/4)+(2/4)(3/4) = 1/2 -> 1/2
    assert per.loc["x", "kappa"] == pytest.approx(0.5) and per.loc["y", "kappa"] == pytest.approx(0.5)


def test_backlog_resolution_times_throughput_and_agreement_with_adjudication():
    items = pd.DataFrame([
        {"trace_id": "t1", "status": "resolved", "created_at": T0, "resolved_at": T0 + timedelta(hours=1)},
        {"trace_id": "t2", "status": "resolved", "created_at": T0, "resolved_at": T0 + timedelta(hours=3)},
        {"trace_id": "t3", "status": "resolved", "created_at": T0, "resolved_at": T0 + timedelta(hours=2)},
        {"trace_id": "t4", "status": "resolved", "created_at": T0, "resolved_at": T0 + timedelta(hours=2)},
        {"trace_id": "t5", "status": "queued", "created_at": T0 + timedelta(hours=1), "resolved_at": None},
        {"trace_id": "t6", "status": "queued", "created_at": T0 + timedelta(hours=5), "resolved_at": None}])
    batches = pd.DataFrame([
        {"id": "b1", "status": "submitted", "reviewer": "ann", "created_at": T0,
         "submitted_at": T0 + timedelta(minutes=30)},
        {"id": "b2", "status": "submitted", "reviewer": "bob", "created_at": T0,
         "submitted_at": T0 + timedelta(hours=1)}])
    resolutions = pd.DataFrame([{"trace_id": "t2", "kind": "adjudication", "label": "y", "created_at": T0}])
    m = metrics.compute(SCRIPT, items, batches, resolutions, now=T0 + timedelta(hours=7))
    assert (m.backlog, m.backlog_oldest_h, m.backlog_median_h) == (2, 6.0, 4.0)
    assert m.resolution_p50_h == pytest.approx(2.0) and m.resolution_p90_h == pytest.approx(2.7)  # numpy linear
    assert m.items_per_hour == pytest.approx(8 / 1.5)  # 8 labels over 1.5 h of open batches
    r = m.reviewers.set_index("reviewer")
    assert r.loc["ann", "items_per_hour"] == pytest.approx(8.0) and r.loc["bob", "items_per_hour"] == pytest.approx(4)
    assert r.loc["ann", "agrees_with_adjudication"] == 0.0 and r.loc["bob", "agrees_with_adjudication"] == 1.0
    page = metrics.markdown(m)
    assert "Krippendorff" in page and "ann / bob" in page
    assert "| agrees with adjudication, on disputed items only (95% CI) |" in page
    assert page.splitlines()[-1] == metrics.ADJUDICATION_NOTE and "low by construction" in page
    assert set(m.as_mlflow_metrics()) >= {"review_backlog", "review_krippendorff_alpha"}


def test_metrics_read_from_a_real_store(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue(review_items(4, required=2), COHORTS)
    for who in ("ann", "bob"):
        batch = store.take_batch(10)
        store.submit(batch.id, who, {it["trace_id"]: ("a" if who == "ann" or i else "b", None)
                                     for i, it in enumerate(batch.items)}, ["a", "b"])
    m = metrics.compute(store.annotations(), store.items(), store.batches(), store.resolutions(),
                        now=datetime.now(UTC))
    assert m.backlog == 0 and m.alpha_items == 4 and len(m.pairs) == 1 and m.pairs.iloc[0]["items"] == 4
    assert m.pairs.iloc[0]["agreement"] == pytest.approx(0.75)


def test_a_first_batch_without_overlap_has_no_agreement_yet():
    single = SCRIPT[SCRIPT["reviewer"] == "ann"]
    m = metrics.compute(single, pd.DataFrame(columns=["trace_id", "status", "created_at", "resolved_at"]),
                        pd.DataFrame(columns=["id", "status", "reviewer", "created_at", "submitted_at"]),
                        pd.DataFrame(columns=["trace_id", "kind", "label", "created_at"]), now=T0)
    assert np.isnan(m.alpha) and m.pairs.empty and m.per_label["kappa"].isna().all()
    assert "Krippendorff" in metrics.markdown(m)
