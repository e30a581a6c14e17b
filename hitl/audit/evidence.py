"""What each kind of audit entry refers to: one function per kind computes the payload, for recording
(`record_*`) and for verifying (`verify` against the review store's rows and, with `mlflow`, the dataset
artifacts, model versions, report files and approvals); the heads recorded outside the store; the lineage line
of the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from hitl.audit.chain import (
    GENESIS,
    AuditError,
    AuditLog,
    Entry,
    chain_problem,
    read_head,
    sha256_file,
    sha256_json,
    sha256_tree,
)
from hitl.config import Config
from hitl.learning.promotion import APPROVED_BY, ROLLED_BACK
from hitl.review.store import Erasure, ReviewStore
from hitl.review.tables import AnnotationRow, GoldAnswer, GoldItem, Item, Resolution

if TYPE_CHECKING:  # the dataset stage (with pandas and pandera) is imported where a version is recorded
    from datetime import datetime

    from hitl.datasets.versions import DatasetVersion

HEAD_TAG = "hitl.audit_head"  # on model versions: "<seq>:<entry sha256>" of the head when tagged
SYSTEM_ACTOR = "pipeline"
# a prune entry's note on a version whose file had changed since it was registered
DIGEST_FAILED = "its file had changed since registration (failed its digest check)"
_UNANCHORED = ("registered_model_meta",)  # written by the registry itself, not part of the model's content


def dataset_subject(name: str, version: int | str) -> str:
    return f"dataset {name} v{version}"


def model_subject(name: str, version: str) -> str:
    return f"model {name} v{version}"


def decision_subject(name: str, challenger_version: str, decision: str) -> str:
    return f"release {name} v{challenger_version}: {decision}"


def rollback_subject(name: str, from_version: str, to_version: str) -> str:
    return f"rollback {name} v{from_version} -> v{to_version}"


def _review_rows(s: Session, batch_ids: Iterable[str] | None = None) -> dict[str, dict]:
    """Batch id -> what its submission stored: annotations and gold answers (no timestamps)."""
    ann = (select(AnnotationRow.batch_id, AnnotationRow.id, Item.trace_id, AnnotationRow.reviewer,
                  AnnotationRow.label, AnnotationRow.rationale).join(Item, Item.id == AnnotationRow.item_id)
           .order_by(AnnotationRow.id))
    gold = (select(GoldAnswer.batch_id, GoldAnswer.id, GoldItem.source_ref, GoldAnswer.reviewer, GoldAnswer.label,
                   GoldAnswer.correct).join(GoldItem, GoldItem.id == GoldAnswer.gold_id).order_by(GoldAnswer.id))
    if batch_ids is not None:
        ids = list(batch_ids)
        ann, gold = ann.where(AnnotationRow.batch_id.in_(ids)), gold.where(GoldAnswer.batch_id.in_(ids))
    out: dict[str, dict] = {}
    for key, q in (("annotations", ann), ("gold_answers", gold)):
        for batch_id, *row in s.execute(q).all():
            out.setdefault(batch_id, {"annotations": [], "gold_answers": []})[key].append(row)
    return out


def _resolution_rows(s: Session, ids: Iterable[int] | None = None) -> dict[int, list]:
    q = (select(Resolution.id, Item.trace_id, Resolution.kind, Resolution.reviewer, Resolution.label,
                Resolution.reason).join(Item, Item.id == Resolution.item_id))
    if ids is not None:
        q = q.where(Resolution.id.in_(list(ids)))
    return {r[0]: list(r) for r in s.execute(q).all()}


def record_review(log: AuditLog, store: ReviewStore, batch_id: str, reviewer: str) -> Entry:
    """A submitted review batch: its annotations and gold answers as stored."""
    with Session(store.engine) as s:
        rows = _review_rows(s, [batch_id]).get(batch_id, {"annotations": [], "gold_answers": []})
    ref = {"batch_id": batch_id, "annotations": len(rows["annotations"]), "gold_answers": len(rows["gold_answers"])}
    return log.append("review", reviewer, f"review batch {batch_id}", ref, sha256_json(rows))[0]


def record_resolutions(log: AuditLog, store: ReviewStore, ids: Iterable[int], kind: str, actor: str) -> Entry | None:
    """Adjudications (or a correction): the resolutions as stored. None when there are none."""
    with Session(store.engine) as s:
        rows = _resolution_rows(s, ids)
    if not rows:
        return None
    ids = sorted(rows)
    ref = {"resolution_ids": ids, "traces": len({r[1] for r in rows.values()})}
    subject = f"{kind} r{ids[0]}" + (f"..r{ids[-1]}" if len(ids) > 1 else "")
    return log.append(kind, actor, subject, ref, sha256_json([rows[i] for i in ids]))[0]


def record_adjudications(log: AuditLog, store: ReviewStore, trace_ids: Iterable[str], adjudicator: str
                         ) -> Entry | None:
    """The adjudications `adjudicator` stored for `trace_ids` (also those a retried task stored the first time)."""
    with Session(store.engine) as s:
        ids = s.scalars(select(Resolution.id).join(Item, Item.id == Resolution.item_id)
                        .where(Item.trace_id.in_(list(trace_ids)), Resolution.kind == "adjudication",
                               Resolution.reviewer == adjudicator)).all()
    return record_resolutions(log, store, ids, "adjudication", adjudicator)


def record_erasure(log: AuditLog, trace_ids: list[str], actor: str, reason: str) -> Entry:
    """Review items whose text was erased (a deletion request, or retention): who, why, and the trace ids (their
    SHA-256 in the payload; the ids themselves name no customer text)."""
    ref = {"traces": len(trace_ids), "reason": reason, "first": trace_ids[0] if trace_ids else None}
    subject = f"erasure of {len(trace_ids)} review item" + ("s" if len(trace_ids) != 1 else "")
    return log.append("erasure", actor, subject, ref, sha256_json(sorted(trace_ids)))[0]


def erase(log: AuditLog, store: ReviewStore, actor: str, reason: str, trace_ids: Iterable[str] = (),
          older_than: datetime | None = None) -> tuple[Erasure, Entry | None]:
    """Erase review items' text (`ReviewStore.erase`), recorded: the entry first, then exactly the items it names,
    so a crash between the two is finished by running the same erasure again (recorded once). Returns what was
    asked for (its `erased`: what this call erased or found planned, `unknown`) and the entry (None: nothing to
    erase)."""
    plan = store.erase(trace_ids, older_than, dry_run=True)
    entry = record_erasure(log, plan.erased, actor, reason) if plan.erased else None
    store.erase(plan.erased)
    return plan, entry


def record_prune(log: AuditLog, dvs: list[DatasetVersion], actor: str, reason: str,
                 problems: dict[int, str] | None = None) -> Entry:
    """Dataset versions whose file is deleted because they hold erased text: which (number, run, SHA-256 of the
    file as registered, and `problems`: what was wrong with a version's file as found, by version), who and why."""
    problems = problems or {}
    ref = {"name": dvs[0].name, "reason": reason,
           "versions": [{"version": v.version, "run_id": v.run_id, "sha256": v.sha256,
                         **({"problem": problems[v.version]} if v.version in problems else {})} for v in dvs]}
    subject = f"prune of dataset {dvs[0].name} v" + ", v".join(str(v.version) for v in dvs)
    return log.append("prune", actor, subject, ref, sha256_json(ref))[0]


def prune_erased(log: AuditLog, cfg: Config, erased: set[str], actor: str, reason: str
                 ) -> tuple[list[DatasetVersion], Entry | None]:
    """Prune every dataset version that holds the text of an erased review item (`erased`: their trace ids),
    recorded: the entry first, then each version (`versions.prune`), so a crash in between is finished by running
    it again, recorded once. A version failing its digest check does not stop the others (`_may_hold`); the entry
    names what was wrong with its file. Needs MLflow. Returns the versions pruned (or finished) now, and the entry
    (None: nothing new to record)."""
    from hitl.datasets import versions

    recorded = {(e.ref["name"], int(v["version"])) for e in log.entries() if e.kind == "prune"
                for v in e.ref["versions"]}
    plan, problems = [], {}
    for dv in versions.list_versions(cfg) if erased else []:
        if dv.pruned or (dv.name, dv.version) in recorded:
            if versions.artifact_present(dv):
                plan.append(dv)  # recorded (or tagged) before a crash: finish it
            continue
        holds, problem = _may_hold(cfg, dv, erased)
        if holds:
            plan.append(dv)
            if problem:
                problems[dv.version] = problem
    new = [dv for dv in plan if (dv.name, dv.version) not in recorded]
    entry = record_prune(log, new, actor, reason, problems) if new else None
    for dv in plan:
        versions.prune(dv, reason)
    return plan, entry


def _may_hold(cfg: Config, dv: DatasetVersion, erased: set[str]) -> tuple[bool, str | None]:
    """Whether a version holds any of the erased trace ids, and what was wrong with its file (None: nothing). A
    file that fails its digest check is read as it is now (it may still hold them) and does not stop the other
    versions' pruning; one that cannot be read at all counts as holding them: an erasure must reach every copy it
    cannot rule out."""
    from hitl.datasets import versions

    try:
        return bool(versions.trace_ids(cfg, dv) & erased), None
    except ValueError:  # failed its digest check
        held = versions.stored_trace_ids(dv)
        if held is None:
            return True, DIGEST_FAILED + "; it could not be read, so it was pruned unread"
        return bool(held & erased), DIGEST_FAILED + "; read as stored"


def record_dataset(log: AuditLog, dv: DatasetVersion) -> Entry:
    """A dataset version: the SHA-256 of its full artifact file (not MLflow's dataset digest, a truncated MD5)."""
    from hitl.datasets.versions import ARTIFACT_DIR, ARTIFACT_FILE

    ref = {"name": dv.name, "version": dv.version, "run_id": dv.run_id, "artifact": f"{ARTIFACT_DIR}/{ARTIFACT_FILE}",
           "rows": dv.rows, "parent": dv.parent}
    return log.append("dataset", SYSTEM_ACTOR, dataset_subject(dv.name, dv.version), ref, dv.sha256)[0]


def model_facts(name: str, version: str) -> dict:
    """A registered model version as it is now: its run, source, and hashes of its files and its training run's
    params and metrics. Downloads the model's files."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient()
    mv = client.get_model_version(name, str(version))
    data = client.get_run(mv.run_id).data if mv.run_id else None
    with tempfile.TemporaryDirectory() as tmp:
        files = sha256_tree(Path(download_artifacts(artifact_uri=mv.source, dst_path=tmp)), _UNANCHORED)
    return {"name": name, "version": str(version), "run_id": mv.run_id, "source": mv.source,
            "artifacts_sha256": files, "params_sha256": sha256_json(data.params if data else {}),
            "metrics_sha256": sha256_json(data.metrics if data else {})}


def record_model(log: AuditLog, name: str, version: str) -> Entry:
    """A registered model version and its training run."""
    facts = model_facts(name, version)
    return log.append("model", SYSTEM_ACTOR, model_subject(name, version), facts, sha256_json(facts))[0]


def record_report(log: AuditLog, run_id: str, files: dict[str, Path], about: dict) -> Entry:
    """A regression report: the SHA-256 of each file as logged to the eval run (`files`: artifact path -> local
    copy). A report re-published with its decision is a new entry about the same run."""
    digests = {artifact: sha256_file(local) for artifact, local in sorted(files.items())}
    ref = {**about, "run_id": run_id, "files": digests}
    return log.append("report", SYSTEM_ACTOR, f"report run {run_id}", ref, sha256_json(digests))[0]


def gate_subject(name: str, challenger_version: str, look: int) -> str:
    return f"gate:{name}/{challenger_version}#look{look}"


def record_gate_settings(log: AuditLog, name: str, champion_version: str, challenger_version: str,
                         settings: dict) -> Entry:
    """The release gate's settings for one look at a challenger, recorded before any label is read."""
    ref = {"name": name, "champion_version": str(champion_version), "challenger_version": str(challenger_version),
           **settings}
    return log.append("gate", SYSTEM_ACTOR, gate_subject(name, challenger_version, int(settings["look"])), ref,
                      sha256_json(ref))[0]


def record_decision(log: AuditLog, name: str, champion_version: str, challenger_version: str, decision: str,
                    approver: str, reason: str, gate: str = "", break_glass: bool = False) -> Entry:
    """A person's approval or rejection of a release, with the gate outcome it was made against; `break_glass`
    marks an approval against a gate that did not PASS."""
    ref = {"name": name, "champion_version": str(champion_version), "challenger_version": str(challenger_version),
           "decision": decision, "approver": approver, "reason": reason}
    if gate:
        ref |= {"gate": gate, "break_glass": bool(break_glass)}
    return log.append("decision", approver, decision_subject(name, challenger_version, decision), ref,
                      sha256_json(ref))[0]


def record_rollback(log: AuditLog, name: str, from_version: str, to_version: str, actor: str, reason: str
                    ) -> Entry:
    """A person's rollback of `@champion` from one version to an earlier approved one, recorded before the
    registry moves (the same decision again, after a crash, appends nothing and returns the entry)."""
    ref = {"name": name, "from_version": str(from_version), "to_version": str(to_version), "actor": actor,
           "reason": reason}
    return log.append("rollback", actor, rollback_subject(name, from_version, to_version), ref, sha256_json(ref))[0]


def tag_release(name: str, version: str, entry: Entry, client=None) -> None:
    """Anchor the chain in the model registry: the head as a tag on the model version (`client`: the caller's
    MlflowClient, else a new one)."""
    from mlflow import MlflowClient

    (client or MlflowClient()).set_model_version_tag(name, str(version), HEAD_TAG, f"{entry.seq}:{entry.entry_sha256}")


def release_line(log: AuditLog, dataset_ref: str, name: str, challenger_version: str) -> str:
    """The report's lineage line: the chain entries of the release's dataset, model and decision, and the head."""
    ds_name, _, ds_version = dataset_ref.rpartition("@")
    found = {"dataset": log.find("dataset", dataset_subject(ds_name, ds_version)),
             "model": log.find("model", model_subject(name, challenger_version))}
    gates = [e for e in log.entries() if e.kind == "gate" and e.subject.startswith(
        gate_subject(name, challenger_version, 0).rsplit("#", 1)[0] + "#")]
    if gates:
        found["gate settings"] = gates[-1]
    decisions = [log.find("decision", decision_subject(name, challenger_version, d)) for d in ("approve", "reject")]
    found["decision"] = max((d for d in decisions if d is not None), key=lambda d: d.seq, default=None)
    parts = [f"{k} entry {e.short}" for k, e in found.items() if e is not None]
    head = log.head()
    if head is None:
        return "no audit entries yet"
    return f"{', '.join(parts) or 'no entries for this release'}; chain head {head.short} (`hitl audit verify`)"


# ---- verification ----
@dataclass(frozen=True)
class Problem:
    seq: int | None
    what: str  # the entry's subject, or where the problem is
    reason: str

    def __str__(self) -> str:
        where = f"entry #{self.seq} ({self.what})" if self.seq is not None else self.what
        return f"{where}: {self.reason}"


@dataclass
class Verification:
    entries: int
    problem: Problem | None
    head: Entry | None = None
    checked: dict[str, int] = field(default_factory=dict)  # what was compared, by kind of check

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Live:
    """The objects entries refer to, read once: the review store, and MLflow when `mlflow` is set."""

    def __init__(self, store: ReviewStore | None, mlflow: bool):
        self.mlflow = mlflow
        self.reviews: dict[str, dict] = {}
        self.resolutions: dict[int, list] = {}
        if store is not None:
            with Session(store.engine) as s:
                self.reviews, self.resolutions = _review_rows(s), _resolution_rows(s)
        self.store = store is not None
        self.pruned: set[str] = set()  # runs of dataset versions a prune entry names (their files are gone)

    def check(self, e: Entry, latest: bool) -> tuple[str, str | None] | None:
        """(what was checked, why it does not match or None); None when nothing could be checked here.
        `latest`: no later entry has the same kind and subject (a re-published report overwrote its files)."""
        check = _CHECKS.get(e.kind)
        if check is None:
            return None
        scope, fn = check
        if (scope == "store" and not self.store) or (scope == "mlflow" and not self.mlflow) or \
                (e.kind == "report" and not latest):
            return None
        try:
            return scope, fn(self, e, latest)
        except Exception as ex:  # a missing run, model version or artifact is a mismatch, named
            return scope, f"could not read what it refers to ({type(ex).__name__}: {str(ex).splitlines()[0][:200]})"


def _differs(what: str, actual: str, recorded: str) -> str | None:
    return None if actual == recorded else f"{what} sha256 {actual[:12]} != recorded {recorded[:12]}"


def _check_review(live: _Live, e: Entry, _latest: bool) -> str | None:
    rows = live.reviews.get(e.ref.get("batch_id"), {"annotations": [], "gold_answers": []})
    return _differs("the batch's stored annotations have", sha256_json(rows), e.payload_sha256)


def _check_resolutions(live: _Live, e: Entry, _latest: bool) -> str | None:
    ids = [int(i) for i in e.ref.get("resolution_ids", [])]
    missing = [i for i in ids if i not in live.resolutions]
    if missing:
        return f"resolutions {missing} are gone from the review store"
    return _differs("the stored resolutions have", sha256_json([live.resolutions[i] for i in ids]), e.payload_sha256)


def _check_dataset(live: _Live, e: Entry, _latest: bool) -> str | None:
    from mlflow.artifacts import download_artifacts

    if e.ref["run_id"] in live.pruned:
        return None  # its file was deleted on purpose: the prune entry is checked instead
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(run_id=e.ref["run_id"], artifact_path=e.ref["artifact"], dst_path=tmp)
        return _differs(f"the artifact {e.ref['artifact']} of run {e.ref['run_id'][:12]} has", sha256_file(Path(local)),
                        e.payload_sha256)


def _check_prune(_live: _Live, e: Entry, _latest: bool) -> str | None:
    """The payload, and each version it names: tagged pruned, its file gone."""
    bad = _differs("the prune entry has", sha256_json(e.ref), e.payload_sha256)
    if bad:
        return bad
    from hitl.datasets import versions

    for v in e.ref["versions"]:
        dv = versions.by_run(v["run_id"])
        if dv.sha256 != v["sha256"]:
            return _differs(f"the tag of v{v['version']}", dv.sha256, v["sha256"])
        if not dv.pruned or versions.artifact_present(dv):
            return (f"recorded, but v{v['version']} still holds its file: run the erasure again (`hitl erase` with "
                    "the same ids, or the next `register-dataset` under retention) to finish it")
    return None


def _check_model(_live: _Live, e: Entry, _latest: bool) -> str | None:
    now = model_facts(e.ref["name"], e.ref["version"])
    for k in ("run_id", "source"):
        if now[k] != e.ref.get(k):
            return f"the model version's {k} is {now[k]}, recorded {e.ref.get(k)}"
    for k, what in (("artifacts_sha256", "model files"), ("params_sha256", "training run params"),
                    ("metrics_sha256", "training run metrics")):
        if now[k] != e.ref.get(k):
            return _differs(f"the {what} have", now[k], e.ref.get(k, ""))
    return _differs("the model facts have", sha256_json(now), e.payload_sha256)


def _check_report(_live: _Live, e: Entry, _latest: bool) -> str | None:
    from mlflow.artifacts import download_artifacts

    files = e.ref.get("files", {})
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, recorded in files.items():
            local = download_artifacts(run_id=e.ref["run_id"], artifact_path=artifact, dst_path=tmp)
            bad = _differs(f"the report file {artifact} has", sha256_file(Path(local)), recorded)
            if bad:
                return bad
    return _differs("the report files have", sha256_json(files), e.payload_sha256)


def _check_decision(_live: _Live, e: Entry, latest: bool) -> str | None:
    bad = _differs("the decision has", sha256_json(e.ref), e.payload_sha256)
    if bad or not latest or e.ref.get("decision") != "approve":
        return bad
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(e.ref["name"], e.ref["challenger_version"]).tags
    by = tags.get(APPROVED_BY)
    return None if by == e.ref.get("approver") else \
        f"the model version's {APPROVED_BY} is {by!r}, recorded {e.ref.get('approver')!r}"


def _check_rollback(_live: _Live, e: Entry, latest: bool) -> str | None:
    """The payload, and on the version rolled back the tags the rollback wrote (unless a later rollback of the
    same version, restored in between, wrote its own)."""
    bad = _differs("the rollback has", sha256_json(e.ref), e.payload_sha256)
    if bad or not latest:
        return bad
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(e.ref["name"], e.ref["from_version"]).tags
    if ROLLED_BACK["by"] not in tags:
        return "recorded, but the registry was never moved: run the same `hitl rollback` again to finish it"
    if tags.get(ROLLED_BACK["entry"]) != str(e.seq):
        return None  # a later rollback of this version (it was restored in between) tagged it since
    by = tags[ROLLED_BACK["by"]]
    return None if by == e.ref.get("actor") else \
        f"the model version's {ROLLED_BACK['by']} is {by!r}, recorded {e.ref.get('actor')!r}"


def _check_gate(_live: _Live, e: Entry, _latest: bool) -> str | None:
    return _differs("the gate settings have", sha256_json(e.ref), e.payload_sha256)


_CHECKS: dict[str, tuple[str, Callable[[_Live, Entry, bool], str | None]]] = {
    "review": ("store", _check_review), "adjudication": ("store", _check_resolutions),
    "correction": ("store", _check_resolutions), "dataset": ("mlflow", _check_dataset),
    "model": ("mlflow", _check_model), "report": ("mlflow", _check_report), "decision": ("mlflow", _check_decision),
    "gate": ("store", _check_gate), "rollback": ("mlflow", _check_rollback), "prune": ("mlflow", _check_prune),
}


def anchors(log: AuditLog, registered_name: str | None) -> dict[int, list[tuple[str, str]]]:
    """Heads recorded outside the store: seq -> [(entry sha256, where)]. The head file beside the key, and the
    `hitl.audit_head` tag of every version of the registered model (when given)."""
    out: dict[int, list[tuple[str, str]]] = {}
    head = read_head(log.head_file)
    if head is not None:
        out.setdefault(int(head["seq"]), []).append((str(head["entry_sha256"]), f"the head file {log.head_file}"))
    if registered_name:
        from mlflow import MlflowClient

        for mv in MlflowClient().search_model_versions(f"name = '{registered_name}'"):
            seq, _, sha = (mv.tags or {}).get(HEAD_TAG, "").partition(":")
            if seq.isdigit():
                out.setdefault(int(seq), []).append((sha, f"the tag {HEAD_TAG} of {registered_name} v{mv.version}"))
    return out


def verify(log: AuditLog, store: ReviewStore | None = None, registered_name: str | None = None,
           mlflow: bool = False, entries: list[Entry] | None = None) -> Verification:
    """Walk the chain from the first entry: each entry's hash, its link to the one before, its HMAC anchor,
    the heads recorded outside the store, and what it refers to (the review store's rows; with `mlflow`, the
    dataset artifacts, model versions and training runs, report files and approvals). Stops at the first
    entry that does not match."""
    entries = log.entries() if entries is None else entries
    result = Verification(len(entries), None, entries[-1] if entries else None,
                          {"entries": 0, "anchors": 0, "store": 0, "mlflow": 0})
    if not entries:
        return result
    try:
        key = log.key()
    except AuditError as e:
        result.problem = Problem(None, "audit key", str(e))
        return result
    heads = anchors(log, registered_name if mlflow else None)
    live = _Live(store, mlflow)
    live.pruned = {v["run_id"] for e in entries if e.kind == "prune" for v in e.ref.get("versions", [])}
    last_of = {(e.kind, e.subject): e.seq for e in entries}
    prev = GENESIS
    for i, e in enumerate(entries, start=1):
        bad = chain_problem(e, prev, i, key)
        for sha, where in heads.get(e.seq, []) if bad is None else []:
            if sha != e.entry_sha256:
                bad = f"{where} recorded sha256 {sha[:12]}, the chain has {e.entry_sha256[:12]}"
                break
            result.checked["anchors"] += 1
        if bad is None:
            checked = live.check(e, latest=last_of[(e.kind, e.subject)] == e.seq)
            if checked is not None:
                result.checked[checked[0]] += 1
                bad = checked[1]
        if bad is not None:
            result.problem = Problem(e.seq, e.subject, bad)
            return result
        result.checked["entries"] += 1
        prev = e.entry_sha256
    beyond = [s for s in heads if s > len(entries)]
    if beyond:
        s = max(beyond)
        result.problem = Problem(None, f"the chain's end (#{len(entries)})",
                                 f"{heads[s][0][1]} names entry #{s}: entries were removed")
    return result


def open_log(cfg: Config, store: ReviewStore | None = None) -> AuditLog:
    """The chain on the configured review store's database, with the configured key."""
    return AuditLog.of(store or ReviewStore(cfg.store_url), cfg.audit_key_file)
