"""A seeded synthetic customer-support world for a bank/fintech intent classifier.

The world produces labelled launch data (standard written phrasing on the launch channels) and windows of
production requests, a share of which arrive on a drift channel (`cfg.drift_channel`, "voice") phrased as
speech transcripts with vocabulary the launch data never had. Ground truth is returned apart from the
requests so that reviewers and the pipeline only ever see what production saw.

Everything is deterministic given `cfg.seed` (plus `seed_offset` for production windows).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hitl.config import WorldConfig

INTENTS: tuple[str, ...] = (
    "card_lost",
    "card_arrival",
    "transfer_failed",
    "refund_request",
    "balance_inquiry",
    "change_address",
    "close_account",
    "loan_inquiry",
    "fee_dispute",
    "password_reset",
)
CHANNELS: tuple[str, ...] = ("web_chat", "email", "app")
LOCALES: tuple[str, ...] = ("en-US", "en-GB", "en-IN")
TIERS: tuple[str, ...] = ("free", "premium", "business")

ESCALATION_CUES: tuple[str, ...] = (
    " Let me transfer you to a human agent.",
    " I'm connecting you with a human agent now.",
    " Please hold while I transfer you to a human agent.",
)
CONTEXT_SHARE = 0.3
CORRUPTIONS: tuple[str, ...] = (
    "missing_input",
    "confidence_out_of_range",
    "confidence_not_numeric",
    "bad_timestamp",
    "duplicate_trace_id",
    "empty_input",
    "bad_metadata",
)

_INTENT_WEIGHTS = (0.10, 0.11, 0.12, 0.10, 0.13, 0.07, 0.06, 0.08, 0.09, 0.14)
_CHANNEL_WEIGHTS = {"web_chat": 0.45, "email": 0.20, "app": 0.35}
_LOCALE_WEIGHTS = (0.45, 0.35, 0.20)
_TIER_WEIGHTS = (0.60, 0.30, 0.10)
_LAUNCH, _PRODUCTION, _SIMULATION = 0, 1, 2  # independent rng streams
_DAY_S = 86_400.0

# ---------------------------------------------------------------------------------------------------------
# Standard written phrasing (launch data and the non-drift production channels).
# Slots: {amount} {fee} {loan} {merchant} {person} {days} {weekday} {when} {city} {street} {please}
# ---------------------------------------------------------------------------------------------------------
STANDARD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "card_lost": (
        "I lost my card {when} and need to block it{please}.",
        "My debit card is missing, can you freeze it{please}?",
        "I think my card was stolen at {merchant}. Please cancel it.",
        "I can't find my credit card anywhere and need to report it lost.",
        "Someone stole my wallet with my bank card in it {when}.",
        "Please block my card right away, I lost it {when}.",
        "My card is lost. How do I get it frozen and replaced?",
        "I left my card at {merchant} {when} and now it's gone.",
        "I need to report a lost card and order a replacement{please}.",
    ),
    "card_arrival": (
        "I ordered a new card {days} days ago and it still hasn't arrived.",
        "When will my new card arrive?",
        "My replacement card has not been delivered yet, it's been {days} days.",
        "How long does card delivery usually take?",
        "Can you track the card you posted to me on {weekday}{please}?",
        "Still waiting for my card to arrive, I ordered it {days} days ago.",
        "Has my new debit card been sent out yet?",
        "The card you said would arrive by {weekday} never showed up.",
        "Is there a way to check the delivery status of my new card?",
    ),
    "transfer_failed": (
        "My transfer of {amount} to {person} failed.",
        "I tried to send {amount} to {person} and the transfer was declined.",
        "Why did my bank transfer fail {when}?",
        "The payment of {amount} I sent on {weekday} shows as failed.",
        "My wire transfer didn't go through, can you check what happened{please}?",
        "My transfer to {person} keeps failing with an error.",
        "I sent {amount} {days} days ago but the recipient never received it.",
        "My outgoing transfer was rejected, please tell me why.",
    ),
    "refund_request": (
        "I'd like a refund for my purchase at {merchant}.",
        "{merchant} agreed to refund {amount} but I haven't received it.",
        "How do I request a refund for a {amount} charge from {merchant}?",
        "I returned an item to {merchant} {days} days ago, where is my refund?",
        "Please help me get a refund from {merchant} for a faulty order.",
        "I cancelled my order with {merchant} and want a refund of {amount}.",
        "Can you process a refund for a duplicate purchase at {merchant}{please}?",
        "I am requesting a refund of {amount} because the goods never arrived.",
    ),
    "balance_inquiry": (
        "What is my current account balance?",
        "How much money do I have in my account right now?",
        "Can you tell me my available balance{please}?",
        "Could you check my balance{please}?",
        "What's the balance on my savings account?",
        "I need to know my balance before {weekday}.",
        "Show me my balance and whether the {amount} deposit has cleared.",
        "What's my balance after the {merchant} payment?",
    ),
    "change_address": (
        "I moved and need to update my address.",
        "How do I change my home address on my account?",
        "Please update my address to {street}.",
        "I'm moving to {city} next month, how do I change my address?",
        "My mailing address has changed, can you update it{please}?",
        "I need to change the postal address for my statements.",
        "Can I update my address in the app?",
        "My new address is {street}, {city}. Please update my details.",
    ),
    "close_account": (
        "I want to close my account.",
        "Please close my savings account and send me the remaining funds.",
        "How do I cancel my account with you?",
        "I'd like to shut down my account permanently.",
        "I'm switching banks, so please close my account.",
        "What do I need to do to close my joint account?",
        "Cancel my membership and close all my accounts{please}.",
        "I no longer need this account, please close it by {weekday}.",
    ),
    "loan_inquiry": (
        "What are your current interest rates for personal loans?",
        "Can I apply for a loan of {loan}?",
        "I'm interested in a car loan, what do I need to apply?",
        "Am I eligible for a personal loan?",
        "How long does a loan application take to process?",
        "What's the maximum amount I can borrow as a loan?",
        "I'd like information about home loans and mortgage rates{please}.",
        "Can I get a loan to cover {loan} of home repairs?",
    ),
    "fee_dispute": (
        "Why was I charged a {fee} fee on {weekday}?",
        "I want to dispute a {fee} overdraft fee.",
        "There is a monthly fee on my account I never agreed to.",
        "You charged me a {fee} foreign transaction fee, please reverse it.",
        "Please waive the late payment fee, it was your error.",
        "I was billed a {fee} maintenance fee and that seems wrong.",
        "Can you explain the {fee} service fee on my statement{please}?",
        "I'd like to contest the ATM fee I was charged {when}.",
    ),
    "password_reset": (
        "I forgot my password and can't log in.",
        "How do I reset my password?",
        "My account is locked after too many login attempts.",
        "Please send me a password reset link.",
        "I can't sign in to the app, my password isn't working.",
        "The password reset email never arrived, can you resend it{please}?",
        "I need to change my password, I think it was compromised.",
        "Login keeps failing, please help me reset my password.",
    ),
}

# ---------------------------------------------------------------------------------------------------------
# Drift phrasing (voice channel only): speech transcripts with different vocabulary and idioms. Templates
# marked "# confusable" borrow the surface words of another intent's standard phrasing on purpose.
# Slots: {spoken} (an amount in words) {merchant} {city} {weekday} {days_spoken}
# ---------------------------------------------------------------------------------------------------------
VOICE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "card_lost": (
        "my plastic's gone walkabout cant find it anywhere",
        "cant find the thing i pay with it was in my jacket",
        "i think i dropped the thing i tap to pay with down the pub",
        "someone nicked my purse and the card was in it",
        "the card you sent me last month its not in my wallet no more",  # confusable: card_arrival
        "need you to stop anyone using my card i dont know where it went",
        "had it on {weekday} and now its vanished the card i mean",
    ),
    "card_arrival": (
        "still waiting on the plastic the postman never brought it",
        "wheres the new one you said youd pop in the post",
        "nothing in the letterbox yet for the card",
        "you lot said a card was on its way and its been ages",
        "i lost count of the days waiting for my card to show up",  # confusable: card_lost
        "the replacement one hasnt turned up at my door like {days_spoken} days now",
        "i lost track has my card even been sent out",  # confusable: card_lost
    ),
    "transfer_failed": (
        "sent money to my mate it bounced back",
        "tried paying the rent to my landlord and it just didnt go",
        "the money i moved to my sister never landed",
        "i pushed {spoken} across to my brother and it came straight back to me",  # confusable: refund
        "my payment to the builder got knocked back",
        "paid someone off my phone and it says unsuccessful",
        "i want my money back it never reached my mate's account",  # confusable: refund_request
    ),
    "refund_request": (
        "the shop owes me {spoken} for the stuff i sent back",
        "bought some trainers off {merchant} sent them back and still no dosh",
        "{merchant} said theyd sort my money out but nothings come through",  # confusable: transfer_failed
        "i want what i paid for that order cause it never turned up",  # confusable: card_arrival
        "the hotel charged me twice and said theyd pay it back",  # confusable: fee_dispute
        "got to claw back my cash from that online shop",
    ),
    "balance_inquiry": (
        "how much have i got left in there",
        "whats in the pot right now",
        "am i in the red or not",
        "have i got enough to cover rent till payday",
        "whats sitting in my account before the weekend",  # confusable: close_account
        "how much money can i move right now",  # confusable: transfer_failed
        "tell me the number how much cash have i got",
        "whats left in there after that fee came out",  # confusable: fee_dispute
    ),
    "change_address": (
        "i've moved house where do i tell you",
        "got a new place now so the post needs to go there",  # confusable: card_arrival
        "we've relocated to {city} so can you sort my details",
        "i'm not living at the old flat anymore",
        "stop sending letters to my old gaff",  # confusable: card_arrival
        "new digs as of {weekday} need you to have it on file",
        "can you transfer my details over to the new flat i've moved",  # confusable: transfer_failed
    ),
    "close_account": (
        "i'm done with you lot just shut it all down",
        "want to take all my money out and leave for good",  # confusable: balance_inquiry
        "finish things off with the bank i dont want it anymore",
        "get rid of the whole thing with you i'm going elsewhere",
        "how do i stop being a customer here",
        "pull the plug on everything i've got with you",
        "cancel the lot my cards everything just close me down",  # confusable: card_lost
    ),
    "loan_inquiry": (
        "could i borrow a few grand for a car",
        "can you lend me something to tide me over till payday",  # confusable: balance_inquiry
        "need a bit of cash upfront for a new kitchen can you help",
        "do you lot do finance for a new motor",
        "how much could you give me if i paid it back monthly",  # confusable: refund_request
        "thinking of getting some credit for the wedding",
    ),
    "fee_dispute": (
        "why did you lot take a tenner off me for nothing",
        "theres a sneaky charge on here i never said yes to",
        "you took {spoken} off me just for using the cash machine",
        "whats this extra bit you stuck on my statement",
        "i want that money you took back it was your mistake not mine",  # confusable: refund_request
        "got stung for being a day late and thats not fair",
    ),
    "password_reset": (
        "i cant get in it keeps saying wrong code",
        "locked out totally cant get into my account",  # confusable: close_account
        "forgot the secret word thing for the app",
        "the app wont let me in anymore",
        "my login thing isnt working i need a new one",
        "the text with the code to get back in never arrived",  # confusable: card_arrival
        "forgot my login can you send a new one out to me",  # confusable: card_arrival
    ),
}

REPLIES: dict[str, str] = {
    "card_lost": "I've frozen your card to keep your money safe. A replacement is on its way.",
    "card_arrival": "New cards usually arrive within 5-7 working days. You can track yours in the app.",
    "transfer_failed": "I'm sorry your transfer failed. The funds have been returned; please check the "
    "recipient's details and try again.",
    "refund_request": "Refunds are issued by the merchant and usually appear within 5-10 working days.",
    "balance_inquiry": "You can see your available balance on the home screen of the app.",
    "change_address": "You can update your address under Profile > Personal details.",
    "close_account": "I'm sorry to see you go. You can close your account under Settings > Close account.",
    "loan_inquiry": "You can check your loan eligibility and current rates under Borrow in the app.",
    "fee_dispute": "I've opened a review of this fee. We'll get back to you within 3 working days.",
    "password_reset": "I've sent a password reset link to your registered email address.",
}

_GREETINGS = ("Hi,", "Hello,", "Hi there,", "Good morning,", "Hey,")
_THANKS = ("Thanks.", "Thank you!", "Thanks in advance.", "Thanks for your help.")
_FILLERS = ("um", "uh", "like", "you know", "erm")
_VOICE_OPENERS = ("um", "uh", "yeah so", "so like", "hi yeah", "right so", "okay um")
_VOICE_CLOSERS = ("yeah", "thats it", "cheers", "please")
_DECAP_KEEP = ("I ", "I'", "ATM")
_MERCHANTS = ("Amazon", "Tesco", "Walmart", "Flipkart", "Uber", "Netflix", "Zara", "IKEA", "Argos", "Target")
_PERSONS = ("my landlord", "my sister", "John", "Priya", "my brother", "a friend", "Sarah", "Rahul")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WHEN = ("yesterday", "this morning", "last night", "today", "over the weekend")
_CITIES = ("London", "Manchester", "Leeds", "Austin", "Chicago", "Denver", "Mumbai", "Bangalore", "Pune")
_STREETS = ("12 Oak Lane", "48 Park Road", "221 Elm Street", "7 MG Road", "90 Station Road", "3 Hill View")
_CURRENCY = {"en-US": "$", "en-GB": "£", "en-IN": "₹"}
_AMOUNTS = {
    "$": (15, 25, 40, 60, 85, 120, 250, 499, 1200),
    "£": (10, 20, 45, 60, 80, 150, 300, 750),
    "₹": (500, 900, 1500, 2500, 4000, 7500, 12000),
}
_FEES = {"$": (5, 12, 25, 35), "£": (5, 8, 12, 25), "₹": (100, 250, 500, 750)}
_LOANS = {"$": (5000, 10000, 25000), "£": (3000, 8000, 20000), "₹": (200000, 500000, 1000000)}
_SPOKEN = {
    "$": ("twenty bucks", "fifty bucks", "a hundred bucks", "two hundred dollars"),
    "£": ("twenty quid", "forty quid", "a hundred quid", "two hundred pounds"),
    "₹": ("five hundred rupees", "two thousand rupees", "ten thousand rupees", "fifteen hundred rupees"),
}
_DAYS_SPOKEN = ("five", "ten", "twelve", "fifteen", "twenty")
_CONTEXTS = (
    "Account note: customer since {year}.",
    "Account note: open support tickets: {k}.",
    "Account note: card reissued {days} days ago.",
    "Account note: identity verified by SMS this session.",
    "Account note: direct debits active, salary paid on the 25th.",
    "Account note: previous contact {days} days ago about app login.",
    "Account note: travel notice on file.",
)


# ---------------------------------------------------------------------------------------------------------
# Randomness helpers
# ---------------------------------------------------------------------------------------------------------
def _rng(seed: int, stream: int, offset: int = 0) -> np.random.Generator:
    """An independent, reproducible generator for one (seed, stream, offset) triple."""
    if min(seed, offset) < 0:
        raise ValueError(f"seed and seed_offset must be non-negative, got {seed} and {offset}")
    return np.random.default_rng([seed, stream, offset])


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One element of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]


def _choose(rng: np.random.Generator, options: Sequence[str], weights: Sequence[float], n: int) -> list[str]:
    """`n` weighted draws from `options` as plain Python strings."""
    p = np.asarray(weights, dtype=float)
    idx = rng.choice(len(options), size=n, p=p / p.sum())
    return [options[int(i)] for i in idx]


def _money(symbol: str, value: int) -> str:
    """Format an amount with its currency symbol, e.g. '£45' or '$1,200'."""
    return f"{symbol}{value:,}"


# ---------------------------------------------------------------------------------------------------------
# Text generation
# ---------------------------------------------------------------------------------------------------------
def _slots(rng: np.random.Generator, locale: str) -> dict[str, str]:
    """Fresh slot values; the currency matches the locale nine times out of ten."""
    home = _CURRENCY.get(locale, "$")
    cur = home if rng.random() < 0.9 else _pick(rng, tuple(_CURRENCY.values()))
    return {
        "amount": _money(cur, _pick(rng, _AMOUNTS[cur])),
        "fee": _money(cur, _pick(rng, _FEES[cur])),
        "loan": _money(cur, _pick(rng, _LOANS[cur])),
        "spoken": _pick(rng, _SPOKEN[cur]),
        "merchant": _pick(rng, _MERCHANTS),
        "person": _pick(rng, _PERSONS),
        "days": str(int(rng.integers(3, 22))),
        "days_spoken": _pick(rng, _DAYS_SPOKEN),
        "weekday": _pick(rng, _WEEKDAYS),
        "when": _pick(rng, _WHEN),
        "city": _pick(rng, _CITIES),
        "street": _pick(rng, _STREETS),
        "please": " please" if rng.random() < 0.4 else "",
    }


def _decap(text: str) -> str:
    """Lower-case the first letter unless the sentence starts with 'I' or an acronym."""
    if text.startswith(_DECAP_KEEP) or not text:
        return text
    return text[0].lower() + text[1:]


def standard_text(rng: np.random.Generator, label: str, locale: str) -> str:
    """A written customer message for `label`, with optional greeting and thanks."""
    template = _pick(rng, STANDARD_TEMPLATES[label])
    u = rng.random(2)
    if u[0] < 0.35:  # decapitalise the template, not the text, so slot values such as merchants keep case
        template = f"{_pick(rng, _GREETINGS)} {_decap(template)}"
    text = template.format_map(_slots(rng, locale))
    if u[1] < 0.3:
        text = f"{text} {_pick(rng, _THANKS)}"
    return text


def voice_text(rng: np.random.Generator, label: str, locale: str) -> str:
    """A speech transcript for `label`: lower case, no punctuation, fillers and repetitions."""
    raw = _pick(rng, VOICE_TEMPLATES[label]).format_map(_slots(rng, locale)).lower()
    words = re.sub(r"[^\w\s']", " ", raw).split()
    u = rng.random(4)
    if u[0] < 0.3:  # a stutter: one word said twice
        i = int(rng.integers(len(words)))
        words.insert(i, words[i])
    if u[1] < 0.5:
        words.insert(int(rng.integers(1, len(words))), _pick(rng, _FILLERS))
    if u[2] < 0.6:
        words.insert(0, _pick(rng, _VOICE_OPENERS))
    if u[3] < 0.25:
        words.append(_pick(rng, _VOICE_CLOSERS))
    return " ".join(words)


def _text(rng: np.random.Generator, label: str, locale: str, drift: bool) -> str:
    """Voice transcript on the drift channel, written message elsewhere."""
    return voice_text(rng, label, locale) if drift else standard_text(rng, label, locale)


def _context(rng: np.random.Generator) -> str:
    """A short account note as a CRM would attach it."""
    values = {
        "year": str(int(rng.integers(2009, 2025))),
        "k": str(int(rng.integers(1, 4))),
        "days": str(int(rng.integers(2, 60))),
    }
    return _pick(rng, _CONTEXTS).format_map(values)


def _launch_channels(cfg: WorldConfig) -> tuple[str, ...]:
    """Launch channels, never the drift channel (even if it was configured as one of them)."""
    channels = tuple(c for c in CHANNELS if c != cfg.drift_channel)
    if not channels:
        raise ValueError(f"drift_channel {cfg.drift_channel!r} leaves no launch channel")
    return channels


def _channel_weights(channels: Sequence[str]) -> list[float]:
    return [_CHANNEL_WEIGHTS[c] for c in channels]


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------
def launch_data(cfg: WorldConfig) -> pd.DataFrame:
    """Labelled launch training data: cfg.launch_per_intent rows per intent, standard phrasing only,
    launch channels only (never the drift channel). Columns: text, label, channel, locale, tier."""
    rng = _rng(cfg.seed, _LAUNCH)
    n = cfg.launch_per_intent * len(INTENTS)
    labels = [label for label in INTENTS for _ in range(cfg.launch_per_intent)]
    channels = _launch_channels(cfg)
    frame = pd.DataFrame(
        {
            "label": labels,
            "channel": _choose(rng, channels, _channel_weights(channels), n),
            "locale": _choose(rng, LOCALES, _LOCALE_WEIGHTS, n),
            "tier": _choose(rng, TIERS, _TIER_WEIGHTS, n),
        }
    )
    texts = [standard_text(rng, lab, loc) for lab, loc in zip(labels, frame["locale"], strict=True)]
    frame.insert(0, "text", texts)
    return frame.iloc[rng.permutation(n)].reset_index(drop=True)


def _to_utc(start: datetime) -> pd.Timestamp:
    """`start` as a UTC timestamp; a naive datetime is taken to be UTC already."""
    ts = pd.Timestamp(start)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def _drift_mask(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Exactly round(n * share) drift rows at random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=round(n * share), replace=False)] = True
    return mask


def production_requests(
    cfg: WorldConfig, start: datetime, n: int | None = None, *, seed_offset: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n (default cfg.production_size) production requests spread over 24h from `start`, and their truth.

    A share cfg.drift_share arrive on cfg.drift_channel in speech-transcript style. Returns (requests, truth):
    requests has trace_id, timestamp (UTC), input, channel, locale, tier, context (str or None); truth has
    trace_id and label. A different `seed_offset` draws a fresh window from the same world.
    """
    n = cfg.production_size if n is None else n
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = _rng(cfg.seed, _PRODUCTION, seed_offset)
    labels = _choose(rng, INTENTS, _INTENT_WEIGHTS, n)
    drift = _drift_mask(rng, n, cfg.drift_share)
    launch = _launch_channels(cfg)
    channels = _choose(rng, launch, _channel_weights(launch), n)
    channels = [cfg.drift_channel if d else c for c, d in zip(channels, drift, strict=True)]
    locales = _choose(rng, LOCALES, _LOCALE_WEIGHTS, n)
    tiers = _choose(rng, TIERS, _TIER_WEIGHTS, n)
    texts = [_text(rng, lab, loc, d) for lab, loc, d in zip(labels, locales, drift, strict=True)]
    contexts = [_context(rng) if u < CONTEXT_SHARE else None for u in rng.random(n)]
    offsets = np.sort(rng.uniform(0.0, _DAY_S, n))
    trace_ids = [f"tr-{cfg.seed}-{seed_offset}-{i:06d}" for i in range(n)]
    requests = pd.DataFrame(
        {
            "trace_id": trace_ids,
            "timestamp": _to_utc(start) + pd.to_timedelta(offsets.round(3), unit="s"),
            "input": texts,
            "channel": channels,
            "locale": locales,
            "tier": tiers,
            "context": pd.Series(contexts, dtype=object),
        }
    )
    truth = pd.DataFrame({"trace_id": trace_ids, "label": labels})
    return requests, truth


def reply_for(label: str) -> str:
    """The assistant's templated reply for a predicted intent (what production answered)."""
    try:
        return REPLIES[label]
    except KeyError:
        raise ValueError(f"unknown intent {label!r}; expected one of {INTENTS}") from None


def corrupted_count(n: int, invalid_share: float) -> int:
    """How many corrupted records simulate_production appends to `n` clean ones."""
    k = round(n * invalid_share)
    return max(k, 1) if invalid_share > 0 and n >= 50 else k


def _iso(ts: Any) -> str:
    """ISO-8601 UTC with milliseconds and a 'Z' suffix."""
    return _to_utc(pd.Timestamp(ts)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _true_labels(requests: pd.DataFrame, truth: pd.DataFrame) -> list[str]:
    """True labels aligned to the order of `requests`."""
    labels = truth.set_index("trace_id")["label"].reindex(requests["trace_id"])
    missing = labels.isna()
    if missing.any():
        raise ValueError(
            f"truth has no label for {int(missing.sum())} trace ids, e.g. "
            f"{requests['trace_id'][missing.to_numpy()].iloc[0]!r}"
        )
    return [str(x) for x in labels]


def _trace_record(
    row: dict[str, Any],
    prediction: str,
    confidence: float,
    model_version: str,
    p_escalate: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One clean production trace; draws a fixed number of random numbers whatever the outcome."""
    u = rng.random(2)
    turns, latency = int(rng.integers(1, 4)), int(rng.integers(80, 900))
    escalated = bool(u[0] < p_escalate)
    output = reply_for(prediction)
    if escalated:
        turns += int(rng.integers(2, 6))
        if u[1] < 0.5:
            output += _pick(rng, ESCALATION_CUES)
    context = row["context"] if isinstance(row["context"], str) else None
    metadata = {"outcome": "escalated" if escalated else "resolved", "turns": turns, "latency_ms": latency}
    return {
        "trace_id": row["trace_id"],
        "timestamp": _iso(row["timestamp"]),
        "input": row["input"],
        "output": output,
        "model_version": model_version,
        "prediction": prediction,
        "confidence": float(confidence),
        "channel": row["channel"],
        "locale": row["locale"],
        "tier": row["tier"],
        "context": context,
        "metadata": json.dumps(metadata),
    }


def _corrupt(record: dict[str, Any], kind: str, j: int, rng: np.random.Generator) -> dict[str, Any]:
    """A copy of `record` broken in one realistic way (`kind` is one of CORRUPTIONS)."""
    bad = dict(record)
    if kind != "duplicate_trace_id":
        bad["trace_id"] = f"{record['trace_id']}-r{j}"
    if kind == "missing_input":
        del bad["input"]
    elif kind == "confidence_out_of_range":
        bad["confidence"] = _pick(rng, (1.7, -0.2, 12.0))
    elif kind == "confidence_not_numeric":
        bad["confidence"] = _pick(rng, ("high", "n/a", "0,93"))
    elif kind == "bad_timestamp":
        bad["timestamp"] = "not-a-date"
    elif kind == "empty_input":
        bad["input"] = ""
    elif kind == "bad_metadata":
        bad["metadata"] = _pick(rng, ("{outcome: resolved", "{'outcome': 'resolved'}", "null,"))
    return bad


def _corrupted(records: list[dict[str, Any]], k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """`k` corrupted copies of random clean records; kinds cycle through a shuffled CORRUPTIONS."""
    if k == 0 or not records:
        return []
    order = [CORRUPTIONS[int(i)] for i in rng.permutation(len(CORRUPTIONS))]
    sources = rng.choice(len(records), size=k, replace=k > len(records))
    return [_corrupt(records[int(s)], order[j % len(order)], j, rng) for j, s in enumerate(sources)]


def simulate_production(
    requests: pd.DataFrame,
    truth: pd.DataFrame,
    predictions: Sequence[str],
    confidences: Sequence[float],
    model_version: str,
    cfg: WorldConfig,
) -> list[dict]:
    """Production trace records as a logging system writes them: one per request in order, then the
    corrupted extras (corrupted_count of them). Escalation is drawn with probability
    cfg.escalation_if_wrong when the prediction is wrong, else cfg.escalation_if_right; half the
    escalations append an ESCALATION_CUES sentence to the output."""
    n = len(requests)
    if len(predictions) != n or len(confidences) != n:
        raise ValueError(f"{n} requests, {len(predictions)} predictions, {len(confidences)} confidences")
    labels = _true_labels(requests, truth)
    key = zlib.crc32("\n".join(map(str, requests["trace_id"])).encode())
    rng = _rng(cfg.seed, _SIMULATION, key)
    records = []
    rows = requests.to_dict("records")
    for row, pred, conf, label in zip(rows, predictions, confidences, labels, strict=True):
        p = cfg.escalation_if_wrong if str(pred) != label else cfg.escalation_if_right
        records.append(_trace_record(row, str(pred), float(conf), model_version, p, rng))
    return records + _corrupted(records, corrupted_count(n, cfg.invalid_share), rng)


def _json_default(value: Any) -> Any:
    """JSON fallback for numpy scalars and timestamps."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | pd.Timestamp):
        return _iso(value)
    return str(value)


def write_jsonl(records: Iterable[dict], path: Path) -> Path:
    """Write records as JSON lines (parent dirs created, atomic: write tmp then os.replace). Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
