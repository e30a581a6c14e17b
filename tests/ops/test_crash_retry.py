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
