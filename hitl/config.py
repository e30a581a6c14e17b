"""Configuration: one YAML file says everything that varies between runs of the loop.

`load_config(path)` returns a validated `Config`; every other module takes values from it (label set,
cohort columns, ports, paths, thresholds) instead of keeping its own copy.

One module on purpose (over 450 lines): it is the schema of that one file, a model per section, the checks
that span sections on the root, and the paths and URLs derived from it; a reader checks a key in one place.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hitl.vocabulary import RANDOM, SELECTION_REASONS

DEFAULT_CONFIG = Path("configs/demo.yaml")
CONFIG_ENV = "HITL_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StackConfig(_Strict):
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    start_timeout_s: float = 120.0
    worker_port: int = 4280  # the worker's health endpoint (loopback)
    # PostgreSQL server for the Prefect server, the MLflow tracking server and the review store, e.g.
    # postgresql://hitl:SECRET@db.internal:5432 (databases <project>_prefect, _mlflow, _review are created by
    # `hitl up`). None: SQLite files in the state dir. review.store_url, when set, still names the store.
    database_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"stack.database_url must be a postgresql://user:password@host:port URL, got "
                             f"{v.split('://')[0]}://...")
        return v
    # Basic auth on both servers (docs/security.md); credentials from auth_file or $HITL_AUTH_USER/PASSWORD
    auth: bool = False
    auth_file: str | None = None  # one line `user:password`, mode 0600 (hitl/credentials.py)
    tls_proxy: bool = False  # a TLS-terminating reverse proxy fronts both servers (needed off loopback)

    @model_validator(mode="after")
    def _auth_file_needs_auth(self) -> StackConfig:
        if self.auth_file and not self.auth:
            raise ValueError("stack.auth_file is set but stack.auth is false: set stack.auth: true to use it")
        return self


class DeploymentsConfig(_Strict):
    """How `hitl up` deploys the flows of deployments/prefect.yaml and runs them on a worker."""

    pool: str = "process"  # the work pool `hitl up` creates (type process) and its worker pulls from
    pool_concurrency: int | None = Field(4, ge=1)  # flow runs at once; runs suspended for people hold no slot
    cpu_slots: int = Field(1, ge=1)  # torch-heavy tasks at once (scoring, training, evaluation), across runs
    open_reviews: int = Field(2, ge=1)  # review batches waiting for reviewers at once (the dispatch tops up)
    worker_poll_s: float = Field(2.0, gt=0)  # how often the worker asks for scheduled runs
    # a deployed run whose process died (kill -9, out of memory), or that failed because a server stopped answering,
    # is run again this many times, then left Crashed (or Failed); docs/operations.md
    crash_retries: int = Field(1, ge=0)
    timezone: str = "UTC"
    # deployment name -> cron; deployments without one run when triggered (the eval after each fine-tune)
    schedules: dict[str, str] = Field(default_factory=lambda: {
        "sample-traces": "0 2 * * *",  # daily, over the previous UTC day
        "review-dispatch": "0 * * * *",  # hourly: open review/adjudication batches for the queue
        "register-dataset": "0 4 * * 1",  # weekly
        "fine-tune": "0 3 1 1,4,7,10 *",  # quarterly; its completion starts the regression eval
    })
    # deployment name -> parameters that override deployments/prefect.yaml's (e.g. sample-traces' window: "all"
    # to take every trace not yet considered, whatever its timestamp, instead of the previous UTC day)
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)


class SourceConfig(_Strict):
    """Where production traces come from: the synthetic world, a directory of JSONL/Parquet files, or the traces
    an application logs to an MLflow experiment (hitl/sampling/mlflow_traces.py)."""

    kind: Literal["synthetic", "files", "mlflow"] = "synthetic"
    path: str | None = None  # files: a directory or a file; synthetic: defaults to <state>/world/traces
    column_map: dict[str, str] = Field(default_factory=dict)  # their column -> our column
    launch_path: str | None = None  # CSV/Parquet with text,label (+cohorts) for bootstrap; None = synthetic
    experiment: str | None = None  # mlflow: the experiment holding the production traces
    request_key: str | None = None  # mlflow: the request input holding the message (None: the only string)
    prediction_key: str = "intent"  # mlflow: the response field holding the model's label
    confidence_key: str = "confidence"
    assessment_name: str = "human_label"  # mlflow: the assessment resolved labels are written back as
    # mlflow: the most traces a run takes from one window; a window holding more gives a seeded subset of this
    # many (the log, the sampling run's record and the draw's inclusion probabilities say so), never a silent stop
    max_traces: int = Field(100_000, ge=1)
    # mlflow: how long after a window's end a trace stamped inside it (the client's clock) may still arrive; each
    # run reads again the windows read before until one read starts this long after their end (watermarks.py)
    lateness_hours: float = Field(24.0, ge=0)
    # traces read, validated, scored and reduced at a time by a sampling run; its memory grows with this, not
    # with the window (hitl/sampling/stream.py)
    partition_rows: int = Field(10_000, ge=100)


class ScenarioConfig(_Strict):
    """A drift scenario built from a public labelled dataset (hitl/sim/banking77.py), written as files the
    pipeline reads as its `files` source: launch data, daily traces, and ground truth for simulated reviewers."""

    kind: Literal["none", "banking77"] = "none"
    data_dir: str = "../shared/data/banking77"
    seed: int = 0
    new_intents: list[str] = Field(default_factory=list)  # empty: n_new_intents chosen at random (seeded)
    n_new_intents: int = Field(20, ge=1)
    launch_per_intent: int = Field(20, ge=1)
    days: int = Field(28, ge=1)
    new_from_day: int = Field(7, ge=0)


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


ENGINES = ("torch", "onnx", "onnx-int8")


class ModelConfig(_Strict):
    base_path: str | None = None  # a local Hugging Face model folder; None = the packaged MiniLM
    registered_name: str = "hitl-intent"
    max_length: int = 64
    score_batch_size: int = 64
    # What scores texts and computes frozen embeddings (hitl/learning/onnx_engine.py): torch (the reference),
    # onnx (ONNX Runtime, fp32) or onnx-int8 (int8 dynamic quantisation, close calls re-scored in fp32; a version
    # whose int8 export changed top labels at the export check serves fp32). With an ONNX engine each version is
    # exported and checked once, at registration, and logged beside it; a version registered without an export
    # is scored by torch. torch stays the default until the ONNX engines have run the whole loop (flows, e2e tests,
    # the demo); onnx-int8 was the fastest on a 300-text BANKING77 check with the same top labels as torch
    # (bench/engine.py, docs/operations.md).
    engine: Literal["torch", "onnx", "onnx-int8"] = "torch"
    # With a fallback label: the share of in-scope traffic the model may refuse (e.g. 0.05), the threshold set
    # so the random draw's in-scope rows are refused at most that often; None: the threshold that maximises
    # accuracy on the random draw (hitl/learning/abstention.py). The verdict cross-fits the same rule.
    abstention_rate: float | None = Field(None, gt=0.0, lt=0.5)

    @field_validator("engine", mode="before")
    @classmethod
    def _known_engine(cls, v):
        if v not in ENGINES:
            raise ValueError(f"model.engine must be one of {', '.join(ENGINES)}; got {v!r}")
        return v


class RunnerConfig(_Strict):
    """Where scoring runs, in partitions (docs/operations.md, "Scale-out: task runners"): threads in the flow's
    process, or Dask: a local cluster started for the run, or a scheduler at `dask_address`, reached over TLS
    or loopback only, since an open Dask scheduler runs any code sent to it."""

    kind: Literal["threads", "dask"] = "threads"
    workers: int = Field(2, ge=1)  # threads, or the local Dask cluster's worker processes (one thread each)
    partition_rows: int = Field(2000, ge=1)  # texts per scoring task; no more than this are scored in place
    dask_address: str | None = None  # None: a local cluster per run; else tls://HOST:PORT or a loopback address
    tls_ca_file: str | None = None  # tls:// only: the cluster's CA, and this client's certificate and key
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @model_validator(mode="after")
    def _scheduler_is_private(self) -> RunnerConfig:
        addr, tls = self.dask_address, [self.tls_ca_file, self.tls_cert_file, self.tls_key_file]
        scheme = addr.rpartition("://")[0] if addr else None
        if any(tls) and scheme != "tls":
            raise ValueError("runner.tls_* files are set but runner.dask_address is not tls://HOST:PORT")
        if addr is None:
            return self
        if self.kind != "dask":
            raise ValueError("runner.dask_address is set but runner.kind is threads: set runner.kind: dask to use it")
        if scheme == "tls" and not all(tls):
            raise ValueError(f"runner.dask_address {addr} needs runner.tls_ca_file, tls_cert_file and tls_key_file")
        if scheme != "tls" and (scheme not in ("", "tcp") or not _loopback(addr.rpartition("://")[2])):
            raise ValueError(f"runner.dask_address {addr} is neither tls:// nor loopback: an open Dask scheduler runs "
                             "any code sent to it; use tls:// with runner.tls_* files, or an SSH tunnel to 127.0.0.1")
        return self


def _loopback(hostport: str) -> bool:
    """`HOST`, `HOST:PORT` or `[V6]:PORT` names localhost or a loopback IP."""
    host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    host = host.split("]")[0].lstrip("[") if host.startswith("[") else host
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EvaluatorConfig(_Strict):
    uncertain_quantile: float = Field(0.2, gt=0.0, lt=1.0)  # the most uncertain share of each window fails
    task_completion_threshold: float = Field(0.5, ge=0.0, le=1.0)


class SelectionConfig(_Strict):
    """How one sampling run spends its review budget (hitl/sampling/selection.py)."""

    budget: int = Field(300, ge=1)  # annotations per sampling run: random draw, overlap and policy picks
    random_share: float = Field(0.25, ge=0.0, le=1.0)  # of the budget: the representative random draw
    random_annotations: int = Field(2, ge=1, le=2)  # labels per random item (the verdict set is double-checked)
    strata: list[str] = Field(default_factory=lambda: ["channel"])  # random draw strata: cohorts, never the label
    min_per_stratum: int = Field(2, ge=0)
    window: Literal["day", "run"] = "day"  # random-draw windows: UTC days of the trace timestamps, or the run
    components: dict[str, float] = Field(default_factory=lambda: {
        "uncertain": 0.35, "novel": 0.3, "disagreement": 0.2, "flagged": 0.15})
    uncertainty: Literal["margin", "entropy"] = "margin"
    cluster_quota: int = Field(3, ge=1)  # diversity: policy picks per k-means cluster of the window
    # which row of each cluster goes first: its best-scoring one, or its most typical one (TypiClust)
    cluster_pick: Literal["best", "typical"] = "best"
    near_duplicate_cosine: float = Field(0.95, gt=0.0, le=1.0)  # frozen-space cosine that makes a near-duplicate
    # windows with more candidates than this compare near-duplicates only among each component's shortlist (its
    # best 10 x its picks; same texts still collapse window-wide), so the cost stays linear (selection.py)
    dedup_all_pairs_max: int = Field(10_000, ge=0)
    neighbors: int = Field(10, ge=1)  # k of the density-shift and nearest-neighbour components
    seed: int = 0

    @field_validator("components")
    @classmethod
    def _known_components(cls, v: dict[str, float]) -> dict[str, float]:
        known = set(SELECTION_REASONS) - {RANDOM}
        if set(v) - known:
            raise ValueError(f"unknown selection components {sorted(set(v) - known)}; known: {sorted(known)}")
        if any(w < 0 for w in v.values()) or not sum(v.values()) > 0:
            raise ValueError("selection.components weights must be >= 0 with a positive sum")
        return v


class ReviewConfig(_Strict):
    store_url: str | None = None  # SQLAlchemy URL; None = SQLite in the state dir
    batch_size: int = Field(25, ge=1, le=200)
    overlap_share: float = Field(0.15, ge=0.0, le=1.0)
    poll_interval_s: float = Field(2.0, gt=0)
    timeout_s: int = Field(3600, ge=1)
    lease_grace_s: int = Field(300, ge=0)  # a batch open longer than timeout_s + this has expired
    max_rationale_chars: int = 2000
    adjudicators: list[str] = Field(default_factory=list)  # who may settle disputes; empty: any reviewer
    mask_pii: bool = True  # emails, phones, cards, IBANs masked in everything reviewers and Prefect see
    gold_share: float = Field(0.1, ge=0.0, lt=0.5)  # of every batch: items with a known label, measuring reviewers
    gold_path: str | None = None  # a labelled JSONL/CSV/Parquet file seeding gold items (adjudications add more)
    gold_min_answers: int = Field(20, ge=1)  # no verdict on a reviewer before this many gold answers
    gold_min_accuracy: float = Field(0.8, gt=0.0, le=1.0)  # flagged when the upper 95% bound falls below this
    # of policy items (stable hash of the trace id): shown blind, with no model guess, confidence or reasons, like
    # every random-draw item (the release verdict) and gold item, so a reviewer cannot tell those apart
    blind_share: float = Field(0.2, ge=0.0, le=1.0)
    # the champion's most probable labels stored with each review item when it is sampled, and offered first (with
    # their probability) on its form unless it is blind; 0: none
    suggestions: int = Field(5, ge=0, le=20)


class DatasetConfig(_Strict):
    name: str = "support-hitl"
    hard_case_share: float = Field(0.2, ge=0.0, lt=1.0)  # policy picks held out (by text group) as hard cases
    min_rows: int = Field(20, ge=1)
    # reviewed text is erased from the review store this many days after its trace was written, at the next dataset
    # registration: no later version carries it and no later fine-tune replays it (ReviewStore.erase), and the
    # earlier versions that held it are pruned (evidence.prune_erased). None: kept
    retention_days: int | None = Field(None, ge=1)


class TrainingConfig(_Strict):
    """The recipe of hitl/learning/recipe.py: the base model trained afresh on every row of the dataset version
    (joint training), prototype-initialised cosine head, square-root-balanced sampling, a fixed number of epochs
    (or early stopping on a validation split of the training rows, with `validation_share` above 0)."""

    epochs: float = Field(8, gt=0)  # with a validation split: at most (early stopping usually ends sooner)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)  # encoder, training from the base model (bootstrap)
    continue_learning_rate: float = Field(1e-5, gt=0)  # encoder, continuing from a trained champion (less forgetting)
    head_learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    logit_scale: float = Field(20.0, gt=0)  # initial scale of the cosine logits (learned)
    balance_power: float = Field(0.5, ge=0.0, le=1.0)  # sampling weight 1/count^p: 0 natural, 1 balanced labels
    validation_share: float = Field(0.0, ge=0.0, lt=0.5)  # 0: no early stopping, every row trains
    validation_min_per_class: int = Field(5, ge=2)  # rarer labels keep all their rows for training
    early_stopping_patience: int = Field(2, ge=1)
    refit: bool = True  # after early stopping picks the epochs, train again on every row (validation included)
    seed: int = 42
    # what a fine-tune trains: `base` trains the base model afresh on every row of the dataset version (joint
    # training: the champion's weights carry nothing over, so nothing is forgotten); `champion` continues from it
    # (docs/benchmarks.md section 10 measures both over three quarters of drift)
    start: Literal["champion", "base"] = "base"
    replay_launch: bool = True  # mix the launch data into every fine-tune to avoid forgetting
    # continuing from a champion: weight of a distillation term that keeps the champion's probabilities over the
    # labels it already knew, on every training row (0: off; recipe.py, "Learning without Forgetting")
    distill_weight: float = Field(0.0, ge=0.0)
    distill_temperature: float = Field(2.0, gt=0.0)
    # continuing from a champion: every label's head row restarts at its prototype under the champion's encoder
    # (biases at zero) instead of keeping the champion's trained head; the encoder continues (a recipe variant)
    reset_head: bool = False
    # with rows of a fallback label: weight of a loss that labels the midpoints between sentence vectors of two
    # different in-scope labels with the fallback label (pseudo outliers, recipe.py; 0: off), so traffic of intents
    # nobody foresaw is refused more often (docs/benchmarks.md section 11)
    pseudo_outlier_weight: float = Field(1.0, ge=0.0)
    # the share of the trained encoder's weights in the model a fine-tune returns, the rest the encoder it began from
    # (weight-space ensembling, WiSE-FT; recipe.py; docs/benchmarks.md section 11 measures 0.6 against 1 for unknown
    # intents); 1: the trained encoder as it is
    encoder_mix: float = Field(1.0, gt=0.0, le=1.0)
    max_steps: int = -1  # >0 caps training (tests)
    checkpoint_steps: int = Field(100, ge=0)  # a resumable checkpoint every N steps (0: none); see recipe.py


class GateConfig(_Strict):
    """The release decision on production estimates from the regression set (hitl/evaluation/regression.py):
    PASS when the change's upper bound is within `margin`, FAIL when it is significantly worse beyond it,
    INCONCLUSIVE otherwise (with the random labels that would decide it at power `power`)."""

    margin: float = Field(0.02, ge=0.0, le=1.0)  # the challenger may be at most this much worse (upper bound)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)  # one alpha for every interval, test and verdict, over all looks
    power: float = Field(0.8, gt=0.0, lt=1.0)  # for "labels needed" and detectable changes

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data):
        if isinstance(data, dict) and "max_detectable_change" in data:
            raise ValueError("gate.max_detectable_change was removed: a row without enough data is now "
                             "INCONCLUSIVE with the random labels it needs; delete the key")
        return data


class EvaluationConfig(_Strict):
    """Domains of estimation in the regression report besides the cohort columns."""

    label_groups: dict[str, list[str]] = Field(default_factory=dict)  # e.g. {launch: [...], new: [...]}
    per_label: bool = True  # one row per label (many labels: prefer label_groups)
    baseline: bool = True  # also estimate the frozen-embedding + logistic-regression anchor on the same rows
    latest_min_n: int = Field(30, ge=1)  # the latest-window column shows a row only from this many draws
    # production is the traffic of this many days up to the latest day window with draws: older draws stay in the
    # hold-out but out of the estimate (hitl/evaluation/horizon.py); None: every window since the first
    horizon_days: int | None = Field(91, ge=1)


class AuditConfig(_Strict):
    """The tamper-evident audit chain (hitl/audit/). Its HMAC key (mode 0600) lives apart from the review
    store, and apart from stack.auth_file: it signs entries, it does not log in."""

    key_file: str | None = None  # None = <state>/audit.key


class SimulationConfig(_Strict):
    """Simulated reviewers (demo, tests, benchmarks): noisy oracles reading ground truth kept apart from traces."""

    truth_path: str | None = None  # JSONL/Parquet/CSV (file or folder) with trace_id,label; None = synthetic world
    reviewers: list[str] = Field(default_factory=lambda: ["alice", "bob"])
    noise: float = Field(0.05, ge=0.0, le=1.0)
    approver: str = "manager-sim"
    adjudicator: str = "adjudicator-sim"  # answers adjudication forms (must be in review.adjudicators if set)
    seed: int = 11

    @field_validator("reviewers")
    @classmethod
    def _two_or_more(cls, v: list[str]) -> list[str]:
        if len(set(v)) < 2:
            raise ValueError("simulation.reviewers needs at least two distinct names")
        return v


class ChannelConfig(_Strict):
    """Where notifications go (hitl/ops/notifications.py). Secrets never live here: a webhook's URL and an SMTP
    password come from `notifications.secrets_file` or the environment (HITL_NOTIFY_<CHANNEL>_URL / _PASSWORD)."""

    kind: Literal["webhook", "email"] = "webhook"  # webhook: Slack or Teams incoming webhooks, or any JSON POST
    smtp_host: str | None = None  # email only
    smtp_port: int = 587
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = None  # its password is a secret: HITL_NOTIFY_<CHANNEL>_PASSWORD
    sender: str | None = None  # email only: the From address

    @model_validator(mode="after")
    def _email_needs_server(self) -> ChannelConfig:
        if self.kind == "email" and not (self.smtp_host and self.sender):
            raise ValueError("an email channel needs smtp_host and sender")
        return self


NOTIFY_ROLES = ("reviewers", "adjudicators", "approvers", "operators")


class NotificationsConfig(_Strict):
    """Who hears of waiting work and failures, through Prefect automations and notification blocks that `hitl up`
    creates (docs/operations.md, "Notifications")."""

    enabled: bool = False
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)  # name -> channel
    # role -> channel names; reviewers: review batches, adjudicators: disputes, approvers: releases, operators:
    # failed scheduled runs. A role without channels hears nothing.
    routes: dict[str, list[str]] = Field(default_factory=dict)
    people: dict[str, list[str]] = Field(default_factory=dict)  # role -> names (named in the message, emailed)
    addresses: dict[str, str] = Field(default_factory=dict)  # name -> email address
    alert_channel: str | None = None  # where a failed delivery is reported (best another channel than the routes')
    expiry_lead_s: int = Field(600, ge=0)  # warn this long before a batch's wait expires (review.timeout_s)
    digest_min: int = Field(5, ge=2)  # this many batches opened by one dispatch: one message lists them all
    settle_s: int = Field(60, ge=5)  # the reconciliation leaves younger states to the automations
    lookback_s: int = Field(86400, ge=60)  # the reconciliation looks this far back for failed runs
    secrets_file: str | None = None  # KEY=value lines, mode 0600; else the environment

    @model_validator(mode="after")
    def _names_known(self) -> NotificationsConfig:
        unknown_roles = sorted(set(self.routes) - set(NOTIFY_ROLES))
        if unknown_roles:
            raise ValueError(f"notifications.routes: unknown roles {unknown_roles}; known: {list(NOTIFY_ROLES)}")
        used = {c for cs in self.routes.values() for c in cs} | ({self.alert_channel} - {None})
        missing = sorted(used - set(self.channels))
        if missing:
            raise ValueError(f"notifications name channels that are not in notifications.channels: {missing}")
        for role, channels in self.routes.items():
            emailed = [c for c in channels if self.channels[c].kind == "email"]
            nobody = [p for p in self.people.get(role, []) if p not in self.addresses]
            if emailed and (not self.people.get(role) or nobody):
                raise ValueError(f"notifications.routes.{role} sends email ({emailed}): name the role's people in "
                                 f"notifications.people.{role} and each one's notifications.addresses")
        return self


class Config(_Strict):
    project: str = "hitl-demo"
    state_dir: str = ".hitl"
    labels: list[str]
    fallback_label: str | None = None  # e.g. "out_of_scope": predicted when the model abstains
    cohorts: list[str] = Field(default_factory=lambda: ["channel", "locale", "tier"])
    stack: StackConfig = Field(default_factory=StackConfig)
    deployments: DeploymentsConfig = Field(default_factory=DeploymentsConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    evaluators: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

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
    def _fallback_is_label(self) -> Config:
        if self.fallback_label is not None and self.fallback_label not in self.labels:
            raise ValueError(f"fallback_label={self.fallback_label!r} is not one of labels")
        return self

    @model_validator(mode="after")
    def _label_groups_use_labels(self) -> Config:
        unknown = sorted({lab for labs in self.evaluation.label_groups.values() for lab in labs} - set(self.labels))
        if unknown:
            raise ValueError(f"evaluation.label_groups name labels that are not in labels: {unknown}")
        return self

    @model_validator(mode="after")
    def _strata_are_cohorts(self) -> Config:
        unknown = [c for c in self.selection.strata if c not in self.cohorts]
        if unknown:
            raise ValueError(f"selection.strata {unknown} are not among cohorts {self.cohorts}")
        return self

    @model_validator(mode="after")
    def _retention_covers_the_horizon(self) -> Config:
        keep, horizon = self.dataset.retention_days, self.evaluation.horizon_days
        if keep is not None and horizon is not None and keep < horizon:
            raise ValueError(f"dataset.retention_days ({keep}) is shorter than evaluation.horizon_days ({horizon}): "
                             "the report would estimate production from random draws already erased; keep reviewed "
                             "text at least as long as the horizon")
        if keep is not None and horizon is None:
            raise ValueError("dataset.retention_days needs evaluation.horizon_days (at most as long): with no "
                             "horizon the report reads every window, including draws already erased")
        return self

    @model_validator(mode="after")
    def _expiry_warning_fits(self) -> Config:
        n = self.notifications
        if n.enabled and self.review.timeout_s - n.expiry_lead_s < 10:
            raise ValueError(f"notifications.expiry_lead_s ({n.expiry_lead_s}) must leave at least 10 s of "
                             f"review.timeout_s ({self.review.timeout_s}) before the warning")
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

    def flow_run_url(self, flow_run_id: object) -> str:
        """The Prefect UI page of a flow run (where a waiting run is resumed): what `hitl inbox`, the logs and
        the notifications link to. The same path as Prefect's own `url_for("flow-run", ...)`."""
        return f"{self.prefect_ui_url}/runs/flow-run/{flow_run_id}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.stack.host}:{self.stack.mlflow_port}"

    @property
    def store_url(self) -> str:
        if self.review.store_url:
            return self.review.store_url
        if self.stack.database_url:
            return self.postgres_url("review", "postgresql+psycopg2")
        return f"sqlite:///{self.state / 'review.db'}"

    @property
    def prefect_database_url(self) -> str:
        if self.stack.database_url:
            return self.postgres_url("prefect", "postgresql+asyncpg")
        return f"sqlite+aiosqlite:///{self.state / 'prefect' / 'prefect.db'}"

    @property
    def mlflow_backend_url(self) -> str:
        if self.stack.database_url:
            return self.postgres_url("mlflow", "postgresql+psycopg2")  # SQLAlchemy 2.1 would pick psycopg 3
        return f"sqlite:///{self.state / 'mlflow' / 'mlflow.db'}"

    def postgres_url(self, role: str, driver: str) -> str:
        """The URL of this project's `role` database (prefect, mlflow, review) on stack.database_url's server."""
        from sqlalchemy.engine import make_url

        base = make_url(self.stack.database_url.replace("postgres://", "postgresql://", 1))
        name = "".join(c if c.isalnum() else "_" for c in f"{self.project}_{role}".lower())
        return base.set(drivername=driver, database=name).render_as_string(hide_password=False)

    @property
    def audit_key_file(self) -> Path:
        return Path(self.audit.key_file).expanduser().resolve() if self.audit.key_file else self.state / "audit.key"

    @property
    def results_dir(self) -> Path:
        """Prefect's persisted task results: a resumed run reads finished work from here (shared by workers)."""
        return self.state / "prefect" / "results"

    @property
    def world_dir(self) -> Path:
        return self.state / "world"

    @property
    def scenario_dir(self) -> Path:
        return self.state / "scenario"

    @property
    def traces_path(self) -> Path:
        if self.source.path:
            return Path(self.source.path).expanduser().resolve()
        if self.scenario.kind != "none":
            return self.scenario_dir / "traces"
        return self.world_dir / "traces"

    @property
    def launch_path(self) -> Path | None:
        """Labelled launch data (text, label, cohorts): the configured file, the scenario's, or None for the
        synthetic world's."""
        if self.source.launch_path:
            return Path(self.source.launch_path).expanduser().resolve()
        if self.scenario.kind != "none":
            return self.scenario_dir / "launch.csv"
        return None

    @property
    def truth_path(self) -> Path | None:
        """Ground truth for simulated reviewers: the configured file or folder, the scenario's, or None for the
        synthetic world's."""
        if self.simulation.truth_path:
            return Path(self.simulation.truth_path).expanduser().resolve()
        if self.scenario.kind != "none":
            return self.scenario_dir / "truth.parquet"
        return None

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

    @property
    def review_experiment(self) -> str:
        return f"{self.project}-review"


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
