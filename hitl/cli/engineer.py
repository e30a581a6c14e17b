"""Commands of the ML engineer: the flows of the loop, scenarios, and dataset versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from hitl.cli import ConfigOpt, _cfg, _run_flow, _stack_ready, app, console
from hitl.config import DEFAULT_CONFIG, Config


@app.command()
def bootstrap(config: ConfigOpt = DEFAULT_CONFIG, force: bool = False) -> None:
    """Fine-tune the launch model and register it as @champion."""
    console.print(_run_flow("bootstrap", config, force=force))


@app.command()
def produce(config: ConfigOpt = DEFAULT_CONFIG, window: int = 0) -> None:
    """(synthetic world) Write one day of production traces answered by @champion."""
    console.print(_run_flow("simulate_production", config, window=window))


@app.command()
def scenario(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """(scenario configs) Write the drift scenario's launch data, daily traces and ground truth."""
    cfg = _cfg(config)
    if cfg.scenario.kind == "none":
        console.print("[red]This config has no `scenario` section (scenario.kind is none).[/]")
        raise typer.Exit(2)
    console.print(_write_scenario(cfg))


def _write_scenario(cfg: Config) -> dict[str, str]:
    from hitl.sim import banking77

    try:
        data = banking77.build(banking77.from_config(cfg.scenario))
        return banking77.write(data, cfg.scenario_dir)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]Scenario not written:[/] {e}")
        raise typer.Exit(1) from e


@app.command()
def sample(config: ConfigOpt = DEFAULT_CONFIG,
           since: Annotated[datetime | None, typer.Option(help="only traces at or after this time (UTC), "
                                                          "e.g. 2026-01-05")] = None,
           until: Annotated[datetime | None, typer.Option(help="only traces before this time (UTC)")] = None,
           daily: Annotated[bool, typer.Option(help="backfill: one sampling run per UTC day from --since to "
                                                    "--until")] = False) -> None:
    """Sample traces for review: validate, score, evaluate, select, enqueue (optionally for a window, or a
    backfill of a date range one day at a time)."""
    from hitl.db import utc
    from hitl.sampling.windows import day_windows

    if daily and not (since and until):
        console.print("[red]--daily needs both --since and --until (the range to backfill).[/]")
        raise typer.Exit(2)
    try:
        days = day_windows(since, until) if since and until else []  # also checks since < until
    except ValueError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    for start, end in days if daily else [(since, until)]:
        console.print(_run_flow("sample_traces", config, since=start and utc(start), until=end and utc(end)))


@app.command("register-dataset")
def register_dataset(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Register resolved labels as a new dataset version in MLflow."""
    console.print(_run_flow("register_dataset", config))


@app.command()
def retrain(config: ConfigOpt = DEFAULT_CONFIG,
            dataset_version: Annotated[int | None, typer.Option(help="default: latest")] = None,
            wait: Annotated[bool, typer.Option(help="wait for the fine-tune and its regression eval")] = False,
            timeout_s: Annotated[float, typer.Option(help="with --wait: give up after this long")] = 6 * 3600) -> None:
    """Start a run of the fine-tune deployment on the worker: the champion fine-tuned on a dataset version,
    registered as @challenger; its completion starts the regression eval, which waits for approval."""
    from hitl.ops import deploy, runs

    cfg = _cfg(config)
    _stack_ready(cfg)
    run = deploy.trigger(cfg, config, "fine-tune", **({"dataset_version": dataset_version}
                                                      if dataset_version is not None else {}))
    console.print(f"Started fine-tune run {run.name}: {cfg.flow_run_url(run.id)}")
    if not wait:
        console.print("It runs on the worker; follow it in the UI or with `hitl status`.")
        return
    done = runs.wait(run.id, timeout_s)
    if not done.state.is_completed():
        console.print(f"[red]The fine-tune run {run.name} ended {done.state.name}: {done.state.message or ''}[/]")
        raise typer.Exit(1)
    chained = runs.flow_runs(["regression-eval/regression-eval"], tag=deploy.started_by(str(run.id)))
    if not chained:
        console.print("[red]The fine-tune completed but started no regression eval: read its log in the UI.[/]")
        raise typer.Exit(1)
    ev = runs.wait(chained[0].id, timeout_s, until_paused=True)
    console.print(f"Regression eval run {ev.name}: {ev.state.name}. "
                  + ("It waits for approval: `hitl approve -c CONFIG` or Resume in the UI." if ev.state.is_paused()
                     else f"Report: {cfg.reports_dir / 'latest.html'}"))


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


@app.command()
def adjudicate(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start one adjudication run for disputed items (it pauses until an adjudicator answers)."""
    console.print(_run_flow("adjudicate", config))


@app.command("review-batch")
def review_batch(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Start one review-batch flow run (it pauses until a reviewer answers)."""
    console.print(_run_flow("review_batch", config))




# ---------------------------------------------------------------- dataset versions
datasets_app = typer.Typer(no_args_is_help=True, help="Dataset versions in MLflow: list, show one, diff two.")
app.add_typer(datasets_app, name="datasets")


def _version(cfg: Config, ref: str) -> int:
    name, _, number = ref.rpartition("@")
    if not number.isdigit() or (name and name != cfg.dataset.name):
        console.print(f"[red]{ref!r} is not a version of {cfg.dataset.name}:[/] write {cfg.dataset.name}@N")
        raise typer.Exit(2)
    return int(number)


def _load(cfg: Config, ref: str):
    from hitl.datasets import versions

    try:
        return versions.load(cfg, _version(cfg, ref))
    except (LookupError, ValueError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from e


def _frame_table(df, title: str) -> Table:
    t = Table(title=title)
    for col in df.columns:
        t.add_column(str(col))
    for row in df.itertuples(index=False):
        t.add_row(*[str(v) for v in row])
    return t


@datasets_app.command("list")
def datasets_list(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Every version: rows, splits, parent, digest, agreement."""
    import pandas as pd

    from hitl.datasets import versions

    cfg = _cfg(config)
    _stack_ready(cfg)
    rows = [{"version": v.ref + (f" (pruned {v.pruned[:10]}: held erased text)" if v.pruned else ""),
             "parent": v.parent or "-", "sha256": v.sha256[:12],
             **{k: s for k, s in versions.lineage(v).items() if k in ("rows", "agreement")}}
            for v in versions.list_versions(cfg)]
    if not rows:
        console.print(f"No versions of {cfg.dataset.name} yet: run `hitl register-dataset`.")
        return
    console.print(_frame_table(pd.DataFrame(rows), f"Dataset versions: {cfg.dataset.name}"))


@datasets_app.command("show")
def datasets_show(ref: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. support-hitl-demo@2")],
                  config: ConfigOpt = DEFAULT_CONFIG,
                  rows: Annotated[int, typer.Option(help="also print this many rows")] = 0) -> None:
    """One version: lineage, split sizes, label and cohort distributions (digest checked on load)."""
    from hitl.datasets import versions

    cfg = _cfg(config)
    _stack_ready(cfg)
    records, dv = _load(cfg, ref)
    for k, v in versions.lineage(dv).items():
        console.print(f"[bold]{k}[/]: {v}")
    console.print(_frame_table(records.groupby(["split", "selection_reason"]).size().rename("rows").reset_index(),
                               "Rows by split and selection reason"))
    labels = records.pivot_table(index="label", columns="split", values="trace_id", aggfunc="count", fill_value=0)
    console.print(_frame_table(labels.reset_index(), "Labels by split"))
    for col in cfg.cohorts:
        console.print(_frame_table(records[col].value_counts().rename("rows").reset_index(), f"Rows by {col}"))
    if rows:
        console.print(_frame_table(records[["trace_id", "label", "split", "selection_reason", "text"]].head(rows),
                                   f"First {rows} rows"))


@datasets_app.command("diff")
def datasets_diff(a: Annotated[str, typer.Argument(help="the older version, NAME@A")],
                  b: Annotated[str, typer.Argument(help="the newer version, NAME@B")],
                  config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """What changed from A to B: rows added, removed, relabelled (superseded labels), split moves, and the
    shift of the label and cohort distributions."""
    from hitl.datasets import diff

    cfg = _cfg(config)
    _stack_ready(cfg)
    (ra, va), (rb, vb) = _load(cfg, a), _load(cfg, b)
    d = diff.diff(ra, rb, cfg.cohorts)
    console.print(f"{va.ref} -> {vb.ref}: " + ", ".join(f"{k} {v}" for k, v in d.summary.items()))
    if len(d.relabelled):
        console.print(_frame_table(d.relabelled, "Relabelled (the newer label supersedes the older)"))
    if len(d.moved):
        console.print(_frame_table(d.moved, "Moved split"))
    changed = d.labels[d.labels["change"] != 0]
    console.print(_frame_table(changed if len(changed) else d.labels, "Label distribution (rows)"))
    console.print(_frame_table(d.cohorts, "Cohort distribution (rows)"))


labels_app = typer.Typer(no_args_is_help=True, help="The label set: what reviewers proposed, re-queueing held items.")
app.add_typer(labels_app, name="labels")


@labels_app.command("proposals")
def labels_proposals(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """New labels reviewers proposed ("none of these fits"), grouped, with examples (personal data masked).
    Add one to `labels` in the config and the next review batch re-queues its items."""
    from hitl.review import pii
    from hitl.review.store import ReviewStore

    cfg = _cfg(config)
    props = ReviewStore(cfg.store_url).proposals()
    if props.empty:
        console.print("No reviewer has proposed a new label.")
        return
    t = Table(title=f"Proposed labels ({len(props)} answers)")
    for col in ("proposed label", "items", "held", "reviewers", "examples", "status"):
        t.add_column(col)
    for name, g in props.groupby("proposed_label", sort=False):
        held = g[g["status"] == "open"]
        examples = " | ".join(pii.mask(x)[:60] for x in g["input"].drop_duplicates().head(3))
        status = "in the label set" if name in cfg.labels else ("re-queued" if held.empty else "waiting")
        t.add_row(str(name), str(g["trace_id"].nunique()), str(held["trace_id"].nunique()),
                  ", ".join(sorted(set(g["reviewer"]))), examples, status)
    console.print(t)
    console.print(f"To accept one, add it to `labels` in {config} (a model learns it at the next fine-tune); the "
                  "next `hitl review-batch` re-queues its items for review with the new label.")


@app.command()
def erase(trace_ids: Annotated[list[str], typer.Argument(help="trace ids whose text must go")],
          config: ConfigOpt = DEFAULT_CONFIG,
          by: Annotated[str, typer.Option("--by", prompt="Requested by", help="who asks (it goes in the audit chain)")
                        ] = "",
          reason: Annotated[str, typer.Option(prompt=True, help="why, e.g. the deletion request's reference")] = ""
          ) -> None:
    """Erase the text of review items, e.g. on a customer's request to delete their data: their input, output and
    context are blanked in the review store, they leave every dataset version registered from now on (so no later
    fine-tune replays them), the versions registered before that hold them are pruned (their file deleted in
    MLflow), and both go in the audit chain. Labels and annotations stay (no trace text). Run it again with the
    same ids to finish an erasure that was interrupted or found MLflow down (docs/operations.md)."""
    from hitl.audit import evidence
    from hitl.ops import stack
    from hitl.review.store import ReviewStore

    cfg = _cfg(config)
    if not by.strip() or not reason.strip():
        console.print("[red]Nothing erased:[/] give --by and --reason (both go in the audit chain).")
        raise typer.Exit(1)
    store = ReviewStore(cfg.store_url)
    log = evidence.open_log(cfg, store)
    done, entry = evidence.erase(log, store, by.strip(), reason.strip(), trace_ids)
    if entry is not None:
        console.print(f"[green]Erased {len(done.erased)} review item(s)[/] (audit entry {entry.short}): their text "
                      "is blank in the review store and in no dataset version registered from now on.",
                      soft_wrap=True)
    already = sorted(set(trace_ids) - set(done.erased) - set(done.unknown))
    if already:
        console.print(f"Already erased: {', '.join(already)}.", soft_wrap=True)
    asked = set(trace_ids) - set(done.unknown)
    if asked and not stack.wait_healthy(f"{cfg.mlflow_uri}/health", 0):
        console.print(f"[yellow]MLflow is not reachable at {cfg.mlflow_uri}:[/] dataset versions registered before "
                      "may still hold this text. Start it (hitl up) and run the same `hitl erase` again to prune "
                      "them.", soft_wrap=True)
    elif asked:
        pruned, pentry = evidence.prune_erased(log, cfg, asked, by.strip(), reason.strip())
        if pruned:
            console.print(f"[green]Pruned {len(pruned)} dataset version(s)[/] that held it: "
                          f"{', '.join(dv.ref for dv in pruned)} (their files deleted; audit entry "
                          f"{pentry.short if pentry else 'recorded before'}). Register a new version before the "
                          "next fine-tune if the latest was among them.", soft_wrap=True)
            for v in pentry.ref["versions"] if pentry else []:
                if "problem" in v:
                    console.print(f"[yellow]v{v['version']}[/]: {v['problem']} (the prune entry records it).",
                                  soft_wrap=True)
        else:
            console.print("No dataset version holds it.")
    if done.unknown:
        console.print(f"[yellow]No review item for {', '.join(done.unknown)}[/]: never sent for review, so the review "
                      "store holds no text of them (trace files and MLflow traces are the source's to delete).",
                      soft_wrap=True)
