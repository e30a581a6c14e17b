"""`hitl audit`: check the tamper-evident audit chain against what it refers to, and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hitl.cli import ConfigOpt, _cfg, app, console
from hitl.config import DEFAULT_CONFIG

audit_app = typer.Typer(no_args_is_help=True, help="The audit chain of reviews, datasets, models, reports and "
                                                   "decisions: verify it, export it.")
app.add_typer(audit_app, name="audit")


@audit_app.command()
def verify(config: ConfigOpt = DEFAULT_CONFIG,
           offline: Annotated[bool, typer.Option(help="check the chain, its anchors and the review store only; "
                                                      "skip MLflow (datasets, models, reports, approvals)")] = False
           ) -> None:
    """Walk the chain: each entry's hash, link and HMAC anchor, the heads recorded outside the store, and the
    objects entries refer to. Exit 1 naming the first entry that does not match."""
    from hitl.audit import evidence
    from hitl.ops import stack
    from hitl.review.store import ReviewError, ReviewStore

    cfg = _cfg(config)
    if not offline and not stack.wait_healthy(f"{cfg.mlflow_uri}/health", 0):
        console.print(f"[red]MLflow is not reachable at {cfg.mlflow_uri}:[/] start it (hitl up) or pass --offline")
        raise typer.Exit(2)
    try:
        store = ReviewStore(cfg.store_url)
        result = evidence.verify(evidence.open_log(cfg, store), store, cfg.model.registered_name, mlflow=not offline)
    except ReviewError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    if not result.ok:
        console.print(f"[red]Audit chain broken at {result.problem}[/]")
        raise typer.Exit(1)
    if result.head is None:
        console.print("The audit chain is empty: nothing recorded yet.")
        return
    c = result.checked
    console.print(f"[green]Audit chain intact:[/] {result.entries} entries up to {result.head.short}; "
                  f"{c['anchors']} outside anchors, {c['store']} review-store and {c['mlflow']} MLflow objects "
                  f"matched{' (MLflow skipped)' if offline else ''}")


@audit_app.command()
def export(config: ConfigOpt = DEFAULT_CONFIG,
           fmt: Annotated[Literal["jsonl", "csv"], typer.Option("--format", help="jsonl or csv")] = "jsonl",
           output: Annotated[Path, typer.Option("--output", "-o", help="file to write")] = Path("audit.jsonl")
           ) -> None:
    """Write every entry (hashes and anchors included) to a JSONL or CSV file."""
    from hitl.audit import chain, evidence

    cfg = _cfg(config)
    n = chain.export(evidence.open_log(cfg).entries(), output, fmt)
    console.print(f"Wrote {n} audit entries to {output}")
