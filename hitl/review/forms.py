"""What a reviewer sees and answers for one batch: the Markdown description and the form's fields.

Pure functions; `tasks/review.py` turns `form_fields` into a Prefect `RunInput` class, and the terminal
CLI and the simulated reviewers read the same field names back from the stored form schema.

Each item's choices start with the champion's suggestions, its most probable labels with their probability
("card_lost · 62%", `review.suggestions` of them, stored with the item when it was sampled), then NONE_FITS, then
every label A-Z; a choice maps back to its plain label with `label_of`.

Blind items (`is_blind`) show no model guess, suggestion, confidence, evaluator reasons or selection reason:
every random-draw item (its labels are the release verdict, so the champion's guess must not anchor them), every
gold item (the store shows it as a random-draw item), and a stable-hash share `review.blind_share` of the policy
items; their choices are every label A-Z, then NONE_FITS, the same for all of them, so nothing on the form tells
a reviewer which blind item is which.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from hitl.config import Config
from hitl.hashing import stable_fraction
from hitl.review import pii
from hitl.vocabulary import RANDOM

NONE_FITS = "(none of these fits)"  # the answer that proposes a new label, named in the rationale

BLIND_SALT = "review-blind"  # salt of the stable hash that picks the blind share of policy items
HIDDEN = "—"  # a blind item's suggestions cell
SUGGESTION = re.compile(r"(.+) · (\d{1,3})%", re.DOTALL)  # a suggested choice: "<label> · <probability>%"
SUGGESTED, BLIND, GUESS_ONLY = "suggestions", "blind", "guess only"  # what the form showed of the model (shown_as)
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


def suggestions(item: Mapping, cfg: Config) -> list[tuple[str, float]]:
    """The champion's suggestions the form shows for an item, most probable first: at most `review.suggestions`,
    labels of the label set only, none for a blind item (or one stored without them)."""
    if is_blind(item, cfg):
        return []
    stored, known = item.get("suggestions"), set(cfg.labels)
    pairs = stored if isinstance(stored, list | tuple) else ()  # None (or NaN from a frame): stored without them
    return [(str(lab), float(p)) for lab, p in pairs if lab in known][:cfg.review.suggestions]


def suggestion_choice(label: str, probability: float) -> str:
    """A suggestion as the form's list shows it: "card_lost · 62%" (`label_of` reads the label back)."""
    return f"{label} · {probability:.0%}"


def alphabetical(labels: Collection[str]) -> list[str]:
    return sorted(labels, key=lambda lab: (lab.casefold(), lab))


def choices(item: Mapping, cfg: Config) -> tuple[str, ...]:
    """The answers offered for an item, in order: its suggestions (`suggestion_choice`), NONE_FITS, then every
    label A-Z; without suggestions (every blind item) every label A-Z, then NONE_FITS: one tuple for all of them,
    as a per-item order would give a blind item's guess away."""
    labels, known = alphabetical(cfg.labels), set(cfg.labels)
    shown = [c for c in (suggestion_choice(lab, p) for lab, p in suggestions(item, cfg))
             if c not in known]  # a label that looks like a suggestion stays a label
    return (*shown, NONE_FITS, *labels) if shown else (*labels, NONE_FITS)


def label_of(choice: str, labels: Collection[str]) -> str:
    """The label a form value stands for: a label or NONE_FITS is itself; a suggestion "card_lost · 62%" whose
    label is in `labels` is that label; anything else comes back unchanged (the store refuses it)."""
    if choice in labels or choice == NONE_FITS:
        return choice
    m = SUGGESTION.fullmatch(choice)
    return m.group(1) if m and m.group(1) in labels else choice


def split_choices(offered: Sequence[str]) -> tuple[list[str], list[str]]:
    """An item's choices as (its suggestions, the rest with NONE_FITS last): the rest is the same for every item
    of a form (the terminal reviewer numbers it once)."""
    offered = list(offered)
    if NONE_FITS not in offered[:-1]:
        return [], offered
    i = offered.index(NONE_FITS)
    return offered[:i], [*offered[i + 1:], NONE_FITS]


def choice_for(label: str, offered: Sequence[str], labels: Collection[str]) -> str:
    """What a reviewer picks for `label` among an item's choices: its suggestion when it has one, else the label."""
    return next((c for c in offered if c != label and label_of(c, labels) == label), label)


def shown_as(item: Mapping, cfg: Config) -> str:
    """What the form shows of the model for an item: SUGGESTED, BLIND, or GUESS_ONLY (the guess in its text but
    no suggestion: stored before suggestions, or `review.suggestions` 0)."""
    return BLIND if is_blind(item, cfg) else SUGGESTED if suggestions(item, cfg) else GUESS_ONLY


def _pct(p: float | None) -> str:
    return HIDDEN if p is None or p != p else f"{p:.0%}"


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
            text += (f" (model said {_cell(str(it['prediction']))}, {_pct(it.get('confidence'))}; "
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


def _suggestion_cell(it: Mapping, cfg: Config) -> str:
    """The model's suggestions with their probability; an item stored without them shows its guess instead."""
    if is_blind(it, cfg):
        return HIDDEN
    shown = suggestions(it, cfg) or [(str(it["prediction"]), it.get("confidence"))]
    return ", ".join(f"`{_cell(lab)}` {_pct(p)}" for lab, p in shown)


def describe_batch(batch_id: str, items: list[dict], cfg: Config) -> str:
    """The Markdown a reviewer reads above the form: each message, its cohorts and the model's suggestions (blind
    items: "—"); no item shows why it was selected, and the label list is the form's, not repeated here."""
    cohort_hdr = " | ".join(cfg.cohorts)
    lines = [
        f"## Review batch `{batch_id[:8]}` — {len(items)} items",
        "Choose the correct intent for each customer message. Each item's list starts with the model's suggestions "
        f"where shown (not on every item: {HIDDEN} where hidden), then “{NONE_FITS}”, then every label A-Z. The "
        "suggestions are context only: judge the message, not the guess. Add a rationale where the choice was not "
        "obvious.",
        "",
        f"| # | message | model's suggestions | {cohort_hdr} |",
        "|---|---|---|" + "---|" * len(cfg.cohorts),
    ]
    for i, it in enumerate(items):
        cohorts = " | ".join(_cell(str(it.get(c, ""))) for c in cfg.cohorts)
        lines.append(f"| {i + 1} | {_message(it, cfg)} | {_suggestion_cell(it, cfg)} | {cohorts} |")
    return "\n".join(lines)


def parse_answer(answer: Mapping[str, object], items: list[dict], label_set: Collection[str]
                 ) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """Form values -> (reviewer, {trace_id: (label, rationale)}), each choice read back to its label of
    `label_set` (`label_of`). Missing labels are left out."""
    reviewer = str(answer.get(REVIEWER_FIELD) or "").strip()
    label_set = set(label_set)
    labels: dict[str, tuple[str, str | None]] = {}
    for i, it in enumerate(items):
        value = answer.get(item_field(i))
        if value is None:
            continue
        rationale = answer.get(rationale_field(i))
        labels[it["trace_id"]] = (label_of(str(getattr(value, "value", value)), label_set),
                                  str(rationale) if rationale else None)
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
