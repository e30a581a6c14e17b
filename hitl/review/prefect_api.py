"""Reviewer-side access to paused flow runs through the Prefect API: find them, read their forms, resume.

This is what the terminal CLI and the simulated reviewers use; it does exactly what the Resume button of
the Prefect UI does (read the stored form schema, send the values, let the server validate them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

REVIEW_FORM, APPROVAL_FORM, ADJUDICATION_FORM = "ReviewForm", "ApprovalForm", "AdjudicationForm"


@dataclass
class PausedRun:
    id: str
    name: str
    flow_name: str
    form: str  # the form schema's title: ReviewForm, AdjudicationForm or ApprovalForm
    schema: dict[str, Any]
    description: str
    created: str  # when the run started (ISO)
    paused_at: str = ""  # when it began to wait (the Paused/Suspended state's time, ISO)
    expires_at: str | None = None  # when the wait times out (review.timeout_s after paused_at), ISO
    state_id: str = ""  # the Paused state's id, which is also the id of its `prefect.flow-run.Suspended` event
    tags: tuple[str, ...] = ()
    response_key: str = ""  # the run input key its answer is stored under (resume reads it back)

    @property
    def fields(self) -> dict[str, Any]:
        return self.schema.get("properties", {})


def _read_input(client, flow_run_id: UUID, key: str) -> Any:
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        raw = client.read_flow_run_input(flow_run_id=flow_run_id, key=key)
    except (ObjectNotFound, PrefectHTTPStatusError):
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def paused_runs(form: str | tuple[str, ...] | None = None) -> list[PausedRun]:
    """Paused runs waiting for input (oldest first), optionally only those with the given form(s).

    A run whose form schema is not stored yet (it was paused a moment ago) is left out until it is.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    out: list[PausedRun] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.START_TIME_ASC, limit=200)
        flow_names: dict[UUID, str] = {}
        for run in runs:
            keyset = run.state.state_details.run_input_keyset if run.state else None
            if not keyset:
                continue
            schema = _read_input(client, run.id, keyset["schema"])
            if not isinstance(schema, dict):
                continue
            title = str(schema.get("title", ""))
            if form and title not in ((form,) if isinstance(form, str) else form):
                continue
            if run.flow_id not in flow_names:
                flow_names[run.flow_id] = client.read_flow(run.flow_id).name
            description = _read_input(client, run.id, keyset["description"]) or ""
            timeout = run.state.state_details.pause_timeout
            out.append(PausedRun(str(run.id), run.name, flow_names[run.flow_id], title, schema,
                                 str(description), str(run.start_time or run.created),
                                 run.state.timestamp.isoformat(), timeout.isoformat() if timeout else None,
                                 str(run.state.id), tuple(run.tags), str(keyset.get("response", ""))))
    return out


class NotWaiting(RuntimeError):
    """The run no longer waits for input: already resumed, finished, or its pause timed out."""


class ResumedByAnother(RuntimeError):
    """Someone else resumed the run at the same moment and the run took their answer, not this one."""


def resume(flow_run_id: str, values: dict[str, Any], response_key: str = "") -> None:
    """Resume a paused run with form values; the server validates them against the stored schema.

    Raises NotWaiting when the run is not paused (e.g. already resumed) or timed out, RuntimeError with the
    server's reason (on one line) when the values do not fit the form, and ResumedByAnother when the answer the
    run will read is not this one: two resumes sent at the same instant can both be told they succeeded
    (measured on Prefect 3.9's server, three reviewers within 10 ms: all three accepted, one answer kept), so the
    answer stored under `response_key` (PausedRun.response_key) is read back and compared.
    """
    from prefect import get_client
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    run_id = UUID(flow_run_id)
    try:
        resume_flow_run(run_id, run_input=values)
    except NotPausedError as e:
        raise NotWaiting(f"Flow run {flow_run_id} is not paused (already resumed or finished).") from e
    except FlowPauseTimeout as e:
        raise NotWaiting(f"Flow run {flow_run_id} timed out before it was resumed.") from e
    except RuntimeError as e:  # the server refused the values
        raise RuntimeError(" ".join(str(e).split())) from e
    if response_key:
        with get_client(sync_client=True) as client:
            taken = _read_input(client, run_id, response_key)
        if taken != json.loads(json.dumps(values)):
            raise ResumedByAnother(f"Flow run {flow_run_id} was resumed by someone else at the same moment and took "
                                   f"their answer: yours was not stored. Nothing is lost of theirs; look at the "
                                   f"run's page or `hitl inbox` for what is still waiting.")
