"""The local stack (up, down, status) and the unattended demo."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.markdown import Markdown
from rich.table import Table

from hitl.cli import ConfigOpt, _cfg, _run_flow, app, console
from hitl.cli.engineer import _write_scenario
from hitl.config import DEFAULT_CONFIG, Config


@app.command()
def up(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start (or reuse) the local Prefect and MLflow servers."""
    from hitl.ops import stack

    cfg = _cfg(config)
    try:
        services = stack.up(cfg, console_print=console.print)
    except stack.StackError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from e
    for s in services:
        console.print(f"[green]{s.name}[/] pid {s.pid} at {s.url} (log {s.log})")


@app.command()
def down(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Stop the local servers."""
    from hitl.ops import stack

    stopped = stack.down(_cfg(config))
    console.print(f"Stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """The stack, the review queue, dataset versions and model aliases."""
    from hitl.ops import stack
    from hitl.review.store import ReviewStore

    cfg = _cfg(config)
    t = Table(title="Stack")
    for col in ("service", "pid", "url", "healthy"):
        t.add_column(col)
    services = stack.status(cfg)
    for s in services:
        t.add_row(s.name, str(s.pid or "-"), s.url, "[green]yes[/]" if s.healthy else "[red]no[/]")
    console.print(t)
    q = Table(title="Review queue")
    q.add_column("state")
    q.add_column("count", justify="right")
    for k, v in ReviewStore(cfg.store_url).counts().items():
        q.add_row(k, str(v))
    console.print(q)
    if not all(s.healthy for s in services):
        console.print("[yellow]MLflow is not running: dataset versions and model aliases need `hitl up`.[/]")
        return
    _print_registry(cfg)


def _print_registry(cfg: Config) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from hitl.datasets import versions

    d = Table(title=f"Dataset versions: {cfg.dataset.name}")
    for col in ("version", "rows", "parent", "sha256", "run"):
        d.add_column(col)
    for v in versions.list_versions(cfg):
        d.add_row(str(v.version), str(v.rows), str(v.parent or "-"), v.sha256[:12], v.run_id[:12])
    console.print(d)
    m = Table(title=f"Model: {cfg.model.registered_name}")
    m.add_column("alias")
    m.add_column("version")
    try:
        aliases = MlflowClient().get_registered_model(cfg.model.registered_name).aliases
    except MlflowException:
        aliases = {}
    for alias, version in sorted(aliases.items()):
        m.add_row(alias, str(version))
    console.print(m)



def _watch_reviewers(sim: subprocess.Popen, stop: Path, log_path: str) -> None:
    """If the simulated reviewers die mid-demo, nobody would resume the paused runs: stop the demo."""
    while sim.poll() is None:
        time.sleep(1)
    if not stop.exists():
        console.print(f"[red]The simulated reviewers stopped unexpectedly (exit {sim.returncode}); see {log_path}.[/]")
        _thread.interrupt_main()


@app.command()
def demo(config: ConfigOpt = DEFAULT_CONFIG, keep_running: bool = True) -> None:
    """The whole loop on the synthetic world, unattended: stack, launch model, traffic, simulated
    reviewers, one HITL cycle. Prints where to look."""
    cfg = _cfg(config)
    cfg_path = str(config.resolve())
    started = time.monotonic()
    up(config)
    if cfg.scenario.kind != "none" and cfg.launch_path and not cfg.launch_path.exists():
        console.rule(f"0. the {cfg.scenario.kind} scenario: launch data, daily traces, ground truth")
        console.print(_write_scenario(cfg))
    console.rule("1. bootstrap: launch model -> @champion")
    console.print(_run_flow("bootstrap", config))
    if cfg.scenario.kind != "none":
        console.rule(f"2. production traffic: the {cfg.scenario.kind} scenario's {cfg.scenario.days} days of traces "
                     f"in {cfg.traces_path}")
    else:
        window = len(list((cfg.world_dir / "traces").glob("*.jsonl")))  # a re-run brings the next day's traffic
        console.rule(f"2. production traffic, day {window + 1} (synthetic world, answered by @champion)")
        console.print(_run_flow("simulate_production", config, window=window))
    console.rule("3. HITL cycle with simulated reviewers resolving paused runs via the Prefect API")
    stop = cfg.state / "simulated-reviewers.stop"
    stop.unlink(missing_ok=True)
    log = (cfg.state / "logs" / "simulated-reviewers.log").open("w")
    sim = subprocess.Popen([sys.executable, "-m", "hitl.cli", "simulate-reviewers", "-c", cfg_path,
                            "--stop-file", str(stop)], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    threading.Thread(target=_watch_reviewers, args=(sim, stop, log.name), daemon=True).start()
    try:
        result = _run_flow("hitl_cycle", config)
    finally:
        stop.touch()
        try:
            sim.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()
        log.close()
    if "regression_eval" not in result:
        console.print("[yellow]No new labels this time, so no fine-tune and no new report.[/]")
        status(config)
        return
    ev = result["regression_eval"]
    console.rule("Done")
    console.print(Markdown((cfg.reports_dir / "latest.md").read_text()))
    console.print(f"\n[bold]Prefect UI[/]  {cfg.prefect_ui_url}\n[bold]MLflow UI[/]   {cfg.mlflow_uri}\n"
                  f"[bold]Report[/]      {ev['report']}\n[bold]Took[/]        {time.monotonic() - started:.0f}s")
    status(config)
    if not keep_running:
        down(config)


if __name__ == "__main__":
    app()
