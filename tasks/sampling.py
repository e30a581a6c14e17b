"""Tasks of the sampling stage: load and validate traces, score, evaluate, select, enqueue."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from hitl import faults, markdown
from hitl.config import Config
from hitl.learning import modeling
from hitl.learning.embeddings import FrozenEncoder
from hitl.ops.deploy import CPU_TAG
from hitl.quarantine import write_quarantine
from hitl.review.store import ReviewStore
from hitl.sampling import selection, stream, watermarks
from hitl.sampling.sources import LoadResult
from hitl.schemas import review_item_schema, validate_split
from hitl.vocabulary import RANDOM
from tasks.scoring import score_texts


def run_window_key() -> str:
    """The random-draw window of a run when `selection.window` is "run": the flow run's start (UTC)."""
    from prefect.context import get_run_context

    run = get_run_context().flow_run
    return "run-" + (run.start_time or run.expected_start_time).strftime("%Y-%m-%dT%H:%M:%S")


def spill_folder(cfg: Config) -> Path:
    """Where this flow run keeps its window's partitions (hitl/sampling/stream.py)."""
    from prefect.context import get_run_context

    return cfg.state / "sampling-runs" / str(get_run_context().flow_run.id)


@task(name="load-traces", cache_policy=NO_CACHE)
def load(cfg: Config, store: ReviewStore, since: datetime | None, until: datetime | None,
         spill: stream.Spill) -> LoadResult:
    """The window's new traces, into `spill` a partition at a time: files unchanged and read for it before are
    skipped, and traces considered or rows quarantined by earlier runs are not counted again
    (hitl/sampling/watermarks.py)."""
    result = watermarks.load_new(cfg, store, since, until, sink=spill.add)
    qpath = write_quarantine(result.quarantined, cfg, "traces")
    log = get_run_logger()
    log.info("Traces: %(rows_in)d new rows in = %(accepted)d accepted + %(quarantined)d quarantined", result.summary)
    log.info("Files: %d read, %d skipped (unchanged and read for this window before); %d rows read again were "
             "counted before", len(result.files), len(result.skipped), result.seen_before)
    if spill.parts > 1:
        log.info("Sampling %d new traces in %d partitions of up to %d (source.partition_rows)", spill.rows,
                 spill.parts, cfg.source.partition_rows)
    if qpath:
        log.warning("Quarantined %d rows with reasons in %s", len(result.quarantined), qpath)
    for line in watermarks.mlflow_report(cfg, result):
        (log.warning if line.startswith("Capped") else log.info)(line)
    return result


def score_frame(model: modeling.IntentModel, traces: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Re-score with the champion, with its top labels (`review.suggestions`) for the reviewer's form; keep what
    production said (if it logged it) in production_* columns."""
    s = score_texts(model, traces["input"].tolist(), cfg)  # in partitions on the runner when large
    out = traces.rename(columns={"prediction": "production_prediction", "confidence": "production_confidence"})
    out["prediction"], out["confidence"] = s.prediction, s.confidence.astype(float)
    out["margin"], out["entropy"] = s.margin.astype(float), s.entropy.astype(float)
    out["suggestions"] = modeling.top_labels(s.probs, model.labels, cfg.review.suggestions)  # shown on the form
    out["model_version"] = model.version
    return out


@task(name="score-traces", tags=[CPU_TAG], cache_policy=NO_CACHE)
def score(model: modeling.IntentModel, spill: stream.Spill, cfg: Config) -> None:
    """`score_frame` of every partition of the window."""
    def one(traces: pd.DataFrame) -> pd.DataFrame:
        out = score_frame(model, traces, cfg)
        out["suggestions"] = stream.suggestions_text(out["suggestions"])
        return out

    stream.score_partitions(spill, one)


@task(name="evaluate-traces", tags=[CPU_TAG], cache_policy=NO_CACHE)
def evaluate(spill: stream.Spill, cfg: Config) -> stream.Evaluated:
    return stream.evaluate_partitions(spill, cfg, summary_cohort(cfg))


def summary_cohort(cfg: Config) -> str | None:
    """The column the run's summary breaks counts and fail rates down by: the first stratum, else cohort."""
    return cfg.selection.strata[0] if cfg.selection.strata else (cfg.cohorts[0] if cfg.cohorts else None)


@task(name="reference-rows", tags=[CPU_TAG], cache_policy=NO_CACHE)
def reference_rows(cfg: Config, store: ReviewStore, launch: pd.DataFrame) -> pd.DataFrame:
    """What the model was trained on, as (text, label): the launch data and the labelled policy picks."""
    resolved = store.resolved()
    if len(resolved):
        resolved = resolved[resolved["selection_reason"] != RANDOM]
    labelled = pd.DataFrame({"text": resolved.get("input", pd.Series(dtype=str)),
                             "label": resolved.get("label", pd.Series(dtype=str))})
    return pd.concat([launch[["text", "label"]], labelled], ignore_index=True)


@task(name="select-and-enqueue", tags=[CPU_TAG], cache_policy=NO_CACHE)
def select_and_enqueue(evaluated: pd.DataFrame, reference: pd.DataFrame, cfg: Config, store: ReviewStore,
                       run_key: str, spill: stream.Spill) -> tuple[selection.Selection, int]:
    """The representative draw of each window, then the policy's picks; both enqueued atomically with the
    draw's records and every trace considered. `evaluated` is the window's compact rows; their frozen vectors
    are computed (or read from the cache) a partition at a time into `spill`."""
    encoder = FrozenEncoder(modeling.base_model_path(cfg), cfg.state / "cache", max_length=cfg.model.max_length,
                            engine=cfg.model.engine)
    frozen = stream.embed_partitions(spill, encoder.encode)
    ref_vectors = encoder.encode(reference["text"].tolist())
    plan = selection.draw_and_select(evaluated, frozen, ref_vectors, reference["label"].to_numpy(), cfg, run_key,
                                     store.draw_rates, store.known_text_groups, hydrate=spill.hydrate)
    pool, drawn, chosen = plan.pool, plan.drawn, plan.chosen
    items, bad = validate_split(chosen.items, review_item_schema(cfg))
    write_quarantine(bad, cfg, "review-items")
    faults.checkpoint("sampling:before-enqueue")
    new = store.enqueue(items, cfg.cohorts, considered=evaluated["trace_id"], draws=drawn.records)
    faults.checkpoint("sampling:after-enqueue")
    log = get_run_logger()
    log.info("Random draw: %d traces over %d windows (%d late); policy: %d picks; %d new in the queue",
             len(drawn.items), pool["window"].nunique(), sum(1 for r in drawn.records if r["kind"] != "main"),
             int((items["selection_reason"] != RANDOM).sum()), new)
    log.info("Budget spent (annotations): %s", chosen.spend)
    return selection.Selection(items, chosen.spend), new


@task(name="publish-sampling-summary", cache_policy=NO_CACHE)
def publish(cfg: Config, store: ReviewStore, loaded: LoadResult, evaluated: stream.Evaluated,
            chosen: selection.Selection, new: int, spill: stream.Spill) -> dict:
    """Prefect artifacts (budget spend, selection counts, evaluator fail rates by cohort) and the same in MLflow.
    First the windows of the files the traces came from are marked as read: the traces are stored by now; last,
    the run's partitions are deleted."""
    import mlflow

    watermarks.commit(store, loaded.pending)
    selected = chosen.items
    col = summary_cohort(cfg)
    counts = selection.counts_by_reason(selected, col)
    create_table_artifact(key="selection-by-reason", table=counts.astype(str).to_dict("records"),
                          description="Traces selected for review: reason x cohort")
    md = ["## Sampling run", f"rows in {loaded.rows_in} = accepted {loaded.summary['accepted']} + "
          f"quarantined {len(loaded.quarantined)}", f"selected {len(selected)}, new in queue {new}",
          *watermarks.mlflow_report(cfg, loaded), "",
          "### Budget spent (annotations)", "",
          markdown.table(pd.DataFrame([chosen.spend]))]
    if col is not None and len(evaluated.fails):
        rates = stream.fail_rates(evaluated.fails, col)
        md += ["", f"### Evaluator fail rate by {col}",
               markdown.table(rates.reset_index(), pct_columns=tuple(rates.columns))]
    create_markdown_artifact(key="sampling-summary", markdown="\n".join(md))
    summary = {**loaded.summary, "selected": len(selected), "enqueued": new,
               "flagged": int(evaluated.traces["flagged"].sum()),
               "random": int((selected["selection_reason"] == RANDOM).sum()),
               "not_taken": loaded.not_taken}
    mlflow.set_experiment(cfg.sampling_experiment)
    with mlflow.start_run(run_name="sample-traces"):
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        mlflow.log_metrics({f"spend_{k}": float(v) for k, v in chosen.spend.items()})
        mlflow.log_text(counts.to_csv(index=False), "selection_counts.csv")
    spill.remove()
    return {**summary, "spend": chosen.spend}
