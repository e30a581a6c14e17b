"""Point this process's Prefect and MLflow clients at the configured stack (and, with `stack.auth`, give
them the stack's credentials through the environment only)."""

from __future__ import annotations

import os

from hitl.config import Config
from hitl.credentials import auth_env


def apply_environment(cfg: Config) -> None:
    """Point Prefect and MLflow clients of this process at the configured stack.

    Call before the first Prefect/MLflow client is created: both read these variables.
    """
    os.environ["PREFECT_API_URL"] = cfg.prefect_api_url
    os.environ["PREFECT_UI_API_URL"] = cfg.prefect_api_url
    os.environ["PREFECT_UI_URL"] = cfg.prefect_ui_url
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(cfg.results_dir)
    os.environ["MLFLOW_TRACKING_URI"] = cfg.mlflow_uri
    os.environ["MLFLOW_REGISTRY_URI"] = cfg.mlflow_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in flow output
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    # A lost MLflow server: retry with backoff 0+2+4+8+16 s (plus jitter), so a restart is ridden out and a
    # persistent outage is reported in about half a minute (MLflow's own default waits about four).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    if cfg.stack.auth:  # raises CredentialsError (a ValueError) when they are missing or exposed
        os.environ.update(auth_env(cfg))
