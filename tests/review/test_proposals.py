"""New labels from reviewers: "none of these fits" holds the item, the proposal is kept, and the item is
re-queued once the label is in the label set."""

from __future__ import annotations

import pytest
from helpers_domain import COHORTS, LABELS, review_items
from typer.testing import CliRunner

from hitl.review.forms import NONE_FITS
from hitl.review.store import PROPOSED, QUEUED, ReviewStore, proposal_name


@pytest.mark.parametrize(("rationale", "name"), [
    ("crypto_wallet: asks about a crypto wallet", "crypto_wallet"),
    ("Crypto Wallet: asks", "crypto_wallet"),
    ("crypto wallet", "crypto_wallet"),
    ("this is about something we have no label for at all", "unnamed"),
    (None, "unnamed"),
])
def test_proposal_name(rationale, name):
    assert proposal_name(rationale) == name


def test_a_proposal_holds_the_item_until_the_label_exists(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue(review_items(3), COHORTS)
    batch = store.take_batch(5)
    ids = [it["trace_id"] for it in batch.items]
    answer = {ids[0]: (NONE_FITS, "crypto_wallet: asks about a crypto wallet"), ids[1]: (LABELS[0], None),
              ids[2]: (NONE_FITS, "Crypto wallet: same thing")}
    result = store.submit(batch.id, "ann", answer, LABELS)
    assert result.stored == 1 and "crypto_wallet" in result.skipped[ids[0]]
    assert len(store.annotations()) == 1  # a proposal is not a label
    status = store.items().set_index("trace_id")["status"]
    assert status[ids[0]] == status[ids[2]] == PROPOSED
    assert store.take_batch(5) is None  # held, not handed out again
    props = store.proposals()
    assert list(props["proposed_label"]) == ["crypto_wallet", "crypto_wallet"] and set(props["status"]) == {"open"}

    assert store.requeue_proposals(LABELS) == 0
    assert store.requeue_proposals([*LABELS, "crypto_wallet"]) == 2
    assert store.items().set_index("trace_id")["status"][ids[0]] == QUEUED
    again = store.take_batch(5)
    assert sorted(it["trace_id"] for it in again.items) == sorted([ids[0], ids[2]])
    assert set(store.proposals()["status"]) == {"requeued"}  # nothing proposed is lost


def test_labels_proposals_command_groups_them(tmp_path):
    from hitl.cli import app

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"labels: {LABELS}\nstate_dir: {tmp_path / 'state'}\n")
    (tmp_path / "state").mkdir()
    from hitl.config import load_config

    store = ReviewStore(load_config(cfg_path).store_url)
    store.enqueue(review_items(2), COHORTS)
    batch = store.take_batch(5)
    store.submit(batch.id, "ann", {it["trace_id"]: (NONE_FITS, "crypto_wallet: card 4111 1111 1111 1111")
                                   for it in batch.items}, LABELS)
    out = CliRunner().invoke(app, ["labels", "proposals", "-c", str(cfg_path)], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "crypto_wallet" in out.output and "waiting" in out.output and "ann" in out.output


def test_a_label_for_an_item_held_by_a_proposal_is_reported_not_stored(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue(review_items(1, required=2), COHORTS)
    first, second = store.take_batch(5), store.take_batch(5)  # overlap: both reviewers hold the item
    tid = first.items[0]["trace_id"]
    store.submit(first.id, "ann", {tid: (NONE_FITS, "crypto_wallet: new")}, LABELS)
    late = store.submit(second.id, "bob", {tid: (LABELS[0], None)}, LABELS)
    assert late.stored == 0 and "proposed a new label" in late.skipped[tid]
