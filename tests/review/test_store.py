"""Review store (hitl/review/store.py): idempotent queue, leased batches, atomic submissions, overlap resolution."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pandas as pd
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items

from hitl.review.store import DISPUTED, QUEUED, RESOLVED, ReviewError, ReviewStore
from hitl.schemas import ReviewItem, validate_split

A, B, C = LABELS


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/r.db"


@pytest.fixture
def store(url) -> ReviewStore:
    return ReviewStore(url)


def _ids(batch) -> list[str]:
    """A batch's trace ids, sorted: the form shows them in a shuffled order (the queue's must not show)."""
    return sorted(it["trace_id"] for it in batch.items)


def _label_all(batch, label: str = A, rationale: str | None = None) -> dict[str, tuple[str, str | None]]:
    return {t: (label, rationale) for t in _ids(batch)}


def _run_together(n: int, fn) -> tuple[list, list[BaseException]]:
    """Run fn(i) in n threads released at the same moment; returns (results, exceptions)."""
    barrier = threading.Barrier(n)
    results, errors, lock = [], [], threading.Lock()

    def work(i: int) -> None:
        barrier.wait()
        try:
            r = fn(i)
            with lock:
                results.append(r)
        except BaseException as e:  # collected for the assertion
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


# ---- queue ----

def test_enqueue_is_idempotent(store):
    items = review_items(10)
    assert store.enqueue(items, COHORTS) == 10
    before = store.counts()
    assert store.enqueue(items, COHORTS) == 0
    assert store.counts() == before == {QUEUED: 10, RESOLVED: 0, DISPUTED: 0, "open_batches": 0, "annotations": 0}
    # a frame overlapping the queue adds only the new traces
    assert store.enqueue(review_items(15), COHORTS) == 5
    assert store.counts()[QUEUED] == 15


def test_known_trace_ids_cover_queue_and_considered(store):
    store.enqueue(review_items(3), COHORTS, considered=["t000", "t001", "t002", "seen-only"])
    assert store.known_trace_ids() == {"t000", "t001", "t002", "seen-only"}
    store.enqueue(review_items(0), COHORTS, considered=["seen-only", "another"])
    assert "another" in store.known_trace_ids()


def test_take_batch_by_priority_and_size(store):
    items = review_items(6, priority=[0.1, 1.9, 0.5, 1.2, 0.5, 0.0])
    store.enqueue(items, COHORTS)
    batch = store.take_batch(3)
    assert _ids(batch) == ["t001", "t002", "t003"]  # the three of highest priority
    item = next(it for it in batch.items if it["trace_id"] == "t001")
    assert item["input"] == "message t001" and item["channel"] == "web_chat" and item["tier"] == "free"
    assert store.counts()["open_batches"] == 1


def test_open_batch_items_are_not_handed_out_twice(store):
    store.enqueue(review_items(5), COHORTS)
    first = store.take_batch(3)
    second = store.take_batch(3)
    assert len(_ids(first)) == 3 and len(_ids(second)) == 2
    assert not set(_ids(first)) & set(_ids(second))
    assert store.take_batch(3) is None


def test_expire_batch_returns_items_to_the_queue(store):
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(5)
    assert store.take_batch(5) is None
    assert store.expire_batch(batch.id) is True
    assert store.expire_batch(batch.id) is False  # no longer open
    assert store.counts()["open_batches"] == 0
    again = store.take_batch(5)
    assert sorted(_ids(again)) == sorted(_ids(batch))
    assert store.get_batch(batch.id).status == "expired"


def test_an_abandoned_batch_expires_after_its_lease(store):
    """A run that crashed while paused never submits: after the lease its items go back to the queue."""
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(5, lease_s=3600)
    assert store.take_batch(5, lease_s=3600) is None  # still leased
    time.sleep(0.05)
    again = store.take_batch(5, lease_s=0.01)
    assert again is not None and sorted(_ids(again)) == sorted(_ids(batch))
    assert store.get_batch(batch.id).status == "expired"
    assert store.submit(again.id, "alice", {t: ("a", None) for t in _ids(again)}, ["a", "b"]).stored == 2


def test_a_late_submission_is_merged_where_items_still_need_labels_and_reported(store):
    """The reviewer worked past the lease: the batch expired and one item went to a new batch. The late labels
    are merged where no one else has labelled the item yet; the rest are reported, nothing is duplicated."""
    store.enqueue(review_items(3), COHORTS)
    first = store.take_batch(5)
    ids = _ids(first)  # queue order here: equal priorities, by id
    store.expire_batch(first.id)
    second = store.take_batch(1)
    assert _ids(second) == ids[:1]
    assert store.submit(second.id, "alice", {ids[0]: ("a", None)}, ["a", "b"]).stored == 1
    late = store.submit(first.id, "bob", {t: ("b", "late") for t in ids}, ["a", "b"])
    assert late.late and late.stored == 2 and set(late.skipped) == {ids[0]}
    assert "expired" in late.skipped[ids[0]]
    assert store.submit(first.id, "bob", {t: ("b", None) for t in ids}, ["a", "b"]).already_submitted  # replay
    assert store.take_batch(5) is None  # bob's late labels settled the other two
    ann = store.annotations()
    assert len(ann) == 3 and ann.groupby("trace_id").size().max() == 1
    assert dict(zip(ann.trace_id, ann.reviewer, strict=True)) == {ids[0]: "alice", ids[1]: "bob", ids[2]: "bob"}


def test_get_batch(store):
    store.enqueue(review_items(3), COHORTS)
    batch = store.take_batch(3)
    store.attach_flow_run(batch.id, "run-123")
    view = store.get_batch(batch.id)
    assert view.id == batch.id and view.flow_run_id == "run-123" and view.status == "open"
    assert _ids(view) == _ids(batch)
    with pytest.raises(KeyError, match="nope"):
        store.get_batch("nope")


# ---- submissions ----

def test_submit_stores_and_resolves(store):
    store.enqueue(review_items(3), COHORTS)
    batch = store.take_batch(3)
    labels = {"t000": (A, "obvious"), "t001": (B, ""), "t002": (C, None)}
    res = store.submit(batch.id, "  alice ", labels, LABELS)
    assert (res.stored, res.already_submitted, res.skipped) == (3, False, {})
    ann = store.annotations()
    assert list(ann["trace_id"]) == ["t000", "t001", "t002"]
    assert set(ann["reviewer"]) == {"alice"}
    assert ann["rationale"].iloc[0] == "obvious"
    assert ann["rationale"].iloc[1:].isna().all()  # empty or missing rationale is stored as NULL
    resolved = store.resolved().set_index("trace_id")
    assert resolved["label"].to_dict() == {"t000": A, "t001": B, "t002": C}
    assert set(resolved["reviewers"]) == {"alice"}
    assert store.counts() == {QUEUED: 0, RESOLVED: 3, DISPUTED: 0, "open_batches": 0, "annotations": 3}
    assert store.get_batch(batch.id).status == "submitted"


def test_submit_twice_stores_once(store):
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(2)
    first = store.submit(batch.id, "alice", _label_all(batch, A), LABELS)
    again = store.submit(batch.id, "bob", _label_all(batch, B), LABELS)
    assert first.stored == 2 and not first.already_submitted
    assert again.stored == 0 and again.already_submitted
    assert store.counts()["annotations"] == 2
    assert set(store.resolved()["label"]) == {A}


def test_label_outside_the_label_set_is_refused_whole(store):
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(2)
    with pytest.raises(ReviewError, match="not_a_label"):
        store.submit(batch.id, "alice", {"t000": (A, None), "t001": ("not_a_label", None)}, LABELS)
    assert store.counts()["annotations"] == 0
    assert store.get_batch(batch.id).status == "open"
    # the batch can still be answered properly afterwards
    assert store.submit(batch.id, "alice", _label_all(batch), LABELS).stored == 2


@pytest.mark.parametrize("reviewer", ["", "   ", None])
def test_empty_reviewer_is_refused(store, reviewer):
    store.enqueue(review_items(1), COHORTS)
    batch = store.take_batch(1)
    with pytest.raises(ReviewError, match="Reviewer"):
        store.submit(batch.id, reviewer, _label_all(batch), LABELS)
    assert store.counts()["annotations"] == 0


def test_trace_not_in_batch_is_refused(store):
    store.enqueue(review_items(4), COHORTS)
    batch = store.take_batch(2)
    labels = _label_all(batch) | {"t003": (A, None)}
    with pytest.raises(ReviewError, match="t003"):
        store.submit(batch.id, "alice", labels, LABELS)
    assert store.counts()["annotations"] == 0
    assert store.get_batch(batch.id).status == "open"


def test_unknown_batch_is_refused(store):
    with pytest.raises(ReviewError, match="No review batch"):
        store.submit("no-such-batch", "alice", {}, LABELS)


def test_unlabelled_items_go_back_to_the_queue(store):
    store.enqueue(review_items(3), COHORTS)
    batch = store.take_batch(3)
    res = store.submit(batch.id, "alice", {"t000": (A, None)}, LABELS)
    assert res.stored == 1
    assert res.skipped == {"t001": "no label given", "t002": "no label given"}
    assert sorted(_ids(store.take_batch(5))) == ["t001", "t002"]


# ---- overlap: items that need two annotations ----

def test_overlap_item_is_in_two_batches_but_not_three(store):
    store.enqueue(review_items(1, required=2), COHORTS)
    b1, b2 = store.take_batch(5), store.take_batch(5)
    assert _ids(b1) == _ids(b2) == ["t000"] and b1.id != b2.id
    assert store.take_batch(5) is None


def test_same_reviewer_twice_is_skipped(store):
    store.enqueue(review_items(1, required=2), COHORTS)
    b1, b2 = store.take_batch(5), store.take_batch(5)
    store.submit(b1.id, "alice", _label_all(b1, A), LABELS)
    res = store.submit(b2.id, "alice", _label_all(b2, A), LABELS)
    assert res.stored == 0 and not res.already_submitted
    assert "alice already labelled" in res.skipped["t000"]
    assert store.counts()[QUEUED] == 1 and store.counts()["annotations"] == 1
    # still needs a second reviewer: it is offered again
    b3 = store.take_batch(5)
    assert _ids(b3) == ["t000"]
    store.submit(b3.id, "bob", _label_all(b3, A), LABELS)
    assert store.counts()[RESOLVED] == 1


def test_two_agreeing_reviewers_resolve(store):
    store.enqueue(review_items(1, required=2), COHORTS)
    b1, b2 = store.take_batch(5), store.take_batch(5)
    store.submit(b1.id, "alice", _label_all(b1, B), LABELS)
    assert store.counts()[QUEUED] == 1 and store.resolved().empty  # one of two annotations is not enough
    store.submit(b2.id, "bob", _label_all(b2, B), LABELS)
    resolved = store.resolved()
    assert list(resolved["trace_id"]) == ["t000"]
    assert resolved["label"].iloc[0] == B
    assert resolved["reviewers"].iloc[0] == "alice,bob"
    assert len(resolved["annotation_ids"].iloc[0].split(",")) == 2


def test_disagreeing_reviewers_dispute(store):
    store.enqueue(review_items(2, required=[2, 1]), COHORTS)
    b1, b2 = store.take_batch(5), store.take_batch(5)
    assert _ids(b1) == ["t000", "t001"] and _ids(b2) == ["t000"]
    store.submit(b1.id, "alice", _label_all(b1, A), LABELS)
    store.submit(b2.id, "bob", _label_all(b2, C), LABELS)
    counts = store.counts()
    assert (counts[DISPUTED], counts[RESOLVED], counts[QUEUED]) == (1, 1, 0)
    assert list(store.resolved()["trace_id"]) == ["t001"]
    assert store.take_batch(5) is None  # a disputed item is not handed out again


def test_unleased_items_and_disputed_trace_ids_are_what_waits_outside_any_run(store):
    """`hitl inbox` counts: queued items no open batch holds, and the disputed items by trace id."""
    store.enqueue(review_items(3, required=[2, 1, 1]), COHORTS)
    assert store.unleased_items() == 3 and store.disputed_trace_ids() == []
    b1 = store.take_batch(2)  # t000 and t001; t000 still wants a second label, t002 was not leased
    assert store.unleased_items() == 2
    b2 = store.take_batch(5)  # the rest: t000's second label and t002
    assert store.unleased_items() == 0 and store.batches_wanted(5) == 0
    store.submit(b1.id, "alice", _label_all(b1, A), LABELS)
    store.submit(b2.id, "bob", _label_all(b2, C), LABELS)
    assert store.disputed_trace_ids() == ["t000"] and store.unleased_items() == 0
    assert [it["trace_id"] for it in store.disputed()] == store.disputed_trace_ids()


# ---- concurrency ----

def test_concurrent_submissions_to_different_batches_lose_nothing(store, url):
    store.enqueue(review_items(60, required=[1, 2] * 30), COHORTS)
    batches = [store.take_batch(3) for _ in range(20)]
    assert all(b is not None for b in batches)
    expected = sum(len(b.items) for b in batches)

    results, errors = _run_together(
        20, lambda i: ReviewStore(url).submit(batches[i].id, f"reviewer-{i}", _label_all(batches[i]), LABELS)
    )
    assert errors == []
    assert sum(r.stored for r in results) == expected
    assert store.counts()["annotations"] == expected
    assert store.counts()["open_batches"] == 0


def test_concurrent_double_submits_store_once(store, url):
    store.enqueue(review_items(5), COHORTS)
    batch = store.take_batch(5)
    _run_together(10, lambda i: ReviewStore(url).submit(batch.id, "alice", _label_all(batch), LABELS))
    assert store.counts()["annotations"] == 5
    assert store.counts()[RESOLVED] == 5


def test_concurrent_double_submits_report_already_submitted(store, url):
    """submit's contract for a batch already submitted is SubmitResult(stored=0, already_submitted=True).

    Ten simultaneous submits of the same batch (a UI resume racing the CLI, a task retry) must give one
    result that stored the labels and nine that say already_submitted; none may raise or report the
    batch's own items as 'already labelled in another batch'.
    """
    store.enqueue(review_items(5), COHORTS)
    batch = store.take_batch(5)
    results, errors = _run_together(
        10, lambda i: ReviewStore(url).submit(batch.id, "alice", _label_all(batch), LABELS)
    )
    assert [type(e).__name__ for e in errors] == []
    assert sorted((r.stored, r.already_submitted) for r in results) == [(0, True)] * 9 + [(5, False)]


def test_concurrent_take_batch_never_leases_an_item_twice(store, url):
    """Several review runs leasing at once must get disjoint batches of single-annotation items."""
    store.enqueue(review_items(60), COHORTS)
    results, errors = _run_together(10, lambda i: ReviewStore(url).take_batch(5))
    assert errors == []
    leased = Counter(t for b in results if b is not None for t in _ids(b))
    assert max(leased.values()) == 1, {t: n for t, n in leased.items() if n > 1}
    assert sum(leased.values()) == 50


def _disputed_store(tmp_path) -> tuple[ReviewStore, str]:
    store = ReviewStore(f"sqlite:///{tmp_path}/adj.db")
    store.enqueue(review_items(1, required=2), COHORTS)
    trace = "t000"
    for who, lab in (("alice", LABELS[0]), ("bob", LABELS[1])):
        batch = store.take_batch(5)
        store.submit(batch.id, who, {trace: (lab, f"{who} thinks so")}, LABELS)
    assert store.counts()[DISPUTED] == 1
    return store, trace


def test_adjudication_settles_a_dispute_and_keeps_the_annotations(tmp_path):
    store, trace = _disputed_store(tmp_path)
    [item] = store.disputed()
    assert [(a["reviewer"], a["label"]) for a in item["annotations"]] == [("alice", LABELS[0]), ("bob", LABELS[1])]
    rid = store.resolve(trace, LABELS[1], "carol", "bob is right", "adjudication", LABELS)
    assert store.counts()[DISPUTED] == 0 and store.counts()[RESOLVED] == 1
    row = store.resolved().set_index("trace_id").loc[trace]
    assert row["label"] == LABELS[1] and row["resolution"] == "adjudication"
    assert row["reviewers"] == "alice,bob,carol" and row["annotation_ids"].endswith(f"r{rid}")
    assert len(store.annotations()) == 2  # the original labels stay in the store
    with pytest.raises(ReviewError, match="needs it to be disputed"):  # nothing left to adjudicate
        store.resolve(trace, LABELS[0], "carol", None, "adjudication", LABELS)


def test_a_correction_supersedes_a_resolved_label(tmp_path):
    store, trace = _disputed_store(tmp_path)
    store.resolve(trace, LABELS[1], "carol", None, "adjudication", LABELS)
    store.resolve(trace, LABELS[2], "dave", "policy changed", "correction", LABELS)
    row = store.resolved().set_index("trace_id").loc[trace]
    assert row["label"] == LABELS[2] and row["resolution"] == "correction"
    assert list(store.resolutions()["kind"]) == ["adjudication", "correction"]


@pytest.mark.parametrize(("label", "who", "kind", "match"), [
    ("not_a_label", "carol", "correction", "not in the label set"),
    (LABELS[0], " ", "correction", "Reviewer name is empty"),
    (LABELS[0], "carol", "whim", "Unknown resolution kind"),
])
def test_bad_resolutions_are_refused_and_store_nothing(tmp_path, label, who, kind, match):
    store, trace = _disputed_store(tmp_path)
    with pytest.raises(ReviewError, match=match):
        store.resolve(trace, label, who, None, kind, LABELS)
    assert store.resolutions().empty and store.counts()[DISPUTED] == 1
    with pytest.raises(ReviewError, match="No review item"):
        store.resolve("nope", LABELS[0], "carol", None, "correction", LABELS)


def test_the_terminal_reviewer_merges_a_late_answer_and_says_so(tmp_path, capsys):
    """`hitl review` finds the run no longer waiting: the labels go to the store where items need them."""
    from types import SimpleNamespace

    from helpers_domain import LABELS, make_cfg

    from hitl.cli.reviewer import _submit_late
    from hitl.review.forms import REVIEWER_FIELD, item_field
    from hitl.review.prefect_api import REVIEW_FORM
    from tasks.review import build_form

    (tmp_path / "state").mkdir()
    cfg = make_cfg(tmp_path)
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(5)
    store.attach_flow_run(batch.id, "run-1")
    store.expire_batch(batch.id)  # the pause timed out while the reviewer was labelling
    run = SimpleNamespace(id="run-1", form=REVIEW_FORM, schema=build_form(batch, cfg).model_json_schema())
    values = {REVIEWER_FIELD: "late-larry", item_field(0): LABELS[0], item_field(1): LABELS[1]}
    assert _submit_late(cfg, run, values) is True
    assert "Late:" in capsys.readouterr().out
    ann = store.annotations()
    assert len(ann) == 2 and set(ann["reviewer"]) == {"late-larry"}
    assert _submit_late(cfg, SimpleNamespace(id="unknown", form=REVIEW_FORM, schema={}), values) is False


# ---- erasure ----

def _text_of(store: ReviewStore, trace_id: str) -> tuple:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hitl.review.tables import Item

    with Session(store.engine) as s:
        it = s.scalar(select(Item).where(Item.trace_id == trace_id))
        return it.input, it.output, it.context, it.suggestions, it.evaluator_reasons, it.status


def test_erase_blanks_the_text_and_keeps_the_item_out_of_every_dataset_and_batch(store):
    from hitl.review.tables import ERASED

    store.enqueue(review_items(4), COHORTS)
    batch = store.take_batch(2)  # t000, t001 handed out
    done = store.erase(["t001", "t003", "nope", "t003"])
    assert done.erased == ["t001", "t003"] and done.unknown == ["nope"]
    assert _text_of(store, "t003") == ("", "", None, None, "", ERASED)
    assert store.erase(["t001"]).erased == []  # already erased: not counted again
    result = store.submit(batch.id, "alice", _label_all(batch), LABELS)  # the reviewer answered both
    assert result.stored == 1 and "erased" in result.skipped["t001"]
    assert list(store.resolved()["trace_id"]) == ["t000"]
    assert _text_of(store, "t001")[-1] == ERASED  # an answer after the erasure does not resolve it
    nxt = store.take_batch(5)
    assert _ids(nxt) == ["t002"]  # an erased item is never handed out
    assert store.known_among(["t001", "t003"]) == {"t001", "t003"}  # sampling never takes the trace again


def test_erase_by_age_takes_every_item_queued_before_the_cutoff_and_its_gold_copy(tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    from hitl.review.tables import GoldItem, Item

    store, trace = _disputed_store(tmp_path)
    store.resolve(trace, LABELS[1], "carol", "bob is right", "adjudication", LABELS)  # makes a gold item of it
    store.enqueue(review_items(2, prefix="new"), COHORTS)
    with Session(store.engine) as s, s.begin():
        s.execute(update(Item).where(Item.trace_id == trace).values(created_at=datetime.now(UTC) - timedelta(days=40)))
    done = store.erase(older_than=datetime.now(UTC) - timedelta(days=30))
    assert done.erased == [trace] and done.unknown == []
    assert store.resolved().empty and len(store.annotations()) == 2  # the labels' history stays (audit)
    with Session(store.engine) as s:
        g = s.scalar(select(GoldItem).where(GoldItem.source_ref == trace))
        assert (g.input, g.item) == ("", "{}")
    batch = store.take_batch(10, gold_share=0.5)
    assert trace not in {it["trace_id"] for it in batch.items}  # a blanked gold item is never shown
    assert {t for t in _ids(batch)} == {"new000", "new001"}


def test_erase_by_age_counts_from_when_the_trace_was_written(store):
    """Retention ages an item by its trace's timestamp, not by when sampling queued it (a backfill of old traffic
    is not kept longer); an item stored without one counts from when it was queued."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    items = review_items(4).assign(timestamp=pd.to_datetime([now - timedelta(days=45), now - timedelta(days=5),
                                                             None, now - timedelta(days=31)], utc=True),
                                    inclusion_prob=float("nan"), window=None, stratum=None)
    validated, bad = validate_split(items, ReviewItem)
    assert bad.empty
    store.enqueue(validated, COHORTS)
    store.enqueue(review_items(1, prefix="pre"), COHORTS)  # as items stored before: no trace time, queued now
    assert store.erase(older_than=now - timedelta(days=30), dry_run=True).erased == ["t000", "t003"]
    assert store.erase(older_than=now - timedelta(days=30)).erased == ["t000", "t003"]
    assert store.erase(older_than=now + timedelta(days=1)).erased == ["t001", "t002", "pre000"]


def test_retention_at_registration_erases_old_items_once_and_records_it(tmp_path, local_mlflow):
    from datetime import UTC, datetime, timedelta

    from prefect.logging import disable_run_logger
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from hitl.audit import evidence
    from hitl.review.tables import Item
    from tasks import datasets

    cfg = make_cfg(tmp_path, cohorts=COHORTS, dataset={"retention_days": 100})
    cfg.state.mkdir()
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(3), COHORTS)
    with Session(store.engine) as s, s.begin():
        s.execute(update(Item).where(Item.trace_id == "t001")
                  .values(created_at=datetime.now(UTC) - timedelta(days=101)))
    plan = store.erase(older_than=datetime.now(UTC) - timedelta(days=100), dry_run=True)
    assert plan.erased == ["t001"] and _text_of(store, "t001")[0] == "message t001"  # a dry run changes nothing
    # a crash after the audit entry and before the erasure: the next run erases, and records nothing twice
    evidence.record_erasure(evidence.open_log(cfg, store), plan.erased, evidence.SYSTEM_ACTOR,
                            "past dataset.retention_days (100)")
    with disable_run_logger():
        assert datasets.apply_retention.fn(cfg, store) == 1
        assert datasets.apply_retention.fn(cfg, store) == 0  # nothing new past retention: no second entry
        assert datasets.apply_retention.fn(make_cfg(tmp_path, cohorts=COHORTS), store) == 0  # off by default
    [entry] = evidence.open_log(cfg, store).entries()  # no dataset version yet: nothing to prune
    assert (entry.kind, entry.actor, entry.ref["traces"]) == ("erasure", evidence.SYSTEM_ACTOR, 1)
    assert "retention_days (100)" in entry.ref["reason"] and _text_of(store, "t001")[0] == ""
