"""Personal data masking (hitl/review/pii.py) against a frozen fixture and a seeded generator, both written
independently of it, and Hypothesis properties that compose each kind from its grammar."""

from __future__ import annotations

import ast
import functools
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pii_generator
import pytest
from helpers_domain import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportion_confint

from hitl.review import forms, pii

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "pii.json").read_text())
BANKING77 = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"


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
    altered = [i for i, t in enumerate(texts) if pii.mask(t) != t]
    assert len(altered) / len(texts) <= 0.01, [texts[i] for i in altered[:10]]
    assert not [texts[i] for i in altered if i >= len(FIXTURE["benign"])]  # no BANKING77 text altered at all


@pytest.mark.parametrize(("text", "expected"), [
    ("write to me at jane.doe@example.org today", "write to me at <EMAIL> today"),  # issue 26, point 4
    ("reply at sam.lee@corp.example.com please", "reply at <EMAIL> please"),  # issue 26, point 4
    ("mail me at john@example.com", "mail me at <EMAIL>"),
    ("email john.x at jane.doe@example.org", "email john.x at <EMAIL>"),
    ("contact me at j.smith at gmail dot com", "contact me at <EMAIL>"),
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


# --- Hypothesis: each kind composed from its grammar, in varied sentences -------------------------------------

_LOWER, _ALNUM = "abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz0123456789"
_ATOM = st.tuples(st.sampled_from(_LOWER), st.text(_ALNUM, max_size=9)).map("".join)
_LABEL = st.one_of(st.sampled_from(_ALNUM), st.tuples(st.sampled_from(_ALNUM), st.text(_ALNUM + "-", max_size=10),
                                                       st.sampled_from(_ALNUM)).map("".join))


@st.composite
def _emails(draw: st.DrawFn) -> str:
    """Local part: 1-3 atoms joined by dots, underscores or hyphens, maybe a plus tag; 0-2 subdomains."""
    atoms = draw(st.lists(_ATOM, min_size=1, max_size=3))
    local = atoms[0] + "".join(draw(st.sampled_from("._-")) + a for a in atoms[1:])
    if draw(st.booleans()):
        local += "+" + draw(st.text(_ALNUM, min_size=1, max_size=8))
    labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
    address = f"{local}@{'.'.join(labels)}.{draw(st.sampled_from(['com', 'org', 'co.uk', 'io', 'de', 'example']))}"
    return address.upper() if draw(st.integers(0, 9)) == 0 else address


def _digits(n: int, first: str = "0123456789") -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(first), st.text("0123456789", min_size=n - 1, max_size=n - 1)).map("".join)


@st.composite
def _phones(draw: st.DrawFn) -> str:
    """US, UK, German, French and Indian numbers, national or with +/00 and the country code."""
    country = draw(st.sampled_from(["US", "GB", "DE", "FR", "IN"]))
    if country == "US":
        a, e, n = draw(_digits(3, "23456789")), draw(_digits(3, "23456789")), draw(_digits(4))
        return draw(st.sampled_from([f"({a}) {e}-{n}", f"{a}-{e}-{n}", f"+1 {a} {e} {n}", f"{a}.{e}.{n}"]))
    code, nsn = {
        "GB": ("44", st.one_of(st.tuples(st.just("20"), _digits(4, "378"), _digits(4)),
                              st.tuples(_digits(4, "7"), _digits(6)))),
        "DE": ("49", st.one_of(st.tuples(st.just("30"), _digits(8, "123456789")),
                              st.tuples(st.sampled_from(["151", "160", "170", "176"]), _digits(8)))),
        "FR": ("33", st.tuples(_digits(1, "123456789"), *[_digits(2)] * 4)),
        "IN": ("91", st.tuples(_digits(5, "6789"), _digits(5))),
    }[country]
    groups = draw(nsn)
    sep = draw(st.sampled_from([" ", " ", "-", "."])) if country == "FR" else " "
    national = sep.join(groups)
    return draw(st.sampled_from([f"+{code} {national}", f"00{code} {national}", f"0{national}"]))


_CARD_BRANDS = [("4", 16), ("4", 13), ("5", 16), ("2", 16), ("34", 15), ("37", 15), ("6011", 16), ("36", 14),
                ("6759", 19), ("62", 18)]


@st.composite
def _cards(draw: st.DrawFn) -> str:
    """A brand prefix and length, random digits, the Luhn check digit; compact, spaced or dashed."""
    prefix, length = draw(st.sampled_from(_CARD_BRANDS))
    digits = pii_generator.luhn_complete(prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1,
                                                                max_size=length - len(prefix) - 1)))
    cuts = [0, 4, 10, length] if length in (14, 15) else [*range(0, length, 4), length]
    groups = [digits[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    return draw(st.sampled_from([digits, " ".join(groups), "-".join(groups)]))


_BBAN = {"DE": "[0-9]{18}", "GB": "[A-Z]{4}[0-9]{14}", "FR": "[0-9]{10}[0-9A-Z]{11}[0-9]{2}", "NL": "[A-Z]{4}[0-9]{10}",
         "ES": "[0-9]{20}", "IT": "[A-Z][0-9]{10}[0-9A-Z]{12}", "BE": "[0-9]{12}", "CH": "[0-9]{5}[0-9A-Z]{12}"}


@st.composite
def _ibans(draw: st.DrawFn) -> str:
    """A country's BBAN grammar and the mod-97 check digits; compact or in groups of four, maybe lower-case."""
    country = draw(st.sampled_from(sorted(_BBAN)))
    bban = draw(st.from_regex(_BBAN[country], fullmatch=True))
    value = country + pii_generator.iban_check_digits(country, bban) + bban
    if draw(st.booleans()):
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value.lower() if draw(st.integers(0, 4)) == 0 else value


_LEADS = {
    "email": ["at ", "to ", "email: ", "Email:", "e-mail ", "write to me at ", "reply at ", "mail me at ", "cc "],
    "phone": ["at ", "to ", "call ", "phone: ", "Tel:", "my number is ", "ring me on ", "text "],
    "card": ["card ", "to ", "card number: ", "with ", "Visa ", "#", "card no. "],
    "iban": ["to ", "IBAN ", "iban: ", "IBAN:", "into ", "account ", "from "],
}
_OPENINGS = ["", "", "Hi, ", "Hello. ", "please help: ", "(", "\"", "URGENT - "]
_ENDINGS = ["", "", ".", ",", "!", "?", ")", ";", "\"", " today", " please.", ", thanks", "\nthanks", " - is that ok?"]


def _sentences(kind: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    """(value, sentence): the value at the start or after a preceding word, then punctuation or more words."""
    lead = st.one_of(st.just(""), st.sampled_from(_LEADS[kind]))
    return st.tuples(values, st.sampled_from(_OPENINGS), lead, st.sampled_from(_ENDINGS)).map(
        lambda t: (t[0], f"{t[1]}{t[2]}{t[0]}{t[3]}"))


@pytest.mark.parametrize(("kind", "values"), [("email", _emails()), ("phone", _phones()), ("card", _cards()),
                                              ("iban", _ibans())])
def test_composed_values_are_masked_wherever_they_stand(kind, values):
    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(_sentences(kind, values))
    def check(example: tuple[str, str]) -> None:
        value, sentence = example
        masked = pii.mask(sentence)
        assert value not in masked and pii.PLACEHOLDERS[kind] in masked, (sentence, masked)

    check()


# --- A seeded generator, independent of the masker: recall per type and its Wilson lower bound ---------------

@functools.cache
def _generated() -> list[dict[str, str]]:
    return pii_generator.sentences(n_per_kind=2000, seed=26)


def test_generator_is_independent_big_and_varied():
    tree = ast.parse(Path(pii_generator.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m.startswith("hitl")]
    rows = _generated()
    assert Counter(r["kind"] for r in rows) == dict.fromkeys(pii.PLACEHOLDERS, 2000)
    texts = {r["text"] for r in rows}
    assert {"write to me at jane.doe@example.org today", "reply at sam.lee@corp.example.com please"} <= texts
    locals_ = [r["value"].split("@")[0] for r in rows if r["kind"] == "email"]
    for shape in (r"\.", "_", "-", r"\+"):
        assert sum(bool(re.search(shape, lp)) for lp in locals_) >= 100, shape
    assert sum(r["value"].split("@")[1].count(".") >= 2 for r in rows if r["kind"] == "email") >= 300  # subdomains
    assert sum(" at " in r["text"].lower() and "." in r["value"].split("@")[0]
               for r in rows if r["kind"] == "email") >= 100


@pytest.mark.parametrize("kind", sorted(pii.PLACEHOLDERS))
def test_generated_recall_lower_bound_is_at_least_99_percent(kind):
    rows = [r for r in _generated() if r["kind"] == kind]
    missed = [(r["text"], pii.mask(r["text"])) for r in rows if pii.mask(r["text"]) != r["expected"]]
    caught = len(rows) - len(missed)
    low, _ = proportion_confint(caught, len(rows), alpha=0.05, method="wilson")
    print(f"\n{kind}: recall {caught / len(rows):.4f} ({caught}/{len(rows)}), 95% Wilson lower bound {low:.4f}")
    assert low >= 0.99, missed[:5]
