"""Scoring a large window in partitions on the configured task runner (`runner.*`: threads, or Dask workers),
each partition a `score-partition` task, joined back in the order of the texts."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger

from hitl.config import Config
from hitl.learning import modeling
from hitl.ops import runners


# No CPU tag here: the task that fans out holds the CPU slot already, and a partition waiting for it would wait
# forever. Nothing is persisted: the caller's result is, and a partition is cheap to score again.
@task(name="score-partition", cache_policy=NO_CACHE, persist_result=False)
def score_partition(model: modeling.IntentModel, texts: list[str], batch_size: int, max_length: int
                    ) -> modeling.Scores:
    return modeling.score(model, texts, batch_size, max_length)


def score_texts(model: modeling.IntentModel, texts: list[str], cfg: Config) -> modeling.Scores:
    """`modeling.score` of `texts`: in place when they fit one partition of `runner.partition_rows`, else one
    task a partition on the configured runner (started for this call, the model sent to each worker once)."""
    parts = runners.partitions(len(texts), cfg.runner.partition_rows)
    if len(parts) == 1:
        return modeling.score(model, texts, cfg.model.score_batch_size, cfg.model.max_length)
    rc = cfg.runner
    where = f"threads ({rc.workers})" if rc.kind == "threads" else rc.dask_address or f"local Dask ({rc.workers})"
    _logger().info("Scoring %d texts in %d partitions on %s", len(texts), len(parts), where)
    with runners.task_runner(rc) as runner, _without_parent_parameters():
        shared = runners.share(runner, model)
        futures = [runner.submit(score_partition, parameters={
            "model": shared, "texts": texts[p], "batch_size": cfg.model.score_batch_size,
            "max_length": cfg.model.max_length}) for p in parts]
        return modeling.concat_scores([f.result() for f in futures])


def _without_parent_parameters() -> AbstractContextManager:
    """Dask ships the submitting task's run context with every partition, its parameters (the model, the window)
    included; keep the link to the parent task run and leave its parameters home."""
    ctx = TaskRunContext.get()
    return ctx.model_copy(update={"parameters": {}}) if ctx else nullcontext()


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow or task run: benchmarks
        return get_logger("hitl.scoring")
