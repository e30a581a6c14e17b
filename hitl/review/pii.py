"""Personal data masked before text reaches a reviewer or Prefect: emails, phone numbers, card numbers, IBANs.

`mask(text)` replaces each finding with a typed placeholder (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`).
Candidates are found with patterns and confirmed with maintained validators where a checksum exists:
python-stdnum's IBAN mod-97 and Luhn checks (a 16-digit amount or order number that fails Luhn stays),
and Google's libphonenumber (`phonenumbers`) for the length rules of a number with a country code.
Obfuscations people type are covered: `name (at) domain (dot) com`, `[at]`, ` at ... dot `, separators
of spaces, dashes, dots and brackets inside numbers, lower-case IBANs.

Masking is for what people and Prefect see. The model trains and serves on the raw text, so datasets keep it
(with the review store's access); a deployment that masks training text must mask at serving too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "card": "<CARD>", "iban": "<IBAN>"}

_AT = r"(?:\s*@\s*|\s*[\(\[\{]\s*at\s*[\)\]\}]\s*|\s+at\s+)"
_DOT = r"(?:\.|\s*[\(\[\{]\s*dot\s*[\)\]\}]\s*|\s+dot\s+)"
_LOCAL = r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?"
_DOMAIN = (rf"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:{_DOT}[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*{_DOT}"
           r"[A-Za-z]{2,24}(?![A-Za-z0-9])")
_EMAIL = re.compile(rf"{_LOCAL}{_AT}{_DOMAIN}", re.IGNORECASE)
# with a real "@": found first, so that "at" before an address is not read as the spelled-out form
_EMAIL_SIGN = re.compile(rf"{_LOCAL}\s*@\s*{_DOMAIN}", re.IGNORECASE)
_PLAIN_AT = re.compile(r"\s+at\s+", re.IGNORECASE)
_IBAN_LOOSE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\s?\d{2}(?:[ -]?[A-Za-z0-9]){11,34}")
# 12-19 digits (Maestro starts at 12), optionally grouped by single spaces or dashes.
_CARD = re.compile(r"(?<![\d+])\d(?:[ -]?\d){11,18}(?![\d])")
# A run of digits with phone punctuation: optional + or 00, brackets, spaces, dashes, dots, slashes; extension.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+|00)?\s?(?:\(\s?\+?\d{1,6}\s?\)|\d)(?:[\s./-]{0,2}(?:\(\s?\d{1,6}\s?\)|\d)){5,20}"
    r"(?:\s?(?:x|ext\.?|extension|#)\s?\d{1,6})?(?!\w)",
    re.IGNORECASE,
)
_DATE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")
_AMOUNT = re.compile(r"^\d{1,3}(?:[,.]\d{3})*(?:[.,]\d{1,2})?$")
_PHONE_WORDS = re.compile(r"\b(?:call|phone|mobile|cell|tel|telephone|number|reach|ring|sms|text|whatsapp)\b",
                          re.IGNORECASE)
_REGIONS = ("US", "GB", "DE", "FR", "IN", "ES", "IT", "NL", "AU", "CA", "BR", "PL")


@dataclass(frozen=True)
class Finding:
    kind: str  # email, phone, card, iban
    start: int
    end: int


def _grouped_like_iban(candidate: str) -> bool:
    """One compact token, or groups of four with a shorter last group (how IBANs are printed)."""
    groups = re.split(r"[ -]", candidate)
    return len(groups) == 1 or (all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4)


def _ibans(text: str) -> list[Finding]:
    out = []
    for m in _IBAN_LOOSE.finditer(text):
        span = m.group(0)
        ends = [e for e in range(len(span), 14, -1)
                if span[e - 1].isalnum() and (e == len(span) or not span[e].isalnum())]
        # the pattern may run into the next word: the longest prefix that passes mod-97, else the longest
        # that is printed like an IBAN (a mistyped check digit is still personal data)
        end = next((e for e in ends if _mod97(span[:e])), None)
        if end is None:
            end = next((e for e in ends if _grouped_like_iban(span[:e]) and re.search(r"\d{4}", span[:e])), None)
        if end is not None:
            out.append(Finding("iban", m.start(), m.start() + end))
    return out


def _mod97(candidate: str) -> bool:
    """IBAN check digits (ISO 13616 mod-97) without the per-country length table: a mistyped or unusual
    IBAN is still personal data."""
    compact = candidate.replace(" ", "").replace("-", "").upper()
    return 15 <= len(compact) <= 34 and stdnum_iban.is_valid(compact, check_country=False)


def _cards(text: str) -> list[Finding]:
    out = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        groups = re.split(r"[ -]", m.group(0))
        card_shaped = len(groups) == 1 or [len(g) for g in groups] in ([4, 6, 4], [4, 6, 5]) or (
            all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4)
        if 12 <= len(digits) <= 19 and card_shaped and not digits.startswith("00") and luhn.is_valid(digits):
            out.append(Finding("card", m.start(), m.end()))
    return out


def _spelled_out_email(s: str) -> bool:
    """Whether a candidate without "@" is an address: with a bracketed "(at)", or " at " after a local part
    of more than one word piece or before a spelled-out " dot " (not "look at this.dot")."""
    if re.search(r"[\(\[\{]\s*at", s, re.IGNORECASE):
        return True
    local = _PLAIN_AT.split(s, maxsplit=1)[0]
    return bool(re.search(r"[._\d]", local) or re.search(r"\s+dot\s+", s, re.IGNORECASE))


def _emails(text: str) -> list[Finding]:
    out = [Finding("email", m.start(), m.end()) for m in _EMAIL_SIGN.finditer(text)]
    pos = 0
    while m := _EMAIL.search(text, pos):
        # a rejected or overlapping candidate may hide one that starts inside it ("me at jane.doe@..."): look on
        # from its next character, not from its end
        if "@" in m.group(0) or not _spelled_out_email(m.group(0)) or any(
                m.start() < f.end and f.start < m.end() for f in out):
            pos = m.start() + 1
            continue
        out.append(Finding("email", m.start(), m.end()))
        pos = m.end()
    return sorted(out, key=lambda f: f.start)


def _looks_like_phone(span: str, context: bool) -> bool:
    core = re.split(r"\s?(?:x|ext\.?|extension|#)\s?\d", span, maxsplit=1, flags=re.IGNORECASE)[0].strip()
    digits = re.sub(r"\D", "", core)
    if not 7 <= len(digits) <= 15 or _DATE.match(core) or _AMOUNT.match(core) and "+" not in core:
        return False
    international = core.startswith(("+", "00")) or core.startswith("(+")
    if international:
        try:
            number = "+" + digits[2:] if core.startswith("00") else core
            if phonenumbers.is_possible_number(phonenumbers.parse(number)):
                return True
        except phonenumbers.NumberParseException:
            pass
    grouped = bool(re.search(r"[\s().-]", core))
    if not grouped and len(digits) < 10 and not digits.startswith("0") and not context:
        return False  # a bare run of 7-9 digits is more often an account or reference number
    for region in _REGIONS:
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(core, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return len(digits) >= 10


def _phones(text: str) -> list[Finding]:
    out = []
    for m in _PHONE.finditer(text):
        span = m.group(0)
        lead = len(span) - len(span.lstrip())
        context = bool(_PHONE_WORDS.search(text[max(0, m.start() - 40):m.start()]))
        if _looks_like_phone(span.strip(), context):
            out.append(Finding("phone", m.start() + lead, m.end()))
    return out


def find(text: str) -> list[Finding]:
    """Non-overlapping findings, earlier kinds first (IBAN, card, email, phone), in text order."""
    taken: list[Finding] = []
    for finder in (_ibans, _cards, _emails, _phones):
        for f in finder(text):
            if all(f.end <= t.start or f.start >= t.end for t in taken):
                taken.append(f)
    return sorted(taken, key=lambda f: f.start)


def mask(text: str | None) -> str:
    """`text` with every finding replaced by its typed placeholder."""
    if not text:
        return text or ""
    out, last = [], 0
    for f in find(text):
        out += [text[last:f.start], PLACEHOLDERS[f.kind]]
        last = f.end
    return "".join([*out, text[last:]])
