"""`make soak`: a week of production in half an hour, with things breaking (issue 26).

    python -m bench.soak [--minutes 30] [--backend sqlite|postgresql|both] [--seed 0] [--keep]

The deployed stack (Prefect server, MLflow server, worker, every flow a deployment) runs on a fast clock: sampling
and dispatch every minute, a dataset version every 5 minutes, a fine-tune every 10 (each followed by its
regression eval and an approval). Beside it, each in its own process and each writing its own ledger
(bench/soak_ledger.py): a trace generator (a file of new traces every 20 s), three simulated reviewers that
answer late, never, twice, or all at once, an approver, a probe of `@champion` every 30 s, and a fault injector
on a seeded schedule (bench/soak_actors.py: worker SIGKILL, Prefect and MLflow servers restarted, a flow run's
process SIGKILLed mid-task, garbage appended to a trace file).

When the time is up the faults and the traffic stop, the reviewers answer everything, and the queue must drain
within 10 minutes; then the schedules are paused, the last runs finish, and the invariants are checked against
the ledger. The table goes to stdout, docs/bench/soak-<backend>.json and docs/reliability.md (between its soak
markers); exit 1 when an invariant fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from bench import soak_ledger
from bench.auth_check import free_port
from bench.soak_actors import FAULTS
from bench.soak_ledger import Check
from hitl.config import Config, load_config
from hitl.ops import deploy, notify_reconcile, stack

REPO = Path(__file__).resolve().parents[1]
DRAIN_LIMIT_S = 600
# A wait this long is owed its news even if its event was lost: the automations' settle time (60 s), then the next
# review-dispatch (every minute here) sends it, with a minute's slack for a dispatch delayed by the faults
NEWS_WAIT_S = 180
SETTLE_LIMIT_S = 300
REVIEWERS = 3
DATABASE_URL = "postgresql://hitl:hitl@127.0.0.1:5432"
SCHEDULES = {"sample-traces": "* * * * *", "review-dispatch": "* * * * *", "register-dataset": "*/5 * * * *",
             "fine-tune": "*/10 * * * *"}


def _log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_config(root: Path, backend: str, webhook_port: int) -> Path:
    """The demo's config on a fast clock, small batches and short waits, on free ports, under `root`; every kind
    of news goes to the webhook on `webhook_port` (the delivery alerts to another path of it)."""
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    secrets = root / "notify-secrets"
    secrets.write_text(f"HITL_NOTIFY_TEAM_URL=http://127.0.0.1:{webhook_port}/team/hook\n"
                       f"HITL_NOTIFY_ALERTS_URL=http://127.0.0.1:{webhook_port}/alerts/hook\n")
    secrets.chmod(0o600)
    project = f"soak_{backend}"
    raw.update({
        "project": project, "state_dir": str(root / "state"),
        "stack": {"host": "127.0.0.1", "prefect_port": free_port(), "mlflow_port": free_port(),
                  "worker_port": free_port(), **({"database_url": DATABASE_URL} if backend == "postgresql" else {})},
        "world": {**raw["world"], "launch_per_intent": 12, "invalid_share": 0.0},  # garbage comes from the injector
        "model": {**raw["model"], "registered_name": f"{project}-intent"},
        # each sampling run is its own random-draw window (a run is the soak's "day"): with UTC-day windows, every
        # trace after a day's first run would be a late one, drawn at that first run's rate, past any budget
        "selection": {"budget": 10, "random_share": 0.5, "random_annotations": 1, "strata": ["channel"], "seed": 0,
                      "window": "run"},
        # 30% of the policy's picks labelled twice: disagreements, hence adjudication runs
        "review": {"batch_size": 10, "overlap_share": 0.3, "poll_interval_s": 1, "timeout_s": 240,
                   "lease_grace_s": 30},
        "deployments": {"pool_concurrency": 4, "worker_poll_s": 2, "open_reviews": 3, "schedules": SCHEDULES,
                        "parameters": {"sample-traces": {"window": "all"}}},
        "dataset": {"name": f"{project}-dataset", "hard_case_share": 0.2, "min_rows": 10},
        "training": {"epochs": 1, "batch_size": 16, "seed": 42, "max_steps": 8},
        "gate": {"margin": 1.0},  # the gate is not under test here: every challenger goes to approval
        # every kind of news to the team's webhook; the expiry warning a minute into a batch's 4-minute wait
        "notifications": {"enabled": True, "secrets_file": str(secrets), "expiry_lead_s": 180, "digest_min": 3,
                          "channels": {"team": {"kind": "webhook"}, "alerts": {"kind": "webhook"}},
                          "routes": {role: ["team"] for role in ("reviewers", "adjudicators", "approvers",
                                                                 "operators")},
                          "alert_channel": "alerts"},
    })
    path = root / "soak.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _drop_databases(cfg: Config) -> None:
    from sqlalchemy import create_engine, text

    from hitl.ops import databases

    admin = cfg.postgres_url("x", "postgresql+psycopg2").rsplit("/", 1)[0] + "/postgres"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with engine.connect() as conn:
        for role in databases.ROLES:
            name = cfg.postgres_url(role, "postgresql").rsplit("/", 1)[1]
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _api(cfg: Config):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url})


def _actor(role: str, path: Path, ledger: Path, log: Path, **opts) -> subprocess.Popen:
    args = [sys.executable, "-m", "bench.soak_actors", role, str(path), str(ledger)]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _flow_runs(c) -> Iterator[tuple[object, str]]:
    """Every flow run the client `c` can read, with its deployment's name ("" for none), 200 at a time."""
    names = {d.id: d.name for d in c.read_deployments()}
    offset = 0
    while True:
        page = c.read_flow_runs(limit=200, offset=offset)
        yield from ((r, names.get(r.deployment_id, "")) for r in page)
        if len(page) < 200:
            return
        offset += 200


def _all_runs(cfg: Config) -> pd.DataFrame:
    """Every flow run: name, deployment, state, message, expires_at (epoch s), start (epoch s)."""
    from prefect import get_client

    rows = []
    with _api(cfg), get_client(sync_client=True) as c:
        for r, deployment in _flow_runs(c):
            timeout = r.state.state_details.pause_timeout if r.state else None
            start = r.start_time or r.expected_start_time
            rows.append({"name": r.name, "deployment": deployment,
                         "state": r.state.type.value if r.state else "NONE",
                         "state_name": r.state.name if r.state else "",
                         "message": (r.state.message or "") if r.state else "",
                         "expires_at": timeout.timestamp() if timeout else float("nan"),
                         "start": start.timestamp() if start else float("nan")})
    return pd.DataFrame(rows, columns=["name", "deployment", "state", "state_name", "message", "expires_at",
                                       "start"])


def _table(store_url: str, sql: str) -> pd.DataFrame:
    from sqlalchemy import create_engine, text

    engine = create_engine(store_url)
    with engine.connect() as conn:
        out = pd.read_sql(text(sql), conn)
    engine.dispose()
    return out


def _busy(runs: pd.DataFrame, now: float) -> int:
    """Runs still in flight, or due and not started, for more than two minutes."""
    pending = runs["state"].isin(["PENDING", "RUNNING"]) & (runs["start"] < now - 120)
    late = (runs["state"] == "SCHEDULED") & (runs["start"] < now - 120)
    return int((pending | late).sum())


def _drained(cfg: Config, entries: list[dict]) -> tuple[bool, str]:
    from hitl.review.store import ReviewStore

    written = {t for e in entries if e["kind"] == "traces" for t in e["ids"]}
    considered = set(_table(cfg.store_url, "SELECT trace_id FROM considered_traces")["trace_id"])
    counts = ReviewStore(cfg.store_url).counts()
    busy = _busy(_all_runs(cfg), time.time())
    left = len(written - considered)
    ok = not left and not counts["queued"] and not counts["disputed"] and not counts["open_batches"] and not busy
    return ok, (f"{left} traces not yet considered, {counts['queued']} items queued, {counts['disputed']} disputed, "
                f"{counts['open_batches']} batches open, {busy} runs overdue")


def _pause_schedules(cfg: Config) -> None:
    from prefect import get_client

    with _api(cfg), get_client(sync_client=True) as c:
        for d in c.read_deployments():
            c.pause_deployment(d.id)


def _sample_resources(cfg: Config, out: list[dict]) -> None:
    import psutil

    now = time.time()
    for svc in stack.status(cfg):
        if not svc.pid:
            continue
        try:
            top = psutil.Process(svc.pid)
            procs = [top, *top.children(recursive=True)]
            if svc.name == "worker":  # its flow runs come and go: the worker process itself
                procs = [top]
            rss = sum(p.memory_info().rss for p in procs) / 2**20
            fds = sum(p.num_fds() for p in procs)
        except psutil.Error:
            continue
        out.append({"t": now, "service": svc.name, "rss_mb": rss, "open_files": fds})


def _disk(cfg: Config) -> dict[str, float]:
    def size(p: Path) -> float:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20 if p.exists() else 0.0

    state = cfg.state
    out = {"artifacts_mb": size(state / "mlflow" / "artifacts"), "logs_mb": size(state / "logs"),
           "state_mb": size(state)}
    if cfg.stack.database_url:
        from sqlalchemy import create_engine, text

        from hitl.ops import databases

        total = 0.0
        for role in databases.ROLES:
            engine = create_engine(cfg.postgres_url(role, "postgresql+psycopg2"))
            with engine.connect() as conn:
                total += conn.execute(text("SELECT pg_database_size(current_database())")).scalar() / 2**20
            engine.dispose()
        out["postgres_mb"] = total
    return out


def _datasets(cfg: Config, found: list) -> Check:
    """Every dataset version registered (`found`) loads with its digest verified and holds the rows it says it
    has (MLflow's tracking URI set to the stack's by the caller)."""
    from hitl.datasets import versions

    bad = []
    for dv in found:
        try:
            df, _ = versions.load(cfg, dv.version)
            if dv.rows is not None and len(df) != dv.rows:
                bad.append(f"{dv.ref}: {len(df)} rows, registered {dv.rows}")
        except Exception as e:  # noqa: BLE001 - the check reports it
            bad.append(f"{dv.ref}: {' '.join(str(e).split())[:200]}")
    return Check("every dataset version complete, digest verified", bool(found) and not bad,
                 f"{len(found)} versions; {len(bad)} failed{': ' + '; '.join(bad[:2]) if bad else ''}")


def _releases(cfg: Config) -> tuple[int, list[str]]:
    from mlflow import MlflowClient

    from hitl.learning import promotion

    client = MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    approved = [mv.version for mv in client.search_model_versions(f"name='{cfg.model.registered_name}'")
                if promotion.APPROVED_BY in mv.tags]
    return len(approved), sorted(approved, key=int)


def _model_versions(cfg: Config) -> int:
    from mlflow import MlflowClient

    return len(MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri).search_model_versions(
        f"name='{cfg.model.registered_name}'"))


def _histories(cfg: Config) -> dict[str, soak_ledger.RunHistory]:
    """Every flow run's deployment, and from its state history how often it waited and failed, its last state."""
    from prefect import get_client

    waits, failures = {"PAUSED"}, {"FAILED", "CRASHED"}
    out = {}
    with _api(cfg), get_client(sync_client=True) as c:
        for r, deployment in _flow_runs(c):
            states = sorted(c.read_flow_run_states(r.id), key=lambda st: st.timestamp)
            types = [st.type.value for st in states]
            out[str(r.id)] = soak_ledger.RunHistory(
                deployment, sum(t in waits for t in types), sum(t in failures for t in types),
                types[-1] if types else "NONE", states[-1].timestamp.timestamp() if states else 0.0)
    return out


def _audit(path: Path) -> Check:
    p = subprocess.run([sys.executable, "-m", "hitl.cli", "audit", "verify", "-c", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    return Check("hitl audit verify passes", p.returncode == 0, " ".join(last.split())[:300])


def soak(backend: str, minutes: float, seed: int, keep: bool) -> dict:
    root = REPO / ".hitl" / f"soak-{backend}"
    if (root / "soak.yaml").exists():  # a stack an earlier soak left running (--keep) goes first
        stack.down(load_config(root / "soak.yaml"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    webhook_port = free_port()
    path = write_config(root, backend, webhook_port)
    cfg = load_config(path)
    ledger_dir, logs = root / "ledger", root / "actors"
    logs.mkdir()
    if cfg.stack.database_url:
        _drop_databases(cfg)
    actors: list[subprocess.Popen] = []  # the generator and the injector, which stop by themselves
    # the webhook, the reviewers and the probe, which stop at the `stop` file
    people = [_actor("receive", path, ledger_dir, logs / "webhook.log", port=webhook_port)]
    samples: list[dict] = []
    try:
        _log(f"{backend}: stack up ({path})")
        stack.up(cfg)
        with _api(cfg):
            deploy.apply(cfg, path)
        stack.start_worker(cfg)
        with _api(cfg):
            for line in notify_reconcile.setup(cfg):  # what `hitl up` does last
                _log(f"notifications: {line}")
        with _api(cfg):
            run = deploy.trigger(cfg, path, "bootstrap")
            from hitl.ops import runs

            done = runs.wait(run.id, 900)
        if not done.state.is_completed():
            raise RuntimeError(f"bootstrap ended {done.state.name}: {done.state.message}")
        start = time.time()
        until = start + minutes * 60
        disk_start = _disk(cfg)
        _log(f"{backend}: bootstrap done; {minutes:g} min of traffic and faults (seed {seed})")
        actors.append(_actor("generate", path, ledger_dir, logs / "generator.log", seed=seed, until=until))
        actors.append(_actor("inject", path, ledger_dir, logs / "injector.log", seed=seed, until=until))
        people += [_actor("review", path, ledger_dir, logs / f"reviewer-{i}.log", seed=seed, index=i,
                         processes=REVIEWERS) for i in range(REVIEWERS)]
        people.append(_actor("probe", path, ledger_dir, logs / "probe.log"))
        while time.time() < until:
            _sample_resources(cfg, samples)
            time.sleep(30)
        for p in actors:
            p.wait(timeout=600)
        _log(f"{backend}: faults and traffic stopped; draining")
        (ledger_dir / "drain").touch()
        t0 = time.time()
        drained_s, why = None, ""
        while time.time() - t0 < DRAIN_LIMIT_S:
            _sample_resources(cfg, samples)
            try:
                ok, why = _drained(cfg, soak_ledger.read(ledger_dir))
            except Exception as e:  # noqa: BLE001 - a server still restarting: look again
                ok, why = False, str(e)[:200]
            if ok:
                drained_s = time.time() - t0
                break
            time.sleep(15)
        _log(f"{backend}: drained in {drained_s:.0f} s" if drained_s is not None else f"{backend}: not drained "
             f"within {DRAIN_LIMIT_S} s: {why}")
        _pause_schedules(cfg)
        t1 = paused_at = time.time()
        while time.time() - t1 < SETTLE_LIMIT_S:
            runs_now = _all_runs(cfg)
            if not runs_now["state"].isin(["PENDING", "RUNNING"]).any():
                break
            time.sleep(10)
        (ledger_dir / "stop").touch()
        for p in people:
            p.wait(timeout=120)
        return _results(cfg, path, ledger_dir, samples, disk_start, drained_s, why, minutes, seed, backend,
                        paused_at)
    finally:
        for p in actors + people:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        if not keep:
            stack.down(cfg)


def _results(cfg: Config, path: Path, ledger_dir: Path, samples: list[dict], disk_start: dict,
             drained_s: float | None, why: str, minutes: float, seed: int, backend: str, paused_at: float) -> dict:
    import mlflow

    from hitl.datasets import versions
    from hitl.review.store import ReviewStore

    entries = soak_ledger.read(ledger_dir)
    store = ReviewStore(cfg.store_url)
    considered = set(_table(cfg.store_url, "SELECT trace_id FROM considered_traces")["trace_id"])
    quarantined = _table(cfg.store_url, "SELECT path, reason FROM quarantined_rows")
    items, annotations = store.items(), store.annotations()
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    dataset_versions = versions.list_versions(cfg)
    # the bar for 30 minutes (30 faults of 5 kinds), scaled down for a shorter trial run
    fault_check, by_kind = soak_ledger.faults_survived(entries, min_total=int(minutes),
                                                       min_kinds=min(len(FAULTS), int(minutes)))
    checks = [
        soak_ledger.traces_considered(entries, considered, items["trace_id"].tolist()),
        soak_ledger.garbage_quarantined(entries, quarantined),
        soak_ledger.labels_stored_once(entries, store.batches(), annotations, items),
        soak_ledger.adjudications_stored_once(entries, store.resolutions()),
        _datasets(cfg, dataset_versions),
        soak_ledger.champion_probes(entries),
        _audit(path),
        soak_ledger.runs_settled(_all_runs(cfg), time.time()),
        Check(f"queue drained within {DRAIN_LIMIT_S // 60} min of the faults stopping", drained_s is not None,
              f"in {drained_s:.0f} s" if drained_s is not None else why),
        soak_ledger.notifications_once(entries, _histories(cfg), set(cfg.deployments.schedules), NEWS_WAIT_S,
                                       paused_at),
        soak_ledger.bounded_growth(pd.DataFrame(samples)),
    ]
    releases, approved = _releases(cfg)
    answers = [e for e in entries if e["kind"] == "answer"]
    disk_end = _disk(cfg)
    checks += [soak_ledger.disk_bounded(disk_start, disk_end, _model_versions(cfg) - 1,
                                        sum(len(e["ids"]) for e in entries if e["kind"] == "traces")), fault_check]
    result = {
        "backend": backend, "minutes": minutes, "seed": seed, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "faults": {k: {"injected": n, "survived": ok} for k, (n, ok) in sorted(by_kind.items())},
        "traces": sum(len(e["ids"]) for e in entries if e["kind"] == "traces"),
        "answers": {"accepted": sum(e["accepted"] for e in answers), "refused": sum(not e["accepted"] for e in answers),
                    "by_behaviour": dict(pd.Series([e["how"] for e in answers]).value_counts())},
        "labels": len(annotations), "dataset_versions": len(dataset_versions),
        "releases": releases, "approved_versions": approved,
        "probes": sum(e["kind"] == "probe" for e in entries),
        "disk_start": disk_start, "disk_end": disk_end,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
    }
    return result


def render(result: dict) -> str:
    """The markdown table of one backend's soak, as docs/reliability.md shows it."""
    faults = ", ".join(f"{k} {v['injected']}" for k, v in result["faults"].items())
    injected = sum(v["injected"] for v in result["faults"].values())
    survived = sum(v["survived"] for v in result["faults"].values())
    a = result["answers"]
    how = ", ".join(f"{k} {v}" for k, v in a["by_behaviour"].items())
    lines = [f"**{result['backend']}**, {result['minutes']:g} min, seed {result['seed']} ({result['when']}): "
             f"{injected} faults injected, {survived} survived ({faults}); {result['traces']} traces; "
             f"{a['accepted']} answers accepted, {a['refused']} refused ({how}); {result['labels']} labels; "
             f"{result['dataset_versions']} dataset versions; {result['releases']} releases; "
             f"{result['probes']} champion probes.", "", "| invariant | holds | measured |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'yes' if c['ok'] else '**NO**'} | {c['detail']} |" for c in result["checks"]]
    a, b = result["disk_start"], result["disk_end"]
    lines += ["", "Disk, after the launch model and at the end (MB): " + ", ".join(
        f"{k.removesuffix('_mb')} {a.get(k, 0):.0f} -> {b[k]:.0f}" for k in b)
        + f"; {(b['state_mb'] - a['state_mb']) / max(1, result['traces']) * 1000:.0f} MB of state per 1,000 traces, "
        f"mostly the MLflow artifacts (a model version is about {a['artifacts_mb']:.0f} MB, the launch model's size)."]
    return "\n".join(lines)


DOC = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin (written by python -m bench.soak) -->", "<!-- soak:end -->"


def write_docs(out: Path) -> None:
    """Rewrite docs/reliability.md's soak tables, between its markers, from the backends' JSON files in `out`."""
    parts = [render(json.loads((out / f"soak-{b}.json").read_text())) for b in ("sqlite", "postgresql")
             if (out / f"soak-{b}.json").exists()]
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the soak markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n" + "\n\n".join(parts) + "\n" + END + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ap = argparse.ArgumentParser(description="The chaos soak (issue 26): see bench/soak.py")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    a = ap.parse_args(argv)
    out = REPO / "docs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    for backend in (["sqlite", "postgresql"] if a.backend == "both" else [a.backend]):
        result = soak(backend, a.minutes, a.seed, a.keep)
        (out / f"soak-{backend}.json").write_text(json.dumps(result, indent=1, default=str))
        print(render(result), flush=True)
        ok &= all(c["ok"] for c in result["checks"])
        write_docs(out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
