"""Blind review items (issue 22): random-draw items (the release verdict) and gold items are shown without the
model's guess, exactly like the `review.blind_share` of policy items, in the form's fields, the batch description
and the terminal reviewer (`hitl review`), so a reviewer can tell none of them apart."""

from __future__ import annotations

import re
import uuid

import pandas as pd
import pytest
import yaml
from helpers_domain import COHORTS, LABELS, make_cfg, review_items, terminal_review

from hitl.config import Config, load_config
from hitl.review import forms, prefect_api
from hitl.review.forms import HIDDEN, NONE_FITS, choices, describe_batch, form_fields, is_blind
from hitl.review.store import BatchView, ReviewStore
from hitl.sim.reviewers import SimulatedReviewers
from hitl.vocabulary import RANDOM
from tasks.review import build_form

RANDOM_GUESS, RANDOM_CONF, REASONS = "refund_request", 0.87, "uncertainty: 1 - margin 0.90 >= window p80 0.85"
POLICY_SUGGESTIONS = [["card_lost", 0.5], ["refund_request", 0.3], ["card_arrival", 0.2]]
SUGGESTED_CHOICES = ("card_lost · 50%", "refund_request · 30%", "card_arrival · 20%")
A_Z = tuple(sorted(LABELS))


def _policy(trace_id: str, **kw) -> dict:
    return {"trace_id": trace_id, "input": f"message {trace_id}", "prediction": "card_lost", "confidence": 0.42,
            "selection_reason": "uncertain", "evaluator_reasons": REASONS, "channel": "web_chat",
            "locale": "en-US", "tier": "free", **kw}


def _enqueue(store: ReviewStore) -> None:
    """Three random-draw items (reviewed first) and 30 policy items, each with the champion's suggestions as
    sampling stores them; five seeded gold items."""
    rnd = review_items(3, prefix="r", priority=2.0)
    rnd["selection_reason"], rnd["prediction"], rnd["confidence"] = RANDOM, RANDOM_GUESS, RANDOM_CONF
    rnd["suggestions"] = [[[RANDOM_GUESS, RANDOM_CONF], ["card_lost", 0.1]]] * len(rnd)
    policy = review_items(30, prefix="p")
    policy["suggestions"] = [POLICY_SUGGESTIONS] * len(policy)
    store.enqueue(pd.concat([rnd, policy], ignore_index=True), COHORTS)
    gold = pd.DataFrame({"trace_id": [f"g{i:03d}" for i in range(5)], "input": [f"message g{i:03d}" for i in range(5)],
                         "label": LABELS[0], "channel": "web_chat", "locale": "en-US", "tier": "free",
                         "prediction": RANDOM_GUESS, "confidence": 0.99})
    store.seed_gold(gold, COHORTS)


@pytest.fixture
def batch(tmp_path) -> tuple[Config, BatchView]:
    """A real batch of 20: random-draw items, gold items and policy items (some of them blind)."""
    cfg = make_cfg(tmp_path)
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    _enqueue(store)
    return cfg, store.take_batch(20, gold_share=0.2)


def _kinds(items: list[dict], cfg: Config) -> dict[str, list[str]]:
    """trace ids by kind: random, gold, blind policy, shown policy (non-empty each, or the test proves nothing)."""
    kinds: dict[str, list[str]] = {"random": [], "gold": [], "blind": [], "shown": []}
    for it in items:
        t = it["trace_id"]
        kind = t[0] == "r" and "random" or t[0] == "g" and "gold" or ("blind" if is_blind(it, cfg) else "shown")
        kinds[kind].append(t)
    assert all(kinds.values()), kinds
    return kinds


def _shape(text: str, trace_id: str) -> str:
    """`text` with the item's own id, message and number taken out: what is left is its shape."""
    return re.sub(r"\d+", "N", text.replace(f"message {trace_id}", "<msg>").replace(trace_id, "<id>"))


def _no_trace_of_the_guess(text: str) -> None:
    for leak in ("random", RANDOM_GUESS, "%", "model said", "uncertainty", "margin"):
        assert leak not in text, (leak, text)


# ---- the rule ----

def test_random_gold_and_no_prediction_are_always_blind(tmp_path):
    cfg = make_cfg(tmp_path, review={"blind_share": 0.0})
    assert is_blind(_policy("a", selection_reason=RANDOM), cfg)
    assert is_blind(_policy("a", prediction=None), cfg)
    assert not any(is_blind(_policy(f"t{i}"), cfg) for i in range(200))
    everything = make_cfg(tmp_path, review={"blind_share": 1.0})
    assert all(is_blind(_policy(f"t{i}"), everything) for i in range(200))


def test_the_blind_share_of_policy_items_is_close_to_the_config_and_stable(tmp_path):
    ids = [f"trace-{i}" for i in range(20_000)]
    for share in (0.2, 0.5):
        cfg = make_cfg(tmp_path, review={"blind_share": share})
        blind = [is_blind(_policy(t), cfg) for t in ids]
        assert sum(blind) / len(ids) == pytest.approx(share, abs=0.015)
        # deterministic: the same ids again, with other guesses and reasons, in another order
        again = {t: is_blind(_policy(t, prediction="card_arrival", confidence=0.9, selection_reason="novel"), cfg)
                 for t in reversed(ids)}
        assert blind == [again[t] for t in ids]
    low, high = (make_cfg(tmp_path, review={"blind_share": s}) for s in (0.2, 0.5))
    assert all(is_blind(_policy(t), high) for t in ids[:2000] if is_blind(_policy(t), low))  # nested shares


# ---- what the reviewer sees ----

def test_form_fields_show_blind_items_alike_and_the_same_choices(batch):
    cfg, b = batch
    kinds = _kinds(b.items, cfg)
    specs = {s.trace_id: s for s in form_fields(b.items, cfg) if s.trace_id}
    blind = [*kinds["random"], *kinds["gold"], *kinds["blind"]]
    assert {_shape(specs[t].description, t) for t in blind} == {"trace `<id>`: “<msg>”"}
    for t in [*kinds["random"], *kinds["gold"]]:
        _no_trace_of_the_guess(specs[t].description)
    for t in kinds["shown"]:
        assert specs[t].description.endswith(f"(model said card_lost, 50%; {REASONS})")
    assert {specs[t].choices for t in blind} == {(*A_Z, NONE_FITS)}  # one list, A-Z: no suggestion
    assert {specs[t].choices for t in kinds["shown"]} == {(*SUGGESTED_CHOICES, NONE_FITS, *A_Z)}
    assert all(choices(it, cfg) == specs[it["trace_id"]].choices for it in b.items)


def test_batch_description_rows_of_blind_items_are_alike(batch):
    cfg, b = batch
    kinds = _kinds(b.items, cfg)
    text = describe_batch(b.id, b.items, cfg)
    assert "random" not in text and "selected as" not in text
    header = next(ln for ln in text.splitlines() if ln.startswith("| # |"))
    assert header == "| # | message | model's suggestions | channel | locale | tier |"
    rows = {it["trace_id"]: ln for it, ln in zip(b.items, [ln for ln in text.splitlines() if re.match(r"\| \d", ln)],
                                                 strict=True)}
    blind = [*kinds["random"], *kinds["gold"], *kinds["blind"]]
    assert {_shape(rows[t], t) for t in blind} == {f"| N | <msg> | {HIDDEN} | web_chat | en-US | free |"}
    for t in [*kinds["random"], *kinds["gold"]]:
        _no_trace_of_the_guess(rows[t])
    shown = {_shape(rows[t], t) for t in kinds["shown"]}
    assert shown == {"| N | <msg> | `card_lost` N%, `refund_request` N%, `card_arrival` N% | web_chat | en-US | free |"}


def test_a_resumed_batch_renders_identically(tmp_path):
    cfg = make_cfg(tmp_path)
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    _enqueue(store)
    run = str(uuid.uuid4())
    first = store.take_batch(20, gold_share=0.2, flow_run_id=run)
    again = store.take_batch(20, gold_share=0.2, flow_run_id=run)
    assert again.resumed and again.items == first.items
    assert form_fields(again.items, cfg) == form_fields(first.items, cfg)
    assert describe_batch(again.id, again.items, cfg) == describe_batch(first.id, first.items, cfg)


def test_the_simulated_reviewers_answer_a_form_with_blind_items(batch, tmp_path):
    cfg, b = batch
    form = build_form(b, cfg)
    run = prefect_api.PausedRun("id", "run", "review-batch", prefect_api.REVIEW_FORM, form.model_json_schema(),
                                form._description, "")
    sim_cfg = make_cfg(tmp_path, simulation={"noise": 0.0})
    answer = SimulatedReviewers(sim_cfg, {it["trace_id"]: LABELS[1] for it in b.items}).answer_review(run)
    kinds = _kinds(b.items, cfg)
    assert {answer[f.name] for f in form_fields(b.items, cfg) if f.trace_id in kinds["shown"]} == \
        {"card_arrival · 20%"}  # clicked as the suggestion where it is one
    reviewer, labels = forms.parse_answer(form.model_validate(answer).model_dump(), b.items, cfg.labels)
    assert reviewer in sim_cfg.simulation.reviewers
    assert {t: lab for t, (lab, _) in labels.items()} == {it["trace_id"]: LABELS[1] for it in b.items}


# ---- the terminal reviewer ----

def test_hitl_review_prints_blind_items_alike(tmp_path, monkeypatch):
    """`hitl review` over a real batch's form; a fake `paused_runs` stands in for the Prefect server."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"labels": LABELS, "state_dir": str(tmp_path / "state")}))
    cfg = load_config(config)
    cfg.state.mkdir(parents=True)
    store = ReviewStore(cfg.store_url)
    _enqueue(store)
    b = store.take_batch(20, gold_share=0.2)
    form = build_form(b, cfg)
    result, sent = terminal_review(monkeypatch, form, config, "alice", "1\n\n" * 20)
    assert result.exit_code == 0, result.output
    assert sent and form.model_validate(sent[0])
    out = result.output
    assert "random" not in out and "Labels for this item" not in out
    blocks = re.split(r"─+ Item \d+ {2}\(\d+/20\) ─+", out.split("Submitted 20 labels")[0])[1:]
    assert len(blocks) == 20
    kinds = _kinds(b.items, cfg)
    by_id = {it["trace_id"]: block for it, block in zip(b.items, blocks, strict=True)}
    blind = [*kinds["random"], *kinds["gold"], *kinds["blind"]]
    assert len({_shape(by_id[t], t) for t in blind}) == 1
    for t in [*kinds["random"], *kinds["gold"]]:
        _no_trace_of_the_guess(by_id[t])
    assert all("(model said card_lost, 50%;" in by_id[t] for t in kinds["shown"])
    assert all("Suggested: a card_lost · 50%  b refund_request · 30%  c card_arrival · 20%" in by_id[t]
               for t in kinds["shown"])
    assert not any("Suggested" in by_id[t] for t in blind)


def test_the_queue_order_does_not_show_on_the_form(tmp_path):
    """Random draws are queued first; within a batch their positions are shuffled (seeded by the batch)."""
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    rnd = review_items(10, prefix="r", priority=2.0)
    rnd["selection_reason"] = RANDOM
    store.enqueue(pd.concat([rnd, review_items(10, prefix="p")], ignore_index=True), COHORTS)
    batch = store.take_batch(20)
    positions = [i for i, it in enumerate(batch.items) if it["trace_id"].startswith("r")]
    assert len(positions) == 10 and positions != list(range(10))  # chance of a false alarm: 1 in 184,756
    assert [it["trace_id"] for it in store.take_batch(20, flow_run_id=None) or []] == []  # nothing left to lease
