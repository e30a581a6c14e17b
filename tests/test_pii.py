"""Personal data masking (hitl/review/pii.py) against a frozen fixture written independently of it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from helpers_domain import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.review import forms, pii

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pii.json").read_text())
BANKING77 = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"


def _caught(row: dict) -> bool:
    masked = pii.mask(row["text"])
    return row["value"] not in masked and pii.PLACEHOLDERS[row["kind"]] in masked


def test_fixture_is_big_and_varied_enough():
    kinds = Counter(r["kind"] for r in FIXTURE["pii"])
    assert len(FIXTURE["pii"]) >= 1000 and set(kinds) == set(pii.PLACEHOLDERS) and min(kinds.values()) >= 250
    assert len({r["locale"] for r in FIXTURE["pii"]}) >= 8


@pytest.mark.parametrize("kind", sorted(pii.PLACEHOLDERS))
def test_recall_per_type_is_at_least_99_percent(kind):
    rows = [r for r in FIXTURE["pii"] if r["kind"] == kind]
    missed = [r for r in rows if not _caught(r)]
    assert 1 - len(missed) / len(rows) >= 0.99, missed[:5]


def test_benign_texts_are_left_alone():
    texts = list(FIXTURE["benign"])
    if BANKING77.exists():  # real customer-support messages: amounts, dates, card endings, references
        texts += pd.concat([pd.read_csv(f) for f in sorted(BANKING77.glob("*.csv"))])["text"].tolist()
    altered = [t for t in texts if pii.mask(t) != t]
    assert len(altered) / len(texts) <= 0.01, altered[:10]


@pytest.mark.parametrize(("text", "expected"), [
    ("card 4111 1111 1111 1111 lost", "card <CARD> lost"),
    ("card 4111 1111 1111 1112 lost", "card 4111 1111 1111 1112 lost"),  # fails Luhn: not a card number
    ("iban DE89 3704 0044 0532 0130 00 please", "iban <IBAN> please"),
    ("mail jane.doe+bank@example.co.uk now", "mail <EMAIL> now"),
    ("write to jane (at) example (dot) com", "write to <EMAIL>"),
    ("look at this. dot matrix printer", "look at this. dot matrix printer"),
    ("call +44 20 7946 0958 or (212) 555-0199", "call <PHONE> or <PHONE>"),
    ("I paid 1,250.00 on 12/03/2024 at 10:30", "I paid 1,250.00 on 12/03/2024 at 10:30"),
    ("the card ending in 4821 and order 558213", "the card ending in 4821 and order 558213"),
])
def test_examples(text, expected):
    assert pii.mask(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_masking_never_fails_and_is_idempotent(text):
    once = pii.mask(text)
    assert pii.mask(once) == once


def test_review_forms_show_masked_text_only(tmp_path):
    cfg = make_cfg(tmp_path)
    item = {"trace_id": "t1", "input": "my card 4111111111111111 was charged, mail me at a.b@example.com",
            "prediction": cfg.labels[0], "confidence": 0.5, "selection_reason": "uncertain", "evaluator_reasons": ""}
    shown = forms.describe_batch("b" * 32, [item], cfg)
    shown += " ".join(f.description for f in forms.form_fields([item], cfg))
    assert "4111111111111111" not in shown and "a.b@example.com" not in shown and "<CARD>" in shown
    raw = make_cfg(tmp_path, review={"mask_pii": False})
    assert "4111111111111111" in forms.describe_batch("b" * 32, [item], raw)
