"""A sampling window in partitions (hitl/sampling/stream.py, watermarks.load_new with a sink, vectors on disk):
the same traces accepted, quarantined and counted, the same evaluations, the same draw and the same picks as the
window taken whole; vectors read back row for row; the vector cache on disk."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg, trace_record, write_lines
from sqlalchemy import select

from hitl.learning.embeddings import VectorCache
from hitl.review.store import ID_CHUNK, ReviewStore
from hitl.review.tables import Item
from hitl.sampling import evaluators, selection, stream, watermarks
from hitl.sampling.vectors import InMemory, PartitionedVectors, Subset

DIM = 8
LABELS = ["card_lost", "refund_request", "balance"]


def _vector(text: str) -> np.ndarray:
    """A unit vector that depends on the text only (a stand-in for the frozen encoder in these tests)."""
    v = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _encode(texts: list[str]) -> np.ndarray:
    return np.stack([_vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)


def _score(traces: pd.DataFrame) -> pd.DataFrame:
    """What tasks/sampling.score_frame adds, from the text alone (a stand-in for the champion)."""
    rng = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)) for t in traces["input"]]
    p = np.array([r.dirichlet(np.ones(len(LABELS))) for r in rng])
    top = np.sort(p, axis=1)[:, ::-1]
    out = traces.rename(columns={"prediction": "production_prediction", "confidence": "production_confidence"})
    out["prediction"] = [LABELS[i] for i in p.argmax(axis=1)]
    out["confidence"], out["margin"], out["entropy"] = top[:, 0], top[:, 0] - top[:, 1], 1 - top[:, 0]
    out["suggestions"] = stream.suggestions_text([[(LABELS[j], float(row[j])) for j in np.argsort(-row)[:2]]
                                                  for row in p])
    out["model_version"] = "v1"
    return out


def _traces(n: int) -> list[dict]:
    outcome = ["resolved", "escalated", "abandoned"]
    return [trace_record(i, input=f"message about my card, number {i}", channel=["app", "web_chat"][i % 2],
                         timestamp=f"2025-03-0{1 + i % 2}T{i % 24:02d}:00:00Z", context="a note" if i % 4 else None,
                         metadata=json.dumps({"outcome": outcome[i % 3]})) for i in range(n)]


def _cfg(tmp_path, partition_rows: int, **selection_kw):
    sel = {"budget": 60, "random_share": 0.5, "random_annotations": 2, "strata": ["channel"], "seed": 1,
           "min_per_stratum": 0} | selection_kw
    return make_cfg(tmp_path, source={"kind": "files", "path": str(tmp_path / "traces"),
                                      "partition_rows": partition_rows},
                    selection=sel, review={"overlap_share": 0.0})


def _sample(tmp_path, name: str, partition_rows: int):
    """Load (into a spill), score, evaluate, embed, draw and pick, as the flow does, on a store of its own."""
    cfg = _cfg(tmp_path, partition_rows)
    store = ReviewStore(f"sqlite:///{tmp_path / (name + '.db')}")
    spill = stream.Spill.create(tmp_path / "runs" / name)
    loaded = watermarks.load_new(cfg, store, sink=spill.add)
    stream.score_partitions(spill, _score)
    ev = stream.evaluate_partitions(spill, cfg, "channel")
    vectors = stream.embed_partitions(spill, _encode)
    ref = _encode([f"launch text {i}" for i in range(30)])
    plan = selection.draw_and_select(ev.traces, vectors, ref, np.array(LABELS * 10), cfg, "run-x",
                                     store.draw_rates, store.known_text_groups, hydrate=spill.hydrate)
    return cfg, loaded, spill, ev, plan


def test_a_window_in_partitions_loads_evaluates_draws_and_picks_as_the_whole_window(tmp_path):
    lines = _traces(330)
    lines[5] = b"{not json"  # quarantined in the first partition
    lines.append(trace_record(7, input="a second trace with an id read in the first file"))  # a duplicate id
    write_lines(tmp_path / "traces" / "a.jsonl", lines[:250])
    write_lines(tmp_path / "traces" / "b.jsonl", lines[250:])
    _, whole_load, whole, whole_ev, whole_plan = _sample(tmp_path, "whole", 10_000)
    cfg, part_load, parts, part_ev, part_plan = _sample(tmp_path, "parts", 100)
    assert (whole.parts, parts.parts) == (1, 3)  # a.jsonl in chunks of 100 lines; its last 50 with b.jsonl
    assert part_load.summary == whole_load.summary == {"rows_in": 331, "accepted": 329, "quarantined": 2}
    assert part_load.accepted.empty and part_load.spilled == 329  # kept on disk, not in memory
    reasons = sorted(part_load.quarantined["_quarantine_reason"])
    assert reasons == sorted(whole_load.quarantined["_quarantine_reason"])
    assert any("duplicate trace_id" in r for r in reasons) and any("not valid JSON" in r for r in reasons)

    # the compact rows carry no text; the uncertainty evaluator's cut is the whole window's in every partition
    assert "input" not in part_ev.traces.columns
    pd.testing.assert_frame_equal(part_ev.traces, whole_ev.traces)
    pd.testing.assert_frame_equal(part_ev.fails, whole_ev.fails)
    flagged = pd.concat([parts.read("evaluated", i) for i in range(parts.parts)], ignore_index=True)
    cut = evaluators.uncertainty_cut(flagged, cfg)
    assert (flagged["evaluator_reasons"].str.contains("uncertainty") == (1 - flagged["margin"] >= cut)).all()

    cols = ["trace_id", "selection_reason", "priority", "evaluator_reasons", "suggestions", "input", "output",
            "context", "inclusion_prob", "window", "stratum"]
    got, want = part_plan.chosen.items[cols], whole_plan.chosen.items[cols]
    pd.testing.assert_frame_equal(got, want)
    assert (got["selection_reason"] == "random").sum() == 15 and len(got) > 15
    assert got["suggestions"].map(lambda s: isinstance(s[0], tuple)).all()  # pairs again, as the form needs
    assert set(got["context"].map(type)) == {str, type(None)}  # text or None as loaded, never pandas' NaN
    store = ReviewStore(f"sqlite:///{tmp_path / 'queue.db'}")
    store.enqueue(part_plan.chosen.items, cfg.cohorts)
    with store._session() as session:
        stored = session.execute(select(Item.context, Item.output, Item.cohorts)).all()
    assert {type(c) for c, _, _ in stored} == {str, type(None)} and all(isinstance(o, str) for _, o, _ in stored)
    assert all("NaN" not in c for _, _, c in stored)

    # the same picks as selection on the whole window held in memory (the path before partitions)
    full = pd.concat([whole.read("evaluated", i) for i in range(whole.parts)], ignore_index=True)
    full["suggestions"] = [stream._pairs(s) for s in full["suggestions"]]
    ref = _encode([f"launch text {i}" for i in range(30)])
    plan = selection.draw_and_select(full, _encode(full["input"].tolist()), ref, np.array(LABELS * 10), cfg,
                                     "run-x", lambda w: {}, set)
    pd.testing.assert_frame_equal(got, plan.chosen.items[cols])
    parts.remove()
    assert not parts.folder.exists()


def test_a_large_window_collapses_near_duplicates_within_shortlists_only(tmp_path):
    """Above `selection.dedup_all_pairs_max` candidates: same texts still collapse window-wide, near duplicates
    among the rows a component could pick; the picks hold no two of one text group."""
    rng = np.random.default_rng(0)
    n = 400
    texts = [f"text {i % 150}" for i in range(n)]  # each text about 2-3 times
    vecs = _encode(texts)
    margin = rng.uniform(0, 1, n)
    traces = pd.DataFrame({"trace_id": [f"t{i}" for i in range(n)], "input": texts, "prediction": "card_lost",
                           "margin": margin, "entropy": 1 - margin, "flagged": False, "evaluator_reasons": "",
                           "channel": "app"})
    cand = selection.Candidates(traces, vecs, _encode(["x", "y"]), np.array(["card_lost", "balance"]))
    none = pd.DataFrame(columns=["trace_id", "input"])
    exact = selection.select_for_review(cand, _cfg(tmp_path, 10_000, random_share=0.0), none).items
    short = selection.select_for_review(cand, _cfg(tmp_path, 10_000, random_share=0.0, dedup_all_pairs_max=50),
                                        none).items
    for items in (exact, short):
        assert items["input"].is_unique and len(items) == 60
    assert len(set(exact["trace_id"]) & set(short["trace_id"])) >= 50  # nearly the same picks


def test_partitioned_vectors_read_back_row_for_row(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(k, DIM)).astype(np.float32) for k in (5, 1, 7)]
    disk = PartitionedVectors(tmp_path / "v")
    for a in arrays:
        disk.append(a)
    whole = np.vstack(arrays)
    rows = np.array([12, 0, 5, 6, 4, 12])
    assert len(disk) == 13 and np.array_equal(disk.take(rows), whole[rows])
    assert np.array_equal(Subset(disk, np.array([3, 9, 11])).take(np.array([2, 0])), whole[[11, 3]])
    assert np.array_equal(InMemory(whole).take(rows), whole[rows])
    with pytest.raises(ValueError, match="dimensions"):
        disk.append(np.zeros((2, DIM + 1)))


def test_the_vector_cache_reads_what_it_was_asked_and_forgets_old_vectors(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = VectorCache(path)
    keys = [f"k{i}" for i in range(2000)]  # more than one lookup's worth of keys
    cache.put({k: np.full(DIM, i, np.float32) for i, k in enumerate(keys)})
    got = VectorCache(path).get(["k1999", "nope", "k3"])
    assert set(got) == {"k1999", "k3"} and got["k1999"][0] == 1999
    assert VectorCache(path, days=0).get(["k3"]) == {}  # older than the retention: deleted at open


def test_known_among_asks_in_chunks_and_enqueue_records_each_considered_trace_once(store):
    ids = [f"t{i}" for i in range(ID_CHUNK * 2 + 7)]
    store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=ids[::2])
    store.enqueue(pd.DataFrame(columns=["trace_id"]), [], considered=ids[::3])  # some again
    assert store.known_among(ids) == set(ids[::2]) | set(ids[::3])
    assert store.known_trace_ids() == set(ids[::2]) | set(ids[::3])
