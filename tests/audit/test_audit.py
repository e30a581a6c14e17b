"""The audit chain (hitl/audit/, `hitl audit`): a clean chain verifies; an edited entry, an edited and
rehashed chain, removed entries, and swapped or edited objects it refers to (annotations, the dataset artifact,
model files, approvals) are each named at the first entry that does not match."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from helpers_domain import COHORTS, LABELS, make_cfg, review_items
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hitl.audit import chain as audit_chain
from hitl.audit import evidence
from hitl.review import forms
from hitl.review.store import ReviewStore

A, B, C = LABELS


@pytest.fixture
def log(store, tmp_path) -> audit_chain.AuditLog:
    return audit_chain.AuditLog.of(store, tmp_path / "keys" / "audit.key")


def _sql(store: ReviewStore, statement: str, *args) -> None:
    """Edit the database behind the store's back, as someone with file access would."""
    con = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    with con:
        con.execute(statement, args)
    con.close()


def _review(store: ReviewStore, log: audit_chain.AuditLog) -> list[audit_chain.Entry]:
    """Two reviewers disagree on some items, an adjudicator settles them: entries for both batches and the
    adjudications."""
    store.enqueue(review_items(6, required=2), COHORTS)
    out = []
    for reviewer, label in (("alice", A), ("bob", B)):
        batch = store.take_batch(6)
        store.submit(batch.id, reviewer, {it["trace_id"]: (label, f"{reviewer} says") for it in batch.items}, LABELS)
        out.append(evidence.record_review(log, store, batch.id, reviewer))
    disputed = [it["trace_id"] for it in store.disputed()]
    for t in disputed:
        store.resolve(t, C, "carol", "neither", "adjudication", LABELS)
    out.append(evidence.record_adjudications(log, store, disputed, "carol"))
    return out


def _fill(log: audit_chain.AuditLog, n: int, kind: str = "decision") -> list[audit_chain.Entry]:
    return [log.append(kind, "ann", f"thing {i}", {"i": i}, audit_chain.sha256_json({"i": i}))[0] for i in range(n)]


# ---- the chain itself ----

def test_a_clean_chain_verifies_and_the_key_is_private(store, log):
    entries = [*_review(store, log), *_fill(log, 3)]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_sha256 == audit_chain.GENESIS and entries[1].prev_sha256 == entries[0].entry_sha256
    assert entries[2].kind == "adjudication" and entries[2].ref["traces"] == 6
    assert stat.S_IMODE(os.stat(log.key_file).st_mode) == 0o600
    result = evidence.verify(log, store)
    assert result.ok, result.problem
    assert result.checked["entries"] == 6 and result.checked["store"] == 3 and result.checked["anchors"] == 1
    assert json.loads(log.head_file.read_text())["seq"] == 6


def test_an_edited_entry_is_named(store, log):
    _review(store, log)
    _fill(log, 3)
    _sql(store, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
    p = evidence.verify(log, store).problem
    assert p.seq == 2 and "edited" in p.reason
    assert str(p).startswith("entry #2 (review batch ")


def test_an_edited_and_rehashed_chain_is_caught_by_the_hmac_anchor(store, log, tmp_path):
    _fill(log, 6)
    # rewrite entry 3 and rehash it and every entry after it, as the chain is computed, without the key
    rows = list(log.entries())
    prev = rows[1].entry_sha256
    for e in rows[2:]:
        e = dataclasses.replace(e, actor="mallory" if e.seq == 3 else e.actor, prev_sha256=prev)
        digest = audit_chain.entry_hash(e.body())
        _sql(store, "UPDATE audit_entries SET actor = ?, prev_sha256 = ?, entry_sha256 = ?, anchor = ? WHERE seq = ?",
             e.actor, prev, digest, audit_chain.sign(b"a guessed key", digest), e.seq)
        prev = digest
    rehashed = log.entries()
    assert all(audit_chain.chain_problem(e, p.entry_sha256 if p else audit_chain.GENESIS, e.seq, None) is None
               for p, e in zip([None, *rehashed[:-1]], rehashed, strict=True))  # hashes and links alone pass
    p = evidence.verify(log, store).problem
    assert p.seq == 3 and "HMAC anchor" in p.reason


def test_removed_entries_are_caught_by_the_head_outside_the_store(store, log):
    _fill(log, 4)
    _sql(store, "DELETE FROM audit_entries WHERE seq = 4")
    p = evidence.verify(log, store).problem
    assert p.seq is None and "names entry #4: entries were removed" in p.reason
    _sql(store, "DELETE FROM audit_entries WHERE seq = 2")
    assert "sequence jumps from #1 to #3" in evidence.verify(log, store).problem.reason


def test_an_edited_annotation_is_named_at_its_review_entry(store, log):
    _review(store, log)
    _sql(store, "UPDATE annotations SET label = ? WHERE reviewer = 'bob' AND id = (SELECT max(id) FROM annotations)",
         C)
    p = evidence.verify(log, store).problem
    assert p.seq == 2 and "stored annotations" in p.reason


def test_a_deleted_adjudication_is_named(store, log):
    _review(store, log)
    _sql(store, "DELETE FROM resolutions WHERE id = 1")
    p = evidence.verify(log, store).problem
    assert p.seq == 3 and "gone from the review store" in p.reason


def test_without_the_key_the_chain_cannot_be_verified(store, log):
    _fill(log, 2)
    log.key_file.unlink()
    p = evidence.verify(log, store).problem
    assert p.seq is None and "No audit key" in str(p)


def test_appends_are_idempotent_and_serialize_across_writers(store, log, tmp_path):
    first, created = log.append("dataset", "pipeline", "dataset d v1", {"v": 1}, "ab" * 32)
    again, created_again = log.append("dataset", "pipeline", "dataset d v1", {"v": 1}, "ab" * 32)
    assert created and not created_again and again == first
    import threading

    logs = [audit_chain.AuditLog.of(ReviewStore(store.url), log.key_file) for _ in range(2)]  # two "processes"
    barrier = threading.Barrier(6)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(8):
            logs[w % 2].append("decision", f"w{w}", f"item {i % 4}", {"i": i % 4}, audit_chain.sha256_json(i % 4))
            logs[w % 2].append("report", f"w{w}", f"w{w} item {i}", {}, audit_chain.sha256_json([w, i]))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, 1 + 1 + 4 + 6 * 8))  # the duplicates landed once
    assert evidence.verify(log, store).ok


def test_export_round_trips_and_an_edited_export_is_named(store, log, tmp_path):
    entries = [*_review(store, log), *_fill(log, 2)]
    for fmt in ("jsonl", "csv"):
        path = tmp_path / f"audit.{fmt}"
        assert audit_chain.export(log.entries(), path, fmt) == len(entries)
        back = audit_chain.read_export(path)
        assert back == entries
        assert evidence.verify(log, entries=back).ok
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    edited = json.loads(lines[3]) | {"subject": "thing 99"}
    (tmp_path / "edited.jsonl").write_text("\n".join([*lines[:3], json.dumps(edited), *lines[4:]]))
    assert evidence.verify(log, entries=audit_chain.read_export(tmp_path / "edited.jsonl")).problem.seq == 4
    with pytest.raises(audit_chain.AuditError):
        audit_chain.read_export(tmp_path / "review.db")


@pytest.fixture
def chain(tmp_path_factory) -> tuple[audit_chain.AuditLog, list[audit_chain.Entry]]:
    root = tmp_path_factory.mktemp("chain")
    log = audit_chain.AuditLog.of(ReviewStore(f"sqlite:///{root}/r.db"), root / "audit.key")
    return log, _fill(log, 8)


_FIELDS = st.sampled_from(["at", "kind", "actor", "subject", "ref", "payload_sha256", "prev_sha256"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, 7), name=_FIELDS, value=st.text(max_size=20) | st.dictionaries(st.text(max_size=5),
                                                                                     st.integers(), max_size=3),
       rehash=st.booleans())
def test_any_edit_anywhere_is_named_at_that_entry(chain, at, name, value, rehash):
    log, entries = chain
    value = value if name == "ref" or isinstance(value, str) else json.dumps(value)
    assume(getattr(entries[at], name) != value)
    edited = list(entries)
    edited[at] = dataclasses.replace(entries[at], **{name: value})
    if rehash:  # recompute every hash from the edit on, with a guessed key
        prev = entries[at - 1].entry_sha256 if at else audit_chain.GENESIS
        for i in range(at, len(edited)):
            e = dataclasses.replace(edited[i], prev_sha256=prev if (i > at or name != "prev_sha256") else value)
            digest = audit_chain.entry_hash(e.body())
            edited[i] = dataclasses.replace(e, entry_sha256=digest, anchor=audit_chain.sign(b"guess", digest))
            prev = digest
    p = evidence.verify(log, entries=edited).problem
    assert p is not None and p.seq == at + 1


# ---- the referenced MLflow objects ----

@pytest.fixture(scope="module")
def tracking(local_mlflow) -> Path:
    """A local MLflow (SQLite backend, artifacts in a temporary folder) for this module: its folder."""
    return local_mlflow[0]


class _Echo:
    """A stand-in model: the registry and the chain care about its files, not what it predicts."""

    def predict(self, context, model_input):
        return model_input


def _release(cfg, log: audit_chain.AuditLog, root: Path) -> dict:
    """A dataset version, a model trained on it, its report and its approval, each recorded and anchored."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.datasets import versions

    for exp in (cfg.dataset_experiment, cfg.training_experiment, cfg.eval_experiment):
        if mlflow.get_experiment_by_name(exp) is None:
            mlflow.create_experiment(exp, artifact_location=(root / "artifacts" / exp).as_uri())
    records = pd.DataFrame({"trace_id": ["t1", "t2", "t3"], "text": ["a", "b", "c"], "label": [A, B, C],
                            "split": ["train", "train", "regression"], "reviewers": ["alice", "bob", "alice,bob"]})
    dv, _ = versions.register(records, cfg)
    evidence.record_dataset(log, dv)
    name = cfg.model.registered_name
    mlflow.set_experiment(cfg.training_experiment)
    with mlflow.start_run():
        mlflow.log_params({"dataset": dv.ref})
        mlflow.log_metrics({"train_rows": 2.0})
        model = type("Echo", (_Echo, mlflow.pyfunc.PythonModel), {})()
        info = mlflow.pyfunc.log_model(name="model", python_model=model, pip_requirements=[],
                                       registered_model_name=name)
    version = str(info.registered_model_version)
    evidence.tag_release(name, version, evidence.record_model(log, name, version))
    report = root / f"report-{name}.md"
    report.write_text(f"# {dv.ref}: challenger v{version}\n")
    mlflow.set_experiment(cfg.eval_experiment)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(report), "report")
    evidence.record_report(log, run.info.run_id, {f"report/{report.name}": report}, {"dataset": dv.ref})
    MlflowClient().set_model_version_tag(name, version, "hitl.approved_by", "ann")
    decision = evidence.record_decision(log, name, "0", version, "approve", "ann", "voice fixed")
    evidence.tag_release(name, version, decision)
    return {"dv": dv, "version": version, "name": name, "eval_run": run.info.run_id, "model_id": info.model_id}


def _cfg(tmp_path: Path, slug: str):
    return make_cfg(tmp_path, project=f"audit-{slug}", dataset={"name": f"ds-{slug}", "min_rows": 1},
                    model={"registered_name": f"model-{slug}"})


def _verify(log, store, cfg) -> evidence.Verification:
    return evidence.verify(log, store, cfg.model.registered_name, mlflow=True)


def _artifact_file(run_id: str, path: str) -> Path:
    from mlflow import MlflowClient

    return Path(urlparse(MlflowClient().get_run(run_id).info.artifact_uri).path) / path


def test_a_release_verifies_against_mlflow_and_its_report_line_names_the_entries(tracking, store, log, tmp_path):
    cfg = _cfg(tmp_path, "clean")
    rel = _release(cfg, log, tracking)
    result = _verify(log, store, cfg)
    assert result.ok, result.problem
    assert result.checked["mlflow"] == 4 and result.checked["anchors"] >= 2
    line = evidence.release_line(log, rel["dv"].ref, rel["name"], rel["version"])
    assert line.startswith("dataset entry #1 (sha256 ") and "model entry #2" in line and "decision entry #4" in line
    assert "chain head #4" in line


def test_a_swapped_dataset_artifact_is_named_even_with_its_tag_rewritten(tracking, store, log, tmp_path):
    from mlflow import MlflowClient

    from hitl.datasets import versions

    cfg = _cfg(tmp_path, "swap")
    rel = _release(cfg, log, tracking)
    stored = _artifact_file(rel["dv"].run_id, "dataset/records.parquet")
    swapped = pd.read_parquet(stored).assign(label=C)  # every row relabelled
    swapped.to_parquet(stored, index=False)
    MlflowClient().set_tag(rel["dv"].run_id, versions.TAG + "sha256", audit_chain.sha256_file(stored))  # covers tracks
    assert versions.load(cfg, rel["dv"].version)[0]["label"].eq(C).all()  # the digest tag alone no longer helps
    p = _verify(log, store, cfg).problem
    assert p.seq == 1 and p.what == f"dataset {rel['dv'].name} v{rel['dv'].version}"
    assert "the artifact dataset/records.parquet" in p.reason


def test_swapped_model_files_and_an_edited_approval_are_named(tracking, store, log, tmp_path):
    from mlflow import MlflowClient

    cfg = _cfg(tmp_path, "model")
    rel = _release(cfg, log, tracking)
    MlflowClient().set_model_version_tag(rel["name"], rel["version"], "hitl.approved_by", "mallory")
    p = _verify(log, store, cfg).problem
    assert p.seq == 4 and "hitl.approved_by is 'mallory'" in p.reason
    MlflowClient().set_model_version_tag(rel["name"], rel["version"], "hitl.approved_by", "ann")
    assert _verify(log, store, cfg).ok
    folder = Path(urlparse(MlflowClient().get_logged_model(rel["model_id"]).artifact_location).path)
    (folder / "python_model.pkl").write_bytes(b"not the model that was trained")
    p = _verify(log, store, cfg).problem
    assert p.seq == 2 and "the model files have sha256" in p.reason


def test_a_rewritten_tail_is_caught_by_the_release_tag_in_mlflow(tracking, store, log, tmp_path):
    cfg = _cfg(tmp_path, "tail")
    _release(cfg, log, tracking)
    _sql(store, "DELETE FROM audit_entries WHERE seq >= 3")  # the report and the approval
    log.head_file.unlink()  # and the head file beside the key
    assert evidence.verify(log, store).ok  # the store alone cannot tell
    p = _verify(log, store, cfg).problem
    assert "hitl.audit_head" in p.reason and "names entry #4: entries were removed" in p.reason


def test_a_rollback_is_recorded_before_the_registry_moves_and_checked_against_it(tracking, store, log, tmp_path):
    from mlflow import MlflowClient

    from hitl.learning import promotion

    cfg = _cfg(tmp_path, "rollback")
    rel = _release(cfg, log, tracking)
    name, client = rel["name"], MlflowClient()
    v2 = client.create_model_version(name, source=client.get_model_version(name, rel["version"]).source).version
    client.set_model_version_tag(name, v2, promotion.APPROVED_BY, "ann")
    client.set_registered_model_alias(name, promotion.PREVIOUS, rel["version"])
    client.set_registered_model_alias(name, promotion.CHAMPION, v2)

    entry = evidence.record_rollback(log, name, v2, rel["version"], "bo", "v2 misroutes card_lost")
    p = _verify(log, store, cfg).problem  # killed before the registry moved: the chain says so
    assert p.seq == entry.seq and "never moved: run the same `hitl rollback` again" in p.reason
    assert evidence.record_rollback(log, name, v2, rel["version"], "bo", "v2 misroutes card_lost") == entry
    promotion.rollback(name, promotion.Promotion(v2, rel["version"], "bo", "v2 misroutes card_lost",
                                                 kind=promotion.ROLLBACK, at=entry.at, entry=entry.seq))
    assert _verify(log, store, cfg).ok
    client.set_model_version_tag(name, v2, promotion.ROLLED_BACK["by"], "mallory")
    p = _verify(log, store, cfg).problem
    assert p.seq == entry.seq and "hitl.rolled_back_by is 'mallory', recorded 'bo'" in p.reason


def test_versions_holding_erased_text_are_pruned_recorded_first_and_the_chain_still_verifies(tracking, store, log,
                                                                                            tmp_path):
    from hitl.datasets import versions

    cfg = _cfg(tmp_path, "prune")
    mlflow_exp = cfg.dataset_experiment
    import mlflow

    if mlflow.get_experiment_by_name(mlflow_exp) is None:
        mlflow.create_experiment(mlflow_exp, artifact_location=(tracking / "artifacts" / mlflow_exp).as_uri())

    def register(ids: list[str]) -> versions.DatasetVersion:
        rows = pd.DataFrame({"trace_id": ids, "text": [f"text of {i}" for i in ids], "label": A, "split": "train",
                             "reviewers": "alice"})
        dv, _ = versions.register(rows, cfg)
        evidence.record_dataset(log, dv)
        return dv

    v1, v2, v3 = register(["t1", "t2"]), register(["t2", "t3"]), register(["t3", "t4"])
    # a crash after the entry, before any file was deleted: the chain says so, and running it again finishes
    first = evidence.record_prune(log, [v1], "dpo", "deletion request DR-1")
    p = _verify(log, store, cfg).problem
    assert p.seq == first.seq and "v1 still holds its file: run the erasure again" in p.reason
    pruned, entry = evidence.prune_erased(log, cfg, {"t1", "t2"}, "dpo", "deletion request DR-1")
    assert [dv.version for dv in pruned] == [1, 2] and entry.ref["versions"][0]["version"] == 2  # v1 recorded once
    assert entry.kind == "prune" and entry.ref["versions"][0]["sha256"] == v2.sha256
    for dv in (v1, v2):
        assert not versions.artifact_present(dv)
        with pytest.raises(LookupError, match=f"{dv.ref} was pruned on .*deletion request DR-1.*register-dataset"):
            versions.load(cfg, dv.version)
    assert set(versions.load(cfg, v3.version)[0]["trace_id"]) == {"t3", "t4"}  # it held none of them: kept
    assert [dv.pruned is not None for dv in versions.list_versions(cfg)] == [True, True, False]
    assert _verify(log, store, cfg).ok  # their dataset entries pass: the prune entries account for the files
    assert evidence.prune_erased(log, cfg, {"t1", "t2"}, "dpo", "again") == ([], None)  # nothing left to do
    # a pruned file that comes back (a restored backup) is named at the prune entry
    _artifact_file(v2.run_id, "dataset").mkdir(parents=True, exist_ok=True)
    _artifact_file(v2.run_id, "dataset/records.parquet").write_bytes(b"restored")
    p = _verify(log, store, cfg).problem
    assert p.seq == entry.seq and "v2 still holds its file" in p.reason


# ---- the command line and the tasks ----

def _reviewed_stack(tmp_path) -> tuple[Path, ReviewStore, audit_chain.AuditLog]:
    """A config file, its review store and audit chain, with `_review`'s entries in it."""
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"labels: {json.dumps(LABELS)}\nstate_dir: {tmp_path / 'state'}\n")
    cfg = make_cfg(tmp_path)
    cfg.state.mkdir()
    store = ReviewStore(cfg.store_url)
    log = evidence.open_log(cfg, store)
    _review(store, log)
    return cfg_path, store, log


def test_hitl_audit_verify_and_export(tmp_path):
    from hitl.cli import app

    cfg_path, store, log = _reviewed_stack(tmp_path)
    assert log.key_file == tmp_path / "state" / "audit.key"
    runner = CliRunner()
    fixed = runner.invoke(app, ["relabel", "t000", A, "-c", str(cfg_path), "--reviewer", "dave", "--reason", "typo"])
    assert fixed.exit_code == 0, fixed.output
    assert log.head().subject == "correction r7" and log.head().actor == "dave"
    ok = runner.invoke(app, ["audit", "verify", "-c", str(cfg_path), "--offline"])
    assert ok.exit_code == 0 and "Audit chain intact" in ok.output and "4 entries" in ok.output
    out = tmp_path / "audit.csv"
    exported = runner.invoke(app, ["audit", "export", "-c", str(cfg_path), "--format", "csv", "-o", str(out)])
    assert exported.exit_code == 0 and len(audit_chain.read_export(out)) == 4
    _sql(store, "UPDATE audit_entries SET subject = 'review batch x' WHERE seq = 1")
    bad = runner.invoke(app, ["audit", "verify", "-c", str(cfg_path), "--offline"])
    assert bad.exit_code == 1 and "entry #1" in bad.output and "Traceback" not in bad.output


def test_hitl_erase_blanks_the_text_records_who_and_why_and_the_chain_still_verifies(tmp_path):
    from hitl.cli import app
    from hitl.review.tables import ERASED

    cfg_path, store, log = _reviewed_stack(tmp_path)  # annotations and adjudications the chain hashes
    runner = CliRunner()
    refused = runner.invoke(app, ["erase", "t000", "-c", str(cfg_path), "--by", "dpo", "--reason", " "])
    assert refused.exit_code == 1 and "Nothing erased" in refused.output and log.head().kind == "adjudication"
    done = runner.invoke(app, ["erase", "t000", "t001", "ghost", "-c", str(cfg_path), "--by", "dpo",
                               "--reason", "deletion request DR-17"])
    assert done.exit_code == 0, done.output
    assert "Erased 2 review item(s)" in done.output and "No review item for ghost" in done.output
    assert "MLflow is not reachable" in done.output and "run the same `hitl erase` again" in done.output
    head = log.head()
    assert (head.kind, head.actor, head.ref["traces"], head.ref["reason"]) == ("erasure", "dpo", 2,
                                                                               "deletion request DR-17")
    assert head.payload_sha256 == audit_chain.sha256_json(["t000", "t001"])
    assert (store.items().set_index("trace_id").loc[["t000", "t001"], "status"] == ERASED).all()
    assert set(store.resolved()["trace_id"]).isdisjoint({"t000", "t001"})
    again = runner.invoke(app, ["erase", "t000", "-c", str(cfg_path), "--by", "dpo", "--reason", "again"])
    assert again.exit_code == 0 and "Already erased: t000" in again.output and log.head().seq == head.seq
    ok = runner.invoke(app, ["audit", "verify", "-c", str(cfg_path), "--offline"])
    assert ok.exit_code == 0 and "Audit chain intact" in ok.output, ok.output


def test_review_tasks_record_each_submission_once_however_often_retried(tmp_path):
    from prefect.logging import disable_run_logger

    from tasks import review

    cfg = make_cfg(tmp_path, labels=LABELS, cohorts=COHORTS)
    cfg.state.mkdir()
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(4, required=2), COHORTS)
    with disable_run_logger():
        for reviewer, label in (("alice", A), ("bob", B)):
            batch = store.take_batch(4)
            answer = {forms.REVIEWER_FIELD: reviewer, **{forms.item_field(i): label for i in range(4)}}
            for _ in range(2):  # a retry after the labels were stored
                review.store_labels.fn(cfg, store, batch, answer)
        items = store.disputed()
        answer = {forms.REVIEWER_FIELD: "carol", **{forms.item_field(i): C for i in range(len(items))}}
        for _ in range(2):  # the retry finds the items settled: the entry still names every adjudication
            review.store_adjudications.fn(cfg, store, items, answer)
    entries = evidence.open_log(cfg).entries()
    assert [e.kind for e in entries] == ["review", "review", "adjudication"]
    assert entries[2].ref["resolution_ids"] == [1, 2, 3, 4]
    assert evidence.verify(evidence.open_log(cfg), store).ok


def test_a_version_failing_its_digest_check_does_not_stop_pruning_the_others(tracking, store, log, tmp_path):
    """A changed file is read as it is now: pruned if it still holds erased text, kept if not; one that cannot be
    read counts as holding it. The versions after it are still checked."""
    import mlflow

    from hitl.datasets import versions

    cfg = _cfg(tmp_path, "prune-tampered")
    if mlflow.get_experiment_by_name(cfg.dataset_experiment) is None:
        mlflow.create_experiment(cfg.dataset_experiment,
                                 artifact_location=(tracking / "artifacts" / cfg.dataset_experiment).as_uri())

    def rows(ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"trace_id": ids, "text": [f"text of {i}" for i in ids], "label": A, "split": "train",
                             "reviewers": "alice"})

    v1, v2, v3, v4 = (versions.register(rows(ids), cfg)[0] for ids in (["t1", "t2"], ["t3"], ["t4"], ["t1", "t5"]))
    rows(["t1", "t9"]).to_parquet(_artifact_file(v1.run_id, "dataset/records.parquet"))  # changed, still holds t1
    _artifact_file(v2.run_id, "dataset/records.parquet").write_bytes(b"not a parquet file")  # unreadable
    rows(["t8"]).to_parquet(_artifact_file(v3.run_id, "dataset/records.parquet"))  # changed, holds none of them
    for dv in (v1, v2, v3):
        with pytest.raises(ValueError, match="failed its digest check"):
            versions.load(cfg, dv.version)
    pruned, entry = evidence.prune_erased(log, cfg, {"t1"}, "dpo", "deletion request DR-2")
    assert [dv.version for dv in pruned] == [v1.version, v2.version, v4.version]
    assert [v["version"] for v in entry.ref["versions"]] == [v1.version, v2.version, v4.version]
    problems = [v.get("problem", "") for v in entry.ref["versions"]]  # the entry names the changed files
    assert "read as stored" in problems[0] and "could not be read" in problems[1] and problems[2] == ""
    assert all(evidence.DIGEST_FAILED in p for p in problems[:2])
    assert versions.artifact_present(v3) and not any(versions.artifact_present(dv) for dv in (v1, v2, v4))
