"""A seeded synthetic customer-support world for a bank/fintech intent classifier.

The world produces labelled launch data (standard written phrasing on the launch channels) and windows of
production requests, a share of which arrive on a drift channel (`cfg.drift_channel`, "voice") phrased as
speech transcripts with vocabulary the launch data never had. Ground truth is returned apart from the
requests so that reviewers and the pipeline only ever see what production saw.

Everything is deterministic given `cfg.seed` (plus `seed_offset` for production windows).
The phrase templates and slot values are in hitl/sim/phrases.py; the trace files are written by
hitl/sim/files.py.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from hitl.config import WorldConfig
from hitl.sim import files, phrases

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
    home = phrases.CURRENCY.get(locale, "$")
    cur = home if rng.random() < 0.9 else _pick(rng, tuple(phrases.CURRENCY.values()))
    return {
        "amount": _money(cur, _pick(rng, phrases.AMOUNTS[cur])),
        "fee": _money(cur, _pick(rng, phrases.FEES[cur])),
        "loan": _money(cur, _pick(rng, phrases.LOANS[cur])),
        "spoken": _pick(rng, phrases.SPOKEN[cur]),
        "merchant": _pick(rng, phrases.MERCHANTS),
        "person": _pick(rng, phrases.PERSONS),
        "days": str(int(rng.integers(3, 22))),
        "days_spoken": _pick(rng, phrases.DAYS_SPOKEN),
        "weekday": _pick(rng, phrases.WEEKDAYS),
        "when": _pick(rng, phrases.WHEN),
        "city": _pick(rng, phrases.CITIES),
        "street": _pick(rng, phrases.STREETS),
        "please": " please" if rng.random() < 0.4 else "",
    }


def _decap(text: str) -> str:
    """Lower-case the first letter unless the sentence starts with 'I' or an acronym."""
    if text.startswith(phrases.DECAP_KEEP) or not text:
        return text
    return text[0].lower() + text[1:]


def standard_text(rng: np.random.Generator, label: str, locale: str) -> str:
    """A written customer message for `label`, with optional greeting and thanks."""
    template = _pick(rng, phrases.STANDARD_TEMPLATES[label])
    u = rng.random(2)
    if u[0] < 0.35:  # decapitalise the template, not the text, so slot values such as merchants keep case
        template = f"{_pick(rng, phrases.GREETINGS)} {_decap(template)}"
    text = template.format_map(_slots(rng, locale))
    if u[1] < 0.3:
        text = f"{text} {_pick(rng, phrases.THANKS)}"
    return text


def voice_text(rng: np.random.Generator, label: str, locale: str) -> str:
    """A speech transcript for `label`: lower case, no punctuation, fillers and repetitions."""
    raw = _pick(rng, phrases.VOICE_TEMPLATES[label]).format_map(_slots(rng, locale)).lower()
    words = re.sub(r"[^\w\s']", " ", raw).split()
    u = rng.random(4)
    if u[0] < 0.3:  # a stutter: one word said twice
        i = int(rng.integers(len(words)))
        words.insert(i, words[i])
    if u[1] < 0.5:
        words.insert(int(rng.integers(1, len(words))), _pick(rng, phrases.FILLERS))
    if u[2] < 0.6:
        words.insert(0, _pick(rng, phrases.VOICE_OPENERS))
    if u[3] < 0.25:
        words.append(_pick(rng, phrases.VOICE_CLOSERS))
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
    return _pick(rng, phrases.CONTEXTS).format_map(values)


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
            "timestamp": files.to_utc(start) + pd.to_timedelta(offsets.round(3), unit="s"),
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
        return phrases.REPLIES[label]
    except KeyError:
        raise ValueError(f"unknown intent {label!r}; expected one of {INTENTS}") from None


def corrupted_count(n: int, invalid_share: float) -> int:
    """How many corrupted records simulate_production appends to `n` clean ones."""
    k = round(n * invalid_share)
    return max(k, 1) if invalid_share > 0 and n >= 50 else k


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
        "timestamp": files.iso(row["timestamp"]),
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
