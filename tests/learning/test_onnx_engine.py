"""The ONNX Runtime engine on a tiny encoder: export checked against torch, the same scores, int8 shipped or
refused, the export beside a registered version in MLflow (and the fallback without one), the frozen encoder,
the config choice."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import onnx
import pytest
import torch
from helpers_domain import tiny_encoder

from hitl.config import Config
from hitl.learning import modeling, onnx_engine, registry
from hitl.learning.embeddings import FrozenEncoder

LABELS = ["card_lost", "balance_inquiry", "transfer_failed", "out_of_scope"]
TEXTS = ["i lost my card", "what is my balance", "my transfer failed", "x", "block my card it was stolen today",
         "how much money do i have in my current account right now please", "transfer did not arrive", "hello",
         "card", "the transfer to my landlord failed twice and i was charged a fee", "balance", "lost card"] * 3


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Config:
    folder = tiny_encoder(tmp_path_factory.mktemp("tiny"))
    return Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(folder.parent),
                  model={"base_path": str(folder), "engine": "onnx"})


def _model(cfg: Config) -> modeling.IntentModel:
    model = modeling.load_base(cfg)
    gen = torch.Generator().manual_seed(1)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1], generator=gen) for i in range(3)})
    return model


@pytest.fixture(scope="module")
def exported(tiny_cfg, tmp_path_factory):
    model = _model(tiny_cfg)
    folder = tmp_path_factory.mktemp("export") / "onnx"
    meta = onnx_engine.export_network(model, folder, TEXTS, batch_size=5, max_length=32)
    return model, folder, meta


def test_export_is_checked_against_torch_and_scores_the_same(exported):
    model, folder, meta = exported
    assert meta["fp32"]["max_abs_diff"] <= onnx_engine.FP32_MAX_ABS and meta["fp32"]["agreement"] == 1.0
    assert meta["fp32"]["n"] == len(set(TEXTS)) and meta["labels"] == LABELS
    assert (folder / onnx_engine.FP32_FILE).exists() and onnx_engine.read_meta(folder) == meta
    model.abstain_threshold = 0.4  # abstention is applied after the engine, the same way
    ref = modeling.score(model, TEXTS, batch_size=5, max_length=32)
    model.engine = onnx_engine.load_engine(folder, "onnx")
    try:
        assert model.serving_engine == "onnx"
        got = modeling.score(model, TEXTS, batch_size=5, max_length=32)
    finally:
        model.engine, model.abstain_threshold = None, None
    assert got.prediction == ref.prediction
    for field in ("probs", "confidence", "margin", "entropy"):
        assert np.allclose(getattr(got, field), getattr(ref, field), atol=1e-4), field
    assert np.allclose(got.probs[:, 3], 0.0)  # an inactive label stays masked


def test_an_onnx_served_model_with_a_reference_scores_in_scope_as_torch_does(exported):
    model, folder, _ = exported
    model.reference = modeling.encode(model, TEXTS[:4], max_length=32).astype(np.float16)
    try:
        ref = modeling.score(model, TEXTS, batch_size=5, max_length=32)
        model.engine = onnx_engine.load_engine(folder, "onnx")
        got = modeling.score(model, TEXTS, batch_size=5, max_length=32)
    finally:
        model.engine, model.reference = None, None
    assert np.allclose(got.in_scope, ref.in_scope, atol=1e-5) and np.allclose(got.probs, ref.probs, atol=1e-4)
    assert np.allclose(ref.in_scope[:4], 1.0, atol=2e-3)


def test_fp32_that_differs_from_torch_is_refused(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "FP32_MAX_ABS", -1.0)
    with pytest.raises(onnx_engine.ExportError, match="differs from torch"):
        onnx_engine.export_network(_model(tiny_cfg), tmp_path / "onnx", TEXTS[:6], int8=False)
    assert not (tmp_path / "onnx" / onnx_engine.FP32_FILE).exists()
    with pytest.raises(onnx_engine.ExportError, match="probe texts"):
        onnx_engine.export_network(_model(tiny_cfg), tmp_path / "none", [])


def test_int8_ships_when_it_keeps_the_top_labels(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "INT8_MIN_AGREEMENT", 0.0)
    model = _model(tiny_cfg)
    meta = onnx_engine.export_network(model, tmp_path / "onnx", TEXTS, max_length=32)
    assert meta["int8"]["file"] == onnx_engine.INT8_FILE and 0.0 <= meta["int8"]["agreement"] <= 1.0
    engine = onnx_engine.load_engine(tmp_path / "onnx", "onnx-int8")
    assert engine.name == "onnx-int8"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / onnx_engine.INT8_FILE)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert engine.recheck.precision == "fp32"  # close calls are scored again in fp32
    model.engine = engine
    s = modeling.score(model, TEXTS, max_length=32)
    assert np.allclose(s.probs.sum(axis=1), 1.0, atol=1e-4) and set(s.prediction) <= set(LABELS)
    close = s.margin < onnx_engine.RECHECK_MARGIN
    if close.any():  # what was re-checked is fp32's answer
        model.engine = engine.recheck
        assert np.allclose(modeling.score(model, TEXTS, max_length=32).probs[close], s.probs[close], atol=1e-6)


def test_int8_leaves_narrowing_matmuls_in_fp32(exported):
    _, folder, _ = exported
    narrowing = onnx_engine._narrowing_matmuls(folder / onnx_engine.FP32_FILE)
    assert [n.split("/")[-3:] for n in narrowing] == [["output", "dense", "MatMul"]] * 2  # one per layer


def test_int8_that_changes_top_labels_is_refused_and_fp32_serves(tiny_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(onnx_engine, "INT8_MIN_AGREEMENT", 1.01)
    meta = onnx_engine.export_network(_model(tiny_cfg), tmp_path / "onnx", TEXTS, max_length=32)
    assert "refused" in meta["int8"] and "file" not in meta["int8"]
    assert not (tmp_path / "onnx" / onnx_engine.INT8_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="hitl.onnx"):
        engine = onnx_engine.load_engine(tmp_path / "onnx", "onnx-int8", "v9")
    assert engine.name == "onnx" and "v9: int8 ONNX top label agrees" in caplog.text


def test_engine_pickles_as_its_graph(exported):
    model, folder, _ = exported
    engine = onnx_engine.load_engine(folder, "onnx")
    before = engine.run(model.tokenizer, TEXTS[:5], max_length=32)  # a live session is not pickled
    back = pickle.loads(pickle.dumps(engine))
    assert np.array_equal(back.run(model.tokenizer, TEXTS[:5], max_length=32), before)


def test_sessions_side_by_side_and_callers_at_once_score_as_one_session(exported):
    """Two one-thread sessions run the same batches as one two-thread session; three callers at once (a threads
    task runner) each take a free session and get their own texts' rows."""
    from concurrent.futures import ThreadPoolExecutor

    model, folder, _ = exported
    one = onnx_engine.OnnxEngine.from_file(folder / onnx_engine.FP32_FILE, "fp32", threads=1)
    two = onnx_engine.OnnxEngine.from_file(folder / onnx_engine.FP32_FILE, "fp32", threads=2)
    ref = one.run(model.tokenizer, TEXTS, batch_size=4, max_length=32)
    assert one.sessions == 1
    assert np.allclose(two.run(model.tokenizer, TEXTS, batch_size=4, max_length=32), ref, atol=1e-6)
    assert two.sessions == 2
    parts = [TEXTS[:10], TEXTS[10:25], TEXTS[25:]]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda t: two.run(model.tokenizer, t, batch_size=4, max_length=32), parts))
    assert np.allclose(np.vstack(got), ref, atol=1e-6)


def test_new_labels_drop_the_engine(exported, tiny_cfg):
    _, folder, _ = exported
    model = _model(tiny_cfg)
    model.engine = onnx_engine.load_engine(folder, "onnx")
    modeling.align_labels(model, LABELS)
    assert model.serving_engine == "onnx"  # same head: the export still serves it
    modeling.align_labels(model, [*LABELS, "new_label"])
    assert model.engine is None and model.serving_engine == "torch"


def test_export_travels_with_the_registered_version(tiny_cfg, local_mlflow, caplog):
    import mlflow

    root, _ = local_mlflow
    model = _model(tiny_cfg)  # artifacts under the module's folder (the SQLite store's default is ./mlruns)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("onnx-registry", (root / "artifacts").as_uri()))
    with mlflow.start_run():
        v1 = registry.log_and_register(model, "onnx-intent", "old", {})  # no export: registered before ONNX
    with mlflow.start_run() as run:
        v2 = registry.log_and_register(model, "onnx-intent", "new", {}, export_texts=TEXTS, max_length=32)
    assert mlflow.get_run(run.info.run_id).data.metrics["onnx_fp32_agreement"] == 1.0
    ref = modeling.score(model, TEXTS, max_length=32)
    served = registry.load_registered("onnx-intent", v2, engine="onnx")
    assert served.serving_engine == "onnx" and served.version == v2
    assert served.engine.precision == "fp32"
    assert modeling.score(served, TEXTS, max_length=32).prediction == ref.prediction
    assert registry.load_registered("onnx-intent", "new").engine is None  # torch stays the reference
    with caplog.at_level(logging.WARNING, logger="hitl.registry"):
        old = registry.load_registered("onnx-intent", v1, engine="onnx-int8")
    assert old.engine is None and "registered without an ONNX export: torch scores it" in caplog.text
    assert modeling.score(old, TEXTS, max_length=32).prediction == ref.prediction


def test_frozen_encoder_on_onnx_matches_torch_and_exports_once(tiny_cfg, tmp_path):
    path = modeling.base_model_path(tiny_cfg)
    ref = FrozenEncoder(path, None, max_length=32).encode(TEXTS)
    enc = FrozenEncoder(path, tmp_path, max_length=32, engine="onnx")
    got = enc.encode(TEXTS)
    assert enc.serving_engine == "onnx" and np.allclose(got, ref, atol=1e-4)
    folder = tmp_path / f"onnx-{path.name}"
    meta = onnx_engine.read_meta(folder)
    assert meta["output"] == "embedding" and meta["fp32"]["min_cosine"] > 0.9999 and "int8" in meta
    stamp = (folder / onnx_engine.FP32_FILE).stat().st_mtime_ns
    again = FrozenEncoder(path, tmp_path, max_length=32, engine="onnx")
    new = ["a text never seen"]
    assert np.allclose(again.encode(new), FrozenEncoder(path, None, max_length=32).encode(new), atol=1e-4)
    assert (folder / onnx_engine.FP32_FILE).stat().st_mtime_ns == stamp  # loaded from the cache, not exported
    int8 = FrozenEncoder(path, tmp_path, max_length=32, engine="onnx-int8")
    assert int8._cache_file != enc._cache_file  # int8 vectors are cached apart
    int8.encode(new)
    assert int8.serving_engine == ("onnx-int8" if "file" in meta["int8"] else "onnx")


def test_engine_is_a_config_choice(tmp_path):
    assert Config(labels=["a", "b"]).model.engine == "torch"  # until the ONNX engines have run the whole loop
    assert Config(labels=["a", "b"], model={"engine": "onnx-int8"}).model.engine == "onnx-int8"
    with pytest.raises(ValueError, match="model.engine must be one of torch, onnx, onnx-int8; got 'tensorrt'"):
        Config(labels=["a", "b"], model={"engine": "tensorrt"})
    with pytest.raises(ValueError, match="unknown engine"):
        FrozenEncoder(tmp_path, None, engine="onnx-fp16")
