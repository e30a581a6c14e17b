"""Dataset versions in MLflow: resolved human labels become immutable, digest-checked, numbered versions.

A version is an MLflow run in the `<project>-datasets` experiment carrying the parquet artifact, an
`mlflow.data` dataset logged with `log_input`, and `hitl.dataset.*` tags. The tag
`hitl.dataset.status=complete` is written last: a run without it (a crash mid-registration) is not a
version, so a crash never leaves half a dataset version. The next registration marks such a run
`abandoned` (and KILLED in MLflow) before it writes the version again. One registration at a time: the
`register-dataset` flow.

A version whose rows hold text erased since (a deletion request, `dataset.retention_days`) is *pruned*: its parquet
is deleted and the run tagged `hitl.dataset.pruned`; its number, digest and tags stay, so lineage still names it,
but it can no longer be loaded (`prune`, called by `hitl.audit.evidence.prune_erased`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hitl import faults
from hitl.config import Config
from hitl.datasets.splits import assign_splits
from hitl.hashing import file_sha256, text_group
from hitl.schemas import dataset_schema, validate_split

TAG = "hitl.dataset."
# On a model version, its training run and an eval run: the dataset version used, as its ref "<name>@<version>"
DATASET_TAG = "hitl.dataset"
COMPLETE, WRITING, ABANDONED = "complete", "writing", "abandoned"
PRUNED = TAG + "pruned"  # when the version's parquet was deleted (UTC ISO time); PRUNED + "_reason": why
ARTIFACT_DIR = "dataset"
ARTIFACT_FILE = "records.parquet"


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    run_id: str
    sha256: str
    rows: int
    parent: int | None
    pruned: str | None = None  # when its parquet was deleted (it held erased text); None: it can be loaded

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def ref_version(ref: str) -> int | None:
    """The version number of a ref `<name>@<version>` (the `hitl.dataset` tag's value); None when it has none."""
    return int(ref.rsplit("@", 1)[1]) if "@" in ref else None


RECORD_COLUMNS = ["trace_id", "text", "label", "split", "selection_reason", "text_group", "inclusion_prob", "window",
                  "stratum", "reviewers", "annotation_ids", "source"]


def build_records(resolved: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resolved review items -> (valid DatasetRecord rows with their split, quarantined rows with reasons)."""
    if resolved.empty:
        cols = [*RECORD_COLUMNS, *cfg.cohorts]
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=cols)
    df = pd.DataFrame({
        "trace_id": resolved["trace_id"].astype(str),
        "text": resolved["input"],
        "label": resolved["label"],
        "selection_reason": resolved["selection_reason"].astype(str),
        "text_group": resolved["input"].map(text_group),
        "inclusion_prob": pd.to_numeric(resolved["inclusion_prob"], errors="coerce").astype(float),
        "window": resolved["window"], "stratum": resolved["stratum"],
        "reviewers": resolved["reviewers"].astype(str),
        "annotation_ids": resolved["annotation_ids"].astype(str),
        "source": "human_review",
        **{c: resolved[c].astype(str) for c in cfg.cohorts},
    })
    for c in ("window", "stratum"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df["split"] = assign_splits(df, cfg.dataset.hard_case_share)
    df = df[[*RECORD_COLUMNS, *cfg.cohorts]].sort_values("trace_id").reset_index(drop=True)
    return validate_split(df, dataset_schema(cfg))


def _from_run(run) -> DatasetVersion:
    t = run.data.tags
    parent = t.get(TAG + "parent")
    return DatasetVersion(t[TAG + "name"], int(t[TAG + "version"]), run.info.run_id, t[TAG + "sha256"],
                          int(t[TAG + "rows"]), int(parent) if parent not in (None, "", "none") else None,
                          t.get(PRUNED))


def by_run(run_id: str) -> DatasetVersion:
    """The version an MLflow run registered."""
    import mlflow

    return _from_run(mlflow.MlflowClient().get_run(run_id))


def _artifact_source(run_id: str) -> str:
    """A resolvable URI of a version's parquet: artifacts served by the tracking server become HTTP URLs."""
    import mlflow

    uri = f"{mlflow.MlflowClient().get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}/{ARTIFACT_FILE}"
    prefix = "mlflow-artifacts:/"
    if uri.startswith(prefix):
        base = mlflow.get_tracking_uri().rstrip("/")
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{uri[len(prefix):].lstrip('/')}"
    return uri


def as_mlflow_dataset(records: pd.DataFrame, ref: str, run_id: str):
    """`mlflow.data` view of a version (digest, schema, profile) pointing at its registered parquet."""
    import mlflow

    return mlflow.data.from_pandas(records, source=_artifact_source(run_id), name=ref, targets="label")


def list_versions(cfg: Config) -> list[DatasetVersion]:
    """Complete versions of the configured dataset, oldest first."""
    import mlflow

    exp = mlflow.get_experiment_by_name(cfg.dataset_experiment)
    if exp is None:
        return []
    runs = mlflow.MlflowClient().search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG}name` = '{cfg.dataset.name}' and tags.`{TAG}status` = '{COMPLETE}'",
        max_results=10_000,
    )
    return sorted((_from_run(r) for r in runs), key=lambda v: v.version)


def abandon_partial(cfg: Config) -> list[str]:
    """Mark registrations a crash left half-written (`status=writing`) as abandoned; returns their run ids."""
    import mlflow

    exp = mlflow.get_experiment_by_name(cfg.dataset_experiment)
    if exp is None:
        return []
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG}name` = '{cfg.dataset.name}' and tags.`{TAG}status` = '{WRITING}'",
        max_results=1_000,
    )
    for r in runs:
        client.set_tag(r.info.run_id, TAG + "status", ABANDONED)
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "KILLED")
    return [r.info.run_id for r in runs]


def register(records: pd.DataFrame, cfg: Config, extra_tags: dict[str, str] | None = None
             ) -> tuple[DatasetVersion, bool]:
    """Register `records` as the next version; returns (version, created).

    Identical content to the latest version creates nothing and returns the latest (created=False).
    """
    import mlflow

    if len(records) < cfg.dataset.min_rows:
        raise ValueError(
            f"Only {len(records)} labelled rows; dataset.min_rows is {cfg.dataset.min_rows}. "
            "Review more items before registering a version."
        )
    abandon_partial(cfg)
    versions = list_versions(cfg)
    latest = versions[-1] if versions else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ARTIFACT_FILE
        records.to_parquet(path, index=False)
        digest = file_sha256(path)
        if latest and latest.sha256 == digest:
            return latest, False
        version = (latest.version + 1) if latest else 1
        split_counts = records["split"].value_counts().to_dict()
        tags = {
            TAG + "name": cfg.dataset.name, TAG + "version": str(version),
            TAG + "parent": str(latest.version) if latest else "none", TAG + "sha256": digest,
            TAG + "rows": str(len(records)), TAG + "train_rows": str(split_counts.get("train", 0)),
            TAG + "hard_case_rows": str(split_counts.get("hard_case", 0)),
            TAG + "regression_rows": str(split_counts.get("regression", 0)),
            TAG + "reviewers": ",".join(sorted({r for rs in records["reviewers"] for r in rs.split(",")})),
            TAG + "status": WRITING, **(extra_tags or {}),
        }
        mlflow.set_experiment(cfg.dataset_experiment)
        with mlflow.start_run(run_name=f"{cfg.dataset.name}-v{version}", tags=tags) as run:
            mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
            faults.checkpoint("dataset:after-artifact")
            mlflow.log_input(as_mlflow_dataset(records, f"{cfg.dataset.name}@{version}", run.info.run_id),
                             context="dataset")
            mlflow.log_dict(records["label"].value_counts().sort_index().to_dict(), "label_distribution.json")
            mlflow.log_metrics({"rows": len(records), **{f"rows_{k}": v for k, v in split_counts.items()}})
            mlflow.set_tag(TAG + "status", COMPLETE)  # last: only now is this a version
        return DatasetVersion(cfg.dataset.name, version, run.info.run_id, digest, len(records),
                              latest.version if latest else None), True


def lineage(dv: DatasetVersion) -> dict[str, str]:
    """What a reader of a report needs to know about a version: size, split, reviewers, agreement."""
    import mlflow

    t = mlflow.MlflowClient().get_run(dv.run_id).data.tags
    kappa = t.get(TAG + "kappa", "nan")
    return {
        "dataset": f"{dv.ref} (parent {dv.parent or 'none'}, sha256 {dv.sha256[:12]}, run {dv.run_id[:12]})",
        "rows": f"{dv.rows} ({t.get(TAG + 'train_rows', '?')} train, {t.get(TAG + 'hard_case_rows', '?')} hard-case "
                f"hold-out, {t.get(TAG + 'regression_rows', '?')} regression set)",
        "reviewers": t.get(TAG + "reviewers", "?"),
        "agreement": f"Cohen's kappa {kappa} on {t.get(TAG + 'kappa_pairs', '0')} double-labelled items; "
                     f"{t.get(TAG + 'disputed', '0')} disputed items held back",
    }


def resolve(cfg: Config, version: int | None = None) -> DatasetVersion:
    versions = list_versions(cfg)
    if not versions:
        raise LookupError(f"Dataset {cfg.dataset.name!r} has no versions yet: run register-dataset first.")
    if version is None:
        return versions[-1]
    for v in versions:
        if v.version == version:
            return v
    raise LookupError(f"{cfg.dataset.name}@{version} does not exist; versions: {[v.version for v in versions]}")


def _download(dv: DatasetVersion, into: str) -> Path:
    """The version's parquet, downloaded into the folder `into`."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=dv.run_id, artifact_path=f"{ARTIFACT_DIR}/{ARTIFACT_FILE}",
                                                    dst_path=into))


def load(cfg: Config, version: int | None = None) -> tuple[pd.DataFrame, DatasetVersion]:
    """Download a version's parquet, verify its sha256 against the registered tag, and return it."""
    import mlflow

    dv = resolve(cfg, version)
    if dv.pruned:
        reason = mlflow.MlflowClient().get_run(dv.run_id).data.tags.get(PRUNED + "_reason", "")
        raise LookupError(f"{dv.ref} was pruned on {dv.pruned[:10]} ({reason}): its rows held review text erased "
                          f"since, so its file is gone (its digest sha256 {dv.sha256[:12]} stays recorded). Register "
                          "a new version (`hitl register-dataset`); it leaves the erased items out.")
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(dv, tmp)
        actual = file_sha256(local)
        if actual != dv.sha256:
            raise ValueError(
                f"{dv.ref} failed its digest check: artifact sha256 {actual[:12]} != registered "
                f"{dv.sha256[:12]}. The stored file was changed after registration; do not train on it."
            )
        df = pd.read_parquet(local)
    return df, dv


def trace_ids(cfg: Config, dv: DatasetVersion) -> set[str]:
    """The trace ids of a version's rows (downloaded and digest-checked, as `load`)."""
    return set(load(cfg, dv.version)[0]["trace_id"].astype(str))


def stored_trace_ids(dv: DatasetVersion) -> set[str] | None:
    """The trace ids in a version's file as it is stored now, without the digest check; None where it cannot be
    read. For erasure only: a file changed since registration may still hold erased text."""
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(dv, tmp)
        try:
            return set(pd.read_parquet(local, columns=["trace_id"])["trace_id"].astype(str))
        except (ValueError, OSError, KeyError):  # not a parquet file, or no trace_id column
            return None


def prune(dv: DatasetVersion, reason: str) -> None:
    """Delete a version's parquet and tag its run pruned (when, why). The tag first: a crash in between leaves a
    version that no longer loads and says why, and pruning it again finishes the deletion."""
    from datetime import UTC, datetime

    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = mlflow.MlflowClient()
    if not dv.pruned:
        client.set_tag(dv.run_id, PRUNED + "_reason", reason)
        client.set_tag(dv.run_id, PRUNED, datetime.now(UTC).isoformat(timespec="seconds"))
    if artifact_present(dv):
        get_artifact_repository(client.get_run(dv.run_id).info.artifact_uri).delete_artifacts(ARTIFACT_DIR)


def artifact_present(dv: DatasetVersion) -> bool:
    """Whether the version's parquet is still stored."""
    import mlflow

    return any(f.path.endswith(ARTIFACT_FILE) for f in mlflow.MlflowClient().list_artifacts(dv.run_id, ARTIFACT_DIR))
