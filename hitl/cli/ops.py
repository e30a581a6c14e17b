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
from rich.markup import escape
from rich.table import Table

from hitl.cli import ConfigOpt, _cfg, app, console
from hitl.cli.engineer import _write_scenario
from hitl.config import DEFAULT_CONFIG, Config

DEMO_RUN_TIMEOUT_S = 6 * 3600  # one deployed run of the demo; the run's own timeouts end it sooner


@app.command()
def up(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start (or reuse) the local Prefect and MLflow servers, deploy every flow of deployments/prefect.yaml
    with the config's schedules on the work pool, and start (or reuse) a worker."""
    from hitl.ops import deploy, notifications, notify_reconcile, stack

    cfg = _cfg(config)
    try:
        stack.up(cfg, console_print=console.print)
        deployed = deploy.apply(cfg, config)
        console.print(f"Deployed {len(deployed)} flows on work pool {cfg.deployments.pool!r}: "
                      + ", ".join(f"{d.name} ({d.cron})" if d.cron else d.name for d in deployed))
        stack.start_worker(cfg, console_print=console.print)
        for line in notify_reconcile.setup(cfg):
            console.print(f"notifications: {line}", soft_wrap=True)
    except (stack.StackError, deploy.DeployError, notifications.NotificationsError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from e
    for s in stack.status(cfg):
        console.print(f"[green]{s.name}[/] pid {s.pid} at {s.url} (log {s.log})")


@app.command()
def down(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Stop the worker and the local servers (runs suspended for people stay suspended)."""
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
    servers = [s for s in services if s.name != "worker"]
    if not all(s.healthy for s in servers):
        console.print("[yellow]The servers are not running: deployments, runs, dataset versions and model aliases "
                      "need `hitl up`.[/]")
        return
    _print_deployments(cfg, worker_up=all(s.healthy for s in services))
    _print_registry(cfg)


def _print_deployments(cfg: Config, worker_up: bool) -> None:
    """Deployments with their schedules and next runs; open runs and what each waits for."""
    from hitl.ops import runs

    d = Table(title=f"Deployments (work pool {cfg.deployments.pool!r}, worker {'up' if worker_up else 'DOWN'})")
    for col in ("deployment", "schedule", "next run"):
        d.add_column(col)
    for v in runs.deployments():
        d.add_row(v.name, v.schedule, v.next_run[:16] or "-")
    console.print(d)
    open_runs = [r for r in runs.flow_runs(states=runs.OPEN) if r.due]
    cpu_waits = runs.waiting_tasks()
    w = Table(title="Open runs")
    for col in ("run", "deployment", "state", "waiting for"):
        w.add_column(col)
    for r in open_runs:
        why = r.waiting_for
        held = [t for t, fr in cpu_waits if fr == r.id]
        if held:
            why = f"the CPU slot (deployments.cpu_slots) for {', '.join(held)}"
        if not worker_up and r.state_type in ("SCHEDULED", "PENDING"):
            why = "a worker: none is running (`hitl up` starts one)"
        w.add_row(r.name, r.deployment, r.state_name, why or "-")
    console.print(w if open_runs else "No open runs.")


def _print_registry(cfg: Config) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from hitl.datasets import versions
    from hitl.learning import promotion

    d = Table(title=f"Dataset versions: {cfg.dataset.name}")
    for col in ("version", "rows", "parent", "sha256", "run"):
        d.add_column(col)
    for v in versions.list_versions(cfg):
        d.add_row(str(v.version) + (f" (pruned {v.pruned[:10]})" if v.pruned else ""), str(v.rows),
                  str(v.parent or "-"), v.sha256[:12], v.run_id[:12])
    console.print(d)
    m = Table(title=f"Model: {cfg.model.registered_name}")
    for col in ("alias", "version", "decided"):
        m.add_column(col)
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(cfg.model.registered_name).aliases
    except MlflowException:
        aliases = {}
    for alias, version in sorted(aliases.items()):
        m.add_row(alias, str(version), _decided(client.get_model_version(cfg.model.registered_name, version).tags))
    console.print(m)
    for rb in promotion.rollbacks(cfg.model.registered_name, client)[-3:]:
        console.print(f"Rolled back {rb['at'][:16].replace('T', ' ')}: v{rb['from_version']} -> "
                      f"v{rb['to_version']} by {rb['by']}: {escape(rb['reason'])}", soft_wrap=True)


def _decided(tags: dict) -> str:
    """What put a model version where it is: its rollback, its approval, or the bootstrap."""
    from hitl.learning import promotion

    rb = promotion.ROLLED_BACK
    if rb["by"] in tags:
        return f"rolled back by {tags[rb['by']]} ({tags.get(rb['at'], '')[:10]})"
    if promotion.APPROVED_BY in tags:
        return f"approved by {tags[promotion.APPROVED_BY]}"
    return "launch (bootstrap)" if tags.get(promotion.STAGE_TAG) == promotion.BOOTSTRAP else "-"



def _watch_reviewers(sim: subprocess.Popen, stop: Path, log_path: str) -> None:
    """If the simulated reviewers die mid-demo, nobody would resume the paused runs: stop the demo."""
    while sim.poll() is None:
        time.sleep(1)
    if not stop.exists():
        console.print(f"[red]The simulated reviewers stopped unexpectedly (exit {sim.returncode}); see {log_path}.[/]")
        _thread.interrupt_main()


def _deployed(cfg: Config, config: Path, name: str, **params):
    """Run deployment `name` on the worker, as its schedule would, and wait for it to complete."""
    from hitl.ops import deploy, runs, stack

    run = deploy.trigger(cfg, config, name, **params)
    console.print(f"[dim]{name}: run {run.name} on the worker ({cfg.flow_run_url(run.id)})[/]")
    done = runs.wait(run.id, DEMO_RUN_TIMEOUT_S)
    if not done.state.is_completed():
        log = next(s.log for s in stack.status(cfg) if s.name == "worker")
        console.print(f"[red]The {name} run {run.name} ended {done.state.name}: {done.state.message or ''}[/]\n"
                      f"Read it in the Prefect UI ({cfg.flow_run_url(run.id)}) or {log}.")
        raise typer.Exit(1)
    return done


def _drain_reviews(cfg: Config, config: Path) -> None:
    """Run the review-dispatch deployment (as its hourly schedule does) whenever a review or adjudication run
    ends, until the queue is empty and no run is open; the simulated reviewers resume the suspended runs."""
    from flows.review_dispatch import ADJUDICATE, REVIEW
    from hitl.ops import runs

    dispatches = 0
    while True:
        _deployed(cfg, config, "review-dispatch")
        dispatches += 1
        open_runs = runs.flow_runs([REVIEW, ADJUDICATE], states=runs.OPEN)
        if not open_runs:
            break
        for r in runs.wait_any([r.id for r in open_runs], DEMO_RUN_TIMEOUT_S):
            if not r.state.is_completed():
                console.print(f"[yellow]Run {r.name} ended {r.state.name}; its items go back to the queue.[/]")
    done = runs.flow_runs([REVIEW, ADJUDICATE], states=("COMPLETED",))
    suspended = sum(r.deployment == REVIEW for r in done)
    console.print(f"Review queue drained: {suspended} review and {len(done) - suspended} adjudication runs "
                  f"completed on the worker after {dispatches} dispatches.")


@app.command()
def demo(config: ConfigOpt = DEFAULT_CONFIG, keep_running: bool = True) -> None:
    """The whole loop on the synthetic world, unattended, through the deployments on the worker: stack,
    launch model, traffic, simulated reviewers resuming suspended runs, one HITL cycle. Prints where to look."""
    from hitl.datasets import versions
    from hitl.ops import deploy, runs

    cfg = _cfg(config)
    cfg_path = str(config.resolve())
    started = time.monotonic()
    up(config)
    if cfg.scenario.kind != "none" and cfg.launch_path and not cfg.launch_path.exists():
        console.rule(f"0. the {cfg.scenario.kind} scenario: launch data, daily traces, ground truth")
        console.print(_write_scenario(cfg))
    console.rule("1. bootstrap: launch model -> @champion (deployment bootstrap)")
    _deployed(cfg, config, "bootstrap")
    if cfg.scenario.kind != "none":
        console.rule(f"2. production traffic: the {cfg.scenario.kind} scenario's {cfg.scenario.days} days of traces "
                     f"in {cfg.traces_path}")
    else:
        window = len(list((cfg.world_dir / "traces").glob("*.jsonl")))  # a re-run brings the next day's traffic
        console.rule(f"2. production traffic, day {window + 1} (synthetic world, answered by @champion)")
        _deployed(cfg, config, "simulate-production", window=window)
    console.rule("3. the loop, deployment by deployment, with simulated reviewers resuming suspended runs")
    stop = cfg.state / "simulated-reviewers.stop"
    stop.unlink(missing_ok=True)
    log = (cfg.state / "logs" / "simulated-reviewers.log").open("w")
    sim = subprocess.Popen([sys.executable, "-m", "hitl.cli", "simulate-reviewers", "-c", cfg_path,
                            "--stop-file", str(stop)], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    threading.Thread(target=_watch_reviewers, args=(sim, stop, log.name), daemon=True).start()
    try:
        _deployed(cfg, config, "sample-traces", window="all")
        _drain_reviews(cfg, config)
        before = max((v.version for v in versions.list_versions(cfg)), default=0)
        _deployed(cfg, config, "register-dataset")
        after = max((v.version for v in versions.list_versions(cfg)), default=0)
        if after == before:
            console.print("[yellow]No new labels this time, so no fine-tune and no new report.[/]")
            status(config)
            return
        tuned = _deployed(cfg, config, "fine-tune", dataset_version=after)
        chained = runs.flow_runs(["regression-eval/regression-eval"], tag=deploy.started_by(str(tuned.id)))
        if not chained:
            console.print("[red]The fine-tune completed but started no regression eval; see its run log.[/]")
            raise typer.Exit(1)
        console.print(f"[dim]regression-eval: run {chained[0].name}, started by the fine-tune, waits for approval[/]")
        done = runs.wait(chained[0].id, DEMO_RUN_TIMEOUT_S)
        if not done.state.is_completed():
            console.print(f"[red]The regression eval ended {done.state.name}: {done.state.message or ''}[/]")
            raise typer.Exit(1)
    finally:
        stop.touch()
        try:
            sim.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()
        log.close()
    console.rule("Done")
    console.print(Markdown((cfg.reports_dir / "latest.md").read_text()))
    console.print(f"\n[bold]Prefect UI[/]  {cfg.prefect_ui_url}\n[bold]MLflow UI[/]   {cfg.mlflow_uri}\n"
                  f"[bold]Report[/]      {cfg.reports_dir / 'latest.html'}\n"
                  f"[bold]Took[/]        {time.monotonic() - started:.0f}s")
    status(config)
    if not keep_running:
        down(config)


if __name__ == "__main__":
    app()
