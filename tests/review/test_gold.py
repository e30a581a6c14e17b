"""Gold items: shown like any other item, measure reviewers, never become dataset rows; a reviewer below the
bar (with enough evidence) has their recent labels sent to adjudication."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items

from hitl.review import forms, gold
from hitl.vocabulary import RANDOM


def _seed(store, n: int, label: str = LABELS[0]) -> None:
    rows = pd.DataFrame({"trace_id": [f"g{i:03d}" for i in range(n)], "input": [f"gold message {i}" for i in range(n)],
                         "label": label, "channel": "web_chat", "locale": "en-US", "tier": "free"})
    assert store.seed_gold(rows, COHORTS) == n
    assert store.seed_gold(rows, COHORTS) == 0  # idempotent


def test_check_needs_enough_evidence_and_uses_the_upper_bound():
    assert gold.check("r", 4, 0, min_answers=20, min_accuracy=0.8).ok  # one bad batch of four is not evidence
    low = gold.check("r", 20, 10, min_answers=20, min_accuracy=0.8)
    assert not low.ok and low.high < 0.8
    borderline = gold.check("r", 20, 14, min_answers=20, min_accuracy=0.8)  # 70%, but the bound reaches 0.8
    assert borderline.ok and borderline.high > 0.8


def test_how_many_and_positions():
    assert gold.how_many(27, 0.1, 100) == 3 and gold.how_many(27, 0.1, 1) == 1 and gold.how_many(0, 0.1, 5) == 0
    real, gl = gold.positions(5, 2, seed=3)
    assert sorted(real + gl) == list(range(7)) and len(gl) == 2


def test_gold_items_look_like_the_others_and_never_become_annotations(store, tmp_path):
    cfg = make_cfg(tmp_path, review={"blind_share": 0.0})
    _seed(store, 5)
    store.enqueue(review_items(9), COHORTS)
    batch = store.take_batch(10, gold_share=0.1)
    ids = [it["trace_id"] for it in batch.items]
    golds = [t for t in ids if t.startswith("g")]
    assert len(golds) == 1 and len(ids) == 10
    keys = {frozenset(it) for it in batch.items}
    assert len(keys) == 1  # every item has exactly the same fields
    specs = {f.trace_id: f for f in forms.form_fields(batch.items, cfg) if f.trace_id}
    assert all(" (model said" in specs[t].description for t in ids if t not in golds)
    assert all(specs[t].description.endswith("”") for t in golds)  # blind, as a random-draw item is shown
    assert store.get_batch(batch.id).items == batch.items  # re-rendered identically
    labels = {t: (LABELS[1], None) for t in ids}
    result = store.submit(batch.id, "ann", labels, LABELS, gold_policy=(20, 0.8))
    assert result.stored == 9 and result.gold_answered == 1 and result.gold_correct == 0
    ann = store.annotations()
    assert len(ann) == 9 and not set(golds) & set(ann["trace_id"])
    assert not set(golds) & set(store.resolved()["trace_id"])  # never a dataset row
    answers = store.gold_answers()
    assert list(answers["trace_id"]) == golds and not answers["correct"].any()


def test_adjudicated_items_become_gold(store):
    store.enqueue(review_items(2, required=2), COHORTS)
    for who, lab in (("ann", LABELS[0]), ("bob", LABELS[1])):
        batch = store.take_batch(5)
        store.submit(batch.id, who, {it["trace_id"]: (lab, None) for it in batch.items}, LABELS)
    disputed = store.disputed()
    assert len(disputed) == 2
    store.resolve(disputed[0]["trace_id"], LABELS[2], "lead", "because", "adjudication", LABELS)
    store.enqueue(review_items(9, prefix="u"), COHORTS)
    batch = store.take_batch(10, gold_share=0.1)
    shown = [it for it in batch.items if it["trace_id"] == disputed[0]["trace_id"]]
    assert len(shown) == 1 and shown[0]["input"] == disputed[0]["input"]
    assert shown[0]["selection_reason"] == RANDOM  # shown blind, like a random-draw item


def test_a_reviewer_below_the_bar_has_their_labels_sent_to_adjudication(store):
    _seed(store, 40)
    store.enqueue(review_items(80, required=1), COHORTS)
    policy = (8, 0.8)
    careful = store.take_batch(10, gold_share=0.2)
    r = store.submit(careful.id, "good", {it["trace_id"]: (LABELS[0], None) for it in careful.items}, LABELS,
                     gold_policy=policy)
    assert r.gold_answered == 2 and r.gold_correct == 2 and r.check.ok
    first = store.take_batch(10, gold_share=0.2)  # sloppy: every gold answer wrong, but too few yet
    r = store.submit(first.id, "sloppy", {it["trace_id"]: (LABELS[1], None) for it in first.items}, LABELS,
                     gold_policy=policy)
    assert r.check.ok and not r.check.enough and r.sent_to_adjudication == 0
    sent = 0
    for _ in range(3):
        b = store.take_batch(10, gold_share=0.2)
        r = store.submit(b.id, "sloppy", {it["trace_id"]: (LABELS[1], None) for it in b.items}, LABELS,
                         gold_policy=policy)
        sent += r.sent_to_adjudication
    assert not r.check.ok and r.check.answers >= 8 and r.check.high < 0.8
    disputed = {d["trace_id"] for d in store.disputed()}
    sloppy_items = set(store.annotations().query("reviewer == 'sloppy'")["trace_id"])
    assert sent == len(disputed) == len(sloppy_items) == 32  # no good check on enough evidence: all of them
    assert not disputed & set(store.annotations().query("reviewer == 'good'")["trace_id"])
    checks = store.reviewer_checks()
    assert checks.query("reviewer == 'sloppy'")["ok"].tolist() == [True, True, True, False]
    assert checks.query("reviewer == 'sloppy'")["answers"].tolist() == [2, 4, 6, 8]


def test_seed_file_errors_are_plain(tmp_path):
    bad = tmp_path / "gold.jsonl"
    bad.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ValueError, match="label"):
        gold.read_seed_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        gold.read_seed_file(tmp_path / "missing.csv")
    ok = tmp_path / "gold.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_csv(ok, index=False)
    assert list(gold.read_seed_file(ok)["trace_id"]) == ["gold-1", "gold-2"]


def test_only_labels_since_the_last_good_check_go_to_adjudication(store):
    _seed(store, 40)
    store.enqueue(review_items(80, required=1), COHORTS)
    sent, batches = [], []
    for answer in (LABELS[0], LABELS[0], LABELS[1], LABELS[1]):  # right, right, then wrong twice
        b = store.take_batch(10, gold_share=0.2)
        batches.append({it["trace_id"] for it in b.items if not it["trace_id"].startswith("g")})
        r = store.submit(b.id, "drifting", {it["trace_id"]: (answer, None) for it in b.items}, LABELS,
                         gold_policy=(4, 0.8))
        sent.append(r.sent_to_adjudication)
    # checks: 2/2 (too few), 4/4 good, 4/6 (upper bound 0.90: still good), 4/8 (upper 0.79: flagged)
    assert sent == [0, 0, 0, 8]
    assert {d["trace_id"] for d in store.disputed()} == batches[3]


def test_batches_wanted_leaves_room_for_gold_so_one_dispatch_starts_enough_runs(store):
    """Gold items take their share of each batch: the count the dispatch starts is the count that drains the
    queue (without gold the same queue fits in fewer batches)."""
    store.enqueue(review_items(30, required=[2] * 10 + [1] * 20), COHORTS)  # 40 annotations
    assert store.batches_wanted(10, gold_share=0.2) == 4  # no gold items seeded yet: 10 queued items a batch
    _seed(store, 20)
    wanted = store.batches_wanted(10, gold_share=0.2)
    assert wanted == 5  # 8 queued items a batch
    taken = 0
    while store.take_batch(10, gold_share=0.2) is not None:
        taken += 1
    assert taken == wanted and store.batches_wanted(10, gold_share=0.2) == 0
