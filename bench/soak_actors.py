"""The soak's actors, each its own process writing its own ledger (bench/soak_ledger.py): a trace generator, a
fault injector, simulated reviewers (several processes), a probe of `@champion`, and the webhook the notifications
go to (the team's "Slack").

    python -m bench.soak_actors ROLE CONFIG LEDGER_DIR --seed S --until EPOCH [--index I --processes N] [--port P]

The generator and the injector stop at `--until`; the reviewers, the probe and the webhook run until the file `stop`
appears in the ledger folder, and the reviewers answer everything promptly once `drain` appears there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.soak_ledger import Ledger
from hitl.config import Config, load_config
from hitl.ops import processes, stack
from hitl.sim import files, world

FAULTS = ("worker-kill", "prefect-restart", "mlflow-restart", "flow-run-kill", "garbage-file")


def _rng(*key: object) -> random.Random:
    """A generator for one decision, keyed by what it is about (the same in every process)."""
    return random.Random(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def _api(cfg: Config):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url})


# ---- the trace generator -------------------------------------------------------------------------------------
def generate(cfg: Config, ledger: Ledger, seed: int, until: float, tick_s: float, per_tick: int) -> None:
    """Every `tick_s`, a new file of `per_tick` valid traces stamped within the last day, its truth beside the
    world's; each file's trace ids go in the ledger once the file is in place."""
    traces, truth_dir = cfg.world_dir / "traces", cfg.world_dir / "truth"
    n = 0
    while time.time() < until:
        name = f"soak-{seed}-{n:05d}"
        start = datetime.now(UTC) - timedelta(days=1)
        requests, truth = world.production_requests(cfg.world, start, n=per_tick, seed_offset=10_000 * seed + n)
        truth_dir.mkdir(parents=True, exist_ok=True)
        files.atomic_write(truth_dir / f"{name}.parquet", lambda p, t=truth: t.to_parquet(p, index=False))
        labels = truth.set_index("trace_id").loc[requests["trace_id"], "label"].tolist()
        records = world.simulate_production(requests, truth, labels, [0.9] * len(labels), "soak-app", cfg.world)
        files.write_jsonl(records, traces / f"{name}.jsonl")
        ledger.write("traces", file=str(traces / f"{name}.jsonl"), ids=[r["trace_id"] for r in records])
        n += 1
        time.sleep(max(0.0, tick_s - 0.5))


# ---- the fault injector --------------------------------------------------------------------------------------
def plan(seed: int, seconds: float, mean_interval_s: float) -> list[tuple[float, str]]:
    """The seeded fault schedule: (offset in seconds, kind), kinds in turn from a shuffled cycle so each kind
    comes up about equally often; gaps uniform between 0.4 and 1.6 times `mean_interval_s`."""
    rng = _rng("plan", seed)
    out, t, cycle = [], 0.0, []
    while True:
        t += rng.uniform(0.4, 1.6) * mean_interval_s
        if t >= seconds:
            return out
        if not cycle:
            cycle = list(FAULTS)
            rng.shuffle(cycle)
        out.append((round(t, 1), cycle.pop()))


def _service(cfg: Config, name: str) -> stack.Service | None:
    return next((s for s in stack.status(cfg) if s.name == name and s.pid), None)


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while processes.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if processes.alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _healthy(cfg: Config) -> bool:
    return all(s.healthy for s in stack.status(cfg))


def _restart_server(cfg: Config, name: str, rng: random.Random) -> str:
    svc = _service(cfg, name)
    if svc is None:
        return f"no {name} server running"
    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
    os.killpg(svc.pid, sig)
    _wait_gone(svc.pid)
    time.sleep(rng.uniform(1, 8))
    stack.up(cfg, console_print=lambda _: None)
    def worker_healthy() -> bool:
        worker = _service(cfg, "worker")
        return worker is not None and worker.healthy

    note = ""
    if not worker_healthy():  # the worker exits when its server stays away too long
        time.sleep(10)
        if not worker_healthy():
            stack.start_worker(cfg, console_print=lambda _: None)
            note = "; the worker had exited and was restarted"
    return f"{name} server {signal.Signals(sig).name}, restarted{note}"


def _kill_worker(cfg: Config, rng: random.Random) -> str:
    stack.stop_worker(cfg, signal.SIGKILL, console_print=lambda _: None)
    down_s = rng.uniform(2, 20)
    time.sleep(down_s)
    stack.start_worker(cfg, console_print=lambda _: None)  # what a supervisor (systemd) does
    return f"worker SIGKILL, restarted after {down_s:.0f} s"


def _flow_run_processes(cfg: Config) -> list[tuple[int, str]]:
    """(pid, flow run id) of the flow runs the worker is executing."""
    import psutil

    worker = _service(cfg, "worker")
    if worker is None:
        return []
    out = []
    for p in psutil.Process(worker.pid).children(recursive=True):
        try:
            if "prefect.engine" in " ".join(p.cmdline()):
                out.append((p.pid, p.environ().get("PREFECT__FLOW_RUN_ID", "?")))
        except psutil.Error:
            continue
    return out


def _kill_flow_run(cfg: Config, rng: random.Random) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = _flow_run_processes(cfg)
        if running:
            pid, run_id = rng.choice(running)
            os.kill(pid, signal.SIGKILL)
            return f"flow run {run_id} (pid {pid}) SIGKILL"
        time.sleep(1)
    raise RuntimeError("no flow run was executing within 90 s")


GARBAGE = ['{"trace_id": "broken-%d", "timestamp": "yesterday", "input": "hi", "output": "", "metadata": "{}"}',
           '{"trace_id": "empty-%d", "timestamp": "2026-01-01T00:00:00Z", "input": "", "output": "", '
           '"metadata": "{}"}',
           'not json at all %d', '[%d, 2, 3]', '{"input": "no id or time %d"}', '\u0000\u0001 binary %d']


def _garbage(cfg: Config, rng: random.Random, spoiled: set[str]) -> tuple[str, dict]:
    """Append garbage lines to the newest trace file not spoiled yet (rewritten atomically, as a log shipper
    would replace it); returns the detail and the ledger fields (file, garbage_rows)."""
    candidates = sorted((p for p in (cfg.world_dir / "traces").glob("soak-*.jsonl") if str(p) not in spoiled),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise RuntimeError("no trace file to spoil yet")
    path = candidates[-1]
    k = rng.randint(3, 10)
    lines = [GARBAGE[rng.randrange(len(GARBAGE))] % (rng.randrange(10**9)) for _ in range(k)]
    body = path.read_text(encoding="utf-8") + "".join(line + "\n" for line in lines)
    files.atomic_write(path, lambda p: p.write_text(body, encoding="utf-8"))
    spoiled.add(str(path))
    return f"{k} garbage lines appended to {path.name}", {"file": str(path), "garbage_rows": k}


def inject(cfg: Config, ledger: Ledger, seed: int, until: float, mean_interval_s: float) -> None:
    start = time.time()
    schedule = plan(seed, until - start, mean_interval_s)
    ledger.write("plan", seed=seed, schedule=schedule)
    spoiled: set[str] = set()
    for i, (offset, kind) in enumerate(schedule):
        time.sleep(max(0.0, start + offset - time.time()))
        if time.time() >= until:
            break
        rng = _rng("fault", seed, i)
        extra: dict = {}
        t0 = time.monotonic()
        try:
            if kind == "worker-kill":
                detail = _kill_worker(cfg, rng)
            elif kind == "prefect-restart":
                detail = _restart_server(cfg, "prefect", rng)
            elif kind == "mlflow-restart":
                detail = _restart_server(cfg, "mlflow", rng)
            elif kind == "flow-run-kill":
                detail = _kill_flow_run(cfg, rng)
            else:
                detail, extra = _garbage(cfg, rng, spoiled)
            deadline = time.monotonic() + 120
            while not _healthy(cfg) and time.monotonic() < deadline:
                time.sleep(1)
            ok = _healthy(cfg)
        except Exception as e:  # noqa: BLE001 - a fault that could not be injected is recorded, not fatal
            detail, ok = f"could not inject: {' '.join(str(e).split())[:300]}", False
        ledger.write("fault", fault=kind, planned_at=offset, ok=ok, detail=detail,
                     recovered_s=round(time.monotonic() - t0, 1), **extra)


# ---- simulated reviewers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Behaviour:
    kind: str  # normal | late | never | twice | concurrent
    owner: int  # the reviewer process that answers (all of them for "concurrent")
    delay_s: float  # after the run began to wait


def behaviour(seed: int, run_id: str, processes_n: int, timeout_s: float) -> Behaviour:
    """How a paused run is answered; the same in every reviewer process."""
    rng = _rng("behaviour", seed, run_id)
    u = rng.random()
    owner = rng.randrange(processes_n)
    if u < 0.08:
        return Behaviour("never", owner, 0.0)
    if u < 0.33:  # some of them after the wait expired: refused by the server, nothing stored
        return Behaviour("late", owner, rng.uniform(0.2, 1.25) * timeout_s)
    if u < 0.45:
        return Behaviour("twice", owner, rng.uniform(2, 20))
    if u < 0.6:
        return Behaviour("concurrent", owner, rng.uniform(8, 20))
    return Behaviour("normal", owner, rng.uniform(2, 30))


class Reviewer:
    def __init__(self, cfg: Config, ledger: Ledger, seed: int, index: int, processes_n: int):
        self.cfg, self.ledger, self.seed, self.index, self.n = cfg, ledger, seed, index, processes_n
        self.name = f"reviewer-{index}"
        self.truth: dict[str, str] = {}
        self.read: set[Path] = set()
        self.done: set[str] = set()
        self.seen: set[str] = set()

    def _true(self, trace_id: str) -> str:
        if trace_id not in self.truth:  # read the truth files written since the last look, each once
            for p in sorted(set((self.cfg.world_dir / "truth").glob("*.parquet")) - self.read):
                t = pd.read_parquet(p)
                self.truth.update(zip(t["trace_id"].astype(str), t["label"].astype(str), strict=True))
                self.read.add(p)
        return self.truth[trace_id]

    def _label(self, trace_id: str, who: str) -> str:
        true = self._true(trace_id)
        rng = _rng("label", self.seed, trace_id, who)
        if rng.random() < self.cfg.simulation.noise:
            return rng.choice([lab for lab in self.cfg.labels if lab != true])
        return true

    def answer(self, run) -> tuple[dict, dict[str, str], str]:
        """(form values, trace -> label, who) for a paused run."""
        from hitl.review import forms, prefect_api

        if run.form == prefect_api.APPROVAL_FORM:
            ok = "## Gate: PASS" in run.description
            who = self.cfg.simulation.approver
            return ({"decision": "approve" if ok else "reject", "approver": who,
                     "reason": "gate passed on the production estimate" if ok else
                     "the release gate did not pass, so the champion stays"}, {}, who)
        fields = forms.trace_ids_from_schema(run.schema)
        if run.form == prefect_api.ADJUDICATION_FORM:
            who = self.cfg.simulation.adjudicator
            labels = {t: self._true(t) for t in fields.values()}
            return ({forms.REVIEWER_FIELD: who, **{f: labels[t] for f, t in fields.items()}}, labels, who)
        who = self.name
        labels = {t: self._label(t, who) for t in fields.values()}
        return ({forms.REVIEWER_FIELD: who, **{f: forms.choice_for(labels[t], run.fields[f].get("enum") or (),
                                                                   self.cfg.labels) for f, t in fields.items()}},
                labels, who)

    def _resume(self, run, values: dict, labels: dict, who: str, how: str) -> bool:
        from hitl.review import prefect_api

        try:
            prefect_api.resume(run.id, values, run.response_key)
            accepted, error = True, None
        except Exception as e:  # noqa: BLE001 - refused (already resumed, expired) or the server is down
            accepted, error = False, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        self.ledger.write("answer", run_id=run.id, form=run.form, reviewer=who, labels=labels, accepted=accepted,
                          error=error, how=how)
        return accepted

    def step(self, draining: bool) -> None:
        from hitl.review import prefect_api

        now = time.time()
        for run in prefect_api.paused_runs():
            if self.index == 0 and run.id not in self.seen:  # what was waiting for people, and since when
                self.seen.add(run.id)
                self.ledger.write("seen", run_id=run.id, form=run.form, paused_at=run.paused_at,
                                  expires_at=run.expires_at)
            if run.id in self.done or run.form not in (prefect_api.REVIEW_FORM, prefect_api.ADJUDICATION_FORM,
                                                      prefect_api.APPROVAL_FORM):
                continue
            b = behaviour(self.seed, run.id, self.n, self.cfg.review.timeout_s)
            if draining and b.kind in ("never", "late"):
                b = Behaviour("normal", b.owner, 0.0)
            due = datetime.fromisoformat(run.paused_at).timestamp() + b.delay_s
            if b.kind == "never" or (b.kind != "concurrent" and b.owner != self.index):
                continue
            if b.kind == "concurrent":  # every process at the same instant
                if due - now > 3:
                    continue
                time.sleep(max(0.0, due - time.time()))
            elif now < due:
                continue
            values, labels, who = self.answer(run)
            self.done.add(run.id)
            accepted = self._resume(run, values, labels, who, b.kind)
            if b.kind == "twice" and accepted:  # a double click: the same answer again
                self._resume(run, values, labels, who, "twice-again")

    def run(self, stop: Path, drain: Path) -> None:
        with _api(self.cfg):
            while not stop.exists():
                try:
                    self.step(drain.exists())
                except Exception as e:  # noqa: BLE001 - the server restarting: try again shortly
                    print(f"{self.name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}", flush=True)
                    time.sleep(3)
                time.sleep(1)


# ---- the webhook the notifications reach ----------------------------------------------------------------------
def receive(ledger: Ledger, port: int, stop: Path) -> None:
    """Answer the notification blocks' POSTs ({"text": ...}) with 200 and write each to the ledger, in order."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                text = str(json.loads(body or b"{}").get("text", ""))
            except ValueError:
                text = body.decode("utf-8", "replace")
            with lock:
                ledger.write("notice", path=self.path.rsplit("/", 1)[0], text=text)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    server.timeout = 1.0
    while not stop.exists():
        server.handle_request()
    server.server_close()


# ---- the probe of @champion ----------------------------------------------------------------------------------
def probe(cfg: Config, ledger: Ledger, stop: Path, every_s: float = 30.0, full_every: int = 10) -> None:
    """Every `every_s`: which version @champion is and whether it is an approved one; the model loaded through the
    registry when the version changes and every `full_every` probes."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.learning import promotion, registry

    mlflow.set_tracking_uri(cfg.mlflow_uri)
    mlflow.set_registry_uri(cfg.mlflow_uri)
    client, last, i = MlflowClient(), None, 0
    name = cfg.model.registered_name
    while not stop.exists():
        t0 = time.time()
        up = processes.health_ok(f"{cfg.mlflow_uri}/health")
        version = approved = error = None
        ok = False
        try:
            version = registry.alias_version(name, promotion.CHAMPION, client)
            if version is None:
                raise LookupError("no @champion")
            tags = client.get_model_version(name, version).tags
            approved = promotion.APPROVED_BY in tags or tags.get(promotion.STAGE_TAG) == promotion.BOOTSTRAP
            if version != last or i % full_every == 0:
                registry.load_registered(name, version, client)
                last = version
            ok = True
        except Exception as e:  # noqa: BLE001 - recorded; judged against whether MLflow answered
            error = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        up = up and processes.health_ok(f"{cfg.mlflow_uri}/health")
        ledger.write("probe", ok=ok, version=version, approved=approved, error=error, mlflow_up=up)
        i += 1
        time.sleep(max(0.0, every_s - (time.time() - t0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=["generate", "inject", "review", "probe", "receive"])
    ap.add_argument("config")
    ap.add_argument("ledger", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--until", type=float, default=0.0)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--tick-s", type=float, default=20.0)
    ap.add_argument("--per-tick", type=int, default=40)
    ap.add_argument("--fault-interval-s", type=float, default=40.0)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    cfg = load_config(a.config)
    np.seterr(all="ignore")
    if a.role == "generate":
        generate(cfg, Ledger(a.ledger, "generator"), a.seed, a.until, a.tick_s, a.per_tick)
    elif a.role == "inject":
        inject(cfg, Ledger(a.ledger, "injector"), a.seed, a.until, a.fault_interval_s)
    elif a.role == "review":
        Reviewer(cfg, Ledger(a.ledger, f"reviewer-{a.index}"), a.seed, a.index, a.processes).run(
            a.ledger / "stop", a.ledger / "drain")
    elif a.role == "receive":
        receive(Ledger(a.ledger, "webhook"), a.port, a.ledger / "stop")
    else:
        probe(cfg, Ledger(a.ledger, "probe"), a.ledger / "stop")


if __name__ == "__main__":
    main()
