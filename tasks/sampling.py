"""Tasks of the sampling stage: load and validate traces, score, evaluate, select, enqueue."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from hitl import markdown
from hitl.config import Config
from hitl.learning import modeling
from hitl.review.store import ReviewStore
from hitl.sampling import evaluators, selection
from hitl.sampling.sources import LoadResult, load_traces, write_quarantine
from hitl.schemas import review_item_schema, validate_split


@task(name="load-traces", cache_policy=NO_CACHE)
def load(cfg: Config, since: datetime | None, until: datetime | None) -> LoadResult:
    result = load_traces(cfg, since=since, until=until)
    qpath = write_quarantine(result.quarantined, cfg, "traces")
    log = get_run_logger()
    log.info("Traces: %(rows_in)d rows in = %(accepted)d accepted + %(quarantined)d quarantined", result.summary)
    if qpath:
        log.warning("Quarantined %d rows with reasons in %s", len(result.quarantined), qpath)
    return result


@task(name="drop-considered", cache_policy=NO_CACHE)
def drop_considered(traces: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Traces no earlier sampling run has looked at (late arrivals in an old window included)."""
    fresh = traces[~traces["trace_id"].isin(ReviewStore(cfg.store_url).known_trace_ids())]
    get_run_logger().info("%d of %d valid traces are new to sampling", len(fresh), len(traces))
    return fresh.reset_index(drop=True)


@task(name="score-traces", cache_policy=NO_CACHE)
def score(model: modeling.IntentModel, traces: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Re-score with the champion; keep what production said in production_* columns."""
    s = modeling.score(model, traces["input"].tolist(), cfg.model.score_batch_size, cfg.model.max_length)
    out = traces.rename(columns={"prediction": "production_prediction", "confidence": "production_confidence"})
    out["prediction"], out["confidence"], out["margin"] = s.prediction, s.confidence.astype(float), s.margin
    out["model_version"] = model.version
    return out


@task(name="evaluate-traces", cache_policy=NO_CACHE)
def evaluate(scored: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    results = evaluators.run_evaluators(scored, cfg)
    summary = evaluators.summarize(scored, results)
    return results, scored.merge(summary, on="trace_id", how="left")


@task(name="select-and-enqueue", cache_policy=NO_CACHE)
def select_and_enqueue(evaluated: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, int]:
    store = ReviewStore(cfg.store_url)
    selected = selection.select_for_review(evaluated, cfg, exclude=store.known_trace_ids())
    selected, bad = validate_split(selected, review_item_schema(cfg))
    write_quarantine(bad, cfg, "review-items")
    new = store.enqueue(selected, cfg.cohorts, considered=evaluated["trace_id"])
    get_run_logger().info("Selected %d traces for review, %d new in the queue", len(selected), new)
    return selected, new


@task(name="publish-sampling-summary", cache_policy=NO_CACHE)
def publish(cfg: Config, loaded: LoadResult, results: pd.DataFrame, evaluated: pd.DataFrame,
            selected: pd.DataFrame, new: int) -> dict:
    """Prefect artifacts (selection counts, evaluator fail rates by cohort) and the same in MLflow."""
    import mlflow

    counts = selection.counts_by_reason(selected, cfg.selection.stratify_by)
    create_table_artifact(key="selection-by-reason", table=counts.astype(str).to_dict("records"),
                          description="Traces selected for review: reason x cohort")
    fails = results.merge(evaluated[["trace_id", *cfg.cohorts]], on="trace_id")
    col = cfg.selection.stratify_by or cfg.cohorts[0]
    rates = (1 - fails.groupby(["evaluator", col])["passed"].mean()).unstack(col).round(3)
    md = ["## Sampling run", f"rows in {loaded.rows_in} = accepted {len(loaded.accepted)} + "
          f"quarantined {len(loaded.quarantined)}", f"selected {len(selected)}, new in queue {new}", "",
          f"### Evaluator fail rate by {col}", markdown.table(rates.reset_index(), pct_columns=tuple(rates.columns))]
    create_markdown_artifact(key="sampling-summary", markdown="\n".join(md))
    summary = {**loaded.summary, "selected": len(selected), "enqueued": new,
               "flagged": int(evaluated["flagged"].sum())}
    mlflow.set_experiment(cfg.sampling_experiment)
    with mlflow.start_run(run_name="sample-traces"):
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        mlflow.log_text(rates.to_csv(), "evaluator_fail_rates.csv")
        mlflow.log_text(counts.to_csv(index=False), "selection_counts.csv")
    return summary
