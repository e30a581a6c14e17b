"""`hitl`: the command line of hitl-loop, one module per user: ML engineers (`engineer`), reviewers
(`reviewer`), managers (`manager`), everyone (`inbox`), and the local stack and demo (`ops`), sharing this app.

Heavy libraries (Prefect, MLflow, torch) are imported inside commands, so `hitl --help` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hitl.config import CONFIG_ENV, Config, load_config
from hitl.environment import apply_environment

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hitl-loop: sample traces, review with humans, version data, fine-tune, gate releases.")
console = Console()
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config", envvar=CONFIG_ENV)]


def _cfg(path: Path) -> Config:
    try:
        cfg = load_config(path)
        apply_environment(cfg)  # with stack.auth: a ValueError when the credentials are missing or exposed
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]Config error:[/] {escape(_config_error(e, path))}", soft_wrap=True)
        raise typer.Exit(2) from e
    return cfg


def _config_error(e: Exception, path: Path) -> str:
    """A config error on one line: each invalid key with what is wrong (and the key meant, for a typo)."""
    import difflib

    from pydantic import BaseModel, ValidationError

    if not isinstance(e, ValidationError):
        return " ".join(str(e).split())
    problems = []
    for err in e.errors():
        where, section = ".".join(str(p) for p in err["loc"]), Config
        for part in err["loc"][:-1]:
            field = section.model_fields.get(str(part)) if section else None
            ann = field.annotation if field else None
            section = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(err["loc"][-1]), list(section.model_fields) if section else [], 1)
            problems.append(f"unknown key '{where}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
    return f"{path}: " + "; ".join(" ".join(p.split()) for p in problems)


def _stack_ready(cfg: Config) -> None:
    """Fail early, with what to do, when the configured Prefect or MLflow server does not answer."""
    down = _servers_down(cfg)
    if down:
        console.print(f"[red]Not reachable: {', '.join(down)}.[/] Start the local stack with: hitl up -c <config>",
                      soft_wrap=True)
        raise typer.Exit(1)


def _servers_down(cfg: Config) -> list[str]:
    """`Name (url)` of each configured server that does not answer its health check."""
    from hitl.ops import stack

    checks = {"Prefect": f"{cfg.prefect_api_url}/health", "MLflow": f"{cfg.mlflow_uri}/health"}
    return [f"{name} ({url})" for name, url in checks.items() if not stack.wait_healthy(url, 0)]


def _run_flow(name: str, config: Path, **params):
    """Run flow `flows.<name>` in this process against the configured (and reachable) stack; runs an earlier
    command left Running when its process died are marked Crashed first."""
    import importlib

    cfg = _cfg(config)  # before Prefect is imported: it reads its API URL then
    _stack_ready(cfg)
    from hitl.ops import orphans

    for run in orphans.mark_crashed():
        console.print(f"[yellow]Flow run {run} had lost its process: marked Crashed.[/]", soft_wrap=True)
    module = importlib.import_module(f"flows.{name}")
    try:
        with orphans.claiming():  # its runs carry this process's tag: the next command finds them if it dies
            return getattr(module, name)(config_path=str(config.resolve()), **params)
    except Exception:
        down = _servers_down(cfg)  # a server lost mid-run (its clients retried with backoff first)
        if not down:
            raise
        console.print(f"[red]{', '.join(down)} stopped answering during {name}.[/] Start it again with `hitl up -c "
                      f"{config}`, then run this command again: what finished is kept (labels in the review store, "
                      "complete dataset versions, sealed training checkpoints) and the rest is redone.", soft_wrap=True)
        raise typer.Exit(1) from None


from hitl.cli import audit, backup, engineer, inbox, manager, ops, reviewer  # noqa: E402,F401  (registers the commands)
