"""Section 7 of `make bench`: the MLflow trace source read window by window (hitl/sampling/mlflow_traces.py).

An experiment of `windows` UTC days x `per_window` traces, logged through MLflow's tracing API
(`MlflowClient.start_trace` / `end_trace` with the client's timestamps) into a local SQLite tracking store, is
sampled by one run per day, each run at one hour past its day. `source.max_traces` is below a day's count, so
every day is capped: the run takes a seeded subset and says so. After the first run, late traces with the first
day's timestamps are logged; the next run reads them within the lateness allowance. Each run counts the traces
MLflow returned (trace infos paged over its windows, full traces fetched) against the experiment's total.

Logging 25,000 traces through the tracing API takes tens of minutes on 2 shared cores (each trace is two SQL
transactions in MLflow's store); the logged experiment is kept under .hitl/bench-cache and reused, and the
section states how long logging took when it was made.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

CHANNELS = ("app", "web_chat", "email", "voice")
LABELS = ["card_lost", "card_arrival", "refund_request"]
PHRASES = ("I lost my card", "where is my new card", "I want my money back", "my card has not arrived",
           "refund the double charge", "someone stole my card")
FIRST_DAY = datetime(2026, 1, 5, tzinfo=UTC)
EXPERIMENT = "bench-production"


def _log_one(client, exp_id: str, i: int, at_ns: int, rng: np.random.Generator) -> str:
    """One production trace as an application logs it: request, response, cohort tags, the client's time."""
    root = client.start_trace("classify-intent", inputs={"query": f"{PHRASES[i % len(PHRASES)]} ({i})"},
                              tags={"channel": CHANNELS[int(rng.integers(len(CHANNELS)))], "locale": "en-US",
                                    "tier": "free"},
                              experiment_id=exp_id, start_time_ns=at_ns)
    client.end_trace(root.trace_id, outputs={"intent": LABELS[i % len(LABELS)],
                                             "confidence": round(float(rng.uniform(0.4, 1.0)), 3)},
                     end_time_ns=at_ns + 20_000_000)
    return root.trace_id


def log_experiment(folder: Path, windows: int, per_window: int, seed: int = 0, log=print) -> dict:
    """Log `windows` x `per_window` traces (timestamps spread over each UTC day from FIRST_DAY) into a SQLite
    tracking store in `folder`; returns {traces, seconds, per_second, made}. Reuses what an earlier call made."""
    done = folder / "logged.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # The async export queue discards traces when it is full ("Trace export queue is full"): log synchronously.
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    client = MlflowClient()
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    rng = np.random.default_rng(seed)
    day_ns = 86_400 * 10**9
    started = time.monotonic()
    for w in range(windows):
        start = int(pd.Timestamp(FIRST_DAY + timedelta(days=w)).value)
        for j, offset in enumerate(np.sort(rng.integers(0, day_ns - 10**9, per_window))):
            _log_one(client, exp_id, w * per_window + j, start + int(offset), rng)
        mlflow.flush_trace_async_logging()
        log(f"mlflow windows: logged day {w + 1} of {windows} ({(w + 1) * per_window} traces, "
            f"{time.monotonic() - started:.0f} s)")
    seconds = time.monotonic() - started
    logged = count_traces(client, exp_id)
    if logged != windows * per_window:
        raise RuntimeError(f"{folder}: {logged} traces in the store after logging {windows * per_window}; delete "
                           "the folder and run again (a trace the tracing API dropped would skew every count)")
    made = {"traces": windows * per_window, "seconds": round(seconds, 1),
            "per_second": round(windows * per_window / seconds, 1), "made": time.strftime("%Y-%m-%d")}
    done.write_text(json.dumps(made))
    return made


def count_traces(client, exp_id: str, filter_string: str | None = None) -> int:
    """Traces of the experiment (matching `filter_string`), counted by paging trace infos."""
    n, token = 0, None
    while True:
        page = client.search_traces(locations=[exp_id], filter_string=filter_string, include_spans=False,
                                    max_results=5000, page_token=token)
        n += len(page)
        token = page.token
        if not token:
            return n


def run(per_window: int = 5000, windows: int = 5, max_traces: int = 4000, late: int = 20, seed: int = 0,
        cache: Path | None = None, log=print) -> dict:
    """One daily sampling run per window, each at one hour past its day, through the flows' own load
    (`watermarks.load_new`), the representative draw (`windows.draw`) and the review store; `late` traces
    stamped in the first day are logged after the first run. Returns the per-run table and the totals."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    from hitl.config import Config
    from hitl.review.store import ReviewStore
    from hitl.sampling import watermarks
    from hitl.sampling import windows as draws

    cache = cache or Path(__file__).resolve().parents[1] / ".hitl" / "bench-cache"
    made = log_experiment(cache / f"mlflow-windows-{windows}x{per_window}-seed{seed}", windows, per_window, seed,
                          log=log)
    work = Path(tempfile.mkdtemp(prefix="bench-mlflow-windows-"))
    shutil.copy(cache / f"mlflow-windows-{windows}x{per_window}-seed{seed}" / "mlflow.db", work / "mlflow.db")
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    client = MlflowClient()
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    cfg = Config(labels=LABELS, state_dir=str(work / "state"), source={
        "kind": "mlflow", "experiment": EXPERIMENT, "max_traces": max_traces, "lateness_hours": 24})
    store = ReviewStore(f"sqlite:///{work / 'review.db'}")
    rng = np.random.default_rng(seed)
    rows, late_ids, started = [], [], time.monotonic()
    for k in range(windows):
        since, until = FIRST_DAY + timedelta(days=k), FIRST_DAY + timedelta(days=k + 1)
        t0 = time.monotonic()
        loaded = watermarks.load_new(cfg, store, since, until, now=until + timedelta(hours=1))
        pool = loaded.accepted.assign(window=draws.window_keys(loaded.accepted["timestamp"], "day", ""))
        prior = {w: store.draw_rates(w) for w in pool["window"].unique()}
        drawn = draws.draw(pool, ["channel"], 100, prior, rng)
        store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=loaded.accepted["trace_id"],
                      draws=drawn.records)
        watermarks.commit(store, loaded.pending)
        got = loaded.mlflow
        late_in = set(loaded.accepted["trace_id"]) & set(late_ids)
        rows.append({"run": k + 1, "day asked": f"{since:%Y-%m-%d}", "windows read": len(got.windows),
                     "trace infos paged": got.infos, "traces fetched whole": got.fetched,
                     "taken (new)": len(loaded.accepted), "left by the caps (windows read)": loaded.not_taken,
                     "late taken": len(late_in),
                     "late in the random draw": int(drawn.items["trace_id"].isin(late_ids).sum()),
                     "supplemental draws": sum(r["kind"] != draws.MAIN for r in drawn.records),
                     "seconds": round(time.monotonic() - t0, 1)})
        log(f"mlflow windows: run {k + 1}: {rows[-1]}")
        for line in watermarks.mlflow_report(cfg, loaded):
            log(f"mlflow windows:   {line}")
        if k == 0:  # traces of the first day that arrive after its run
            late_ids = [_log_one(client, exp_id, 10**6 + j, int(pd.Timestamp(since + timedelta(hours=23)).value)
                                 + j * 10**9, rng) for j in range(late)]
    below = {w["since"]: w["take_below"] for w in store.source_windows(f"mlflow experiment {EXPERIMENT}")}
    first_cap = below.get(int(pd.Timestamp(FIRST_DAY).value))
    from hitl.sampling.mlflow_traces import take_key

    return {"rows": rows, "logged": made, "traces": windows * per_window + late, "per_window": per_window,
            "windows": windows, "max_traces": max_traces, "late": late,
            "ran": time.strftime("%Y-%m-%d"),
            "late_under_cap": sum(take_key(t, cfg.selection.seed) < (first_cap or 1.1) for t in late_ids),
            "first_cap": first_cap, "seconds": round(time.monotonic() - started, 1)}


def to_markdown(r: dict) -> str:
    """Section 7's text: the per-run table and what it shows."""
    from hitl import markdown

    table = markdown.table(pd.DataFrame(r["rows"]))
    rows = r["rows"]
    logged = r["logged"]
    return (f"An experiment of {r['windows']} UTC days x {r['per_window']:,} traces, logged through MLflow's tracing "
            f"API into a SQLite tracking store ({logged['seconds'] / 60:.0f} min, {logged['per_second']} traces/s, "
            f"on {logged['made']}; kept under .hitl/bench-cache and reused), plus {r['late']} late traces stamped on "
            f"the first day and logged after its run: {r['traces']:,} in all. One sampling run per day, one hour "
            f"past it, `source.max_traces` {r['max_traces']:,} (below a day's {r['per_window']:,}), lateness "
            f"allowance 24 h (bench/mlflow_windows.py). Run on {r.get('ran', logged['made'])} "
            f"(`python -m bench --mlflow-windows`: this section alone).\n\n{table}\n\n"
            f"- **A run reads only its windows**: run 1 paged {rows[0]['trace infos paged']:,} trace infos (its "
            f"day), later runs their day and the day before (still within the allowance), never the experiment's "
            f"{r['traces']:,}; only new traces are fetched whole.\n"
            f"- **Nothing dropped silently**: each capped day gives a seeded {r['max_traces']:,} and the run says "
            f"how many it left (`left by the caps`: every trace of the windows it read is taken or counted there, "
            f"as in the run log and the sampling run's `not_taken` metric); the random draw's inclusion "
            f"probabilities include the share taken.\n"
            f"- **Late traces**: {r['late']} logged into day 1 after its run; run 2 read day 1 again and took "
            f"{rows[1]['late taken']} of them, the ones under day 1's cap ({r['late_under_cap']} of {r['late']} lie "
            f"below its threshold {r['first_cap']:.3f}); day 1's supplemental draw is in the `supplemental draws` "
            f"column.\n\n"
            f"What the section adds to `make bench`: {r['seconds']:.0f} s of reads, draws and store writes with the "
            f"experiment cached; {logged['seconds'] / 60:.0f} min more when it must be logged first.\n")
