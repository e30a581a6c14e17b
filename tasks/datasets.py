"""Tasks of the dataset stage: resolved labels -> validated records -> an MLflow dataset version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hitl.audit import evidence
from hitl.config import Config
from hitl.datasets import splits, versions
from hitl.evaluation import regression
from hitl.quarantine import write_quarantine
from hitl.review.store import ReviewStore
from hitl.schemas import annotation_schema, validate_split


@task(name="apply-retention", cache_policy=NO_CACHE)
def apply_retention(cfg: Config, store: ReviewStore) -> int:
    """With `dataset.retention_days`: erase the text of review items whose trace was written longer ago
    (`ReviewStore.erase`), so no version registered from now on carries it, and prune the versions registered
    before that hold it (both recorded in the audit chain). Returns how many items were erased."""
    days = cfg.dataset.retention_days
    if days is None:
        return 0
    log, reason = evidence.open_log(cfg, store), f"past dataset.retention_days ({days})"
    done, _ = evidence.erase(log, store, evidence.SYSTEM_ACTOR, reason,
                             older_than=datetime.now(UTC) - timedelta(days=days))
    pruned, entry = evidence.prune_erased(log, cfg, store.erased_trace_ids(), evidence.SYSTEM_ACTOR, reason)
    logger = get_run_logger()
    for v in entry.ref["versions"] if entry else []:
        if "problem" in v:
            logger.warning("Retention: dataset version v%d: %s (the prune entry records it)", v["version"],
                           v["problem"])
    logger.info("Retention: %d review items older than %d days erased (text blanked, out of every later "
                          "dataset version); %d earlier dataset versions holding erased text pruned%s",
                          len(done.erased), days, len(pruned),
                          f" ({', '.join(dv.ref for dv in pruned)})" if pruned else "")
    return len(done.erased)


@task(name="collect-resolved-labels", cache_policy=NO_CACHE)
def collect(cfg: Config, store: ReviewStore) -> tuple[pd.DataFrame, dict]:
    """Resolved items as DatasetRecords (invalid ones quarantined), plus agreement on double-labelled items."""
    all_annotations = store.annotations()
    annotations, bad_ann = validate_split(all_annotations, annotation_schema(cfg))
    write_quarantine(bad_ann, cfg, "annotations")
    records, bad = versions.build_records(store.resolved(all_annotations), cfg)
    records = records[~records["trace_id"].isin(bad_ann["trace_id"])]  # a bad annotation taints its row
    write_quarantine(bad, cfg, "dataset-records")
    stats = {**store.counts(), **regression.agreement(annotations), "records": len(records),
             "quarantined": len(bad) + len(bad_ann)}
    get_run_logger().info("Labels: %d resolved records, %d quarantined, %d disputed, kappa %.3f on %d pairs",
                          len(records), len(bad), stats["disputed"], stats["kappa"], stats["pairs"])
    return records, stats


@task(name="register-dataset-version", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def register(records: pd.DataFrame, cfg: Config, store: ReviewStore, stats: dict
             ) -> tuple[versions.DatasetVersion, bool]:
    """Register the next version (or find that nothing changed); returns (version, created)."""
    tags = {versions.TAG + "kappa": f"{stats['kappa']:.4f}", versions.TAG + "kappa_pairs": str(stats["pairs"]),
            versions.TAG + "disputed": str(stats["disputed"])}
    dv, created = versions.register(records, cfg, tags)
    evidence.record_dataset(evidence.open_log(cfg, store), dv)
    log = get_run_logger()
    if created:
        log.info("Registered %s: %d rows (parent %s), run %s", dv.ref, dv.rows, dv.parent, dv.run_id)
    else:
        log.info("Content unchanged since %s: no new version", dv.ref)
    create_markdown_artifact(
        key="dataset-version",
        markdown=f"## Dataset {dv.ref}\n\nrows {dv.rows}, parent {dv.parent}, sha256 `{dv.sha256[:16]}`, "
                 f"kappa {stats['kappa']:.3f} on {stats['pairs']} double-labelled items\n\n"
                 + "\n".join(splits.describe_by_label(records)),
    )
    return dv, created
