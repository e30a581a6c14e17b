"""The soak's ledger and its invariants (bench/soak_ledger.py): each check passes on a consistent record and
fails on the fault it exists to catch; the fault schedule is seeded and replayable."""

from __future__ import annotations

import pandas as pd

from bench import soak_ledger as sl
from bench.soak_actors import FAULTS, behaviour, plan


def _answer(run_id: str, reviewer: str, labels: dict, accepted: bool = True, form: str = "ReviewForm") -> dict:
    return {"t": 0, "kind": "answer", "run_id": run_id, "form": form, "reviewer": reviewer, "labels": labels,
            "accepted": accepted, "how": "normal"}


def test_the_ledger_survives_a_line_cut_short(tmp_path):
    led = sl.Ledger(tmp_path, "generator")
    led.write("traces", file="a.jsonl", ids=["t1", "t2"])
    with open(led.path, "a") as fh:
        fh.write('{"t": 1, "kind": "tra')  # killed mid-line
    sl.Ledger(tmp_path, "probe").write("probe", ok=True)
    got = sl.read(tmp_path)
    assert [e["kind"] for e in got] == ["traces", "probe"] and got[0]["ids"] == ["t1", "t2"]


def test_traces_considered_catches_a_missed_and_a_double_queued_trace():
    entries = [{"t": 0, "kind": "traces", "ids": ["a", "b", "c"]}]
    assert sl.traces_considered(entries, {"a", "b", "c"}, ["a", "c"]).ok
    missed = sl.traces_considered(entries, {"a", "b"}, ["a"])
    assert not missed.ok and "1 never considered" in missed.detail
    assert not sl.traces_considered(entries, {"a", "b", "c"}, ["a", "a"]).ok
    assert not sl.traces_considered(entries, {"a", "b", "c"}, ["zz"]).ok  # queued, never written


def test_garbage_counts_must_match_file_by_file(tmp_path):
    f = str(tmp_path / "x.jsonl")  # the ledger has the full path, the store the name in its folder
    entries = [{"t": 0, "kind": "fault", "fault": "garbage-file", "ok": True, "file": f, "garbage_rows": 2}]
    good = pd.DataFrame({"path": ["x.jsonl", "x.jsonl"], "reason": ["not JSON", "missing input"]})
    assert sl.garbage_quarantined(entries, good).ok
    assert not sl.garbage_quarantined(entries, good.iloc[:1]).ok  # a garbage row got through
    assert not sl.garbage_quarantined(entries, pd.concat([good, good.iloc[:1]])).ok  # counted twice
    assert not sl.garbage_quarantined(entries, good.assign(reason=["", "x"])).ok


def _store(rows):
    ann = pd.DataFrame(rows, columns=["trace_id", "reviewer", "label", "batch_id"])
    return ann


def test_labels_lost_duplicated_or_phantom_are_caught():
    batches = pd.DataFrame({"id": ["b1", "b2"], "flow_run_id": ["r1", "r2"]})
    items = pd.DataFrame({"trace_id": ["t1", "t2", "t3"], "status": ["resolved", "resolved", "queued"]})
    entries = [_answer("r1", "ann", {"t1": "x", "t2": "y"}), _answer("r2", "bob", {"t3": "z"}, accepted=False)]
    stored = _store([("t1", "ann", "x", "b1"), ("t2", "ann", "y", "b1")])
    assert sl.labels_stored_once(entries, batches, stored, items).ok
    lost = sl.labels_stored_once(entries, batches, stored.iloc[:1], items)
    assert not lost.ok and "1 lost" in lost.detail
    phantom = sl.labels_stored_once(entries, batches, pd.concat([stored, _store([("t3", "bob", "z", "b2")])]), items)
    assert not phantom.ok and "1 stored that nobody submitted" in phantom.detail  # a refused answer stored anyway
    relabelled = sl.labels_stored_once(entries, batches, _store([("t1", "ann", "x", "b1"), ("t2", "ann", "q", "b1")]),
                                       items)
    assert not relabelled.ok
    twice = sl.labels_stored_once(entries + [_answer("r1", "cat", {"t1": "x"})], batches, stored, items)
    assert not twice.ok and "1 runs accepted twice" in twice.detail


def test_a_label_the_store_refused_with_its_reason_is_not_lost():
    """ann labelled t1 in batch b1; the same trace reached ann again in b2: the store keeps the first."""
    batches = pd.DataFrame({"id": ["b1", "b2"], "flow_run_id": ["r1", "r2"]})
    items = pd.DataFrame({"trace_id": ["t1"], "status": ["queued"]})
    entries = [_answer("r1", "ann", {"t1": "x"}), _answer("r2", "ann", {"t1": "x"})]
    check = sl.labels_stored_once(entries, batches, _store([("t1", "ann", "x", "b1")]), items)
    assert check.ok and "1 refused by the store with a reason" in check.detail


def test_adjudications_probes_faults_runs_and_growth():
    adj = [_answer("r9", "judge", {"t1": "x"}, form="AdjudicationForm")]
    res = pd.DataFrame({"trace_id": ["t1"], "kind": ["adjudication"]})
    assert sl.adjudications_stored_once(adj, res).ok
    assert not sl.adjudications_stored_once(adj, res.iloc[0:0]).ok
    assert not sl.adjudications_stored_once(adj, pd.concat([res, res])).ok

    probe = {"t": 0, "kind": "probe", "ok": True, "approved": True, "version": "1", "mlflow_up": True}
    assert sl.champion_probes([probe]).ok and not sl.champion_probes([]).ok
    assert not sl.champion_probes([{**probe, "approved": False}]).ok
    assert sl.champion_probes([probe, {**probe, "ok": False, "mlflow_up": False, "error": "down"}]).ok

    faults = [{"t": 0, "kind": "fault", "fault": k, "ok": True} for k in FAULTS for _ in range(6)]
    assert sl.faults_survived(faults, 30, 5)[0].ok
    assert not sl.faults_survived(faults[:-1] + [{**faults[-1], "ok": False}], 30, 5)[0].ok
    assert not sl.faults_survived(faults[:24], 30, 5)[0].ok

    runs = pd.DataFrame({"state": ["COMPLETED", "PAUSED", "CRASHED"], "message": ["", "", "killed: retried"],
                         "expires_at": [float("nan"), 200.0, float("nan")]})
    assert sl.runs_settled(runs, now=100).ok
    assert not sl.runs_settled(runs, now=300).ok  # suspended past its timeout
    assert not sl.runs_settled(runs.assign(message=["", "", ""]), now=100).ok  # crashed, no reason
    assert not sl.runs_settled(pd.concat([runs, runs.iloc[:1].assign(state="RUNNING")]), now=100).ok

    flat = pd.DataFrame({"t": range(20), "service": "mlflow", "rss_mb": 300.0, "open_files": 40})
    assert sl.bounded_growth(flat).ok
    leak = flat.assign(rss_mb=[300.0 + 100 * i for i in range(20)])
    assert not sl.bounded_growth(leak).ok


def test_the_fault_schedule_and_the_behaviours_are_seeded():
    assert plan(3, 1800, 40) == plan(3, 1800, 40) != plan(4, 1800, 40)
    kinds = [k for _, k in plan(0, 1800, 40)]
    assert len(kinds) >= 30 and set(kinds) == set(FAULTS)
    assert behaviour(0, "run-a", 3, 240) == behaviour(0, "run-a", 3, 240)
    seen = {behaviour(0, f"run-{i}", 3, 240).kind for i in range(200)}
    assert seen == {"normal", "late", "never", "twice", "concurrent"}


NOW_S = 1_800_000_000.0


def _ids(n: int) -> list[str]:
    import uuid

    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def _news(tmp_path):
    """The webhook's ledger entries for news the product renders itself (hitl/ops/notify_reconcile.due), one
    message each: two review batches and an adjudication waiting, an approval, a failed scheduled run, an expiry
    warning; and the digest and the reconciliation's combined message."""
    from datetime import UTC, datetime, timedelta

    from helpers_domain import make_cfg

    from hitl.ops import notifications as nt
    from hitl.ops import notify_reconcile as rc
    from hitl.review.prefect_api import ADJUDICATION_FORM, APPROVAL_FORM, REVIEW_FORM, PausedRun

    cfg = make_cfg(tmp_path, project="soak", review={"timeout_s": 3600}, notifications={
        "enabled": True, "channels": {"team": {"kind": "webhook"}}, "expiry_lead_s": 3000,
        "routes": {r: ["team"] for r in ("reviewers", "adjudicators", "approvers", "operators")}})
    now = datetime.fromtimestamp(NOW_S, UTC)
    r1, r2, adj, app, failed, d1, d2 = _ids(7)
    since = (now - timedelta(minutes=20)).isoformat()
    runs = [PausedRun(i, f"run-{i[-4:]}", "f", form, {}, "", since, since, None, f"s-{i}")
            for i, form in ((r1, REVIEW_FORM), (r2, REVIEW_FORM), (adj, ADJUDICATION_FORM), (app, APPROVAL_FORM))]
    fails = [rc.FailedRun(failed, "run-f", "sample-traces", "sf", "Crashed", "boom", since)]
    msgs = {(m.automation.split(": ")[1], m.event_id): m for m in rc.due(cfg, runs, fails, now)}
    text = {k: f"{m.subject}\n{m.body}" for k, m in msgs.items()}
    digest = next(r for r in nt.rules(cfg) if r.key == "digest")
    listing = "\n".join(f"- run-{i[-4:]}: {cfg.flow_run_url(i)}" for i in (d1, d2))
    payload = {"event": {"payload": {"count": 2, "text": listing}}}
    digest_text = f"{rc.render(digest.subject, payload)}\n{rc.render(digest.body, payload)}"
    combined = "2 hitl-loop notifications\n" + "\n\n".join(text[k] for k in (("waiting-review", f"s-{r2}"),
                                                                              ("failed", "sf")))
    notices = [{"t": NOW_S, "kind": "notice", "path": "/team", "text": t} for t in (
        text[("waiting-review", f"s-{r1}")], text[("waiting-adjudication", f"s-{adj}")],
        text[("expiring-review", f"s-{r1}")], text[("approval", str(nt.release_event_id(app)))], digest_text,
        combined)]
    return (r1, r2, adj, app, failed, d1, d2), notices


def test_notices_are_parsed_from_the_messages_the_product_renders(tmp_path):
    (r1, r2, adj, app, failed, d1, d2), notices = _news(tmp_path)
    assert sorted(sl.parse_notices(notices)) == sorted([
        ("waiting", r1), ("waiting", adj), ("expiring", r1), ("approval", app), ("waiting", d1), ("waiting", d2),
        ("waiting", r2), ("failed", failed)])


def test_notifications_once_catches_news_said_twice_news_lost_and_a_failed_delivery(tmp_path):
    from datetime import UTC, datetime

    (r1, r2, adj, app, failed, d1, d2), notices = _news(tmp_path)

    def seen(run_id, form, waited_s):
        paused = datetime.fromtimestamp(NOW_S - 1000, UTC).isoformat()
        return [{"t": NOW_S - 990, "kind": "seen", "run_id": run_id, "form": form, "paused_at": paused,
                 "expires_at": None},
                {"t": NOW_S - 1000 + waited_s, "kind": "answer", "run_id": run_id, "form": form, "reviewer": "x",
                 "labels": {}, "accepted": True, "how": "late"}]

    history = {r: sl.RunHistory("review-batch", 1, 0, "COMPLETED", NOW_S) for r in (r1, r2, adj, d1, d2)}
    history[app] = sl.RunHistory("regression-eval", 1, 0, "COMPLETED", NOW_S)
    history[failed] = sl.RunHistory("sample-traces", 0, 1, "CRASHED", NOW_S - 900)
    ledger = [*notices, *seen(r1, "ReviewForm", 400), *seen(app, "ApprovalForm", 400), *seen(d1, "ReviewForm", 30)]

    def check(entries, hist=history):
        return sl.notifications_once(entries, hist, {"sample-traces"}, 180, NOW_S)

    assert check(ledger).ok, check(ledger).detail
    twice = check([*ledger, notices[0]])
    assert not twice.ok and "1 said twice" in twice.detail
    # ... unless the run waited twice (crashed while suspended, run again, suspended again)
    assert check([*ledger, notices[0]], {**history, r1: sl.RunHistory("review-batch", 2, 1, "COMPLETED", NOW_S)}).ok
    lost = check([n for n in ledger if "approval" not in n.get("text", "")])
    assert not lost.ok and "1 missing" in lost.detail
    short = [n for n in ledger if d1 not in n.get("text", "")]
    assert check(short).ok  # a 30 s wait answered before its news was owed: not missing
    unsaid_failure = check([*ledger[:5], *ledger[6:]])  # the combined message (r2's waiting, the failure) lost
    assert not unsaid_failure.ok and "failed" in unsaid_failure.detail
    alert = {"t": NOW_S, "kind": "notice", "path": "/alerts",
             "text": "A hitl notification was not delivered\nThe automation x could not deliver its message"}
    assert not check([*ledger, alert]).ok


def test_disk_growth_must_be_explained_by_the_work():
    start = {"artifacts_mb": 88.0, "logs_mb": 0.1, "state_mb": 95.0}
    end = {"artifacts_mb": 353.0, "logs_mb": 2.6, "state_mb": 418.0}
    assert sl.disk_bounded(start, end, 3, 3640).ok  # three model versions; 16 MB per 1,000 traces
    assert not sl.disk_bounded(start, end, 1, 3640).ok  # artifacts past one new version
    leak = {**end, "state_mb": end["state_mb"] + 500}
    assert not sl.disk_bounded(start, leak, 3, 3640).ok
