"""Seeded sentences carrying one email, phone number, card number or IBAN, built from each kind's grammar.

Written independently of the masker (it never imports `hitl.review.pii`): values come from their own
grammars (local parts with dots, underscores, hyphens and plus tags, subdomains; national and international
phone formats; card brands with Luhn check digits; IBANs of 20 countries with mod-97 check digits), and are
placed in varied phrasings, positions and punctuation. Each row knows the exact text the masker should make
of it (`expected`), so a partial mask (`jane.<EMAIL>`, `+44 <PHONE>`) counts as a miss.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "card": "<CARD>", "iban": "<IBAN>"}

# The two sentences of issue 26 point 4 that reached reviewers unmasked.
ISSUE_SENTENCES = [
    ("email", "jane.doe@example.org", "write to me at {} today"),
    ("email", "sam.lee@corp.example.com", "reply at {} please"),
]

_FIRST = ["jane", "sam", "john", "maria", "li", "ahmed", "olga", "pierre", "anna", "kofi", "yuki", "lucas", "eva",
          "raj", "chloe", "tom", "ines", "noah", "mia", "omar"]
_LAST = ["doe", "lee", "smith", "garcia", "wang", "khan", "ivanova", "dupont", "rossi", "mensah", "tanaka",
         "silva", "muller", "patel", "martin", "brown", "costa", "nguyen", "berg", "okafor"]
_WORDS = ["billing", "support", "info", "accounts", "team", "home", "work", "bank", "news", "shop"]
_DOMAINS = ["example", "mail", "corp", "post", "inbox", "acme", "globex", "initech", "uni-bonn", "my-bank",
            "fastmail", "proton", "company", "web", "outlook"]
_SUBDOMAINS = ["corp", "mail", "eu", "us", "dept", "students", "staff", "hr", "cs", "london"]
_TLDS = ["com", "org", "net", "io", "de", "fr", "co.uk", "com.au", "nl", "es", "it", "info", "dev", "ch", "be",
         "co", "travel", "museum", "email"]

_EMAIL_PHRASES = [
    "write to me at {} today", "reply at {} please", "mail me at {}", "email: {}", "Email:{}", "e-mail - {}",
    "contact {} for details", "{} is my address", "my email is {}.", "send it to {}, thanks", "(my address: {})",
    "<{}>", "reach me at {}?", "please update my email to {}!", "I changed my email to {} yesterday",
    "is {} still on file?", "Write to me at {}", "you can write to {} or call", "my new address is {}; the old one "
    "is gone", "mail: \"{}\"", "address '{}' please", "AT {} NOW", "send the statement to: {}", "{}",
    "cc {} on the reply", "from {} -- sorry for the delay", "Hi, it's me ({}), any news?", "at {}.",
    "mailto:{}", "to:{} thanks", "Email address: {}\nThanks", "contact me at {} or by phone",
]

_PHONE_PHRASES = [
    "call me on {}", "my number is {}", "phone: {}", "tel {}", "ring {} after 5", "{} is my mobile",
    "text me at {}", "you can reach me at {}.", "new number {}, please update", "contact: {}",
    "I tried calling {} twice", "mobile - {}", "please call back ({})", "{}", "Call {}!", "is {} the right number?",
    "my phone number changed to {} last week", "whatsapp {} anytime", "Phone:{}", "reach me at {} or by email",
    "tel:{}", "(tel. {})", "my number is {}.", "Number: {}\nThanks",
]

_CARD_PHRASES = [
    "my card {} was charged twice", "card number: {}", "card no. {}", "was {} charged?", "{} expired",
    "Visa {}", "I used card #{} yesterday", "the card {}, is it blocked?", "please block {} now",
    "card: {}", "Card {} lost", "{} is my new card", "why was ({}) declined", "charged on {}.",
    "my mastercard is {} and it does not work", "number {}", "payment with {} failed!", "CARD={}",
]

_IBAN_PHRASES = [
    "please send the refund to {}", "my IBAN is {}.", "IBAN {}", "transfer to {} today", "account {}, thanks",
    "iban: {}", "IBAN:{}", "{} is my account", "pay into {} please", "the transfer to {} bounced",
    "send money to ({})", "{}", "Is {} correct?", "beneficiary IBAN - {}", "I sent it from {} yesterday",
    "wire to {}!",
]


def luhn_complete(partial: str) -> str:
    """`partial` with the Luhn check digit appended."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these will sit at odd positions from the right once the check digit is added
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 mod-97 check digits for `country` and `bban`."""
    rearranged = bban.upper() + country.upper() + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{98 - number % 97:02d}"


def _digits(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1)) if n else ""


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits * 3 + string.ascii_uppercase) for _ in range(n))


def email(rng: random.Random) -> str:
    """An address: names joined by dots, underscores or hyphens, digits, plus tags; subdomains; varied TLDs."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    shape = rng.randrange(8)
    sep = rng.choice(".._-")
    local = [f"{first}{sep}{last}", f"{first[0]}{sep}{last}", f"{first}{sep}{rng.choice(_LAST)}{sep}{last}",
             f"{first}{last}{rng.randrange(100)}", f"{first}{sep}{last}{rng.randrange(1, 2000)}",
             rng.choice(_WORDS), f"{rng.choice(_WORDS)}{sep}{first}", first][shape]
    if rng.random() < 0.2:
        local += "+" + rng.choice(_WORDS + ["2024", "x1"])
    if rng.random() < 0.1:
        local = local.capitalize() if rng.random() < 0.5 else local.title()
    labels = [rng.choice(_SUBDOMAINS) for _ in range(rng.choice([0, 0, 1, 1, 2]))] + [rng.choice(_DOMAINS)]
    address = f"{local}@{'.'.join(labels)}.{rng.choice(_TLDS)}"
    return address.upper() if rng.random() < 0.03 else address


def _us(rng: random.Random) -> str:
    area, exch, line = _digits(rng, 3, "23456789"), _digits(rng, 3, "23456789"), _digits(rng, 4)
    return rng.choice([f"({area}) {exch}-{line}", f"{area}-{exch}-{line}", f"{area}.{exch}.{line}",
                       f"+1 {area} {exch} {line}", f"+1-{area}-{exch}-{line}", f"1-{area}-{exch}-{line}",
                       f"+1 ({area}) {exch}-{line}", f"{area} {exch} {line}"])


def _gb(rng: random.Random) -> str:
    london, mobile = f"20 {_digits(rng, 4, '378')} {_digits(rng, 4)}", f"7{_digits(rng, 3)} {_digits(rng, 6)}"
    n = rng.choice([london, mobile])
    return rng.choice([f"+44 {n}", f"0{n}", f"0044 {n}", f"+44 (0){n}", f"+44{n.replace(' ', '')}"])


def _de(rng: random.Random) -> str:
    n = rng.choice([f"30 {_digits(rng, 8, '123456789')}", f"89 {_digits(rng, 7, '123456789')}",
                    f"151 {_digits(rng, 8)}", f"170 {_digits(rng, 7)}"])
    area, rest = n.split(" ")
    return rng.choice([f"+49 {n}", f"0{n}", f"0{area}/{rest}", f"+49 ({area}) {rest}", f"0{area}-{rest}"])


def _fr(rng: random.Random) -> str:
    pairs = [_digits(rng, 2) for _ in range(4)]
    first = rng.choice("123456789")
    return rng.choice([f"0{first} {' '.join(pairs)}", f"+33 {first} {' '.join(pairs)}",
                       f"0{first}.{'.'.join(pairs)}", f"0{first}{''.join(pairs)}", f"+33{first}{''.join(pairs)}"])


def _in(rng: random.Random) -> str:
    a, b = _digits(rng, 5, "6789"), _digits(rng, 5)
    return rng.choice([f"+91 {a} {b}", f"+91-{a}{b}", f"0{a} {b}", f"{a} {b}"])


def _es(rng: random.Random) -> str:
    n = f"{_digits(rng, 3, '6789')} {_digits(rng, 3)} {_digits(rng, 3)}"
    return rng.choice([f"+34 {n}", n, f"0034 {n}"])


def _it(rng: random.Random) -> str:
    return rng.choice([f"+39 06 {_digits(rng, 4)} {_digits(rng, 4)}", f"+39 3{_digits(rng, 2)} {_digits(rng, 3)} "
                       f"{_digits(rng, 4)}", f"06 {_digits(rng, 4)} {_digits(rng, 4)}"])


def _nl(rng: random.Random) -> str:
    return rng.choice([f"+31 20 {_digits(rng, 3)} {_digits(rng, 4)}", f"06-{_digits(rng, 8)}",
                       f"+31 6 {_digits(rng, 8)}", f"020 {_digits(rng, 3)} {_digits(rng, 4)}"])


def _au(rng: random.Random) -> str:
    return rng.choice([f"+61 2 {_digits(rng, 4)} {_digits(rng, 4)}", f"04{_digits(rng, 2)} {_digits(rng, 3)} "
                       f"{_digits(rng, 3)}", f"(02) {_digits(rng, 4)} {_digits(rng, 4)}",
                       f"+61 4{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}"])


def _br(rng: random.Random) -> str:
    return rng.choice([f"+55 11 9{_digits(rng, 4)}-{_digits(rng, 4)}", f"(11) 9{_digits(rng, 4)}-{_digits(rng, 4)}"])


_PHONE_COUNTRIES: list[Callable[[random.Random], str]] = [_us, _us, _gb, _gb, _de, _fr, _in, _es, _it, _nl, _au, _br]


def phone(rng: random.Random) -> str:
    """A phone number in a national or international format of one of 10 countries, sometimes with extension."""
    n = rng.choice(_PHONE_COUNTRIES)(rng)
    if rng.random() < 0.08:
        n += rng.choice([" ext. ", " ext ", " x", " x ", "#"]) + _digits(rng, rng.randint(2, 4))
    return n


# brand: (prefixes, lengths)
_CARD_BRANDS: list[tuple[list[str], list[int]]] = [
    (["4"], [16, 16, 16, 13, 19]),  # Visa
    (["51", "52", "53", "54", "55", "2221", "2500", "2720"], [16]),  # Mastercard
    (["34", "37"], [15]),  # American Express
    (["6011", "65", "644"], [16]),  # Discover
    (["3528", "3589"], [16]),  # JCB
    (["36", "38"], [14]),  # Diners Club
    (["6759", "5018", "6304"], [12, 13, 16, 19]),  # Maestro
    (["62"], [16, 17, 18, 19]),  # UnionPay
]


def card(rng: random.Random) -> str:
    """A Luhn-valid card number of a real brand's prefix and length, compact or grouped as printed."""
    prefixes, lengths = rng.choice(_CARD_BRANDS)
    prefix, length = rng.choice(prefixes), rng.choice(lengths)
    digits = luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
    if length in (14, 15):  # Diners Club and American Express print 4-6-4 and 4-6-5
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i:i + 4] for i in range(0, length, 4)]
    return rng.choice([digits, " ".join(groups), " ".join(groups), "-".join(groups)])


# country: BBAN grammar, n digits, a upper-case letters, c alphanumerics
_IBAN_FORMATS = {
    "DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "ES": "20n", "IT": "1a10n12c", "NL": "4a10n", "BE": "12n",
    "CH": "5n12c", "AT": "16n", "PL": "24n", "PT": "21n", "IE": "4a14n", "SE": "20n", "NO": "11n", "DK": "14n",
    "FI": "14n", "LU": "3n13c", "GR": "7n16c", "RO": "4a16c", "CZ": "20n",
}


def iban(rng: random.Random) -> str:
    """A mod-97-valid IBAN of one of 20 countries, compact or in groups of four, sometimes lower-case."""
    country = rng.choice(sorted(_IBAN_FORMATS))
    bban, spec, num = "", _IBAN_FORMATS[country], ""
    for ch in spec:
        if ch.isdigit():
            num += ch
            continue
        bban += {"n": lambda n: _digits(rng, n), "a": lambda n: _letters(rng, n), "c": lambda n: _alnum(rng, n)}[ch](
            int(num))
        num = ""
    value = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.6:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value.lower() if rng.random() < 0.1 else value


GENERATORS: dict[str, tuple[Callable[[random.Random], str], list[str]]] = {
    "email": (email, _EMAIL_PHRASES), "phone": (phone, _PHONE_PHRASES), "card": (card, _CARD_PHRASES),
    "iban": (iban, _IBAN_PHRASES),
}


def row(kind: str, value: str, phrase: str) -> dict[str, str]:
    """One sentence: `phrase` with `value` in place of `{}`, and the text expected once it is masked."""
    return {"kind": kind, "value": value, "text": phrase.format(value), "expected": phrase.format(PLACEHOLDERS[kind])}


def sentences(n_per_kind: int = 2000, seed: int = 26) -> list[dict[str, str]]:
    """`n_per_kind` sentences per kind (the issue's two sentences among the emails), deterministic in `seed`."""
    rng = random.Random(seed)
    rows = [row(kind, value, phrase) for kind, value, phrase in ISSUE_SENTENCES]
    for kind, (make, phrases) in GENERATORS.items():
        have = sum(r["kind"] == kind for r in rows)
        rows += [row(kind, make(rng), rng.choice(phrases)) for _ in range(n_per_kind - have)]
    return rows
