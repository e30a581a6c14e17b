"""Configuration: one YAML file says everything that varies between runs of the loop.

`load_config(path)` returns a validated `Config`; every other module takes values from it (label set,
cohort columns, ports, paths, thresholds) instead of keeping its own copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG = Path("configs/demo.yaml")
CONFIG_ENV = "HITL_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StackConfig(_Strict):
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    start_timeout_s: float = 120.0


class SourceConfig(_Strict):
    """Where production traces come from: the synthetic world or a directory of JSONL/Parquet files."""

    kind: Literal["synthetic", "files"] = "synthetic"
    path: str | None = None  # files: a directory or a file; synthetic: defaults to <state>/world/traces
    column_map: dict[str, str] = Field(default_factory=dict)  # their column -> our column
    launch_path: str | None = None  # CSV/Parquet with text,label (+cohorts) for bootstrap; None = synthetic


class WorldConfig(_Strict):
    """The seeded synthetic customer-support world used by the demo and the tests."""

    seed: int = 7
    launch_per_intent: int = 40
    production_size: int = 2000
    drift_channel: str = "voice"
    drift_share: float = Field(0.3, ge=0.0, le=1.0)
    invalid_share: float = Field(0.01, ge=0.0, le=0.5)
    escalation_if_wrong: float = Field(0.7, ge=0.0, le=1.0)
    escalation_if_right: float = Field(0.05, ge=0.0, le=1.0)


class ModelConfig(_Strict):
    base_path: str | None = None  # a local Hugging Face model folder; None = the packaged MiniLM
    registered_name: str = "hitl-intent"
    max_length: int = 64
    score_batch_size: int = 64


class EvaluatorConfig(_Strict):
    low_confidence_threshold: float = Field(0.6, ge=0.0, le=1.0)
    task_completion_threshold: float = Field(0.5, ge=0.0, le=1.0)


class SelectionConfig(_Strict):
    budget: int = Field(300, ge=1)
    random_share: float = Field(0.1, ge=0.0, le=1.0)
    stratify_by: str | None = "channel"
    min_per_cohort: int = Field(10, ge=0)
    seed: int = 0


class ReviewConfig(_Strict):
    store_url: str | None = None  # SQLAlchemy URL; None = SQLite in the state dir
    batch_size: int = Field(25, ge=1, le=200)
    overlap_share: float = Field(0.15, ge=0.0, le=1.0)
    poll_interval_s: float = Field(2.0, gt=0)
    timeout_s: int = Field(3600, ge=1)
    lease_grace_s: int = Field(300, ge=0)  # a batch open longer than timeout_s + this has expired
    max_rationale_chars: int = 2000


class DatasetConfig(_Strict):
    name: str = "support-hitl"
    holdout_share: float = Field(0.3, gt=0.0, lt=1.0)
    min_rows: int = Field(20, ge=1)


class TrainingConfig(_Strict):
    epochs: float = 4
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    seed: int = 42
    replay_launch: bool = True  # mix the launch data into every fine-tune to avoid forgetting
    max_steps: int = -1  # >0 caps training (tests)


class GateConfig(_Strict):
    max_overall_increase: float = 0.0  # fail-rate points the challenger may add overall
    min_cohort_size: int = 5


class SimulationConfig(_Strict):
    reviewers: list[str] = Field(default_factory=lambda: ["alice", "bob"])
    noise: float = Field(0.05, ge=0.0, le=1.0)
    approver: str = "manager-sim"
    seed: int = 11

    @field_validator("reviewers")
    @classmethod
    def _two_or_more(cls, v: list[str]) -> list[str]:
        if len(set(v)) < 2:
            raise ValueError("simulation.reviewers needs at least two distinct names")
        return v


class Config(_Strict):
    project: str = "hitl-demo"
    state_dir: str = ".hitl"
    labels: list[str]
    cohorts: list[str] = Field(default_factory=lambda: ["channel", "locale", "tier"])
    stack: StackConfig = Field(default_factory=StackConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluators: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError("labels needs at least two labels")
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"labels has duplicates: {dupes}")
        return v

    @model_validator(mode="after")
    def _stratify_is_cohort(self) -> Config:
        s = self.selection.stratify_by
        if s is not None and s not in self.cohorts:
            raise ValueError(f"selection.stratify_by={s!r} is not one of cohorts {self.cohorts}")
        return self

    # ---- derived locations: one place names every path and URL ----
    @property
    def state(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.stack.host}:{self.stack.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.stack.host}:{self.stack.prefect_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.stack.host}:{self.stack.mlflow_port}"

    @property
    def store_url(self) -> str:
        return self.review.store_url or f"sqlite:///{self.state / 'review.db'}"

    @property
    def world_dir(self) -> Path:
        return self.state / "world"

    @property
    def traces_path(self) -> Path:
        if self.source.path:
            return Path(self.source.path).expanduser().resolve()
        return self.world_dir / "traces"

    @property
    def quarantine_dir(self) -> Path:
        return self.state / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.state / "reports"

    @property
    def work_dir(self) -> Path:
        return self.state / "work"

    @property
    def dataset_experiment(self) -> str:
        return f"{self.project}-datasets"

    @property
    def training_experiment(self) -> str:
        return f"{self.project}-training"

    @property
    def eval_experiment(self) -> str:
        return f"{self.project}-regression-eval"

    @property
    def sampling_experiment(self) -> str:
        return f"{self.project}-sampling"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a YAML config; `path` defaults to $HITL_CONFIG, then configs/demo.yaml."""
    p = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    if not p.exists():
        raise FileNotFoundError(f"Config file {p} not found. Pass --config PATH or set {CONFIG_ENV}.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"Config file {p} must hold a mapping at the top level")
    return Config.model_validate(raw)


def apply_environment(cfg: Config) -> None:
    """Point Prefect and MLflow clients of this process at the configured stack.

    Call before the first Prefect/MLflow client is created: both read these variables.
    """
    os.environ["PREFECT_API_URL"] = cfg.prefect_api_url
    os.environ["PREFECT_UI_API_URL"] = cfg.prefect_api_url
    os.environ["PREFECT_UI_URL"] = cfg.prefect_ui_url
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ["MLFLOW_TRACKING_URI"] = cfg.mlflow_uri
    os.environ["MLFLOW_REGISTRY_URI"] = cfg.mlflow_uri
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
