"""Command of every person: what waits for them now (review batches, disputes, release approvals), with the
Prefect UI link and the terminal command that answers each. The inbox itself is `hitl.review.inbox`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from hitl.cli import ConfigOpt, _cfg, app, console
from hitl.config import DEFAULT_CONFIG, Config


def _unreachable(cfg: Config, config: Path) -> NoReturn:
    console.print(f"[red]Prefect is not reachable at {cfg.prefect_api_url}:[/] start the stack with "
                  f"`hitl up -c {config}`, then run `hitl inbox` again.", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def inbox(config: ConfigOpt = DEFAULT_CONFIG,
          person: Annotated[str | None, typer.Option(
              "--as", help="whose inbox: what this person may answer (default: everything, with who may answer)")
          ] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")] = False) -> None:
    """What waits for a person now: review batches, disputes to settle, releases to approve; each with its
    Prefect UI link and the command that answers it, oldest first."""
    import httpx

    from hitl.ops import stack
    from hitl.review import inbox as box
    from hitl.review import prefect_api
    from hitl.review.store import ReviewError, ReviewStore

    cfg = _cfg(config)
    if not stack.wait_healthy(f"{cfg.prefect_api_url}/health", 0):
        _unreachable(cfg, config)
    try:
        runs = prefect_api.paused_runs(tuple(box.KINDS))
    except httpx.HTTPError:  # stopped answering since the health check
        _unreachable(cfg, config)
    try:
        store = ReviewStore(cfg.store_url)
        queued, disputed = store.unleased_items(), store.disputed_trace_ids()
    except ReviewError as e:
        console.print(f"[red]{escape(str(e))}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    shown_path = None if config == DEFAULT_CONFIG else str(config)
    result = box.build(runs, cfg, queued_items=queued, disputed=disputed, person=person, config_path=shown_path)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _render(result, shown_path)


def _render(result, config_path: str | None) -> None:
    from hitl.review import inbox as box

    c = escape(f" -c {config_path}") if config_path else ""
    if result.empty:
        console.print(f"Nothing waits for {escape(result.person or 'anyone')} now.")
    else:
        now = datetime.fromisoformat(result.now)
        t = Table(title=f"Waiting for {escape(result.person or 'people')} (oldest first)")
        for col in ("#", "kind", "run", "what", "waiting", "time left", "who answers"):
            t.add_column(col)
        for i, w in enumerate(result.waiting, 1):
            if w.kind == box.APPROVAL:
                what = f"gate {w.gate or '?'}" + (f": {w.headline}" if w.headline else "")
            else:
                what = f"{w.items} {'disputed ' if w.kind == box.ADJUDICATION else ''}items"
            waited = box.duration((now - datetime.fromisoformat(w.waiting_since).astimezone(UTC)).total_seconds())
            left = "no limit" if w.seconds_left is None else \
                "[red]timed out[/]" if w.seconds_left <= 0 else box.duration(w.seconds_left)
            t.add_row(str(i), w.kind, escape(w.run_name), escape(what), waited, left,
                      escape(", ".join(w.answered_by) or "anyone"))
        console.print(t)
        for i, w in enumerate(result.waiting, 1):
            console.print(f"[bold]{i}[/]  {w.link}\n   {escape(w.command)}", soft_wrap=True, highlight=False)
    if result.queued_items:
        console.print(f"{result.queued_items} queued items are in no review batch yet: the review-dispatch "
                      f"deployment opens batches for them; `hitl review-batch{c}` opens one now.", soft_wrap=True)
    if result.open_disputes:
        console.print(f"{result.open_disputes} disputed items are in no adjudication run: `hitl adjudicate{c}` "
                      "opens one.", soft_wrap=True)
