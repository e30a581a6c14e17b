"""Sampling at scale: the sampling flow's own stages (`flows.sample_traces.sample_window`, in a flow run on a
temporary Prefect server) on 20,000, 100,000 and 200,000 BANKING77 traces, each size in a fresh process, against
the path before partitioned sampling (commit LEGACY, the same traces and config, its own flow body) in the same
bench.

- Traces: BANKING77's train and test texts, then the same with typos until every text is distinct (so neither
  the vector cache nor the same-text collapse can skip work; `unique_texts`), over one UTC day, with channel
  and tier cohorts, in JSONL files of 50,000 lines.
- Champion: the packaged MiniLM fine-tuned by the product's recipe on 15 rows of each of the 77 intents
  (bench/engine.py, as in section 6), saved once and loaded by every process.
- Config: configs/banking77.yaml's selection (budget 1,200, a 40% random draw, strata channel), the
  product's defaults elsewhere (a threads task runner of 2 workers, partitions of 2,000 texts a scoring task).
- Wall time is the flow run's, load to publish (the model load, the ONNX exports and the server's start come
  before it); peak RSS is the process's high-water mark during the flow run (reset just before it).

Then the label-efficiency check of the one approximation large windows take (near duplicates compared only
within each component's shortlist, above `selection.dedup_all_pairs_max` candidates): section 1's learning
curves for the policy with that shortcut on every window, against the exact policy and random, same 5 seeds.

`python -m bench.sampling_scale [--quick]` prints a markdown table and writes docs/bench/sampling-scale[-quick].json;
`--label-efficiency` runs the check alone and adds it to the JSON (and section 12) it finds.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGACY = "29bb6df"  # the last commit before partitioned sampling: its path is "today's" in issue 24
SIZES = {False: (20_000, 100_000, 200_000), True: (1_000, 5_000)}
FILE_LINES = 50_000
BASELINE_RATE = 140.0  # traces/s end to end the issue measured for the path before (14,000 traces, torch)
PARTITION_ROWS = 10_000
SECTION = 12  # its section of docs/benchmarks.md


def _texts() -> list[str]:
    import pandas as pd

    from bench.speed import DATA_DIR

    return pd.concat([pd.read_csv(DATA_DIR / "train.csv"), pd.read_csv(DATA_DIR / "test.csv")])["text"].tolist()


def _typo(text: str, rng: random.Random) -> str:
    """`text` with one slip of a typing hand: a letter dropped, doubled or swapped with the next, or the first
    letter's case flipped."""
    i = rng.randrange(len(text))
    kind = rng.randrange(4)
    if kind == 0 and len(text) > 1:
        return text[:i] + text[i + 1:]
    if kind == 1:
        return text[:i + 1] + text[i:]
    if kind == 2 and i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:1].swapcase() + text[1:]


def unique_texts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct texts: BANKING77's as they are first, then with typos (one or more) until each is new, so
    neither the vector cache nor the same-text collapse can skip work; lengths stay BANKING77's."""
    rng = random.Random(seed)
    base = list(dict.fromkeys(_texts()))
    rng.shuffle(base)
    seen, out = set(base[:n]), base[:n]
    while len(out) < n:
        text = _typo(rng.choice(base), rng)
        while text in seen:
            text = _typo(text, rng)
        seen.add(text)
        out.append(text)
    return out


def write_traces(n: int, folder: Path, seed: int = 0) -> None:
    """`n` traces of distinct texts (`unique_texts`) over 2026-01-01 (UTC) in JSONL files of FILE_LINES lines."""
    rng = random.Random(seed)
    texts = unique_texts(n, seed)
    rng.shuffle(texts)
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, FILE_LINES):
        with (folder / f"traces-{start // FILE_LINES:03d}.jsonl").open("w") as fh:
            for i in range(start, min(n, start + FILE_LINES)):
                second = i * 86400 // n
                fh.write(json.dumps({
                    "trace_id": f"t{i:07d}", "timestamp": f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:"
                                                          f"{second % 60:02d}Z",
                    "input": texts[i], "output": "",
                    "channel": rng.choice(["app", "web_chat", "email"]), "tier": rng.choice(["free", "premium"]),
                    "context": None, "metadata": "{}"}) + "\n")


def _launch(path: Path) -> None:
    import pandas as pd

    from bench.speed import DATA_DIR

    df = pd.read_csv(DATA_DIR / "train.csv").groupby("category").head(20)
    pd.DataFrame({"text": df["text"], "label": df["category"], "channel": "app", "tier": "free"}).to_csv(path,
                                                                                                       index=False)


def _config(work: Path, engine: str, legacy: bool) -> dict:
    from bench.speed import DATA_DIR
    from hitl.sim.banking77 import load_labels

    source = {"kind": "files", "path": str(work / "traces"), "launch_path": str(work / "launch.csv")}
    if not legacy:
        source["partition_rows"] = PARTITION_ROWS
    return {"labels": load_labels(DATA_DIR), "cohorts": ["channel", "tier"], "state_dir": str(work / "state"),
            "source": source, "model": {"engine": engine, "max_length": 64},
            "evaluators": {"uncertain_quantile": 0.2, "task_completion_threshold": 0.5},
            "selection": {"budget": 1200, "random_share": 0.4, "random_annotations": 2, "strata": ["channel"],
                          "seed": 0}}


def _kib(field: str) -> float:
    import re

    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def child(args: dict) -> dict:
    """One size on one code path, in this (fresh) process; the path's modules come first on sys.path."""
    import mlflow
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from bench.speed import _quiet
    from hitl.config import Config
    from hitl.learning import modeling
    from hitl.learning.embeddings import FrozenEncoder
    from hitl.review.store import ReviewStore

    _quiet()
    work, engine, legacy = Path(args["work"]), args["engine"], args["legacy"]
    cfg = Config(**(_config(work, engine, legacy) | args.get("config", {})))
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_experiment(cfg.sampling_experiment)  # the tracking store's migrations, before the clock
    model = modeling.load(Path(args["champion"]))
    probe = [f"warm-up text {i}" for i in range(64)]
    if engine != "torch":
        from hitl.learning import onnx_engine

        onnx_engine.export_network(model, work / "onnx", probe, 64, cfg.model.max_length)
        model.engine = onnx_engine.load_engine(work / "onnx", engine)
    modeling.score(model, probe[:8], max_length=cfg.model.max_length)
    encoder = FrozenEncoder(modeling.base_model_path(cfg), cfg.state / "cache", max_length=cfg.model.max_length,
                            engine=engine)
    encoder.encode(probe[:8])  # exports the frozen encoder into the cache, as the first run of a version does
    encoder.save()
    served = {"scoring": model.serving_engine, "frozen": encoder.serving_engine}
    store = ReviewStore(cfg.store_url)

    def body() -> dict:
        if not legacy:
            from flows.sample_traces import sample_window

            return sample_window(cfg, store, lambda: model, None, None)
        from hitl.sim import world
        from tasks import sampling, training  # the flow body of commit LEGACY, verbatim

        loaded = sampling.load(cfg, store, None, None)
        fresh = sampling.drop_considered(loaded.accepted, cfg, store)
        scored = sampling.score(model, fresh, cfg)
        results, evaluated = sampling.evaluate(scored, cfg)
        reference = sampling.reference_rows(cfg, store, training.launch_data(cfg, world.launch_data))
        chosen, new = sampling.select_and_enqueue(evaluated, reference, cfg, store, sampling.run_window_key())
        return sampling.publish(cfg, store, loaded, results, evaluated, chosen, new)

    with prefect_test_harness(server_startup_timeout=300):
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here
        before = _kib("VmRSS")
        t = time.perf_counter()
        state = flow(name="bench-sample-window", log_prints=False)(body)(return_state=True)
        wall = time.perf_counter() - t
        peak = _kib("VmHWM")
        out = state.result()
        stages = _task_seconds(state.state_details.flow_run_id)
    return {"n": args["n"], "engine": engine, "path": "before (" + LEGACY + ")" if legacy else "partitioned",
            "wall_s": wall, "traces_per_s": args["n"] / wall, "rss_before_mib": before, "peak_rss_mib": peak,
            "selected": int(out["selected"]), "accepted": int(out["accepted"]), "stages_s": stages,
            "served_by": served, "spill_left": any((cfg.state / "sampling-runs").glob("*"))}


def _task_seconds(flow_run_id) -> dict[str, float]:
    """Seconds each task of the flow run took, by task name (partitions of `score-partition` summed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, float] = {}
    for r in runs:
        name = r.name.rsplit("-", 1)[0]
        out[name] = out.get(name, 0.0) + r.total_run_time.total_seconds()
    return {k: round(v, 1) for k, v in sorted(out.items())}


def _legacy_tree(dest: Path) -> Path | None:
    """hitl/, tasks/ and flows/ of commit LEGACY (None where git or the commit is missing)."""
    archive = dest / "legacy.tar"
    done = subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), LEGACY, "hitl", "tasks", "flows"],
                          capture_output=True)
    if done.returncode:
        return None
    tree = dest / "legacy"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def champion_dir(tmp: Path, log=print) -> Path:
    """The champion every process loads: fine-tuned once (about a minute), saved under `tmp`."""
    from bench.engine import fine_tuned_model
    from bench.speed import _quiet
    from hitl.learning import modeling

    _quiet()
    return modeling.save(fine_tuned_model(log=log), tmp / "champion")


def _spawn(code: Path, args: dict, timeout: int = 3600) -> dict:
    launcher = ("import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
                "from bench.sampling_scale import child; print('RESULT ' + json.dumps(child(json.loads(sys.argv[3]))))")
    done = subprocess.run([sys.executable, "-c", launcher, str(code), str(REPO), json.dumps(args)], cwd=args["work"],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"sampling-scale child failed ({args}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def label_efficiency(quick: bool = False, log=print) -> dict:
    """Section 1's learning curves: random, the policy, and the policy with the large-window near-duplicate
    shortcut forced on every window (`dedup_all_pairs_max` 0); seed-paired differences against the policy."""
    import pandas as pd

    from bench import learning_curves as lc
    from bench.speed import DATA_DIR

    encoder = lc.frozen_encoder()
    setup = lc.Setup(seeds=[0, 1], rounds=4, per_round=30, n_new_intents=10, launch_per_intent=10,
                     traffic_cap=600) if quick else lc.Setup(seeds=[0, 1, 2, 3, 4])
    exact, _, _ = lc.run(lc.Setup(**{**setup.__dict__, "strategies": ["random", "policy"]}), encoder.encode,
                         DATA_DIR, log=log)
    short, _, _ = lc.run(lc.Setup(**{**setup.__dict__, "strategies": ["policy"]}), encoder.encode, DATA_DIR,
                         log=log, selection={"dedup_all_pairs_max": 0})
    curves = pd.concat([exact, short.assign(strategy="policy, shortlist dedup")], ignore_index=True)
    last = curves[curves["round"] == curves["round"].max()].set_index(["strategy", "seed"])["acc_new"]
    diff = (last["policy, shortlist dedup"] - last["policy"]) * 100
    summ = lc.summary(curves)
    target = summ[summ["strategy"] == "random"].sort_values("round").iloc[-1]
    return {"seeds": setup.seeds, "random_final": float(target["acc_new"]), "random_labels": float(target["labels"]),
            "final": {k: float(last[k].mean()) for k in ("random", "policy", "policy, shortlist dedup")},
            "final_diff_pts": lc.t_interval(diff.to_numpy()),
            "auc_diff_pts": lc.paired_auc_difference(curves, "policy, shortlist dedup", "policy"),
            "labels_to_random_final": {k: lc.labels_to_reach(summ[summ["strategy"] == k], target["acc_new"])
                                       for k in ("policy", "policy, shortlist dedup")}}


def _label_efficiency_markdown(le: dict) -> str:
    final, (m_f, lo_f, hi_f), (m_a, lo_a, hi_a) = le["final"], le["final_diff_pts"], le["auc_diff_pts"]
    reach = le["labels_to_random_final"]
    return (f"Label efficiency with the large-window shortcut on every window (section 1's scenario, seeds "
            f"{', '.join(map(str, le['seeds']))}): final new-intent accuracy "
            f"{100 * final['policy, shortlist dedup']:.1f}% against the exact policy's {100 * final['policy']:.1f}% "
            f"(seed-paired difference {m_f:+.2f} pts, 95% [{lo_f:+.2f}, {hi_f:+.2f}]; area under the curve "
            f"{m_a:+.2f} pts [{lo_a:+.2f}, {hi_a:+.2f}]); random's final {100 * le['random_final']:.1f}% reached at "
            f"{reach['policy, shortlist dedup']:.0f} labels against {reach['policy']:.0f} for the exact policy "
            f"(random: {le['random_labels']:.0f}).")


def run(quick: bool = False, log=print) -> dict:
    sizes = SIZES[quick]
    small = sizes[0]
    load_start, started = os.getloadavg()[0], time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hitl-scale-") as tmp:
        legacy = _legacy_tree(Path(tmp))
        champion = champion_dir(Path(tmp), log)
        plans = ([(small, "torch", True)] if legacy else []) + [(small, "torch", False)] + \
            [(n, "onnx-int8", False) for n in sizes]
        for n, engine, old in plans:
            work = Path(tmp) / f"{n}-{engine}-{'legacy' if old else 'new'}"
            write_traces(n, work / "traces")
            _launch(work / "launch.csv")
            log(f"sampling scale: {n:,} traces, {engine}, {'before' if old else 'partitioned'}")
            rows.append(_spawn(legacy if old else REPO, {"n": n, "engine": engine, "legacy": old, "work": str(work),
                                                         "champion": str(champion)}))
            log(f"  {rows[-1]['wall_s']:.0f} s, {rows[-1]['traces_per_s']:.0f} traces/s, peak "
                f"{rows[-1]['peak_rss_mib']:.0f} MiB")
    log("label efficiency: the policy with the large-window shortcut on every window")
    le = label_efficiency(quick, log)
    return {"rows": rows, "sizes": list(sizes), "legacy": LEGACY if legacy else None, "label_efficiency": le,
            "verdict": verdict(rows, sizes), "wall_s": time.perf_counter() - started,
            "load_start": load_start, "load_end": os.getloadavg()[0], "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d")}


def verdict(rows: list[dict], sizes: tuple[int, ...]) -> dict:
    """Issue 24's bars on the partitioned int8 runs against the smallest size and the path before."""
    new = {r["n"]: r for r in rows if r["path"] == "partitioned" and r["engine"] == "onnx-int8"}
    base = new[sizes[0]]
    old = next((r for r in rows if r["path"] != "partitioned"), None)
    out = {"per_trace_vs_smallest": {n: (r["wall_s"] / n) / (base["wall_s"] / sizes[0]) for n, r in new.items()},
           "peak_vs_smallest": {n: r["peak_rss_mib"] / base["peak_rss_mib"] for n, r in new.items()},
           "max_peak_mib": max(r["peak_rss_mib"] for r in new.values()),
           "min_rate": min(r["traces_per_s"] for r in new.values())}
    out["linear"] = all(v <= 1.15 for v in out["per_trace_vs_smallest"].values())
    out["memory"] = all(v <= 1.25 for v in out["peak_vs_smallest"].values()) and out["max_peak_mib"] < 3 * 1024
    out["rate_vs_140"] = out["min_rate"] / BASELINE_RATE
    out["rate_vs_before"] = base["traces_per_s"] / old["traces_per_s"] if old else None
    return out


def to_markdown(result: dict) -> str:
    v = result["verdict"]

    def ratio(r: dict, key: str) -> str:
        mine = r["path"] == "partitioned" and r["engine"] == "onnx-int8"
        return f"{v[key][r['n']]:.2f}" if mine else ""

    lines = ["| traces | path | engine | wall s | traces/s | peak RSS MiB | per trace / smallest | "
             "peak / smallest | selected |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['path']} | {r['engine']} | {r['wall_s']:.0f} | {r['traces_per_s']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {ratio(r, 'per_trace_vs_smallest')} | {ratio(r, 'peak_vs_smallest')} | "
              f"{r['selected']} |" for r in result["rows"]]
    keys = sorted({k for r in result["rows"] for k in r["stages_s"]})
    lines += ["", "Seconds by task (the flow run's task runs; `score-partition` runs inside `score-traces`, two at "
              "a time):", "", "| traces | path | engine | " + " | ".join(keys) + " |",
              "|---:|---|---|" + "---:|" * len(keys)]
    lines += [f"| {r['n']:,} | {r['path']} | {r['engine']} | " + " | ".join(str(r["stages_s"].get(k, ""))
                                                                        for k in keys) + " |" for r in result["rows"]]
    before = f"{v['rate_vs_before']:.2f}x the path before on the same {result['sizes'][0]:,} traces" \
        if v["rate_vs_before"] else "the path before could not be run (no git history)"

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines += ["", f"Bars (issue 24): wall time per trace within 15% of the smallest run's: {met(v['linear'])}; peak "
              f"RSS within 25% of the smallest run's and under 3 GiB (largest {v['max_peak_mib']:.0f} MiB): "
              f"{met(v['memory'])}; end to end at least 3x 140 traces/s: the slowest size {v['min_rate']:.0f} "
              f"traces/s = {v['rate_vs_140']:.2f}x 140 ({met(v['rate_vs_140'] >= 3)}), and {before}.",
              "", f"Wall time {result['wall_s'] / 60:.1f} min. Load average (1 min) {result['load_start']:.1f} at "
              f"start, {result['load_end']:.1f} at end, on {result['cpus']} CPUs."]
    return "\n".join(lines)


def section(result: dict) -> str:
    """Section 12 of docs/benchmarks.md."""
    rows = result["rows"]
    new = sorted((r for r in rows if r["path"] == "partitioned" and r["engine"] == "onnx-int8"),
                 key=lambda r: r["n"])
    torch_new = next((r for r in rows if r["path"] == "partitioned" and r["engine"] == "torch"), None)
    before = next((r for r in rows if r["path"] != "partitioned"), None)
    growth = (new[-1]["peak_rss_mib"] - new[0]["peak_rss_mib"]) * 1024 / (new[-1]["n"] - new[0]["n"])
    parts = []
    if before and torch_new:
        speed = torch_new["traces_per_s"] / before["traces_per_s"]
        peak = torch_new["peak_rss_mib"] / before["peak_rss_mib"]
        engine = new[0]["traces_per_s"] / torch_new["traces_per_s"]
        parts.append(f"On the same engine (torch) the partitioned path ran at {speed:.2f}x the path before, at "
                     f"{peak:.2f}x its peak RSS; the int8 engine then gives {engine:.2f}x on top.")
    parts.append(f"Peak RSS grows by about {growth:.1f} KiB a trace ({new[0]['n']:,} to {new[-1]['n']:,}): the "
                 "compact rows, their copies during selection, and the trace ids recorded as considered; the "
                 "models and sessions (about 1.5 GiB before the flow starts) are the rest.")
    return (f"## {SECTION}. Sampling at scale\n\nFrom `python -m bench --sampling-scale` ({result['when']}; also a "
            "step of `make bench`): the sampling flow's own stages (`flows.sample_traces.sample_window` in a flow "
            "run on a temporary Prefect server, load to publish) on BANKING77 texts made distinct with typos, "
            "over one day, each size in a fresh process, partitions of "
            f"{PARTITION_ROWS:,} traces (`source.partition_rows`), beside the path before partitioned sampling "
            f"(commit {result['legacy']}, its own flow body) on the same traces and config. The champion is MiniLM "
            "fine-tuned by the product's recipe on 15 rows of each of the 77 intents; bench/sampling_scale.py says "
            "what else is fixed.\n\n" + to_markdown(result) + "\n\n" + " ".join(parts)
            + ("\n\n" + _label_efficiency_markdown(result["label_efficiency"]) if result.get("label_efficiency")
               else ""))


def read(path: Path) -> dict:
    """A result written by `main` (JSON turned the sizes into text)."""
    result = json.loads(path.read_text())
    for key in ("per_trace_vs_smallest", "peak_vs_smallest"):
        result["verdict"][key] = {int(n): x for n, x in result["verdict"][key].items()}
    return result


def main(argv: list[str]) -> int:
    from bench import report

    quick = "--quick" in argv
    out = REPO / "docs" / "bench" / f"sampling-scale{'-quick' if quick else ''}.json"
    only_check = "--label-efficiency" in argv
    result = read(out) | {"label_efficiency": label_efficiency(quick)} if only_check else run(quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if not quick:
        report.replace_section(REPO / "docs" / "benchmarks.md", SECTION, section(result))
    print(section(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
