"""Check a real run's report against the truth: `python -m bench.report_check -c CONFIG` after `make demo`.

Reads the latest regression eval of the configured stack (its production estimates and the two model versions
it compared), draws an independent random sample of the same traffic (every trace of the report's production
horizon outside the regression set: the policy's picks and the rows trained on are production traffic too, and
leaving them out would make the sample easier than production) with ground truth (`simulation.truth_path` or
the synthetic world's truth files), scores it with both registered models, and compares: |estimate -
independent| <= 1.96 * sqrt(se1^2 + se2^2), with se1 read off the report's own interval (its width over 2 z at
the report's level).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy.special import ndtri


def main(argv: list[str]) -> int:
    import mlflow

    from hitl.config import load_config
    from hitl.datasets import versions
    from hitl.environment import apply_environment
    from hitl.evaluation import horizon
    from hitl.learning import modeling, registry
    from hitl.sampling.sources import load_traces
    from hitl.sim.reviewers import load_truth

    path = argv[argv.index("-c") + 1] if "-c" in argv else "configs/demo.yaml"
    n = int(argv[argv.index("-n") + 1]) if "-n" in argv else 1500
    cfg = load_config(path)
    apply_environment(cfg)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    exp = mlflow.get_experiment_by_name(cfg.eval_experiment)
    runs = mlflow.MlflowClient().search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                             max_results=1) if exp else []
    if not runs:
        print(f"No regression eval in {cfg.eval_experiment}: run `make demo` (or `hitl cycle`) first.")
        return 1
    run = runs[0]
    m, tags = run.data.metrics, run.data.tags
    version = versions.ref_version(tags[versions.DATASET_TAG])
    if version is None:
        raise LookupError(f"eval run {run.info.run_id} has no dataset version in its {versions.DATASET_TAG} tag")
    records, _ = versions.load(cfg, version)
    truth = load_truth(cfg)
    traces = load_traces(cfg).accepted
    regression_ids = records.loc[records["split"] == "regression", "trace_id"]
    _, h = horizon.random_draw(records, cfg.evaluation.horizon_days)  # the traffic the report estimated
    pool = traces[~traces["trace_id"].isin(regression_ids) & traces["trace_id"].isin(truth)
                  & h.holds(traces["timestamp"])]
    sample = pool.sample(n=min(n, len(pool)), random_state=0)
    y = sample["trace_id"].map(truth).to_numpy()
    rows = []
    for who in ("champion", "challenger"):
        model = registry.load_registered(cfg.model.registered_name, tags[f"hitl.{who}_version"],
                                         engine=cfg.model.engine)  # the engine that served the report
        fail = float(np.mean(np.asarray(modeling.score(model, sample["input"].tolist()).prediction) != y))
        est, n_reg = m[f"{who}_fail_rate"], m["regression_n"]
        z = float(ndtri(1 - m.get("look_alpha", 0.05) / 2))  # the report's own interval, as a standard error
        se1 = (m[f"{who}_fail_rate_high"] - m[f"{who}_fail_rate_low"]) / (2 * z)
        se2 = np.sqrt(fail * (1 - fail) / len(sample))
        tol = 1.96 * np.sqrt(se1**2 + se2**2)
        rows.append({"model": f"{who} v{tags[f'hitl.{who}_version']}", "report_estimate": est,
                     "regression_n": int(n_reg), "independent_fail_rate": fail, "independent_n": len(sample),
                     "difference": est - fail, "tolerance": tol, "within": abs(est - fail) <= tol})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0 if table["within"].all() else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
