"""Backup and restore of the state dir: the databases (a consistent online copy) and artifacts in one archive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hitl.cli import ConfigOpt, _cfg, app, console
from hitl.config import DEFAULT_CONFIG


@app.command("backup")
def backup_(config: ConfigOpt = DEFAULT_CONFIG,
            output: Annotated[Path | None, typer.Option("--output", "-o", help="the archive to write (.tar.gz); "
                                                        "default: backups/ beside the state dir")] = None) -> None:
    """Copy the state dir's databases (SQLite online backup, pg_dump for PostgreSQL: the servers may run) and files
    into one archive."""
    from hitl.ops import backup

    cfg = _cfg(config)
    archive = output or cfg.state.parent / "backups" / f"{cfg.project}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    try:
        s = backup.backup(cfg, archive)
    except backup.BackupError as e:
        console.print(f"[red]{e}[/]", soft_wrap=True)
        raise typer.Exit(1) from e
    console.print(f"Backed up {len(s.databases)} databases ({', '.join(s.databases)}) and {s.files} files into "
                  f"{s.archive} ({s.bytes / 1e6:.1f} MB, {s.seconds:.1f} s)", soft_wrap=True)
    for note in s.not_included:
        console.print(f"[yellow]Not in the archive: {note}.[/]", soft_wrap=True)


@app.command()
def restore(archive: Annotated[Path, typer.Argument(help="an archive written by `hitl backup`")],
            config: ConfigOpt = DEFAULT_CONFIG,
            replace: Annotated[bool, typer.Option(help="move the state dir's current data aside (kept, renamed) "
                                                       "and restore in its place")] = False) -> None:
    """Restore a backup into the config's state dir (refused while its stack runs); then `hitl up`."""
    from hitl.ops import backup

    cfg = _cfg(config)
    try:
        manifest = backup.restore(cfg, archive, replace=replace)
    except backup.BackupError as e:
        console.print(f"[red]Not restored:[/] {e}", soft_wrap=True)
        raise typer.Exit(1) from e
    dumps = [d["database"] for d in manifest.get("postgres", [])]
    on_postgres = f" (PostgreSQL: {', '.join(dumps)})" if dumps else ""
    console.print(f"Restored {archive} (made {manifest['created']} from {manifest['state_dir']}) into {cfg.state}: "
                  f"{len(manifest['databases']) + len(dumps)} databases checked"
                  f"{on_postgres}. Start the stack with: hitl up -c {config}",
                  soft_wrap=True)
    for name in manifest.get("replaced_databases", []):
        console.print(f"The PostgreSQL database that held data is kept as {name}.", soft_wrap=True)
    for note in manifest["not_included"]:
        console.print(f"[yellow]Not in the archive: {note}.[/]", soft_wrap=True)
