"""A form that suggests (issue 25): the champion's top labels travel from scoring to the review item to its form,
come back from any choice as the plain label, and the metrics compare agreement with the champion with and without
them. Blind items: see also test_blind_review."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pydantic
import pytest
import yaml
from helpers_domain import COHORTS, LABELS, make_cfg, review_items, terminal_review
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from hitl.db import add_nullable_columns
from hitl.evaluation.estimates import newcombe_difference
from hitl.learning.modeling import top_labels
from hitl.review import forms, metrics
from hitl.review.forms import NONE_FITS, choices, describe_batch, form_fields, label_of, parse_answer
from hitl.review.store import BatchView, ReviewError, ReviewStore
from hitl.schemas import ReviewItem, validate_split
from hitl.vocabulary import RANDOM
from tasks.review import build_form

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


def test_review_item_schema_takes_suggestions_optionally_and_checks_them(cfg):
    items = review_items(3).assign(selection_reason="uncertain", inclusion_prob=np.nan, window=None, stratum=None)
    ok, bad = validate_split(items.assign(suggestions=[[("card_lost", 0.7)], None, [("x", 1.5)]]),
                             ReviewItem)
    assert list(ok["trace_id"]) == ["t000", "t001"] and "suggestions must be" in bad["_quarantine_reason"].iat[0]
    assert len(validate_split(items, ReviewItem)[0]) == 3  # a frame without them is fine


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

def test_an_old_store_gains_the_column_on_open_and_its_items_show_as_before(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    ReviewStore(url).enqueue(review_items(2), COHORTS)
    with create_engine(url).begin() as conn:  # what a store written before suggestions looks like
        conn.execute(text("ALTER TABLE review_items DROP COLUMN suggestions"))
    store = ReviewStore(url)
    assert add_nullable_columns(store.engine) == []  # added on open already, once
    more = review_items(1, prefix="n")
    more["suggestions"] = [[("card_arrival", 0.9)]]
    store.enqueue(more, COHORTS)
    cfg = make_cfg(tmp_path, review={"blind_share": 0.0})
    items = store.take_batch(10).items
    old = [it for it in items if it["trace_id"].startswith("t")]
    assert [it["suggestions"] for it in old] == [None, None]
    assert all(choices(it, cfg) == (*sorted(LABELS), NONE_FITS) for it in old)  # the guess only, in its text
    assert all(forms.shown_as(it, cfg) == forms.GUESS_ONLY for it in old)
    new = next(it for it in items if it["trace_id"] == "n000")
    assert choices(new, cfg)[:2] == ("card_arrival · 90%", NONE_FITS)


def test_a_missing_column_that_is_not_nullable_is_refused_clearly(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    ReviewStore(url)
    with create_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE review_items DROP COLUMN evaluator_reasons"))
    with pytest.raises(ReviewError, match=r"cannot be upgraded in place: .*review_items.evaluator_reasons"):
        ReviewStore(url)


# ---- the form ----

def test_choices_top_five_by_probability_then_none_fits_then_every_label_a_to_z(many):
    got = choices(_item(_shown(many)[0]), many)
    assert got[:6] == ("label_q3 · 62%", "label_z0 · 20%", "label_t7 · 8%", "label_q4 · 4%", "label_y1 · 3%",
                       NONE_FITS)
    assert list(got[6:]) == sorted(MANY) and len(got) == 5 + 1 + 150


def test_suggestions_outside_the_label_set_or_beyond_the_config_are_not_offered(tmp_path):
    cfg = make_cfg(tmp_path, labels=MANY, review={"blind_share": 0.0, "suggestions": 2})
    it = _item(suggestions=[["retired_label", 0.5], *TOP])
    assert choices(it, cfg)[:3] == ("label_q3 · 62%", "label_z0 · 20%", NONE_FITS)
    none = make_cfg(tmp_path, labels=MANY, review={"blind_share": 0.0, "suggestions": 0})
    assert choices(it, none) == (*sorted(MANY), NONE_FITS) and forms.shown_as(it, none) == forms.GUESS_ONLY


def test_blind_items_random_gold_and_the_blind_share_have_one_alphabetical_list(many):
    blind = [_item(RANDOM, selection_reason=RANDOM), _item("gold", selection_reason=RANDOM, suggestions=None),
             _item("no-guess", prediction=None), *(_item(t) for t in _shown(many, blind=True)[:5])]
    assert {choices(it, many) for it in blind} == {(*sorted(MANY), NONE_FITS)}
    assert all(forms.suggestions(it, many) == [] and forms.shown_as(it, many) == forms.BLIND for it in blind)
    specs = {s.trace_id: s for s in form_fields(blind, many) if s.trace_id}
    assert not any("%" in s.description or "label_q3" in s.description for s in specs.values())


def test_description_shows_message_cohorts_and_suggestions_not_the_label_list(many):
    shown, hidden = _shown(many)[0], _shown(many, blind=True)[0]
    text = describe_batch("b" * 36, [_item(shown), _item(hidden, input="where is my refund")], many)
    assert "`label_q3` 62%, `label_z0` 20%, `label_t7` 8%, `label_q4` 4%, `label_y1` 3% | voice | en-GB | free |" \
        in text
    assert "`label_y2`" not in text  # the sixth suggestion is not offered
    assert f"| 2 | where is my refund | {forms.HIDDEN} | voice | en-GB | free |" in text
    assert sum(f"`{lab}`" in text for lab in MANY) == 5  # no label list: only the five suggestions


def test_a_suggested_choice_round_trips_through_the_form_to_its_label(many):
    items = [_item(t) for t in _shown(many)[:2]]
    form = build_form(BatchView("c" * 36, items), many)
    assert form.model_json_schema()["properties"]["item_01"]["enum"][:2] == ["label_q3 · 62%", "label_z0 · 20%"]
    answer = form(reviewer="ann", item_01="label_z0 · 20%", item_02="label_q3").model_dump()
    assert parse_answer(answer, items, many.labels)[1] == {items[0]["trace_id"]: ("label_z0", None),
                                                          items[1]["trace_id"]: ("label_q3", None)}
    with pytest.raises(pydantic.ValidationError):  # a probability the form did not offer
        form(reviewer="ann", item_01="label_z0 · 21%", item_02="label_q3")


def test_label_of_is_exact_and_never_changes_a_label():
    labels = {"card_lost", "odd · 5%", "odd"}
    assert label_of("card_lost · 62%", labels) == "card_lost"
    assert label_of("odd · 5%", labels) == "odd · 5%"  # a label that looks like a suggestion is itself
    assert label_of("odd · 5% · 40%", labels) == "odd · 5%"
    assert label_of(NONE_FITS, labels) == NONE_FITS
    for stranger in ("unknown · 62%", "card_lost · 62", "card_lost·62%"):
        assert label_of(stranger, labels) == stranger  # left for the store to refuse


def test_split_choices_and_choice_for(many):
    offered = choices(_item(_shown(many)[0]), many)
    suggested, rest = forms.split_choices(offered)
    assert suggested == list(offered[:5]) and rest == [*sorted(MANY), NONE_FITS]
    assert forms.split_choices(rest) == ([], rest) and forms.split_choices(["a", "b"]) == ([], ["a", "b"])
    assert forms.choice_for("label_t7", offered, MANY) == "label_t7 · 8%"
    assert forms.choice_for("label_r2", offered, MANY) == "label_r2"


_label = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(_label, min_size=2, max_size=12, unique=True).filter(lambda ls: NONE_FITS not in ls),
       data=st.data())
def test_property_any_choice_maps_back_to_the_label_it_stands_for(tmp_path, labels, data):
    cfg = make_cfg(tmp_path, labels=labels, review={"blind_share": 0.0})
    picked = data.draw(st.lists(st.sampled_from(labels), max_size=6, unique=True))
    probs = data.draw(st.lists(st.floats(0, 1), min_size=len(picked), max_size=len(picked)))
    item = _item(suggestions=[[lab, p] for lab, p in zip(picked, probs, strict=True)])
    offered = choices(item, cfg)
    assert len(set(offered)) == len(offered)
    assert {label_of(c, labels) for c in offered} == {*labels, NONE_FITS}  # every label, nothing else
    suggested, _ = forms.split_choices(offered)
    assert [label_of(c, labels) for c in suggested] == [lab for lab, p in forms.suggestions(item, cfg)
                                                        if forms.suggestion_choice(lab, p) not in labels]
    choice = data.draw(st.sampled_from(offered))
    form = build_form(BatchView("d" * 36, [item]), cfg)
    _, got = parse_answer(form(reviewer="r", item_01=choice).model_dump(), [item], labels)
    assert got[item["trace_id"]][0] == label_of(choice, labels) in {*labels, NONE_FITS}


def test_the_store_refuses_a_choice_that_maps_to_no_label(store):
    store.enqueue(review_items(1), COHORTS)
    batch = store.take_batch(1)
    _, labels = parse_answer({"reviewer": "ann", "item_01": "card_lost · 62"}, batch.items, LABELS)
    with pytest.raises(ReviewError, match="outside the label set"):
        store.submit(batch.id, "ann", labels, LABELS)
    _, labels = parse_answer({"reviewer": "ann", "item_01": "card_lost · 62%"}, batch.items, LABELS)
    assert store.submit(batch.id, "ann", labels, LABELS).stored == 1
    assert list(store.annotations()["label"]) == ["card_lost"]


def test_hitl_review_offers_suggestions_by_letter_and_sends_the_choice(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"labels": LABELS, "state_dir": str(tmp_path / "state"),
                                      "review": {"blind_share": 0.0}}))
    cfg = make_cfg(tmp_path, review={"blind_share": 0.0})
    items = [_item("t1", prediction="refund_request", suggestions=[["refund_request", 0.7], ["card_lost", 0.2]])]
    form = build_form(BatchView("e" * 36, items), cfg)
    result, sent = terminal_review(monkeypatch, form, config, "ann", "z\nb\n\n")
    assert result.exit_code == 0, result.output
    assert "Labels: 1 card_arrival  2 card_lost  3 refund_request  4 (none of these fits)" in result.output
    assert "Suggested: a refund_request · 70%  b card_lost · 20%" in result.output
    assert "a letter a-b for a suggestion" in result.output  # "z" was refused
    assert sent[0]["item_01"] == "card_lost · 20%"
    assert parse_answer(form.model_validate(sent[0]).model_dump(), items, LABELS)[1] == {"t1": ("card_lost", None)}


# ---- metrics: agreement with the champion, with and without suggestions ----

def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    d, lo, hi = newcombe_difference(56, 70, 48, 80)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)
    assert all(math.isnan(v) for v in newcombe_difference(1, 0, 1, 2))


ANN = pd.DataFrame({"trace_id": ["s1", "s2", "s3", "s3", "b1", "b2", "r1", "r1", "g1", "x1"],
                    "label": ["a", "a", "a", "b", "a", "b", "a", "a", "a", "a"]})
ITEMS = pd.DataFrame({"trace_id": ["s1", "s2", "s3", "b1", "b2", "r1", "g1", "x1"],
                      "selection_reason": ["uncertain"] * 5 + [RANDOM, "novel", "novel"],
                      "prediction": ["a", "a", "a", "a", "a", "a", "a", None],
                      "shown": [forms.SUGGESTED] * 3 + [forms.BLIND, forms.BLIND, forms.BLIND, forms.GUESS_ONLY,
                                                        forms.BLIND]})


def test_agreement_with_the_champion_with_and_without_suggestions_by_hand():
    table, (d, lo, hi) = metrics.champion_agreement(ANN, ITEMS)
    by = table.set_index("shown")
    # with suggestions: s1 a, s2 a, s3 a + b -> 3 of 4; blind policy: b1 a, b2 b -> 1 of 2; random: 2 of 2.
    # g1 (guess only) and x1 (no champion prediction) are not counted.
    assert by.loc[metrics.WITH_SUGGESTIONS, ["annotations", "agree"]].tolist() == [4, 3]
    assert by.loc[metrics.BLIND_POLICY, ["annotations", "agree"]].tolist() == [2, 1]
    assert by.loc[metrics.BLIND_RANDOM, ["annotations", "agree"]].tolist() == [2, 2]
    assert by.loc[metrics.WITH_SUGGESTIONS, ["low", "high"]].tolist() == pytest.approx(_wilson(3, 4))
    assert by.loc[metrics.BLIND_POLICY, ["low", "high"]].tolist() == pytest.approx(_wilson(1, 2))
    (l1, u1), (l2, u2) = _wilson(3, 4), _wilson(1, 2)
    assert d == pytest.approx(0.25)
    assert lo == pytest.approx(0.25 - math.sqrt((0.75 - l1) ** 2 + (u2 - 0.5) ** 2))
    assert hi == pytest.approx(0.25 + math.sqrt((u1 - 0.75) ** 2 + (0.5 - l2) ** 2))


def test_without_suggestions_there_is_no_comparison():
    no_blind = ITEMS[ITEMS["shown"] != forms.BLIND]
    table, effect = metrics.champion_agreement(ANN, no_blind)
    assert list(table["shown"]) == [metrics.WITH_SUGGESTIONS] and all(math.isnan(v) for v in effect)
    table, effect = metrics.champion_agreement(ANN, ITEMS.assign(shown=forms.GUESS_ONLY))
    assert table.empty and all(math.isnan(v) for v in effect)
    table, effect = metrics.champion_agreement(ANN, ITEMS.drop(columns="shown"))  # items of a scripted test
    assert table.empty and all(math.isnan(v) for v in effect)


def test_metrics_from_a_store_report_the_suggestions_effect(tmp_path):
    cfg = make_cfg(tmp_path, review={"blind_share": 0.5})
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    items = review_items(40)
    items["suggestions"] = [[("card_lost", 0.5), ("refund_request", 0.3)]] * len(items)
    store.enqueue(items, COHORTS)
    batch = store.take_batch(40)
    blind = {it["trace_id"] for it in batch.items if forms.is_blind(it, cfg)}
    # the reviewer chooses the champion's card_lost on every item shown with suggestions, on one blind item in two
    answers = {it["trace_id"]: ("card_lost" if it["trace_id"] not in blind or i % 2 else "card_arrival", None)
               for i, it in enumerate(batch.items)}
    store.submit(batch.id, "ann", answers, LABELS)
    m = metrics.from_store(store, cfg, pd.Timestamp.now(tz="UTC").to_pydatetime())
    by = m.champion.set_index("shown")
    n_blind = len(blind)
    k_blind = sum(answers[t][0] == "card_lost" for t in blind)
    assert 0 < n_blind < 40 and by.loc[metrics.BLIND_POLICY, ["annotations", "agree"]].tolist() == [n_blind, k_blind]
    assert by.loc[metrics.WITH_SUGGESTIONS, ["annotations", "agree"]].tolist() == [40 - n_blind, 40 - n_blind]
    assert m.suggestion_effect == pytest.approx(newcombe_difference(40 - n_blind, 40 - n_blind, k_blind, n_blind))
    page = metrics.markdown(m)
    assert "| form showed | labels | chose the champion's prediction (95% CI) |" in page
    assert f"Suggestions' effect (with minus blind, policy items): {100 * m.suggestion_effect[0]:+.1f} pts" in page
    assert {"review_agrees_with_champion_suggested", "review_agrees_with_champion_blind",
            "review_suggestion_effect"} <= set(m.as_mlflow_metrics())
