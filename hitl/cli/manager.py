"""Commands of the manager: read the regression report, approve or reject a release, roll one back."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape

from hitl.cli import ConfigOpt, _cfg, _servers_down, _stack_ready, app, console
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
        prefect_api.resume(run.id, {"decision": decision, "approver": approver, "reason": reason}, run.response_key)
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


@app.command()
def rollback(config: ConfigOpt = DEFAULT_CONFIG,
             reason: Annotated[str, typer.Option(prompt=True, help=(
                 "why, for whoever reads it later (at least 20 characters): it goes in the audit chain and on "
                 "the version rolled back"))] = "",
             by: Annotated[str, typer.Option("--by", prompt="Decided by", help="who decides")] = "",
             to: Annotated[str | None, typer.Option("--to", help="the version to restore (default: @previous)")
                           ] = None) -> None:
    """Move @champion back to @previous, or to an earlier approved version (--to): the decision goes in the
    audit chain first, then the registry moves as a promotion does (a crash half-way is finished by the same
    command again, or by the next model load). The version rolled back becomes @previous, marked with why."""
    from mlflow import MlflowClient

    from hitl.audit import evidence
    from hitl.evaluation.decision import MIN_OVERRIDE_REASON
    from hitl.learning import promotion

    cfg = _cfg(config)
    if len(reason.strip()) < MIN_OVERRIDE_REASON or not by.strip():
        console.print(f"[red]Not rolled back:[/] give --by and a --reason of at least {MIN_OVERRIDE_REASON} "
                      "characters (it is what the next person reads).")
        raise typer.Exit(1)
    down = [s for s in _servers_down(cfg) if s.startswith("MLflow")]
    if down:
        console.print(f"[red]Not reachable: {down[0]}.[/] Start the stack with: hitl up -c {config}", soft_wrap=True)
        raise typer.Exit(1)
    name, client = cfg.model.registered_name, MlflowClient()
    finished = promotion.finish_pending(name, client)
    if finished and finished.kind == promotion.ROLLBACK:  # this command, killed half-way, run again
        console.print(f"[green]Finished the interrupted rollback: @champion is v{finished.promoted} again[/] (was "
                      f"v{finished.replaced}; decided by {finished.approver}, audit entry #{finished.entry}).")
        return
    if finished:
        console.print(f"[yellow]Finished an interrupted promotion first: @champion is v{finished.promoted}.[/]")
    try:
        current, target = promotion.rollback_target(name, to, client)
    except promotion.RollbackRefused as e:
        console.print(f"[red]Not rolled back:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from e
    entry = evidence.record_rollback(evidence.open_log(cfg), name, current, target, by.strip(), reason.strip())
    promotion.rollback(name, promotion.Promotion(current, target, by.strip(), reason.strip(), kind=promotion.ROLLBACK,
                                                 at=entry.at, entry=entry.seq), client)
    evidence.tag_release(name, target, entry, client)
    console.print(f"[green]@champion is v{target} again[/] (was v{current}, now @previous, marked rolled back). "
                  f"Audit entry {entry.short}. Workers load it at their next run.", soft_wrap=True)
