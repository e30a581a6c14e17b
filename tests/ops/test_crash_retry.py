"""A deployed run whose process died is run again by its flow's `on_crashed` hook (hitl/ops/orphans.py), which
the worker runs; tests/e2e/test_deployed.py kills such a process on the stack."""

from __future__ import annotations

import yaml

from hitl.ops import deploy, orphans


def test_every_deployed_flow_retries_a_crash():
    from prefect.flows import load_flow_from_entrypoint

    entrypoints = [d["entrypoint"] for d in yaml.safe_load(deploy.PREFECT_YAML.read_text())["deployments"]]
    missing = [e for e in entrypoints
               if orphans.retry_crashed not in load_flow_from_entrypoint(str(deploy.REPO / e)).on_crashed_hooks]
    assert len(entrypoints) == 9 and missing == []


def test_crash_retries_are_counted_against_the_config():
    assert [orphans.crash_retry_due(n, 1) for n in range(3)] == [True, False, False]
    assert not orphans.crash_retry_due(0, 0)  # crash_retries: 0 leaves every crash to a person


def test_a_failed_run_lost_a_server_only_when_its_message_says_so(monkeypatch):
    """The messages Prefect gives a run that failed because a server stopped answering, made from what the clients
    raise against a port nothing listens on (the Prefect API's httpx, MLflow's client, a CPU slot the server could not
    grant), are run again by the sweep; a run failed by anything else is left to a person."""
    import httpx
    from e2e_helpers import free_port
    from mlflow import MlflowClient
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.states import format_exception

    def failed(exc: BaseException) -> str:  # what Prefect's flow engine writes (flow_engine.handle_exception)
        return f"Flow run encountered an exception: {format_exception(exc)}"

    def raised(call) -> BaseException:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - the exception is the point
            return e
        raise AssertionError("the call to a closed port succeeded")

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there (the tests' port registry)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    lost = [raised(lambda: httpx.get(closed, timeout=5)),
            raised(lambda: MlflowClient(tracking_uri=closed).search_experiments()),
            ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['cpu']")]
    assert all(orphans.lost_server_failure(failed(e)) for e in lost), [failed(e) for e in lost]
    own = [failed(ValueError("No annotations yet: label some traces first")),
           "Flow run was paused and never resumed.", "", None]
    assert not any(orphans.lost_server_failure(m) for m in own)
