"""Commands of the manager: read the regression report, approve or reject a release."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markdown import Markdown

from hitl.cli import ConfigOpt, _cfg, _stack_ready, app, console
from hitl.config import DEFAULT_CONFIG


@app.command()
def approve(config: ConfigOpt = DEFAULT_CONFIG,
            decision: Annotated[str, typer.Option(
                help="approve or reject; after a FAILED gate: reject or override (break-glass, with a reason)")
            ] = "approve",
            approver: Annotated[str, typer.Option(prompt=True)] = "",
            reason: Annotated[str, typer.Option(prompt=True)] = "",
            run_id: Annotated[str | None, typer.Option("--run")] = None) -> None:
    """Approve or reject a paused high-risk step (e.g. promoting the challenger). A release whose gate was
    INCONCLUSIVE or FAILED needs a reason of at least 20 characters."""
    from hitl.review import prefect_api

    cfg = _cfg(config)
    _stack_ready(cfg)
    runs = prefect_api.paused_runs(prefect_api.APPROVAL_FORM)
    run = next((r for r in runs if r.id == run_id), None) if run_id else (runs[0] if runs else None)
    if run is None:
        console.print("No approval is waiting." if not run_id else f"[red]{run_id} is not a paused approval.[/]")
        raise typer.Exit(1)
    console.print(Markdown(run.description))
    try:
        prefect_api.resume(run.id, {"decision": decision, "approver": approver, "reason": reason})
    except RuntimeError as e:
        console.print(f"[red]Not submitted:[/] {e}")
        raise typer.Exit(1) from e
    console.print(f"[green]{decision} recorded for flow run {run.id}.[/]")



@app.command()
def report(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Print the latest regression report summary and the path of its HTML page."""
    cfg = _cfg(config)
    md, html = cfg.reports_dir / "latest.md", cfg.reports_dir / "latest.html"
    if not md.exists():
        console.print("No regression report yet: run `hitl eval` or `hitl cycle`.")
        raise typer.Exit(1)
    console.print(Markdown(md.read_text()))
    console.print(f"\nHTML report: {html}")


