"""`hitl`: the command line of hitl-loop, for ML engineers, reviewers and managers.

Heavy libraries (Prefect, MLflow, torch) are imported inside commands, so `hitl --help` is instant.
"""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from hitl.config import CONFIG_ENV, DEFAULT_CONFIG, Config, apply_environment, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hitl-loop: sample traces, review with humans, version data, fine-tune, gate releases.")
console = Console()
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config", envvar=CONFIG_ENV)]


def _cfg(path: Path) -> Config:
    try:
        cfg = load_config(path)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]Config error:[/] {e}")
        raise typer.Exit(2) from e
    apply_environment(cfg)
    return cfg


def _stack_ready(cfg: Config) -> None:
    """Fail early, with what to do, when the configured Prefect or MLflow server does not answer."""
    from hitl.ops import stack

    checks = {"Prefect": f"{cfg.prefect_api_url}/health", "MLflow": f"{cfg.mlflow_uri}/health"}
    down = [f"{name} ({url})" for name, url in checks.items() if not stack.wait_healthy(url, 0)]
    if down:
        console.print(f"[red]Not reachable: {', '.join(down)}.[/] Start the local stack with: hitl up -c <config>")
        raise typer.Exit(1)


# ---------------------------------------------------------------- stack
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


# ---------------------------------------------------------------- ML engineer: the flows
def _run_flow(name: str, config: Path, **params):
    """Run flow `flows.<name>` in this process against the configured (and reachable) stack."""
    import importlib

    _stack_ready(_cfg(config))
    module = importlib.import_module(f"flows.{name}")
    return getattr(module, name)(config_path=str(config.resolve()), **params)


@app.command()
def bootstrap(config: ConfigOpt = DEFAULT_CONFIG, force: bool = False) -> None:
    """Fine-tune the launch model and register it as @champion."""
    console.print(_run_flow("bootstrap", config, force=force))


@app.command()
def produce(config: ConfigOpt = DEFAULT_CONFIG, window: int = 0) -> None:
    """(synthetic world) Write one day of production traces answered by @champion."""
    console.print(_run_flow("simulate_production", config, window=window))


@app.command()
def sample(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Sample traces for review: validate, score, evaluate, select, enqueue."""
    console.print(_run_flow("sample_traces", config))


@app.command("register-dataset")
def register_dataset(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Register resolved labels as a new dataset version in MLflow."""
    console.print(_run_flow("register_dataset", config))


@app.command()
def retrain(config: ConfigOpt = DEFAULT_CONFIG,
            dataset_version: Annotated[int | None, typer.Option(help="default: latest")] = None) -> None:
    """Fine-tune the champion on a dataset version and register it as @challenger."""
    console.print(_run_flow("fine_tune", config, dataset_version=dataset_version))


@app.command("eval")
def eval_(config: ConfigOpt = DEFAULT_CONFIG,
          dataset_version: Annotated[int | None, typer.Option(help="default: latest")] = None) -> None:
    """Champion vs challenger on the hold-out; pauses for approval before promotion."""
    r = _run_flow("regression_eval", config, dataset_version=dataset_version)
    console.print({k: v for k, v in r.items() if k != "table"})


@app.command()
def cycle(config: ConfigOpt = DEFAULT_CONFIG, max_batches: int = 100) -> None:
    """One turn of the loop: sample -> review batches -> dataset -> fine-tune -> regression eval."""
    console.print(_run_flow("hitl_cycle", config, max_batches=max_batches))


@app.command("review-batch")
def review_batch(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start one review-batch flow run (it pauses until a reviewer answers)."""
    console.print(_run_flow("review_batch", config))


# ---------------------------------------------------------------- reviewer
def _ask(prompt: str) -> str:
    try:
        return console.input(prompt)
    except EOFError:
        console.print("\n[red]Input ended before the batch was complete: nothing was submitted.[/]")
        raise typer.Exit(1) from None


def _pick_label(prompt: str, labels: list[str]) -> str:
    while True:
        raw = _ask(prompt).strip()
        if raw.isdigit() and 1 <= int(raw) <= len(labels):
            return labels[int(raw) - 1]
        if raw in labels:
            return raw
        console.print(f"[red]'{raw}' is not a label.[/] Type a number 1-{len(labels)} or a label name.")


@app.command()
def review(config: ConfigOpt = DEFAULT_CONFIG,
           reviewer: Annotated[str | None, typer.Option(help="your name (asked if not given)")] = None,
           run_id: Annotated[str | None, typer.Option("--run", help="a paused run id (default: oldest)")] = None,
           list_only: Annotated[bool, typer.Option("--list", help="only list open batches")] = False) -> None:
    """Label a paused review batch in the terminal; submits by resuming its flow run."""
    from hitl.review import prefect_api
    from hitl.review.forms import REVIEWER_FIELD, trace_ids_from_schema

    cfg = _cfg(config)
    _stack_ready(cfg)
    runs = prefect_api.paused_runs(prefect_api.REVIEW_FORM)
    t = Table(title="Open review batches (paused flow runs)")
    for col in ("#", "run id", "name", "items", "paused since"):
        t.add_column(col)
    for i, r in enumerate(runs, 1):
        t.add_row(str(i), r.id, r.name, str(len(trace_ids_from_schema(r.schema))), r.created[:19])
    console.print(t)
    if list_only or not runs:
        if not runs:
            console.print("No batch is waiting for review. Start one with: hitl review-batch")
        return
    run = next((r for r in runs if r.id == run_id), None) if run_id else runs[0]
    if run is None:
        console.print(f"[red]Run {run_id} is not a paused review batch.[/]")
        raise typer.Exit(1)
    console.print(Markdown(run.description))
    name = reviewer or _ask("Your name: ").strip()
    values: dict[str, str] = {REVIEWER_FIELD: name}
    labels = list(cfg.labels)
    console.print("Labels: " + "  ".join(f"[bold]{i}[/] {lab}" for i, lab in enumerate(labels, 1)))
    fields = trace_ids_from_schema(run.schema)
    for n, (field, _trace_id) in enumerate(fields.items(), 1):
        prop = run.fields[field]
        console.rule(f"{prop.get('title', field)}  ({n}/{len(fields)})")
        console.print(prop.get("description", ""))
        values[field] = _pick_label("label> ", labels)
        note = _ask("rationale (Enter to skip)> ").strip()
        if note:
            values[f"{field}_rationale"] = note
    try:
        prefect_api.resume(run.id, values)
    except RuntimeError as e:
        console.print(f"[red]Not submitted:[/] {e}")
        raise typer.Exit(1) from e
    console.print(f"[green]Submitted {len(fields)} labels as {name}; flow run {run.id} resumed.[/]")


@app.command()
def approve(config: ConfigOpt = DEFAULT_CONFIG,
            decision: Annotated[str, typer.Option(help="approve or reject")] = "approve",
            approver: Annotated[str, typer.Option(prompt=True)] = "",
            reason: Annotated[str, typer.Option(prompt=True)] = "",
            run_id: Annotated[str | None, typer.Option("--run")] = None) -> None:
    """Approve or reject a paused high-risk step (e.g. promoting the challenger)."""
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


# ---------------------------------------------------------------- manager
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


# ---------------------------------------------------------------- the demo
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
    console.rule("1. bootstrap: launch model -> @champion")
    console.print(_run_flow("bootstrap", config))
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
