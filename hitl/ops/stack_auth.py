"""Authentication of the local stack (`stack.auth`): MLflow's basic-auth settings and user store, the secrets
each server process gets in its environment only, and the check that the running servers enforce them."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import httpx

from hitl import credentials
from hitl.config import Config

S = TypeVar("S")  # a service spec (hitl/ops/stack.py)


def auth_ini(cfg: Config) -> Path:
    return cfg.state / "mlflow" / "basic_auth.ini"


def auth_db(cfg: Config) -> Path:
    return cfg.state / "mlflow" / "basic_auth.db"


def write_auth_ini(cfg: Config) -> None:
    """MLflow's basic-auth settings, without a secret: the admin's password comes from the environment and
    only creates that user when its store is new; other users get no permission by default. Checked
    credentials are cached for 5 minutes (one worker: no stale copy elsewhere), else every request pays a
    PBKDF2 hash. The user store (password hashes) is readable by its owner only."""
    auth_db(cfg).touch(mode=0o600)  # SQLite takes an empty file as an empty database
    auth_db(cfg).chmod(0o600)
    auth_ini(cfg).write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{auth_db(cfg)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )


def with_credentials(spec: S, creds: credentials.Credentials | None) -> S:
    """`spec` with the secrets its process needs, in its environment only (never argv, files or logs)."""
    if creds is None:
        return spec
    env = {**spec.env, **credentials.client_env(creds)}  # servers' own background jobs are clients too
    if spec.name == "prefect":
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.auth_string
    elif spec.name == "mlflow":
        env.update({"MLFLOW_AUTH_ADMIN_USERNAME": creds.username, "MLFLOW_AUTH_ADMIN_PASSWORD": creds.password,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})
    return replace(spec, env=env)


def protected_urls(cfg: Config) -> dict[str, str]:
    """One endpoint per server that needs credentials when `stack.auth` is on (health endpoints stay open)."""
    return {"prefect": f"{cfg.prefect_api_url}/admin/version",
            "mlflow": f"{cfg.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"}


def status_code(url: str, auth: tuple[str, str] | None = None) -> int | None:
    try:
        return httpx.get(url, auth=auth, timeout=10.0, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def auth_problems(cfg: Config, creds: credentials.Credentials, servers: list) -> list[str]:
    """What is wrong with the running servers' authentication (`servers`: the stack's server specs): each must
    refuse a request without credentials (401) and accept the configured ones (200)."""
    problems = []
    for spec in servers:
        url = protected_urls(cfg)[spec.name]
        anonymous = status_code(url)
        if anonymous != 401:
            problems.append(f"The {spec.title} answered {url} without credentials (HTTP {anonymous}): it runs "
                            "without stack.auth; run `hitl down`, then `hitl up`.")
        signed = status_code(url, (creds.username, creds.password))
        if signed != 200:
            hint = (f"its user store {auth_db(cfg)} was created with another password for {creds.username!r}: "
                    "use those credentials, or stop the stack, delete that file and start again"
                    if spec.name == "mlflow" else "it runs with other credentials: run `hitl down`, then `hitl up`")
            problems.append(f"The {spec.title} refused the configured credentials at {url} (HTTP {signed}); {hint}.")
    return problems
