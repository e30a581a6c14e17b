"""Commands of the reviewer: label paused review batches in the terminal; the simulated reviewers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from hitl.cli import ConfigOpt, _cfg, _stack_ready, app, console
from hitl.config import DEFAULT_CONFIG


def _ask(prompt: str) -> str:
    try:
        return console.input(prompt)
    except EOFError:
        console.print("\n[red]Input ended before the batch was complete: nothing was submitted.[/]")
        raise typer.Exit(1) from None


def _refuse(what: str, why: str) -> NoReturn:
    """One line saying what was not done and why; exit 1."""
    console.print(f"[red]{what}:[/] {escape(' '.join(why.split()))}", soft_wrap=True)
    raise typer.Exit(1)


LETTERS = "abcdefghijklmnopqrst"  # the suggestions of an item (at most review.suggestions, 20)


def _pick_label(prompt: str, labels: list[str], suggested: Sequence[str] = ()) -> str:
    """A number of `labels`, a letter of `suggested`, or either's text; the chosen choice as the form has it."""
    letters = dict(zip(LETTERS, suggested, strict=False))
    while True:
        raw = _ask(prompt).strip()
        if raw.isdigit() and 1 <= int(raw) <= len(labels):
            return labels[int(raw) - 1]
        if raw in labels or raw in suggested:
            return raw
        if raw in letters:
            return letters[raw]
        hint = f", a letter {LETTERS[0]}-{LETTERS[len(letters) - 1]} for a suggestion" if letters else ""
        console.print(f"[red]{escape(repr(raw))} is not a label.[/] Type a number 1-{len(labels)}{hint} or a label "
                      "name.", soft_wrap=True)


def _ask_note(prompt: str, limit: int) -> str:
    """A rationale of at most `limit` characters (`review.max_rationale_chars`); asks again when longer."""
    while len(note := _ask(prompt).strip()) > limit:
        console.print(f"[red]That is {len(note)} characters; at most {limit} (review.max_rationale_chars).[/] "
                      "Type a shorter one.", soft_wrap=True)
    return note


def _numbered(title: str, labels: list[str], keys: Sequence[str] | None = None) -> str:
    keys = keys or [str(i) for i in range(1, len(labels) + 1)]
    return f"{title}: " + "  ".join(f"[bold]{k}[/] {escape(lab)}" for k, lab in zip(keys, labels, strict=False))


@app.command()
def review(config: ConfigOpt = DEFAULT_CONFIG,
           reviewer: Annotated[str | None, typer.Option(help="your name (asked if not given)")] = None,
           run_id: Annotated[str | None, typer.Option("--run", help="a paused run id (default: oldest)")] = None,
           list_only: Annotated[bool, typer.Option("--list", help="only list open batches")] = False) -> None:
    """Label a paused review or adjudication batch in the terminal; submits by resuming its flow run."""
    from hitl.review import prefect_api
    from hitl.review.forms import NONE_FITS, REVIEWER_FIELD, split_choices, trace_ids_from_schema
    from hitl.review.store import MAX_REVIEWER_CHARS

    cfg = _cfg(config)
    _stack_ready(cfg)
    runs = prefect_api.paused_runs((prefect_api.REVIEW_FORM, prefect_api.ADJUDICATION_FORM))
    t = Table(title="Open review and adjudication batches (paused flow runs)")
    for col in ("#", "run id", "name", "kind", "items", "paused since"):
        t.add_column(col)
    for i, r in enumerate(runs, 1):
        kind = "adjudication" if r.form == prefect_api.ADJUDICATION_FORM else "review"
        t.add_row(str(i), r.id, r.name, kind, str(len(trace_ids_from_schema(r.schema))), r.created[:19])
    console.print(t)
    run = next((r for r in runs if r.id == run_id), None) if run_id else (runs[0] if runs else None)
    if run_id and run is None and not list_only:  # e.g. a batch already submitted
        _refuse("Not submitted", f"run {run_id} is not a paused review batch (already resumed, or not a batch).")
    if list_only or run is None:
        if not runs:
            console.print("No batch is waiting for review. Start one with: hitl review-batch")
        return
    console.print(Markdown(run.description))
    choices = run.fields.get(REVIEWER_FIELD, {}).get("enum")
    if choices:
        console.print(f"Adjudicators: {', '.join(choices)}")
    name = (reviewer or _ask("Your name: ")).strip()
    if not name or len(name) > MAX_REVIEWER_CHARS:
        _refuse("Not submitted", f"the reviewer name must be 1 to {MAX_REVIEWER_CHARS} characters (--reviewer NAME).")
    if choices and name not in choices:
        _refuse("Not submitted", f"{name!r} is not an adjudicator: {', '.join(choices)}.")
    values: dict[str, str] = {REVIEWER_FIELD: name}
    fields = trace_ids_from_schema(run.schema)
    first = run.fields[next(iter(fields))].get("enum") if fields else None
    labels = split_choices(first or cfg.labels)[1]  # every label (and NONE_FITS), numbered once
    console.print(_numbered("Labels", labels))
    for n, (field, _trace_id) in enumerate(fields.items(), 1):
        prop = run.fields[field]
        console.rule(f"{prop.get('title', field)}  ({n}/{len(fields)})")
        console.print(prop.get("description", ""))
        suggested, mine = split_choices(prop.get("enum") or labels)  # each item's own choices, in its form's order
        if mine != labels:
            console.print(_numbered("Labels for this item", mine))
        if suggested:
            console.print(_numbered("Suggested", suggested, LETTERS))
        values[field] = _pick_label("label> ", mine, suggested)
        limit = cfg.review.max_rationale_chars
        if values[field] == NONE_FITS:
            proposed = _ask("the label you propose> ").strip()
            note = f"{proposed}: {_ask_note('why> ', max(0, limit - len(proposed) - 2))}" if proposed else \
                _ask_note("why> ", limit)
        else:
            note = _ask_note("rationale (Enter to skip)> ", limit)
        if note:
            values[f"{field}_rationale"] = note
    try:
        prefect_api.resume(run.id, values, run.response_key)
    except prefect_api.NotWaiting as e:
        if run.form == prefect_api.REVIEW_FORM and _submit_late(cfg, run, values):
            return
        _refuse("Not submitted", str(e))
    except RuntimeError as e:  # the server refused the values
        _refuse("Not submitted", str(e))
    console.print(f"[green]Submitted {len(fields)} labels as {name}; flow run {run.id} resumed.[/]")


def _submit_late(cfg, run, values: dict[str, str]) -> bool:
    """The run's wait ended while the reviewer was labelling: merge the labels into the store where the items
    still need them, and say so. False when the store has no batch for the run (nothing merged)."""
    from functools import partial

    from hitl.audit import evidence
    from hitl.review import submission
    from hitl.review.forms import item_field, trace_ids_from_schema
    from hitl.review.store import ReviewError, ReviewStore

    store = ReviewStore(cfg.store_url)
    batch_id = store.batch_of_run(run.id)
    if batch_id is None:
        return False
    fields = trace_ids_from_schema(run.schema)
    items = [{"trace_id": fields[item_field(i)]} for i in range(len(fields))]
    try:  # the form's path: the same validation, gold policy and audit entry
        sub = submission.submit(cfg, store, batch_id, items, values,
                                partial(evidence.record_review, evidence.open_log(cfg, store)))
    except ReviewError as e:
        _refuse("Not submitted", str(e))
    result, labels = sub.result, sub.labels
    if result.already_submitted:
        _refuse("Not submitted", f"batch {batch_id} was already submitted; nothing was stored again.")
    console.print(f"[yellow]Late:[/] flow run {run.id} stopped waiting before you submitted. Merged "
                  f"{result.stored} of your {len(labels)} labels into the review store where items still needed "
                  f"them; {len(result.skipped)} not stored:")
    for trace_id, why in result.skipped.items():
        console.print(f"  {trace_id}: {why}")
    return True



@app.command()
def metrics(config: ConfigOpt = DEFAULT_CONFIG,
            as_markdown: Annotated[bool, typer.Option("--markdown", help="print Markdown instead of tables")] = False
            ) -> None:
    """Reviewer metrics: backlog, time to resolution, throughput, agreement (Krippendorff's alpha, Cohen's kappa
    per pair and per label), agreement of each reviewer with adjudicated labels."""
    from datetime import UTC, datetime

    from hitl.review import metrics as review_metrics
    from hitl.review.store import ReviewStore

    cfg = _cfg(config)
    store = ReviewStore(cfg.store_url)
    m = review_metrics.from_store(store, cfg, datetime.now(UTC))
    for r in m.reviewers.itertuples():
        if r.flagged:
            console.print(f"[red]Warning:[/] {r.reviewer}'s gold accuracy is {r.gold_accuracy:.0%} on "
                          f"{r.gold_answers} gold items (95% CI {r.gold_low:.0%}-{r.gold_high:.0%}), below "
                          f"{cfg.review.gold_min_accuracy:.0%}: their labels since the last good check went to "
                          "adjudication (`hitl adjudicate`).")
    if as_markdown:
        console.print(review_metrics.markdown(m), markup=False, highlight=False)
        return
    console.print(Markdown(review_metrics.markdown(m)))
    if len(m.per_label):
        t = Table(title="Agreement per label (Cohen's kappa, this label vs the rest, double-labelled items)")
        for col in ("label", "items with label", "kappa"):
            t.add_column(col)
        for r in m.per_label.itertuples():
            t.add_row(r.label, str(r.items_with_label), "—" if r.kappa != r.kappa else f"{r.kappa:.2f}")
        console.print(t)


@app.command()
def relabel(trace_id: Annotated[str, typer.Argument(help="the trace whose label is wrong")],
            label: Annotated[str, typer.Argument(help="the correct label")],
            config: ConfigOpt = DEFAULT_CONFIG,
            reviewer: Annotated[str, typer.Option(prompt=True)] = "",
            reason: Annotated[str, typer.Option(prompt=True)] = "") -> None:
    """Correct a resolved label. The correction supersedes it in the next dataset version; earlier versions
    and the original annotations stay unchanged."""
    from hitl.audit import evidence
    from hitl.review.store import ReviewError, ReviewStore

    cfg = _cfg(config)
    store = ReviewStore(cfg.store_url)
    try:
        rid = store.resolve(trace_id, label, reviewer, reason, "correction", cfg.labels)
    except ReviewError as e:
        console.print(f"[red]Not corrected:[/] {e}")
        raise typer.Exit(1) from e
    evidence.record_resolutions(evidence.open_log(cfg, store), store, [rid], "correction", reviewer)
    console.print(f"[green]Trace {trace_id} is now {label} (correction r{rid} by {reviewer}); the next "
                  "`hitl register-dataset` carries it.[/]")


@app.command("simulate-reviewers")
def simulate_reviewers(config: ConfigOpt = DEFAULT_CONFIG,
                       stop_file: Annotated[Path | None, typer.Option(help="stop when this file exists")] = None,
                       max_seconds: float = 3600.0) -> None:
    """(demo) Noisy-oracle reviewers and an approver that resolve paused runs through the Prefect API."""
    from hitl.sim.reviewers import SimulatedReviewers, load_truth

    cfg = _cfg(config)
    sim = SimulatedReviewers(cfg, load_truth(cfg))
    deadline = time.monotonic() + max_seconds
    n = sim.run(lambda: (stop_file is not None and stop_file.exists()) or time.monotonic() > deadline)
    console.print(f"Simulated reviewers resolved {n} paused runs")


