"""What a reviewer sees and answers for one batch: the Markdown description and the form's fields.

Pure functions; `tasks/review.py` turns `form_fields` into a Prefect `RunInput` class, and the terminal
CLI and the simulated reviewers read the same field names back from the stored form schema.

Blind items (`is_blind`) show no model guess, confidence, evaluator reasons or selection reason: every
random-draw item (its labels are the release verdict, so the champion's guess must not anchor them), every gold
item (the store shows it as a random-draw item), and a stable-hash share `review.blind_share` of the policy
items, so nothing on the form tells a reviewer which blind item is which.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hitl.config import Config
from hitl.hashing import stable_fraction
from hitl.review import pii
from hitl.sampling.selection import RANDOM

NONE_FITS = "(none of these fits)"  # the answer that proposes a new label, named in the rationale

BLIND_SALT = "review-blind"  # salt of the stable hash that picks the blind share of policy items
HIDDEN = "—"  # a blind item's model-said and confidence cells
REVIEWER_FIELD = "reviewer"
TRACE_ID_IN_DESCRIPTION = re.compile(r"trace `([^`]+)`")


def item_field(i: int) -> str:
    return f"item_{i + 1:02d}"


def rationale_field(i: int) -> str:
    return f"item_{i + 1:02d}_rationale"


def _cell(text: str | None, limit: int = 300) -> str:
    text = (text or "").replace("\r", " ").replace("\n", " ").replace("|", "\\|").replace("`", "'").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(it: Mapping, cfg: Config, limit: int = 300) -> str:
    """A trace's text as reviewers see it: personal data masked (`review.mask_pii`), one table cell."""
    text = str(it.get("input") or "")
    return _cell(pii.mask(text) if cfg.review.mask_pii else text, limit)


def is_blind(item: Mapping, cfg: Config) -> bool:
    """Whether the form hides the model's guess for this item: always for random-draw and gold items (and items
    without a prediction), else for the `review.blind_share` of trace ids by stable hash (a resumed batch
    renders the same)."""
    if item.get("selection_reason") == RANDOM or item.get("prediction") in (None, ""):
        return True
    return stable_fraction(str(item["trace_id"]), BLIND_SALT) < cfg.review.blind_share


def choices(item: Mapping, cfg: Config) -> tuple[str, ...]:
    """The answers offered for an item, in order: the label set, then NONE_FITS. The same for every item; a
    per-item order (e.g. the guess first) must never reach blind items, whose order would give the guess away."""
    return (*cfg.labels, NONE_FITS)


def _confidence(it: Mapping) -> str:
    c = it.get("confidence")
    return HIDDEN if c is None or c != c else f"{c:.0%}"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    title: str
    description: str
    choices: tuple[str, ...] | None  # None: free text
    required: bool
    trace_id: str | None = None  # the item this field labels (also stored in the form schema)


def form_fields(items: list[dict], cfg: Config) -> list[FieldSpec]:
    """Reviewer name, then per item a label choice (required) and a rationale (optional)."""
    specs = [FieldSpec(REVIEWER_FIELD, "Reviewer", "Your name or handle (recorded with every label).", None, True)]
    for i, it in enumerate(items):
        text = f"trace `{_cell(it['trace_id'])}`: “{_message(it, cfg, 200)}”"
        if not is_blind(it, cfg):
            text += (f" (model said {_cell(str(it['prediction']))}, {_confidence(it)}; "
                     f"{_cell(it.get('evaluator_reasons'), 160)})")
        specs.append(FieldSpec(item_field(i), f"Item {i + 1}", text, choices(it, cfg), True, str(it["trace_id"])))
        specs.append(FieldSpec(rationale_field(i), f"Item {i + 1} rationale",
                               "Optional: why this label (e.g. what the model missed). With “none of these "
                               "fits”, the label you propose, a colon, and why (e.g. `crypto_wallet: asks "
                               "about a crypto wallet`).", None, False))
    return specs


def adjudication_fields(items: list[dict], cfg: Config) -> list[FieldSpec]:
    """The adjudicator (one of `review.adjudicators` when configured), then per disputed item the deciding
    label (required) and a reason (optional). Each item's description quotes every earlier label."""
    who = tuple(cfg.review.adjudicators) or None
    specs = [FieldSpec(REVIEWER_FIELD, "Adjudicator", "Your name (an adjudicator in the config).", who, True)]
    for i, it in enumerate(items):
        earlier = "; ".join(f"{a['reviewer']} said {a['label']}" + (f" ({_cell(pii.mask(a['rationale']), 80)})"
                                                                     if a.get("rationale") else "")
                            for a in it["annotations"])
        specs.append(FieldSpec(item_field(i), f"Item {i + 1}",
                               f"trace `{_cell(it['trace_id'])}`: “{_message(it, cfg, 200)}” — {earlier}",
                               tuple(cfg.labels), True, str(it["trace_id"])))
        specs.append(FieldSpec(rationale_field(i), f"Item {i + 1} reason",
                               "Optional: why this label settles the disagreement.", None, False))
    return specs


def describe_adjudication(items: list[dict], cfg: Config) -> str:
    """The Markdown an adjudicator reads above the form: each disputed message with every earlier label."""
    lines = [f"## Adjudication — {len(items)} disputed items",
             "Reviewers disagreed on these messages. Decide the correct intent; your label is the one that enters "
             "the dataset (the earlier labels stay on record).", "",
             f"Allowed labels: {', '.join(f'`{lab}`' for lab in cfg.labels)}", "",
             "| # | message | earlier labels (rationale) |", "|---|---|---|"]
    for i, it in enumerate(items):
        earlier = "; ".join(f"{_cell(a['reviewer'])}: `{a['label']}`" + (f" ({_cell(pii.mask(a['rationale']), 80)})"
                                                                          if a.get("rationale") else "")
                            for a in it["annotations"])
        lines.append(f"| {i + 1} | {_message(it, cfg)} | {earlier} |")
    return "\n".join(lines)


def describe_batch(batch_id: str, items: list[dict], cfg: Config) -> str:
    """The Markdown a reviewer reads above the form; blind items show "—" for the model's guess and confidence,
    and no item shows why it was selected."""
    cohort_hdr = " | ".join(cfg.cohorts)
    lines = [
        f"## Review batch `{batch_id[:8]}` — {len(items)} items",
        "Choose the correct intent for each customer message. The model's guess, where shown (not on every "
        f"item: {HIDDEN} where hidden), is context only: judge the message, not the guess. Add a rationale where "
        "the choice was not obvious.",
        "",
        f"Allowed labels: {', '.join(f'`{lab}`' for lab in cfg.labels)}",
        "",
        f"| # | message | model said | conf. | {cohort_hdr} |",
        "|---|---|---|---|" + "---|" * len(cfg.cohorts),
    ]
    for i, it in enumerate(items):
        cohorts = " | ".join(_cell(str(it.get(c, ""))) for c in cfg.cohorts)
        guess = f"{HIDDEN} | {HIDDEN}" if is_blind(it, cfg) else f"`{_cell(str(it['prediction']))}` | {_confidence(it)}"
        lines.append(f"| {i + 1} | {_message(it, cfg)} | {guess} | {cohorts} |")
    return "\n".join(lines)


def parse_answer(answer: Mapping[str, object], items: list[dict]) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """Form values -> (reviewer, {trace_id: (label, rationale)}). Missing labels are left out."""
    reviewer = str(answer.get(REVIEWER_FIELD) or "").strip()
    labels: dict[str, tuple[str, str | None]] = {}
    for i, it in enumerate(items):
        label = answer.get(item_field(i))
        if label is None:
            continue
        rationale = answer.get(rationale_field(i))
        labels[it["trace_id"]] = (str(getattr(label, "value", label)), str(rationale) if rationale else None)
    return reviewer, labels


def trace_ids_from_schema(schema: Mapping) -> dict[str, str]:
    """Map item field name -> trace_id, read from a stored form schema (the field's `trace_id` key, or,
    for forms without it, the trace id quoted in its description)."""
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        if name.endswith("_rationale") or not isinstance(prop, Mapping):
            continue
        if isinstance(prop.get("trace_id"), str):
            out[name] = prop["trace_id"]
        elif m := TRACE_ID_IN_DESCRIPTION.search(str(prop.get("description", ""))):
            out[name] = m.group(1)
    return out
