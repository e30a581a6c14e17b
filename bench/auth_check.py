"""Authentication check behind docs/reliability.md (Authentication): `python -m bench.auth_check [-r ROUNDS]`.

Starts a throwaway stack with `stack.auth` on (a temp state dir, free loopback ports, a fresh 0600 credentials
file), sends each protected endpoint below ROUNDS times without credentials, with a wrong password, as an
unknown user and with the right credentials, runs `hitl status` against it, and looks for the password in that
output and in every file under the state dir. Prints the counts; exits 1 when a request without the right
credentials got through, a right one was refused, or the password leaked. tests/e2e/test_auth.py runs the same probe.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

from hitl.config import Config, load_config
from hitl.credentials import Credentials
from hitl.ops import stack

REPO = Path(__file__).resolve().parents[1]

# (server, method, path, JSON body): reads, writes and the user-admin routes; "{nonce}" is filled per request
ENDPOINTS: list[tuple[str, str, str, dict | None]] = [
    ("prefect", "GET", "/admin/version", None),
    ("prefect", "POST", "/flows/filter", {}),
    ("prefect", "POST", "/flow_runs/filter", {}),
    ("prefect", "POST", "/deployments/filter", {}),
    ("prefect", "POST", "/variables/filter", {}),
    ("prefect", "GET", f"/flow_runs/{uuid.UUID(int=0)}", None),
    ("prefect", "DELETE", "/variables/name/auth-check-{nonce}", None),
    ("mlflow", "GET", "/api/2.0/mlflow/experiments/search?max_results=1", None),
    ("mlflow", "POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]}),
    ("mlflow", "GET", "/api/2.0/mlflow/registered-models/search", None),
    ("mlflow", "POST", "/api/2.0/mlflow/experiments/create", {"name": "auth-check-{nonce}"}),
    ("mlflow", "GET", "/api/2.0/mlflow-artifacts/artifacts", None),
    ("mlflow", "GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=1", None),
    ("mlflow", "POST", "/api/2.0/mlflow/users/create", {"username": "mallory-{nonce}", "password": "x" * 16}),
]
MODES = ("none", "wrong password", "unknown user", "right")


def _base(cfg: Config, server: str) -> str:
    return cfg.prefect_api_url if server == "prefect" else cfg.mlflow_uri


def _auth(mode: str, creds: Credentials) -> tuple[str, str] | None:
    return {"none": None, "wrong password": (creds.username, creds.password + "x"),
            "unknown user": ("mallory", creds.password), "right": (creds.username, creds.password)}[mode]


def _send(client: httpx.Client, cfg: Config, endpoint: tuple, auth: tuple[str, str] | None) -> int:
    server, method, path, body = endpoint
    nonce = secrets.token_hex(4)
    if body is not None:
        body = {k: v.format(nonce=nonce) if isinstance(v, str) else v for k, v in body.items()}
    try:
        return client.request(method, _base(cfg, server) + path.format(nonce=nonce), auth=auth,
                              json=body).status_code
    except httpx.TransportError:
        return 0  # no answer


def probe(cfg: Config, creds: Credentials, rounds: int = 1) -> list[dict]:
    """Per server and mode: requests sent, refused with 401, let through (any other answer), unanswered."""
    rows = []
    # one connection per request, as separate attackers would
    with httpx.Client(trust_env=False, timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for server in ("prefect", "mlflow"):
            for mode in MODES:
                codes = [_send(client, cfg, e, _auth(mode, creds))
                         for _ in range(rounds) for e in ENDPOINTS if e[0] == server]
                rows.append({"server": server, "credentials": mode, "sent": len(codes),
                             "refused_401": sum(c == 401 for c in codes),
                             "let_through": sum(c not in (0, 401) for c in codes),
                             "no_answer": codes.count(0), "codes": sorted(set(codes))})
    return rows


def failures(rows: list[dict]) -> list[str]:
    """Rows that break the rule: everything without the right credentials refused, nothing with them."""
    return [f"{r['server']} with credentials '{r['credentials']}': {r['let_through']} of {r['sent']} let through"
            for r in rows if r["credentials"] != "right" and r["let_through"]] + [
            f"{r['server']} with the right credentials: {r['sent'] - r['let_through']} of {r['sent']} not answered"
            for r in rows if r["credentials"] == "right" and r["let_through"] < r["sent"]]


def leaks(password: str, root: Path, texts: dict[str, str]) -> list[str]:
    """Files under `root` and named texts (command output) that contain `password`."""
    found = [name for name, text in texts.items() if password in text]
    needle = password.encode()
    found += [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
    return found


def free_port() -> int:
    """A loopback TCP port the OS says is free now (bench scripts: one process, no registry of ports handed out,
    unlike the tests' `e2e_helpers.free_port`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_auth_config(tmp: Path, password: str | None = None) -> tuple[Path, Credentials]:
    """A minimal config with `stack.auth` on, free loopback ports and a 0600 credentials file, under `tmp`."""
    creds = Credentials("hitl-admin", password or secrets.token_urlsafe(18))
    cred_file = tmp / "credentials"
    cred_file.touch(mode=0o600)
    cred_file.write_text(f"{creds.auth_string}\n")
    raw = {"project": "auth-check", "state_dir": str(tmp / "state"), "labels": ["a", "b"],
           "stack": {"host": "127.0.0.1", "prefect_port": free_port(), "mlflow_port": free_port(), "auth": True,
                     "auth_file": str(cred_file)}}
    path = tmp / "auth-check.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, creds


def hitl_status(path: Path) -> subprocess.CompletedProcess:
    """`hitl status` in a fresh process that gets the credentials from the config only."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "HITL_AUTH_"))}
    return subprocess.run([sys.executable, "-m", "hitl.cli", "status", "-c", str(path)], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=env)


def main(argv: list[str]) -> int:
    rounds = int(argv[argv.index("-r") + 1]) if "-r" in argv else 3
    with tempfile.TemporaryDirectory(prefix="hitl-auth-") as d:
        tmp = Path(d)
        path, creds = write_auth_config(tmp)
        cfg = load_config(path)
        t0 = time.monotonic()
        stack.up(cfg, console_print=lambda _: None)
        try:
            print(f"stack with auth healthy after {time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            rows = probe(cfg, creds, rounds)
            print(f"probe: {sum(r['sent'] for r in rows)} requests in {time.monotonic() - t0:.1f} s")
            status = hitl_status(path)
        finally:
            stack.down(cfg)
        print("| server | credentials | sent | refused (401) | let through | no answer | status codes |")
        print("|---|---|---:|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r['server']} | {r['credentials']} | {r['sent']} | {r['refused_401']} | {r['let_through']} "
                  f"| {r['no_answer']} | {', '.join(map(str, r['codes']))} |")
        problems = failures(rows)
        if status.returncode != 0:
            problems.append(f"`hitl status` failed ({status.returncode}): {status.stdout[-500:]}{status.stderr[-500:]}")
        leaked = leaks(creds.password, cfg.state, {"hitl status output": status.stdout + status.stderr})
        print(f"`hitl status` exit {status.returncode}; password found in {len(leaked)} of "
              f"{sum(1 for p in cfg.state.rglob('*') if p.is_file())} state files and the status output")
        problems += [f"password leaked into {where}" for where in leaked]
        for p in problems:
            print(f"FAIL: {p}")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
