"""Promotion in the MLflow model registry: `@champion` moves to an approved challenger, safely across crashes.

The decision is written first, as a `hitl.promotion.pending` tag on the registered model (both versions,
approver, reason); then the approval tags go on the challenger's version, the aliases move one call at a
time, and the tag goes. So `@champion` only ever points at the old champion or at the approved, evaluated
challenger, and a promotion a crash interrupted is finished from the tag (`finish_pending`) or by calling
`promote` again: every step can be repeated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from hitl import faults

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
PENDING_TAG = "hitl.promotion.pending"


@dataclass(frozen=True)
class Promotion:
    replaced: str  # the champion version before
    promoted: str  # the approved challenger version
    approver: str
    reason: str
    eval_run_id: str | None = None  # the MLflow run of the regression eval the approval was given on


def promote(registered_name: str, p: Promotion, client=None) -> None:
    """Record the decision, then carry it out (see the module docstring). `client`: the caller's MlflowClient."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    client.set_registered_model_tag(registered_name, PENDING_TAG, json.dumps(asdict(p)))
    faults.checkpoint("promote:approved")
    _carry_out(registered_name, p, client)


def finish_pending(registered_name: str, client=None) -> Promotion | None:
    """Finish a promotion a crash interrupted (its decision is on record); returns it, or None when none was
    pending."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        raw = client.get_registered_model(registered_name).tags.get(PENDING_TAG)
    except MlflowException:
        return None  # no registered model yet
    if not raw:
        return None
    p = Promotion(**json.loads(raw))
    _carry_out(registered_name, p, client)
    return p


def _carry_out(registered_name: str, p: Promotion, client) -> None:
    """Approval tags on the promoted version, @previous -> replaced, @champion -> promoted, @challenger
    removed, pending tag removed: single registry calls, each safe to repeat."""
    from mlflow.exceptions import MlflowException

    tags = {"hitl.approved_by": p.approver, "hitl.approval_reason": p.reason, "hitl.replaced_version": p.replaced}
    if p.eval_run_id:
        tags["hitl.eval_run_id"] = p.eval_run_id
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, p.promoted, k, v)
    client.set_registered_model_alias(registered_name, PREVIOUS, p.replaced)
    faults.checkpoint("promote:previous-moved")
    client.set_registered_model_alias(registered_name, CHAMPION, p.promoted)
    faults.checkpoint("promote:champion-moved")
    try:
        if str(client.get_model_version_by_alias(registered_name, CHALLENGER).version) == str(p.promoted):
            client.delete_registered_model_alias(registered_name, CHALLENGER)
    except MlflowException:
        pass  # no @challenger: already removed
    client.delete_registered_model_tag(registered_name, PENDING_TAG)
