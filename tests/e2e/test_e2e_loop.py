"""End to end on real parts: a real Prefect server and MLflow server, real pauses and resumes, a real
fine-tune of the packaged MiniLM, a dataset version and model versions read back from MLflow.

The flows run in `hitl` subprocesses (as an engineer would run them); this process plays the reviewer
and reads results back through the same APIs the UI uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from e2e_helpers import REPO, finish, flow_run_state, hitl, resume, running_stack, start, truth, wait_paused
from sqlalchemy import select
from sqlalchemy.orm import Session

from hitl.review import prefect_api
from hitl.review.store import ReviewStore
from hitl.review.tables import Item

pytestmark = pytest.mark.e2e


CANARIES = ("4111 1111 1111 1111", "canary.pii@example.org", "+44 20 7946 0958")


def _plant_canaries(cfg) -> list[str]:
    """Append personal data to every valid trace of the day's traffic; returns the trace ids planted."""
    import json

    planted = []
    for f in sorted((cfg.world_dir / "traces").glob("*.jsonl")):
        lines = []
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                lines.append(line)
                continue
            if isinstance(rec, dict) and isinstance(rec.get("input"), str) and rec["input"].strip() \
                    and rec.get("trace_id"):  # broken rows stay broken (an empty input must stay empty)
                rec["input"] += f" (card {CANARIES[0]}, mail {CANARIES[1]}, call {CANARIES[2]})"
                planted.append(str(rec["trace_id"]))
                line = json.dumps(rec)
            lines.append(line)
        f.write_text("\n".join(lines) + "\n")
    return planted


def _assert_no_canary(cfg) -> None:
    """grep the Prefect database (WAL included), the servers' and reviewers' logs for the planted strings."""
    files = [p for d in (cfg.state / "prefect", cfg.state / "logs") for p in d.rglob("*") if p.is_file()]
    assert any(p.name.startswith("prefect.db") for p in files)
    for p in files:
        data = p.read_bytes()
        for canary in CANARIES:
            assert canary.encode() not in data, f"{canary!r} leaked into {p}"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    yield from running_stack(tmp_path_factory.mktemp("e2e"))


def _three_press_resume_at_once(cfg, run, values: dict) -> str:
    """Three reviewers send their answer to one paused run at the same instant: exactly one is told it worked
    (the server can accept all three and keep one answer: prefect_api.resume reads it back). Returns who."""
    names = ["tester", "tester-b", "tester-c"]
    barrier = threading.Barrier(len(names))

    def press(name: str) -> str | None:
        barrier.wait()
        try:
            resume(cfg, run.id, {**values, "reviewer": name}, run.response_key)
        except (prefect_api.NotWaiting, prefect_api.ResumedByAnother):
            return None
        return name

    with ThreadPoolExecutor(len(names)) as pool:
        told = [n for n in pool.map(press, names) if n]
    assert len(told) == 1, f"{told} were all told their answer was taken"
    return told[0]


def test_the_loop_end_to_end(e2e):
    from mlflow import MlflowClient

    from hitl.datasets import versions
    from hitl.review import forms
    from hitl.review.prefect_api import REVIEW_FORM

    cfg, path = e2e
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    client = MlflowClient()

    # 1. bootstrap registers a real fine-tuned model as @champion
    hitl(path, "bootstrap")
    assert client.get_model_version_by_alias("e2e-intent", "champion").version == "1"

    # 2. production traffic, then sampling: validated (bad rows quarantined and counted), scored, selected
    hitl(path, "produce")
    planted = _plant_canaries(cfg)
    hitl(path, "sample")
    store = ReviewStore(cfg.store_url)
    assert store.counts()["queued"] == 30
    with Session(store.engine) as s:  # each item keeps its trace's time, which retention counts from
        assert None not in set(s.scalars(select(Item.traced_at)))
    sampling_run = client.search_runs([mlflow.get_experiment_by_name("e2e-sampling").experiment_id])[0]
    m = sampling_run.data.metrics
    assert m["quarantined"] >= 1 and m["rows_in"] == m["accepted"] + m["quarantined"]
    assert list(cfg.quarantine_dir.glob("traces-*.parquet"))
    # (the same window sampled again enqueues nothing twice: test_faults_e2e.py, after a kill and after a restore)

    # 3. a review batch pauses a real flow run; the server validates the form; resume stores the labels
    proc = start(path, "review-batch")
    try:
        run = wait_paused(cfg, REVIEW_FORM)
        assert flow_run_state(cfg, run.id) == "PAUSED"
        fields = forms.trace_ids_from_schema(run.schema)
        assert len(fields) == 30 and run.description.startswith("## Review batch")
        known = truth(cfg)
        values = {"reviewer": "tester", **{f: known[t] for f, t in fields.items()}}
        with pytest.raises(RuntimeError):  # a label outside the label set is refused by the server
            resume(cfg, run.id, {**values, next(iter(fields)): "not-a-label"})
        assert flow_run_state(cfg, run.id) == "PAUSED"
        winner = _three_press_resume_at_once(cfg, run, values)
        out = finish(proc)
        assert proc.returncode == 0, out[-3000:]
    finally:
        proc.kill() if proc.poll() is None else None
    with pytest.raises(RuntimeError, match="not paused"):  # a replayed resume is rejected
        resume(cfg, run.id, values)
    assert store.counts()["resolved"] == 30
    # personal data planted in the traces reached the batch masked, and is nowhere in Prefect or the logs
    assert set(planted) & set(fields.values()) and "<CARD>" in run.description
    _assert_no_canary(cfg)
    ann = store.annotations()
    assert len(ann) == 30 and set(ann["reviewer"]) == {winner}
    assert all(ann.set_index("trace_id")["label"][t] == known[t] for t in fields.values())

    # 4. dataset version in MLflow, digest-checked on the way back (identical content registered again makes no
    # new version: test_faults_e2e.py's lost-Prefect test)
    hitl(path, "register-dataset")
    found = versions.list_versions(cfg)
    assert [v.version for v in found] == [1]
    records, dv = versions.load(cfg)
    assert dv.rows == len(records) == 30 and set(records["trace_id"]) == set(fields.values())
    random = records[records["selection_reason"] == "random"]
    assert len(random) == 15 and (random["split"] == "regression").all() and random["inclusion_prob"].gt(0).all()
    assert set(records["split"]) <= {"train", "hard_case", "regression"} and (records["split"] == "train").any()
    logged = client.get_run(dv.run_id).inputs.dataset_inputs[0].dataset
    assert logged.name == "e2e-dataset@1" and logged.digest

    # 5. status lists the stack, the queue, the dataset version and the aliases (the release chain, retrain ->
    # eval -> approval, runs deployed on the worker in test_deployed.py, on PostgreSQL, with its report checks)
    out = hitl(path, "status").stdout
    for needle in ("prefect", "mlflow", "resolved", "e2e-dataset", "champion"):
        assert needle in out

    # 6. reviewer metrics: after every batch in MLflow (and a Prefect artifact), and on demand
    review_runs = client.search_runs([mlflow.get_experiment_by_name("e2e-review").experiment_id])
    assert review_runs and review_runs[0].data.metrics["review_backlog"] >= 0
    out = hitl(path, "metrics").stdout
    assert "Krippendorff" in out and winner in out


def test_terminal_review_resumes_the_paused_run(e2e):
    """A reviewer labels a paused batch item by item in `hitl review`; the run resumes and labels land.

    The batch's items are enqueued directly (sampling into the queue is the first test's): this test is about
    the paused run, the inbox and the terminal."""
    from helpers_domain import review_items

    from hitl.review import forms
    from hitl.review.prefect_api import REVIEW_FORM

    cfg, path = e2e
    store = ReviewStore(cfg.store_url)
    items = review_items(6, prefix="term-")
    store.enqueue(items, cfg.cohorts)
    known = {t: cfg.labels[i % len(cfg.labels)] for i, t in enumerate(items["trace_id"])}
    before = store.counts()
    proc = start(path, "review-batch")
    try:
        run = wait_paused(cfg, REVIEW_FORM)
        # the reviewer's inbox lists the waiting batch with its Prefect UI link, time left and answering command
        box = json.loads(hitl(path, "inbox", "--json", "--as", "carol").stdout)
        [waiting] = [w for w in box["waiting"] if w["run_id"] == run.id]
        assert waiting["kind"] == "review" and waiting["link"] == f"{cfg.prefect_ui_url}/runs/flow-run/{run.id}"
        assert waiting["command"] == f"hitl review --run {run.id} --reviewer carol -c {path}"
        assert 0 < waiting["seconds_left"] <= cfg.review.timeout_s
        assert cfg.flow_run_url(run.id) in hitl(path, "inbox", "--as", "carol").stdout
        fields = forms.trace_ids_from_schema(run.schema)
        assert set(fields.values()) == set(known)
        labels = forms.alphabetical(cfg.labels)  # `hitl review` numbers the labels A-Z
        # per item: a typo first (re-asked), then the label's number, then a rationale or Enter
        answers = []
        for i, trace_id in enumerate(fields.values()):
            answers += ["no-such-label", str(labels.index(known[trace_id]) + 1), "obvious" if i == 0 else ""]
        p = subprocess.run([sys.executable, "-m", "hitl.cli", "review", "--reviewer", "carol", "-c", str(path)],
                           input="\n".join(answers) + "\n", capture_output=True, text=True, timeout=300, cwd=REPO)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert "is not a label" in p.stdout and f"Submitted {len(fields)} labels as carol" in p.stdout
        out = finish(proc)
        assert proc.returncode == 0, out[-3000:]
    finally:
        proc.kill() if proc.poll() is None else None
    box = json.loads(hitl(path, "inbox", "--json", "--as", "carol").stdout)
    assert run.id not in [w["run_id"] for w in box["waiting"]]  # answered: out of the inbox
    ann = store.annotations()
    mine = ann[ann["reviewer"] == "carol"].set_index("trace_id")
    assert len(mine) == len(fields) == before["queued"]
    assert all(mine.loc[t, "label"] == known[t] for t in fields.values())
    assert mine["rationale"].notna().sum() == 1


def test_disputes_are_adjudicated_and_corrections_supersede_labels(e2e):
    """Two reviewers disagree; a real paused adjudication run settles it and the adjudicated label enters the
    next dataset version; a later correction supersedes it in the version after, leaving older ones as they
    were; `hitl datasets diff` reports the relabelling."""
    from helpers_domain import review_items

    from hitl.datasets import versions
    from hitl.review import forms
    from hitl.review.prefect_api import ADJUDICATION_FORM

    cfg, path = e2e
    store = ReviewStore(cfg.store_url)
    items = review_items(2, prefix="dispute-", required=2)
    store.enqueue(items, cfg.cohorts)
    first, second = cfg.labels[0], cfg.labels[1]
    for who, lab in (("alice", first), ("bob", second)):
        batch = store.take_batch(100)
        mine = {it["trace_id"]: (lab, f"{who}'s reading") for it in batch.items if it["trace_id"].startswith("d")}
        store.submit(batch.id, who, mine, cfg.labels)
    assert {it["trace_id"] for it in store.disputed()} == set(items["trace_id"])

    proc = start(path, "adjudicate")
    try:
        run = wait_paused(cfg, ADJUDICATION_FORM)
        assert f"alice: `{first}` (alice's reading)" in run.description and f"bob: `{second}`" in run.description
        fields = forms.trace_ids_from_schema(run.schema)
        assert set(fields.values()) == set(items["trace_id"])
        resume(cfg, run.id, {"reviewer": "erin", **dict.fromkeys(fields, second)})
        out = finish(proc)
        assert proc.returncode == 0, out[-3000:]
    finally:
        proc.kill() if proc.poll() is None else None
    assert not store.disputed()

    hitl(path, "register-dataset")
    adjudicated = versions.list_versions(cfg)[-1]
    records, _ = versions.load(cfg, adjudicated.version)
    rows = records.set_index("trace_id").loc[list(items["trace_id"])]
    assert (rows["label"] == second).all() and rows["reviewers"].str.contains("erin").all()
    assert len(store.annotations().query("trace_id.str.startswith('dispute-')")) == 4  # originals kept

    target = items["trace_id"].iloc[0]
    hitl(path, "relabel", target, cfg.labels[2], "--reviewer", "dave", "--reason", "policy changed")
    hitl(path, "register-dataset")
    corrected = versions.list_versions(cfg)[-1]
    assert corrected.version == adjudicated.version + 1
    new_records, _ = versions.load(cfg, corrected.version)
    assert new_records.set_index("trace_id").loc[target, "label"] == cfg.labels[2]
    old_records, _ = versions.load(cfg, adjudicated.version)  # digest-checked: the old version is unchanged
    assert old_records.set_index("trace_id").loc[target, "label"] == second
    out = hitl(path, "datasets", "diff", adjudicated.ref, corrected.ref).stdout
    assert "relabelled 1" in out and target in out
    assert adjudicated.ref in hitl(path, "datasets", "list").stdout
    assert "Labels by split" in hitl(path, "datasets", "show", corrected.ref).stdout


def test_mlflow_traces_in_and_out(e2e, tmp_path):
    """Traces an application logged to MLflow are a trace source; resolved labels go back onto those traces as
    HUMAN assessments, once."""
    from helpers_domain import COHORTS, review_items

    from hitl.config import SourceConfig
    from hitl.sampling import mlflow_traces
    from hitl.sampling.sources import load_traces
    from hitl.vocabulary import REASON_COLUMN

    cfg, _ = e2e
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    mlflow.set_experiment("e2e-app-traces")
    texts = ["my card still hasn't arrived", "i lost my card yesterday", "please refund my order",
             "how do I reset my password", "the transfer failed again"]
    for text in [*texts, None]:
        with mlflow.start_span(name="classify-intent") as span:
            span.set_inputs({"query": text} if text else {"query": 7, "other": 8})  # the last has no message
            span.set_outputs({"intent": "card_lost", "confidence": 0.61})
            mlflow.update_current_trace(tags={"channel": "app", "locale": "en-GB", "tier": "free"})
    mlflow.flush_trace_async_logging()  # the application's traces are exported in the background
    src = cfg.model_copy(update={"source": SourceConfig(kind="mlflow", experiment="e2e-app-traces")})
    loaded = load_traces(src)
    assert len(loaded.accepted) == 5 and len(loaded.quarantined) == 1 and loaded.rows_in == 6
    assert "input" in loaded.quarantined.iloc[0][REASON_COLUMN]
    acc = loaded.accepted.set_index("input").loc[texts]
    assert (acc["channel"] == "app").all() and (acc["prediction"] == "card_lost").all()
    assert acc["confidence"].eq(0.61).all()

    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    items = review_items(5).assign(trace_id=acc["trace_id"].to_numpy(), input=texts)
    store.enqueue(items, COHORTS)
    batch = store.take_batch(10)
    truth_labels = dict(zip(acc["trace_id"], ["card_arrival", "card_lost", "refund_request", "password_reset",
                                              "transfer_failed"], strict=True))
    store.submit(batch.id, "rita", {t: (truth_labels[t], "clear from the text") for t in truth_labels},
                 list(set(truth_labels.values())))
    ann = store.annotations()
    verdicts = mlflow_traces.verdicts(store.resolved(ann), ann, store.resolutions())
    assert mlflow_traces.write_back(src, verdicts) == 5
    assert mlflow_traces.write_back(src, verdicts) == 0  # a re-run writes nothing twice
    for trace_id, label in truth_labels.items():
        found = [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "human_label"]
        assert len(found) == 1 and found[0].feedback.value == label
        assert found[0].source.source_type == "HUMAN" and found[0].source.source_id == "rita"
        assert found[0].rationale == "clear from the text"


def test_a_deletion_request_prunes_every_version_holding_the_text_on_the_mlflow_server(e2e):
    """`hitl erase` on the real stack: every dataset version that held the item's text loses its file on the
    MLflow server (deleted through its artifact proxy) and refuses to load, the next registration leaves the item
    out, and the audit chain still verifies against MLflow. Last in the module: it erases from the shared stack."""
    from hitl.datasets import versions

    cfg, path = e2e
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    trace_id = sorted(versions.load(cfg)[0]["trace_id"])[0]
    holding = [dv.version for dv in versions.list_versions(cfg) if trace_id in versions.trace_ids(cfg, dv)]
    out = hitl(path, "erase", trace_id, "--by", "dpo", "--reason", "deletion request DR-9").stdout
    assert f"Pruned {len(holding)} dataset version(s)" in out, out
    after = {dv.version: dv for dv in versions.list_versions(cfg)}
    for v in holding:
        assert after[v].pruned and not versions.artifact_present(after[v])
        with pytest.raises(LookupError, match="was pruned on"):
            versions.load(cfg, v)
    hitl(path, "register-dataset")
    records, dv = versions.load(cfg)
    assert dv.version == max(after) + 1 and trace_id not in set(records["trace_id"])
    assert "Audit chain intact" in hitl(path, "audit", "verify").stdout
