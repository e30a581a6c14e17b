"""Fixtures and settings shared by every test under tests/ (subfolders included).

- The helpers beside this file (`helpers_domain`, `e2e_helpers`, `pii_generator`) import from any test folder.
- Servers the tests start inherit this process's environment (hitl.ops.stack): the settings below make them
  lighter and quicker without changing what the tests check.
- Markers: `e2e` (starts servers) and `slow(reason=...)` (no server, but needs its time, and says why);
  `make test-fast` leaves both out, `make test` runs everything.
- Under pytest-xdist (`make test`: `-n 2 --dist loadfile`) a module runs on one worker, so a module's stack
  starts once; the modules with e2e tests are handed out first, then those with slow tests, so that the long
  ones overlap with the short ones instead of ending the run alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# The Prefect scheduler queues a deployment's next runs on its own loop (60 s by default): a test that waits
# for a scheduled run (test_deployed) waits seconds instead of a minute.
os.environ.setdefault("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "5")
# Test stacks schedule every deployment on 29 February (e2e_helpers.NEVER_IN_A_TEST): the scheduler queues runs up
# to 100 days ahead by default; 1,500 days reaches the next 29 February.
os.environ.setdefault("PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME", "P1500D")
# One math thread per process (torch, ONNX Runtime, BLAS): the workers and the servers' flow runs already run
# side by side on the 2 cores, and two threads each then spin for a core that is busy (measured: 600 texts
# encoded with 2 threads under load took 10.5 s of CPU, with 1 thread 2.6-2.9 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


# The longest modules (measured: README, "Tests"), handed out before the other e2e modules.
LONGEST = ("test_deployed.py", "test_e2e_loop.py", "test_faults_e2e.py")


def pytest_collection_modifyitems(config, items):
    """Modules with e2e tests first (the LONGEST ones before the rest), then those with a test marked slow,
    then the others, each group in collection order (see the docstring). A slow mark must say why."""
    for item in items:
        slow = item.get_closest_marker("slow")
        if slow and not slow.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.slow(reason=...) must say why it is slow")
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        mark = 1 if item.get_closest_marker("e2e") else 2 if item.get_closest_marker("slow") else 3
        if mark == 1 and Path(module).name in LONGEST:
            mark = 0
        rank[module] = min(rank.get(module, 3), mark)
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


# ---------------------------------------------------------------- domain fixtures


@pytest.fixture
def cfg(tmp_path):
    """A default Config rooted in tmp_path (helpers_domain.make_cfg); a module that needs other settings
    defines its own `cfg`."""
    from helpers_domain import make_cfg

    return make_cfg(tmp_path)


@pytest.fixture
def store(tmp_path):
    """An empty review store on a SQLite file in tmp_path."""
    from hitl.review.store import ReviewStore

    return ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")


@pytest.fixture(scope="module")
def local_mlflow(tmp_path_factory):
    """MLflow tracking and registry on a SQLite file for one module (no server); yields (root folder, URI)
    and forgets the URIs afterwards."""
    import mlflow
    from helpers_domain import forget_mlflow_uris

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield root, uri
    mlflow.set_tracking_uri(before)
    forget_mlflow_uris()
