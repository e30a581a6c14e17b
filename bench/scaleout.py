"""Scale-out benchmark: scoring throughput of `tasks.scoring.score_texts` (the path of the sampling flow and the
regression eval) on each task runner, on BANKING77 test texts with the packaged MiniLM, against a temporary
local Prefect server. Each run starts its runner (and, for Dask, a local cluster) as a flow run does.

`python -m bench.scaleout [--quick]` prints a markdown table and writes docs/bench/scaleout[-quick].json;
`run()` returns the figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.speed import _activate, _config, _data, _quiet

RUNNERS = {
    "threads, 1 worker": {"kind": "threads", "workers": 1},
    "threads, 2 workers": {"kind": "threads", "workers": 2},
    "local Dask, 1 worker process": {"kind": "dask", "workers": 1},
    "local Dask, 2 worker processes": {"kind": "dask", "workers": 2},
}
SIZES = {True: (400, 100), False: (2000, 500)}  # (rows, partition_rows)


def run(quick: bool = False) -> dict:
    """Rows/s of one partitioned scoring call per runner, its fixed cost (the same call on two one-text
    partitions: runner start, model shipped, task overhead), and whether it matched in-place scoring."""
    import numpy as np
    from prefect.testing.utilities import prefect_test_harness

    from hitl.config import RunnerConfig
    from hitl.learning import modeling
    from tasks.scoring import score_texts

    _quiet()
    rows, partition_rows = SIZES[quick]
    texts = _data().test["text"].tolist()[:rows]
    cfg = _config()
    model = modeling.load_base(cfg)
    _activate(model)
    modeling.score(model, texts[:8])
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    ref = modeling.score(model, texts, cfg.model.score_batch_size, cfg.model.max_length)
    out = [{"runner": "in place (no runner)", "partitions": 1, "wall_s": time.perf_counter() - t, "fixed_s": 0.0,
            "same": True}]
    with prefect_test_harness(server_startup_timeout=300):
        for name, runner in RUNNERS.items():
            t = time.perf_counter()
            score_texts(model, texts[:2], cfg.model_copy(update={"runner": RunnerConfig(**runner, partition_rows=1)}))
            fixed = time.perf_counter() - t
            t = time.perf_counter()
            s = score_texts(model, texts, cfg.model_copy(update={
                "runner": RunnerConfig(**runner, partition_rows=partition_rows)}))
            out.append({"runner": name, "partitions": -(-rows // partition_rows), "wall_s": time.perf_counter() - t,
                        "fixed_s": fixed, "same": s.prediction == ref.prediction
                        and bool(np.allclose(s.probs, ref.probs, rtol=0, atol=1e-5))})
    t = time.perf_counter()
    modeling.score(model, texts, cfg.model.score_batch_size, cfg.model.max_length)
    out[0]["wall_s"] = min(out[0]["wall_s"], time.perf_counter() - t)
    for r in out:
        r["rows_per_s"] = rows / r["wall_s"]
        r["rows_per_s_after_fixed"] = rows / max(r["wall_s"] - r["fixed_s"], 1e-9)
    return {"rows": rows, "partition_rows": partition_rows, "results": out, "cpus": os.cpu_count(),
            "load_avg_1min": {"start": load_start, "end": os.getloadavg()[0]}, "quick": quick}


def to_markdown(result: dict) -> str:
    lines = [f"### Scoring {result['rows']} BANKING77 test texts in partitions of {result['partition_rows']} "
             "(`tasks.scoring.score_texts`)", "",
             "| runner | partitions | wall s | rows/s | fixed cost s | rows/s after the fixed cost | same labels, "
             "probabilities within 1e-5 |", "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['runner']} | {r['partitions']} | {r['wall_s']:.1f} | {r['rows_per_s']:.0f} | {r['fixed_s']:.1f} "
              f"| {r['rows_per_s_after_fixed']:.0f} | {'yes' if r['same'] else 'NO'} |" for r in result["results"]]
    load = result["load_avg_1min"]
    lines += ["", f"{result['cpus']} CPUs; load average (1 min) {load['start']:.1f} at start, {load['end']:.1f} at "
              "end. In place: the faster of a run before and a run after the others. Fixed cost: the same call on "
              "two one-text partitions (runner or cluster start, the model sent to each worker, task overhead)."]
    return "\n".join(lines)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = run(quick=quick)
    art = Path(__file__).resolve().parents[1] / "docs" / "bench"
    art.mkdir(parents=True, exist_ok=True)
    (art / f"scaleout{'-quick' if quick else ''}.json").write_text(json.dumps(result, indent=2))
    print(to_markdown(result))
