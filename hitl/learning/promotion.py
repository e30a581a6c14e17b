"""Moves of `@champion` in the MLflow model registry, safe across crashes: promotion to an approved challenger,
and rollback to an earlier approved version.

The decision is written first, as a `hitl.promotion.pending` tag on the registered model (both versions,
who, why); then the decision's tags go on a version (the approval on the promoted one; on a rollback, the
reason on the version rolled back), the aliases move one call at a time (`@previous` to the version replaced,
then `@champion`), and the tag goes. So `@champion` only ever points at the old champion or at the version the
decision names, and a move a crash interrupted is finished from the tag (`finish_pending`) or by making the
same move again: every step can be repeated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from hitl import faults

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
PENDING_TAG = "hitl.promotion.pending"
PROMOTE, ROLLBACK = "promote", "rollback"
APPROVED_BY = "hitl.approved_by"
STAGE_TAG, BOOTSTRAP = "hitl.stage", "bootstrap"  # the launch champion's version: registered without an approval
# Tags on a version that was rolled back: who, why, to which version, when (ISO time), the audit entry's seq
ROLLED_BACK = {"by": "hitl.rolled_back_by", "reason": "hitl.rollback_reason", "to": "hitl.rolled_back_to",
               "at": "hitl.rolled_back_at", "entry": "hitl.rollback_entry"}


@dataclass(frozen=True)
class Promotion:
    replaced: str  # the champion version before
    promoted: str  # the approved challenger version (a rollback: the earlier approved version restored)
    approver: str
    reason: str
    eval_run_id: str | None = None  # the MLflow run of the regression eval the approval was given on
    kind: str = PROMOTE  # or ROLLBACK
    at: str = ""  # a rollback: when it was decided (ISO time) and its audit entry's seq, for the tags
    entry: int | None = None


class RollbackRefused(ValueError):
    """A rollback that would not restore an approved, loadable champion; the message says what to do."""


class ChampionMoved(RuntimeError):
    """`@champion` is neither the version a decision replaces nor the one it promotes: the decision was made
    against a champion that has since changed (a rollback, another promotion)."""


def rollback_target(registered_name: str, to: str | None, client=None) -> tuple[str, str]:
    """(current champion, version to restore) for `hitl rollback`: `to`, else `@previous`. The version must
    exist, differ from the champion, and have been approved (or be a launch champion, the bootstrap's); one
    that was itself rolled back is restored only when named."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    to = to.strip().removeprefix("v").removeprefix("V") if to else None  # "v3" as `hitl status` prints it
    try:
        current = str(client.get_model_version_by_alias(registered_name, CHAMPION).version)
    except MlflowException as e:
        raise RollbackRefused(f"{registered_name} has no @champion to roll back.") from e
    try:
        target = client.get_model_version(registered_name, to) if to else \
            client.get_model_version_by_alias(registered_name, PREVIOUS)
    except MlflowException as e:
        raise RollbackRefused(f"{registered_name} has no version {to}: `hitl status` lists the aliases." if to else
                              f"{registered_name} has no @previous (no promotion yet): name a version with --to."
                              ) from e
    version, tags = str(target.version), target.tags or {}
    if version == current:
        raise RollbackRefused(f"v{version} is already @champion: name an earlier approved version with --to.")
    if APPROVED_BY not in tags and tags.get(STAGE_TAG) != BOOTSTRAP:
        raise RollbackRefused(f"v{version} was never approved (no {APPROVED_BY} tag): only an approved version, "
                              "or the launch champion, can be restored.")
    if ROLLED_BACK["by"] in tags and not to:
        raise RollbackRefused(f"@previous is v{version}, which was rolled back by {tags[ROLLED_BACK['by']]} "
                              f"({tags.get(ROLLED_BACK['reason'], '')!r}): name the version to restore with --to.")
    return current, version


def promote(registered_name: str, p: Promotion, client=None) -> None:
    """Record the decision, then carry it out (see the module docstring). `client`: the caller's MlflowClient.
    Refused (ChampionMoved) when `@champion` is neither `p.replaced` nor `p.promoted` (the latter: the same move
    again, after a crash)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        now = str(client.get_model_version_by_alias(registered_name, CHAMPION).version)
    except MlflowException:
        now = None  # no champion yet: nothing to contradict
    if now is not None and now not in (str(p.replaced), str(p.promoted)):
        raise ChampionMoved(f"@champion of {registered_name} is v{now}, not v{p.replaced} as when this {p.kind} was "
                            f"decided (a rollback or another promotion since): v{p.promoted} was not promoted; run "
                            "the regression eval again against the current champion.")
    client.set_registered_model_tag(registered_name, PENDING_TAG, json.dumps(asdict(p)))
    faults.checkpoint("promote:approved" if p.kind == PROMOTE else f"{p.kind}:decided")
    _carry_out(registered_name, p, client)


def rollback(registered_name: str, p: Promotion, client=None) -> None:
    """Record the rollback (`p.kind` ROLLBACK: `replaced` is the champion rolled back, `promoted` the version
    restored), then carry it out: the same steps, tags and crash safety as a promotion."""
    promote(registered_name, p, client)


def rollbacks(registered_name: str, client=None) -> list[dict]:
    """Every version that was rolled back, as {at, from_version, to_version, by, reason}, oldest first (what
    the report's trend and `hitl status` show)."""
    from mlflow import MlflowClient

    out = []
    for mv in (client or MlflowClient()).search_model_versions(f"name = '{registered_name}'"):
        t = mv.tags or {}
        if ROLLED_BACK["by"] in t:
            out.append({"at": t.get(ROLLED_BACK["at"], ""), "from_version": str(mv.version),
                        "to_version": t.get(ROLLED_BACK["to"], "?"), "by": t[ROLLED_BACK["by"]],
                        "reason": t.get(ROLLED_BACK["reason"], "")})
    return sorted(out, key=lambda r: r["at"])


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
    """The decision's tags (a promotion's approval on the promoted version; a rollback's reason on the version
    rolled back), @previous -> replaced, @champion -> promoted, @challenger removed, pending tag removed:
    single registry calls, each safe to repeat."""
    from mlflow.exceptions import MlflowException

    if p.kind == ROLLBACK:
        tagged, tags = p.replaced, {ROLLED_BACK["by"]: p.approver, ROLLED_BACK["reason"]: p.reason,
                                    ROLLED_BACK["to"]: p.promoted, ROLLED_BACK["at"]: p.at,
                                    ROLLED_BACK["entry"]: str(p.entry)}
    else:
        tagged, tags = p.promoted, {APPROVED_BY: p.approver, "hitl.approval_reason": p.reason,
                                    "hitl.replaced_version": p.replaced}
        if p.eval_run_id:
            tags["hitl.eval_run_id"] = p.eval_run_id
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, tagged, k, v)
    client.set_registered_model_alias(registered_name, PREVIOUS, p.replaced)
    faults.checkpoint(f"{p.kind}:previous-moved")
    client.set_registered_model_alias(registered_name, CHAMPION, p.promoted)
    faults.checkpoint(f"{p.kind}:champion-moved")
    try:
        if str(client.get_model_version_by_alias(registered_name, CHALLENGER).version) == str(p.promoted):
            client.delete_registered_model_alias(registered_name, CHALLENGER)
    except MlflowException:
        pass  # no @challenger: already removed
    client.delete_registered_model_tag(registered_name, PENDING_TAG)
