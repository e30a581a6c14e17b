"""Named fault points: a test hook that kills (or freezes) this process at a chosen step of the loop.

`checkpoint(name)` does nothing unless the environment variable `HITL_FAULT` equals `name`; then it sends
this process SIGKILL (as `kill -9` would), or SIGSTOP with `HITL_FAULT_SIGNAL=STOP` so a test can stop a
server while the process waits at that step and then let it go on (SIGCONT). The points in the code:

- `sampling:before-enqueue`: traces scored and selected, nothing stored yet (tasks/sampling.py)
- `sampling:after-enqueue`: the queue written, the sampling summary not yet (tasks/sampling.py)
- `dataset:after-artifact`: the version's parquet logged, its `complete` tag not yet (hitl/datasets/versions.py)
- `train:<phase>:step-<n>`: fine-tuning after optimizer step n of a phase (`select`, `refit` or `train`)
  (hitl/learning/recipe.py, checkpoints.py)
- `promote:approved`, `promote:previous-moved`, `promote:champion-moved`: between the registry writes of
  a promotion (hitl/learning/promotion.py)
- `rollback:decided`, `rollback:previous-moved`, `rollback:champion-moved`: between the registry writes of
  `hitl rollback` (hitl/learning/promotion.py)

tests/ops/test_faults.py and tests/e2e/test_faults_e2e.py kill the loop at each of them and check the re-run.
"""

from __future__ import annotations

import os
import signal

ENV, SIGNAL_ENV = "HITL_FAULT", "HITL_FAULT_SIGNAL"


def checkpoint(name: str) -> None:
    """Kill (or stop) this process here when `HITL_FAULT` names this point; otherwise return at once."""
    if os.environ.get(ENV) != name:
        return
    sig = signal.SIGSTOP if os.environ.get(SIGNAL_ENV, "").upper() == "STOP" else signal.SIGKILL
    os.kill(os.getpid(), sig)
