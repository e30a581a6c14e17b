"""MLflow traces in and out: production traces logged to an MLflow experiment as a trace source, and the
human verdict written back to each trace as an assessment.

In: `MlflowClient.search_traces` over `source.experiment`, one window [since, until) at a time: the window's
trace infos are paged (`filter_string` on `trace.timestamp_ms`, page tokens; no spans), de-duplicated by trace id
(the SQL store pages by offset, so a trace inserted while paging can repeat or be skipped: a window is read again
until it is closed, hitl/sampling/watermarks.py), and only the traces not considered before are fetched whole
(`trace.request_id IN (...)`). A window holding more than `source.max_traces` finished traces is capped: the run
takes the traces whose seeded hash of their id lies below a threshold fixed at the window's first read (a
seeded simple random sample of `max_traces`, and the same share of the traces that arrive late); each row
carries that share as `source_rate`, and the random draw multiplies its inclusion probabilities by it.
A trace's request (its root span's inputs) gives the message (`source.request_key`, or the only string input),
its response the model's answer (`prediction_key`, `confidence_key`), its tags the cohorts. Rows go through the
same validation and quarantine as files.

Out: `write_back` logs each resolved label with `mlflow.log_feedback` (source HUMAN, the reviewers, their
rationale), once per trace and label: a re-run writes nothing twice; a later correction adds the new verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from hitl.config import Config

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Trace

log = logging.getLogger(__name__)


def _decoded(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _message(request: object, key: str | None) -> object:
    """The customer's text: `key` of a dict request, the only string value, or the request itself."""
    if isinstance(request, dict):
        if key:
            return request.get(key)
        texts = [v for v in request.values() if isinstance(v, str)]
        return texts[0] if len(texts) == 1 else None
    return request


PAGE = 500  # trace infos per search_traces call: the tracking server refuses more (SearchTracesV3, max 500)
FETCH = 200  # whole traces per call, named by id in the filter


@dataclass(frozen=True)
class WindowPlan:
    """A window to read: [since, until) in ns since the epoch (UTC; None: open) and its cap: the take threshold
    fixed at its first read (None: every trace), or decided now when `first`."""

    since: int | None
    until: int | None
    take_below: float | None = None
    first: bool = True


@dataclass(frozen=True)
class WindowRead:
    """What one window held: finished traces in it, taken under its cap, and new (taken, not considered before)."""

    since: int | None
    until: int | None
    in_window: int
    taken: int
    new: int
    take_below: float | None  # the cap's threshold, also the share taken; None: every trace

    @property
    def capped(self) -> bool:
        return self.take_below is not None


@dataclass
class Read:
    rows: pd.DataFrame  # the new traces taken, as raw rows of the trace contract, each with its `source_rate`
    windows: list[WindowRead]
    infos: int  # trace infos MLflow returned while paging (a repeat across pages counted again)
    fetched: int  # whole traces fetched


def source_name(cfg: Config) -> str:
    """How the watermarks and quarantine name this source."""
    return f"mlflow experiment {cfg.source.experiment}"


def window_filter(since: int | None, until: int | None) -> str | None:
    """`trace.timestamp_ms` bounds of [since, until) given in ns (a trace's timestamp is whole ms)."""
    parts = [f"trace.timestamp_ms {op} {-(-bound // 10**6)}" for op, bound in ((">=", since), ("<", until))
             if bound is not None]
    return " AND ".join(parts) or None


def take_key(trace_id: str, seed: int) -> float:
    """A trace's place in the seeded random order of a capped window: uniform in [0, 1), fixed by its id."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{trace_id}".encode()).digest()[:8], "big") / 2**64


def cap(keys: list[float], max_traces: int) -> float | None:
    """The threshold below which `max_traces` of the keys lie (a seeded simple random sample); None when all fit.
    It is the next key up (bottom-k sampling): every trace, late ones too, is taken with probability equal to
    the threshold given it, so weighting by its inverse is unbiased."""
    return None if len(keys) <= max_traces else sorted(keys)[max_traces]


def experiment_id(cfg: Config, client: MlflowClient) -> str:
    exp = client.get_experiment_by_name(cfg.source.experiment or "")
    if exp is None:
        raise ValueError(f"No MLflow experiment named {cfg.source.experiment!r} at {cfg.mlflow_uri}: set "
                         "source.experiment to the experiment your application logs its traces to.")
    return exp.experiment_id


def page_infos(client: MlflowClient, exp_id: str, since: int | None, until: int | None) -> tuple[dict, int]:
    """trace id -> TraceInfo of every trace in [since, until), paged without spans; and how many MLflow returned."""
    found, returned, token = {}, 0, None
    while True:
        page = client.search_traces(locations=[exp_id], filter_string=window_filter(since, until),
                                    include_spans=False, max_results=PAGE, page_token=token)
        returned += len(page)
        for t in page:
            found.setdefault(t.info.trace_id, t.info)
        token = page.token
        if not token:
            return found, returned


def fetch(client: MlflowClient, exp_id: str, ids: list[str], include_spans: bool = True) -> list:
    """The traces of `ids` in the experiment (whole, or their infos only), FETCH at a time."""
    out = []
    for i in range(0, len(ids), FETCH):
        chunk = ids[i:i + FETCH]
        named = ", ".join("'" + t.replace("'", "") + "'" for t in chunk)
        out += client.search_traces(locations=[exp_id], filter_string=f"trace.request_id IN ({named})",
                                    max_results=len(chunk), include_spans=include_spans)
    return out


def read_windows(cfg: Config, plans: list[WindowPlan], known: Callable[[list[str]], set[str]],
                 client: MlflowClient | None = None) -> Read:
    """Read each planned window: page its trace infos, cap it (`source.max_traces`, at its first read), and fetch
    whole only the traces taken and not `known` (of the ids given, those an earlier run considered). Traces still
    being written are left for a later read of their window."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    exp_id = experiment_id(cfg, client)
    rates: dict[str, float] = {}
    windows, returned = [], 0
    for p in plans:
        infos, n = page_infos(client, exp_id, p.since, p.until)
        returned += n
        keys = {t: take_key(t, cfg.selection.seed) for t, info in infos.items()
                if "IN_PROGRESS" not in str(getattr(info, "state", ""))}
        below = cap(list(keys.values()), cfg.source.max_traces) if p.first else p.take_below
        taken = [t for t, k in keys.items() if below is None or k < below]
        seen = known(taken)
        new = [t for t in taken if t not in seen and t not in rates]
        rates |= {t: 1.0 if below is None else below for t in new}
        windows.append(WindowRead(p.since, p.until, len(keys), len(taken), len(new), below))
    traces = fetch(client, exp_id, sorted(rates))
    rows = [_row(t, cfg) | {"source_rate": rates[t.info.trace_id]} for t in traces]
    return Read(pd.DataFrame(rows), windows, returned, len(traces))


def read(cfg: Config) -> pd.DataFrame:
    """Every finished trace of the experiment as raw rows (one open window, capped like any window; a cap is
    logged as a warning): what `sources.load_traces` reads."""
    got = read_windows(cfg, [WindowPlan(None, None)], lambda ids: set())
    for w in got.windows:
        if w.capped:
            log.warning("%s holds %d traces, more than source.max_traces %d: took a seeded %d (%.1f%%)",
                        source_name(cfg), w.in_window, cfg.source.max_traces, w.taken, 100 * w.take_below)
    return got.rows


def _row(t: Trace, cfg: Config) -> dict:
    """One trace as a raw row of the trace contract (validated downstream); `_source` names it for quarantine."""
    src = cfg.source
    request, response = _decoded(t.data.request), _decoded(t.data.response)
    tags = {k: v for k, v in (t.info.tags or {}).items() if not k.startswith("mlflow.")}
    answer = response if isinstance(response, dict) else {}
    return {
        "trace_id": t.info.trace_id,
        "timestamp": datetime.fromtimestamp(t.info.request_time / 1000, UTC).isoformat(),
        "input": _message(request, src.request_key),
        "output": response if isinstance(response, str) else json.dumps(response, default=str),
        "prediction": answer.get(src.prediction_key), "confidence": answer.get(src.confidence_key),
        **{c: tags.get(c) for c in cfg.cohorts},
        "metadata": json.dumps({k: v for k, v in tags.items() if k not in cfg.cohorts}),
        "_source": f"mlflow trace {t.info.trace_id}",
    }


def verdicts(resolved: pd.DataFrame, annotations: pd.DataFrame, resolutions: pd.DataFrame) -> pd.DataFrame:
    """trace_id, label, reviewers, rationale of every resolved item: the deciding reason of an adjudication or
    correction, else the rationales reviewers gave for the agreed label."""
    out = resolved[["trace_id", "label", "reviewers"]].copy()
    why = {}
    for r in annotations.dropna(subset=["rationale"]).itertuples():
        why.setdefault(r.trace_id, {}).setdefault(r.label, []).append(str(r.rationale))
    decided = resolutions.dropna(subset=["reason"]).drop_duplicates("trace_id", keep="last")
    decided = dict(zip(decided["trace_id"], decided["reason"], strict=True))
    out["rationale"] = [decided.get(t) or "; ".join(why.get(t, {}).get(lab, [])) or None
                        for t, lab in zip(out["trace_id"], out["label"], strict=True)]
    return out


def write_back(cfg: Config, resolved: pd.DataFrame) -> int:
    """Log each resolved label (`trace_id`, `label`, `reviewers`, `rationale`) on its MLflow trace as a HUMAN
    assessment named `source.assessment_name`, unless that trace already carries this label under that name.
    Returns how many assessments were written."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    exp = mlflow.get_experiment_by_name(cfg.source.experiment or "")
    if exp is None or resolved.empty:
        return 0
    name = cfg.source.assessment_name
    present: dict[str, set[str]] = {}
    ids = sorted({str(t) for t in resolved["trace_id"] if isinstance(t, str)})
    for t in fetch(mlflow.MlflowClient(), exp.experiment_id, ids, include_spans=False):  # these traces, no cap
        present[t.info.trace_id] = {str(a.feedback.value) for a in (t.info.assessments or [])
                                    if a.name == name and a.feedback is not None}
    written = 0
    for r in resolved.itertuples():
        if r.trace_id not in present or str(r.label) in present[r.trace_id]:
            continue  # not an MLflow trace of this experiment, or its verdict is there already
        reviewers = str(r.reviewers).replace(",", ", ") if isinstance(r.reviewers, str) else ""
        mlflow.log_feedback(trace_id=r.trace_id, name=name, value=str(r.label),
                            source=AssessmentSource(AssessmentSourceType.HUMAN, reviewers or "unknown"),
                            rationale=(r.rationale or None) if isinstance(r.rationale, str) else None,
                            metadata={"hitl.project": cfg.project})
        present[r.trace_id].add(str(r.label))
        written += 1
    return written
