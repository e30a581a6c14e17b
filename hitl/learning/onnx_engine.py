"""ONNX Runtime inference for the intent network (encoder + pooling + cosine head, softmax included) and for the
frozen encoder (mean-pooled, normalised sentence vectors), with optional int8 dynamic quantisation.

The torch path (`hitl.learning.modeling`) stays the reference: every export is checked against it on probe
texts before it is used, and refused when it does not match.

- fp32: the largest difference of any probability (or embedding component) must be at most `FP32_MAX_ABS`;
  otherwise `ExportError` is raised and nothing is written.
- int8 (`onnxruntime.quantization.quantize_dynamic`: MatMul weights int8 per channel, activations quantised
  at run time; the narrowing MatMuls, i.e. the feed-forward down-projections, and the head stay fp32). For the network,
  a text whose int8 top-two margin is below `RECHECK_MARGIN` is scored again by the fp32 graph. It ships only
  when the top label (after that re-check) agrees with torch on at least `INT8_MIN_AGREEMENT` of the probe
  texts (frozen encoder: every vector's cosine to torch's at least `INT8_MIN_COSINE`). A refused int8 leaves
  fp32 serving, with the reason in the export's metadata (`onnx.json`).

A registered model version carries its export beside the model folder (`hitl.learning.registry`), so a worker
loads it instead of exporting again. The engine runs the same tokenisation and length-sorted batches as the
torch path (at most `BATCH_SIZE` texts a batch), with as many threads as torch uses (`torch.get_num_threads()`,
i.e. OMP_NUM_THREADS when set): up to `MAX_SESSIONS` sessions run batches side by side, the threads shared among
them. On 2 cores two one-thread sessions embedded short texts 9% faster than one two-thread session, and one
session called by two threads at once (a threads task runner) 19% slower: a call takes a free session, never
shares one. `bench/engine.py` measures speed, accuracy and agreement on BANKING77.

Heavy imports (torch, onnx, onnxruntime) happen inside functions.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hitl.config import ENGINES

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from hitl.learning.modeling import IntentModel

ONNX_DIR, META_FILE, FP32_FILE, INT8_FILE = "onnx", "onnx.json", "model.onnx", "model-int8.onnx"
FORMAT = "hitl-onnx/1"
OPSET = 17
FP32_MAX_ABS = 1e-4  # fp32 export: largest |probability (or embedding) difference| to torch
INT8_MIN_AGREEMENT = 0.99  # int8 network: share of probe texts whose top label matches torch's
INT8_MIN_COSINE = 0.99  # int8 frozen encoder: smallest cosine between a vector and torch's
PROBE_TEXTS = 512  # texts an export is checked on (a deterministic sample of those given)
RECHECK_MARGIN = 0.05  # int8 network: a top-two probability margin below this is scored again in fp32
MAX_SESSIONS = 4  # sessions an engine runs side by side (each holds the graph's weights: 23-90 MB)
BATCH_SIZE = 32  # ONNX Runtime's batches at most (on 2 cores it runs 32 short texts a batch 1.2-1.5x faster than 64)

log = logging.getLogger("hitl.onnx")


class ExportError(RuntimeError):
    """An ONNX export whose outputs do not match the torch reference."""


@dataclass(frozen=True)
class Check:
    """How an exported graph compares with torch on the probe texts."""

    n: int
    max_abs_diff: float
    agreement: float  # share of matching top labels (network) or of vectors with cosine >= INT8_MIN_COSINE
    min_cosine: float | None = None  # frozen encoder only
    seconds: float = 0.0


# ---- graphs ----
def _input_names(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ExportError(f"tokenizer inputs {tokenizer.model_input_names} lack input_ids and attention_mask")
    return names


def _export(module: Any, tokenizer: PreTrainedTokenizerBase, output: str, path: Path) -> None:
    """Trace `module(input_ids, attention_mask[, token_type_ids])` with dynamic batch and sequence axes. The
    TorchScript exporter (dynamo=False): the torch.export-based one needs onnxscript and gains nothing here."""
    import torch

    names = _input_names(tokenizer)
    enc = tokenizer(["an example to trace", "a second, longer example to trace the graph with"], padding=True,
                    return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(module.eval(), tuple(enc[n] for n in names), str(path), dynamo=False, input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET)


def _narrowing_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose constant weight has more rows than columns: the feed-forward down-projections. Their
    inputs carry the activation outliers that int8 rounds worst; they stay fp32. (The head's weight is
    normalised in the graph, not a constant: dynamic quantisation leaves it fp32 anyway.)"""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    shapes = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
            and shapes[n.input[1]][0] > shapes[n.input[1]][1]]


def _quantize(src: Path, dst: Path) -> None:
    """int8 weights (per output channel) for the MatMuls, activations quantised at run time; narrowing MatMuls
    and embedding tables stay fp32 (measured on BANKING77: top-label agreement with torch 98.3% with every
    MatMul in int8, 99.3% with the down-projections in fp32, at 10% of the int8 speed-up; bench/engine.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    was, root.disabled = root.disabled, True  # quantize_dynamic's "consider pre-processing" note on the root
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=_narrowing_matmuls(src))
    finally:
        root.disabled = was


def _network_module(model: IntentModel) -> Any:
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, network: torch.nn.Module):
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return torch.softmax(self.network(input_ids, attention_mask, token_type_ids).logits, dim=-1)

    return Probabilities(model.network)


def _encoder_module(encoder: Any) -> Any:
    import torch

    from hitl.learning.network import mean_pool

    class Embeddings(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            return mean_pool(hidden, attention_mask)

    return Embeddings(encoder)


# ---- the engine ----
class OnnxEngine:
    """An ONNX Runtime session over one exported graph; `run(tokenizer, texts, ...)` returns its (n, k) output
    in the order of `texts`. Pickles as the graph's bytes (Dask workers rebuild the session).

    `recheck` (int8 probabilities): an fp32 engine that scores again every text whose int8 top-two margin is
    below `RECHECK_MARGIN`, where int8 rounding can swap the top label (4-8% of BANKING77's test texts)."""

    def __init__(self, graph: bytes, precision: str, threads: int | None = None, recheck: OnnxEngine | None = None):
        self.graph, self.precision, self.threads, self.recheck = graph, precision, threads, recheck
        self._free: queue.Queue | None = None  # idle sessions; a batch takes one and gives it back
        self._lock = threading.Lock()
        self.sessions = 0
        self.rechecked = 0  # texts re-scored by `recheck`, over this engine's life

    @classmethod
    def from_file(cls, path: Path, precision: str, threads: int | None = None,
                  recheck: OnnxEngine | None = None) -> OnnxEngine:
        return cls(Path(path).read_bytes(), precision, threads, recheck)

    @property
    def name(self) -> str:
        return "onnx-int8" if self.precision == "int8" else "onnx"

    def _sessions(self) -> queue.Queue:
        """The idle sessions: the threads torch would use, split among up to MAX_SESSIONS sessions."""
        with self._lock:
            if self._free is None:
                import onnxruntime as ort
                import torch

                threads = self.threads or torch.get_num_threads()
                self.sessions = max(1, min(MAX_SESSIONS, threads))
                free: queue.Queue = queue.Queue()
                for _ in range(self.sessions):
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = max(1, threads // self.sessions)
                    opts.inter_op_num_threads = 1
                    opts.log_severity_level = 3
                    free.put(ort.InferenceSession(self.graph, opts, providers=["CPUExecutionProvider"]))
                first = free.queue[0]
                self._inputs = [i.name for i in first.get_inputs()]
                self._free = free
            return self._free

    def run(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 64,
            max_length: int = 64) -> np.ndarray:
        from hitl.learning.modeling import run_batched

        free = self._sessions()
        names = self._inputs

        def forward(enc: dict) -> np.ndarray:
            sess = free.get()
            try:
                return sess.run(None, {n: np.asarray(enc[n], dtype=np.int64) for n in names})[0]
            finally:
                free.put(sess)

        out = run_batched(tokenizer, texts, forward, min(batch_size, BATCH_SIZE), max_length, tensors="np",
                          workers=self.sessions)
        if self.recheck is not None and out.shape[1] > 1:
            top2 = np.sort(out, axis=1)[:, -2:]
            close = np.flatnonzero(top2[:, 1] - top2[:, 0] < RECHECK_MARGIN)
            if len(close):
                out[close] = self.recheck.run(tokenizer, [texts[i] for i in close], batch_size, max_length)
                self.rechecked += len(close)
        return out

    def __getstate__(self) -> dict:
        return {"graph": self.graph, "precision": self.precision, "threads": self.threads, "recheck": self.recheck}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["graph"], state["precision"], state["threads"], state.get("recheck"))


def probe(texts: list[str], n: int = PROBE_TEXTS, seed: int = 0) -> list[str]:
    """A deterministic sample of up to `n` distinct texts."""
    unique = list(dict.fromkeys(str(t) for t in texts))
    if len(unique) <= n:
        return unique
    idx = np.sort(np.random.default_rng(seed).choice(len(unique), size=n, replace=False))
    return [unique[i] for i in idx]


def compare_probabilities(ref: np.ndarray, got: np.ndarray, seconds: float = 0.0) -> Check:
    diff = float(np.abs(ref - got).max()) if len(ref) else 0.0
    agree = float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0
    return Check(len(ref), diff, agree, seconds=round(seconds, 2))


def compare_vectors(ref: np.ndarray, got: np.ndarray, seconds: float = 0.0) -> Check:
    if not len(ref):
        return Check(0, 0.0, 1.0, 1.0, round(seconds, 2))
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return Check(len(ref), float(np.abs(ref - got).max()), float((cos >= INT8_MIN_COSINE).mean()),
                 float(cos.min()), round(seconds, 2))


def _fp32_or_raise(what: str, check: Check) -> None:
    if not check.max_abs_diff <= FP32_MAX_ABS:
        raise ExportError(f"The fp32 ONNX export of {what} differs from torch by up to {check.max_abs_diff:.2e} "
                          f"(allowed {FP32_MAX_ABS:.0e}) on {check.n} probe texts; it is refused. Serve it with "
                          "model.engine: torch, and report the torch/onnxruntime versions.")


def _int8_verdict(check: Check, vectors: bool) -> str | None:
    """None when the int8 graph may serve, else why not."""
    if vectors:
        if check.min_cosine is not None and check.min_cosine >= INT8_MIN_COSINE:
            return None
        return f"smallest cosine to torch {check.min_cosine:.4f} < {INT8_MIN_COSINE} on {check.n} probe texts"
    if check.agreement >= INT8_MIN_AGREEMENT:
        return None
    return f"top label agrees with torch on {100 * check.agreement:.2f}% < {100 * INT8_MIN_AGREEMENT:g}% of " \
           f"{check.n} probe texts"


def _export_and_check(module: Any, tokenizer: PreTrainedTokenizerBase, reference: np.ndarray, texts: list[str],
                      out_dir: Path, what: str, vectors: bool, batch_size: int, max_length: int,
                      int8: bool) -> dict:
    """Export `module`, check fp32 (raise) and int8 (refuse) against `reference` on `texts`; write `onnx.json`."""
    import onnxruntime
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    compare = compare_vectors if vectors else compare_probabilities
    output = "embedding" if vectors else "probs"
    t0 = time.perf_counter()
    _export(module, tokenizer, output, out_dir / FP32_FILE)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fp32 = compare(reference, OnnxEngine.from_file(out_dir / FP32_FILE, "fp32").run(tokenizer, texts, batch_size,
                                                                                    max_length),
                   time.perf_counter() - t0)
    try:
        _fp32_or_raise(what, fp32)
    except ExportError:
        (out_dir / FP32_FILE).unlink(missing_ok=True)
        raise
    meta: dict[str, Any] = {"format": FORMAT, "what": what, "output": output, "inputs": _input_names(tokenizer),
                            "opset": OPSET, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                            "max_length": max_length, "export_seconds": round(export_s, 1),
                            "fp32": {"file": FP32_FILE, **asdict(fp32)}}
    if int8:
        _quantize(out_dir / FP32_FILE, out_dir / INT8_FILE)
        engine = _int8_engine(out_dir, vectors)
        t0 = time.perf_counter()
        q = compare(reference, engine.run(tokenizer, texts, batch_size, max_length), time.perf_counter() - t0)
        refused = _int8_verdict(q, vectors)
        rechecked = {} if vectors else {"rechecked": engine.rechecked, "recheck_margin": RECHECK_MARGIN}
        meta["int8"] = {**asdict(q), **rechecked, **({"file": INT8_FILE} if refused is None else {"refused": refused})}
        if refused:
            (out_dir / INT8_FILE).unlink(missing_ok=True)
            log.warning("int8 export of %s refused (%s): fp32 ONNX Runtime serves it", what, refused)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def export_network(model: IntentModel, out_dir: Path, texts: list[str], batch_size: int = 64, max_length: int = 64,
                   int8: bool = True) -> dict:
    """Export the model's network (encoder, pooling, head, softmax) to `out_dir` as fp32 and (if it keeps the top
    labels) int8 ONNX, each checked against `modeling.probabilities` on a probe of `texts`. Returns the metadata
    written to `out_dir/onnx.json`; raises ExportError when fp32 does not match torch."""
    from hitl.learning import modeling

    sample = probe(texts)
    if not sample:
        raise ExportError("an ONNX export needs probe texts to check it against torch; none were given")
    model.network.eval()
    reference = modeling.probabilities(model, sample, batch_size, max_length)
    meta = _export_and_check(_network_module(model), model.tokenizer, reference, sample, out_dir,
                             f"intent model {model.version}", False, batch_size, max_length, int8)
    meta["labels"] = list(model.labels)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def export_encoder(encoder: Any, tokenizer: PreTrainedTokenizerBase, out_dir: Path, texts: list[str],
                   batch_size: int = 64, max_length: int = 64, int8: bool = True, what: str = "frozen encoder"
                   ) -> dict:
    """Export a Hugging Face encoder with mean pooling (the frozen-embedding path) to `out_dir`, checked against
    torch's vectors on a probe of `texts` like `export_network`."""
    from hitl.learning.modeling import run_batched
    from hitl.learning.network import mean_pool

    sample = probe(texts)
    if not sample:
        raise ExportError("an ONNX export needs probe texts to check it against torch; none were given")
    encoder.eval()
    reference = run_batched(tokenizer, sample, lambda enc: mean_pool(encoder(**enc).last_hidden_state,
                                                                     enc["attention_mask"]), batch_size, max_length)
    return _export_and_check(_encoder_module(encoder), tokenizer, reference, sample, out_dir, what, True,
                             batch_size, max_length, int8)


def read_meta(folder: Path) -> dict | None:
    """The export's metadata in `folder`, or None when there is none (or of another format)."""
    p = Path(folder) / META_FILE
    if not p.exists():
        return None
    meta = json.loads(p.read_text())
    return meta if meta.get("format") == FORMAT else None


def _int8_engine(folder: Path, vectors: bool, int8_file: str = INT8_FILE, fp32_file: str = FP32_FILE
                 ) -> OnnxEngine:
    """The int8 graph; for probabilities, with its fp32 graph re-checking close calls."""
    recheck = None if vectors else OnnxEngine.from_file(folder / fp32_file, "fp32")
    return OnnxEngine.from_file(folder / int8_file, "int8", recheck=recheck)


def load_engine(folder: Path, engine: str, what: str = "model") -> OnnxEngine | None:
    """The engine `engine` ("onnx" or "onnx-int8") from an export folder; int8 refused at export serves fp32
    (with a warning). None when the folder holds no export."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    meta = read_meta(folder)
    if engine == "torch" or meta is None:
        return None
    if engine == "onnx-int8":
        q = meta.get("int8") or {}
        if q.get("file") and (Path(folder) / q["file"]).exists():
            return _int8_engine(Path(folder), meta.get("output") == "embedding", q["file"], meta["fp32"]["file"])
        log.warning("%s: int8 ONNX %s; serving fp32 ONNX Runtime", what, q.get("refused", "was not exported"))
    return OnnxEngine.from_file(Path(folder) / meta["fp32"]["file"], "fp32")
