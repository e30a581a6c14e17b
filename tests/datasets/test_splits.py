"""Dataset records and splits (hitl/datasets): splits by text group, the leakage guard, record building."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.datasets.splits import LeakageError, assign_splits, check_leakage, require_no_leakage
from hitl.datasets.versions import build_records
from hitl.hashing import normalize_text, text_group
from hitl.review.store import ReviewStore
from hitl.vocabulary import REASON_COLUMN


def _records(texts: list[str], reasons: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(len(texts))], "text": texts,
                         "text_group": [text_group(t) for t in texts], "selection_reason": reasons})


def test_normalised_text_ignores_case_punctuation_and_spacing():
    assert normalize_text("  What's my   BALANCE?! ") == "what s my balance"
    assert text_group("What's my balance?") == text_group("what's my balance") == text_group("WHAT'S  MY BALANCE")
    assert text_group("what is my balance") != text_group("what's my balance")


def test_natural_repeats_live_in_one_split_and_the_random_draw_wins():
    texts = ["What's my balance?", "what's my balance", "WHATS MY BALANCE", "I lost my card", "i lost my card!"]
    reasons = ["uncertain", "random", "uncertain", "novel", "uncertain"]
    split = assign_splits(_records(texts, reasons), hard_case_share=0.0)
    assert list(split[:2]) == ["regression", "regression"]  # a group with a random member is held out entirely
    assert split[2] == "train"  # "whats" (no apostrophe) is another text group
    assert split[3] == split[4] == "train"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["hi there", "Hi there!", "card lost", "CARD LOST", "refund", "x y", "x-y"]),
                          st.sampled_from(["random", "uncertain", "novel"])), min_size=1, max_size=40),
       st.floats(0.0, 0.9))
def test_property_a_group_never_spans_two_splits(rows, share):
    texts, reasons = zip(*rows, strict=True)
    recs = _records(list(texts), list(reasons))
    split = assign_splits(recs, share)
    assert split.groupby(recs["text_group"]).nunique().max() == 1
    assert (split[recs["selection_reason"] == "random"] == "regression").all()
    # groups without a random member get the same split whatever else is in the dataset
    policy_only = recs[~recs["text_group"].isin(recs.loc[recs["selection_reason"] == "random", "text_group"])]
    assert list(assign_splits(policy_only, share)) == list(split[policy_only.index])


def test_hard_case_share_is_honoured_by_group():
    texts = [f"message number {i}" for i in range(4000)]
    split = assign_splits(_records(texts, ["uncertain"] * 4000), hard_case_share=0.2)
    assert (split == "hard_case").mean() == pytest.approx(0.2, abs=0.02)
    assert set(split) == {"train", "hard_case"}


def test_leakage_guard_finds_planted_overlap_by_id_and_by_near_identical_text():
    regression = pd.DataFrame({"trace_id": ["r1", "r2"], "text": ["Where is my new card?", "cancel my account"]})
    train = pd.DataFrame({"trace_id": ["r1", "t2", "t3"],
                          "text": ["something else", "where is my new card", "top up failed"]})
    check = check_leakage(train, regression)
    assert not check.passed
    assert check.shared_ids == ["r1"] and check.shared_texts == ["t2"]
    with pytest.raises(LeakageError, match=r"by trace id: r1; by normalised text: t2"):
        require_no_leakage(check)
    clean = check_leakage(train.iloc[2:], regression)
    assert clean.passed and "passed" in clean.summary
    require_no_leakage(clean)


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, dataset={"hard_case_share": 0.3})


def _resolved(n: int, labels: list[str] | None = None, **cols) -> pd.DataFrame:
    """Rows shaped like ReviewStore.resolved()."""
    labels = labels or [LABELS[i % len(LABELS)] for i in range(n)]
    df = pd.DataFrame({
        "trace_id": [f"tr-{i:03d}" for i in range(n)], "input": [f"message {i}" for i in range(n)],
        "label": labels, "reviewers": "alice", "annotation_ids": [str(i + 1) for i in range(n)],
        "channel": "web_chat", "locale": "en-US", "tier": "free", "prediction": "card_lost", "confidence": 0.4,
        "selection_reason": ["random" if i % 2 else "uncertain" for i in range(n)],
        "inclusion_prob": [0.1 if i % 2 else None for i in range(n)],
        "window": ["2026-01-01" if i % 2 else None for i in range(n)],
        "stratum": ["channel=web_chat" if i % 2 else None for i in range(n)],
    })
    for k, v in cols.items():
        df[k] = v
    return df


def test_build_records_shape(cfg):
    good, bad = build_records(_resolved(6), cfg)
    assert bad.empty and len(good) == 6
    assert list(good["trace_id"]) == sorted(good["trace_id"])
    assert {"trace_id", "text", "label", "split", "selection_reason", "text_group", "inclusion_prob",
            *COHORTS} <= set(good)
    assert list(good.loc[good["selection_reason"] == "random", "split"].unique()) == ["regression"]
    assert good.loc[good["selection_reason"] == "random", "inclusion_prob"].eq(0.1).all()
    assert good.loc[good["selection_reason"] != "random", "inclusion_prob"].isna().all()
    assert list(good["split"]) == list(assign_splits(good, cfg.dataset.hard_case_share))


def test_build_records_quarantines_labels_outside_the_label_set(cfg):
    labels = [LABELS[0], "retired_intent", LABELS[1], LABELS[2]]
    good, bad = build_records(_resolved(4, labels=labels), cfg)
    assert list(bad["trace_id"]) == ["tr-001"]
    assert "label" in bad[REASON_COLUMN].iloc[0] and "retired_intent" in bad[REASON_COLUMN].iloc[0]
    assert sorted(good["trace_id"]) == ["tr-000", "tr-002", "tr-003"]


def test_build_records_quarantines_empty_text(cfg):
    resolved = _resolved(3)
    resolved.loc[2, "input"] = ""
    good, bad = build_records(resolved, cfg)
    assert list(bad["trace_id"]) == ["tr-002"] and len(good) == 2


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
    assert set(good["channel"]) == {"voice"} and set(good["reviewers"]) == {"alice"}
    assert good["annotation_ids"].str.fullmatch(r"\d+").all()


def _version(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """A dataset version's records: (trace_id, text, label, split)."""
    return pd.DataFrame(rows, columns=["trace_id", "text", "label", "split"])


def test_a_fine_tune_is_stopped_by_a_planted_overlap_by_id_and_by_near_identical_text():
    from hitl.datasets.splits import training_rows

    records = _version([("r1", "Where is my new card?", "card_arrival", "regression"),
                        ("r2", "I want to close my account", "close_account", "regression"),
                        ("t1", "refund please", "refund_request", "train")])
    planted = pd.concat([records, _version([("r1", "an edited copy", "card_lost", "train"),  # same trace id
                                            ("t9", "where is my NEW card", "card_arrival", "train")])])  # same text
    _, _, check = training_rows(planted, launch=None)
    with pytest.raises(LeakageError, match=r"by trace id: r1; by normalised text: t9"):
        require_no_leakage(check)
    rows, _, clean = training_rows(records, launch=None)
    assert clean.passed and list(rows["trace_id"]) == ["t1"]


def test_launch_replay_leaves_out_texts_of_the_regression_set():
    """A natural repeat in the launch data is not a leak to stop on: it is left out of the replay."""
    from hitl.datasets.splits import training_rows

    records = _version([("r1", "What is my balance?", "balance_inquiry", "regression"),
                        ("t1", "refund please", "refund_request", "train")])
    launch = pd.DataFrame({"text": ["what is my balance", "I lost my card"],
                           "label": ["balance_inquiry", "card_lost"]})
    rows, held_out, check = training_rows(records, launch)
    assert held_out == 1 and check.passed
    assert list(rows["text"]) == ["refund please", "I lost my card"]
