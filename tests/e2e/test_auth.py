"""Authentication of the stack (`stack.auth`): the credentials file and environment, refusing exposed binds,
secrets kept out of argv, files and output; (e2e) both real servers refuse requests without credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import auth_check
from hitl import credentials
from hitl.config import Config, StackConfig, load_config
from hitl.credentials import Credentials, CredentialsError
from hitl.environment import apply_environment
from hitl.ops import processes, stack, stack_auth

PASSWORD = "correct-horse-battery-9"


def _cred_file(tmp_path: Path, mode: int = 0o600, text: str = f"hitl-admin:{PASSWORD}\n") -> Path:
    f = tmp_path / "credentials"
    f.write_text(text)
    f.chmod(mode)
    return f


@pytest.fixture
def env_restored():
    """apply_environment writes os.environ: put it back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


# ------------------------------------------------------------------ the credentials file and environment


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_file_is_read(tmp_path, mode):
    creds = credentials.read_file(_cred_file(tmp_path, mode))
    assert creds == Credentials("hitl-admin", PASSWORD)
    assert creds.auth_string == f"hitl-admin:{PASSWORD}"
    assert PASSWORD not in repr(creds)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_file_others_can_read_is_refused(tmp_path, mode):
    f = _cred_file(tmp_path, mode)
    with pytest.raises(CredentialsError) as ei:
        credentials.read_file(f)
    msg = str(ei.value)
    assert f"{mode:04o}" in msg and "chmod 600" in msg and str(f) in msg
    assert PASSWORD not in msg and "\n" not in msg


@pytest.mark.parametrize("text,match", [
    (f"hitl-admin {PASSWORD}\n", "one line"),
    (f"a:{PASSWORD}\nb:{PASSWORD}\n", "one line"),
    ("", "one line"),
    ("hitl-admin:short\n", "at least 12"),
    (f":{PASSWORD}\n", "user name"),
])
def test_malformed_file_is_refused_without_quoting_it(tmp_path, text, match):
    with pytest.raises(CredentialsError, match=match) as ei:
        credentials.read_file(_cred_file(tmp_path, text=text))
    assert PASSWORD not in str(ei.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CredentialsError, match="cannot be read"):
        credentials.read_file(tmp_path / "nope")


def test_load_prefers_the_file_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(credentials.USER_ENV, "env-user")
    monkeypatch.setenv(credentials.PASSWORD_ENV, "env-password-long")
    assert credentials.load(StackConfig()) is None  # auth off: nothing read
    assert credentials.load(StackConfig(auth=True)) == Credentials("env-user", "env-password-long")
    f = _cred_file(tmp_path)
    assert credentials.load(StackConfig(auth=True, auth_file=str(f))).username == "hitl-admin"
    monkeypatch.delenv(credentials.PASSWORD_ENV)
    with pytest.raises(CredentialsError, match="stack.auth_file.*HITL_AUTH_USER and HITL_AUTH_PASSWORD"):
        credentials.load(StackConfig(auth=True))


def test_auth_file_without_auth_is_a_config_error():
    with pytest.raises(ValueError, match="stack.auth is false"):
        StackConfig(auth_file="/somewhere")


def test_auth_env_and_apply_environment(tmp_path, env_restored):
    cfg = Config(labels=["a", "b"], stack={"auth": True, "auth_file": str(_cred_file(tmp_path))})
    env = credentials.auth_env(cfg)
    assert env == {"PREFECT_API_AUTH_STRING": f"hitl-admin:{PASSWORD}", "MLFLOW_TRACKING_USERNAME": "hitl-admin",
                   "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    assert credentials.auth_env(Config(labels=["a", "b"])) == {}
    apply_environment(cfg)
    assert {k: os.environ[k] for k in env} == env
    (tmp_path / "credentials").chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        apply_environment(cfg)


def test_cli_reports_exposed_credentials_as_a_config_error(tmp_path, env_restored):
    from typer.testing import CliRunner

    from hitl.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(f"labels: [a, b]\nstate_dir: {tmp_path / 'state'}\n"
                    f"stack: {{auth: true, auth_file: {_cred_file(tmp_path, 0o644)}}}\n")
    result = CliRunner().invoke(app, ["status", "-c", str(path)], terminal_width=400)
    assert result.exit_code == 2
    assert "Config error:" in result.output and "chmod 600" in result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output


# ------------------------------------------------------------------ binding and launching


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_nothing(host):
    assert credentials.binding_problem(StackConfig(host=host)) is None


@pytest.mark.parametrize("stack_kw,missing", [
    ({}, ["stack.auth", "stack.tls_proxy"]),
    ({"auth": True}, ["stack.tls_proxy"]),
    ({"tls_proxy": True}, ["stack.auth"]),
])
def test_non_loopback_without_auth_or_tls_is_refused_before_anything_starts(tmp_path, monkeypatch, stack_kw,
                                                                           missing):
    monkeypatch.setattr(processes, "launch", lambda *a, **k: pytest.fail("launched a server"))
    cfg = Config(labels=["a", "b"], state_dir=str(tmp_path), stack={"host": "0.0.0.0", **stack_kw})
    with pytest.raises(stack.StackError) as ei:
        stack.up(cfg, console_print=lambda _: None)
    msg = str(ei.value)
    assert "0.0.0.0" in msg and "\n" not in msg and "127.0.0.1" in msg
    assert all(key in msg for key in missing)
    assert not (tmp_path / "pids").exists()
    both = StackConfig(host="10.1.2.3", auth=True, tls_proxy=True)
    assert credentials.binding_problem(both) is None


def test_exposed_credentials_file_stops_up_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "launch", lambda *a, **k: pytest.fail("launched a server"))
    f = _cred_file(tmp_path, 0o644)
    cfg = Config(labels=["a", "b"], state_dir=str(tmp_path / "state"), stack={"auth": True, "auth_file": str(f)})
    with pytest.raises(stack.StackError, match="chmod 600"):
        stack.up(cfg, console_print=lambda _: None)


def test_secrets_go_to_the_environment_only(tmp_path):
    cfg = Config(labels=["a", "b"], state_dir=str(tmp_path), stack={"auth": True,
                                                                    "auth_file": str(_cred_file(tmp_path))})
    creds = credentials.load(cfg.stack)
    stack_auth.auth_ini(cfg).parent.mkdir(parents=True)
    stack_auth.write_auth_ini(cfg)
    assert PASSWORD not in stack_auth.auth_ini(cfg).read_text()
    assert stack_auth.auth_db(cfg).stat().st_mode & 0o077 == 0
    specs = {s.name: s for s in stack._specs(cfg)}
    assert specs["mlflow"].argv[-2:] == ["--app-name", "basic-auth"]
    for spec in specs.values():
        assert PASSWORD not in " ".join(spec.argv) and PASSWORD not in str(spec.env)  # status/down never see it
        launched = stack_auth.with_credentials(spec, creds)
        assert launched.argv == spec.argv
        assert launched.env["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    prefect_env = stack_auth.with_credentials(specs["prefect"], creds).env
    assert prefect_env["PREFECT_SERVER_API_AUTH_STRING"] == creds.auth_string
    ml = stack_auth.with_credentials(specs["mlflow"], creds).env
    assert ml["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD
    assert ml["MLFLOW_AUTH_CONFIG_PATH"] == str(stack_auth.auth_ini(cfg))
    assert stack_auth.with_credentials(specs["prefect"], None) is specs["prefect"]


# ------------------------------------------------------------------ end to end: both real servers with auth

FLOW = textwrap.dedent("""
    import sys

    from hitl.config import load_config
    from hitl.environment import apply_environment

    apply_environment(load_config(sys.argv[1]))  # the credentials come from the config's auth_file only
    import mlflow
    from prefect import flow
    from prefect.flow_runs import pause_flow_run

    from tasks.review import approval_form

    @flow(name="auth-check")
    def auth_check():
        mlflow.set_experiment("auth-check")
        with mlflow.start_run():
            mlflow.log_param("p", 1)
            mlflow.log_text("artifact over HTTP", "note.txt")
        answer = pause_flow_run(wait_for_input=approval_form("## Gate: PASS"), timeout=180, poll_interval=1)
        print("DECISION", answer.decision, answer.approver, flush=True)

    auth_check()
""")


@pytest.mark.e2e
def test_both_servers_refuse_without_credentials_and_the_loop_works_with_them(tmp_path):
    from e2e_helpers import finish, free_port, hitl, seed_prefect_database, start, stop_stack, write_config

    cred = _cred_file(tmp_path)
    path = write_config(tmp_path, stack={"host": "127.0.0.1", "prefect_port": free_port(),
                                         "mlflow_port": free_port(), "auth": True, "auth_file": str(cred),
                                         "start_timeout_s": 180})
    cfg = load_config(path)
    creds = Credentials("hitl-admin", PASSWORD)
    seed_prefect_database(cfg)
    stack.up(cfg, console_print=lambda _: None)
    try:
        rows = auth_check.probe(cfg, creds)
        assert not auth_check.failures(rows), rows
        assert {r["credentials"]: r["refused_401"] for r in rows if r["server"] == "mlflow"}["none"] > 0

        status = hitl(path, "status")  # health on both, then MLflow's registry with the credentials
        assert "Model: e2e-intent" in status.stdout and "not running" not in status.stdout

        # a flow run that logs to MLflow and pauses; the simulated approver resumes it through the Prefect API
        script = tmp_path / "auth_flow.py"
        script.write_text(FLOW)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "HITL_AUTH_"))}
        env["PYTHONPATH"] = str(auth_check.REPO)
        run = subprocess.Popen([sys.executable, str(script), str(path)], cwd=auth_check.REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop = tmp_path / "stop"
        sim = start(path, "simulate-reviewers", "--stop-file", str(stop), "--max-seconds", "240")
        try:
            flow_out = finish(run, 240)
        finally:
            stop.touch()
            sim_out = finish(sim, 60)
        assert run.returncode == 0 and "DECISION approve manager-sim" in flow_out, flow_out[-3000:]
        assert sim.returncode == 0 and "resolved 1 paused runs" in sim_out, sim_out[-3000:]

        t0 = time.monotonic()
        stack.up(cfg, console_print=lambda _: None)  # reuse: the running servers still pass the auth check
        assert time.monotonic() - t0 < 30
    finally:
        stop_stack(cfg)
    outputs = {"hitl status": status.stdout + status.stderr, "flow": flow_out, "reviewers": sim_out}
    assert not auth_check.leaks(PASSWORD, cfg.state, outputs)
    assert (cfg.state / "prefect" / "prefect.db").exists() and (cfg.state / "logs" / "mlflow.log").exists()
