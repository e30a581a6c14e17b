"""The intent model on the packaged MiniLM: seeded heads, scoring, a few real Trainer steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hitl.config import Config, TrainingConfig
from hitl.learning import modeling

LABELS = ["card_lost", "balance_inquiry", "transfer_failed"]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> Config:
    return Config(labels=LABELS, state_dir=str(tmp_path_factory.mktemp("m")))


def test_same_seed_same_launch_head(cfg):
    a, b = modeling.load_base(cfg), modeling.load_base(cfg)
    assert a.labels == LABELS
    assert torch.equal(a.model.classifier.weight, b.model.classifier.weight)


def test_score_and_a_few_trainer_steps(cfg, tmp_path):
    model = modeling.load_base(cfg)
    texts = ["i lost my card", "what is my balance", "my transfer failed", "card gone missing",
             "how much money do i have", "the payment bounced back"] * 4
    labels = ["card_lost", "balance_inquiry", "transfer_failed"] * 8
    before = model.model.classifier.weight.detach().clone()
    s = modeling.score(model, texts, batch_size=5)
    assert set(s.prediction) <= set(LABELS) and len(s.prediction) == len(texts)
    assert np.all((s.confidence > 0) & (s.confidence <= 1)) and np.all(s.margin >= 0)
    metrics = modeling.fine_tune(model, texts, labels, TrainingConfig(max_steps=3, batch_size=8), tmp_path)
    assert np.isfinite(metrics["train_loss"]) and metrics["train_rows"] == len(texts)
    assert not torch.equal(before, model.model.classifier.weight)
    with pytest.raises(ValueError, match="not in the model's label set"):
        modeling.fine_tune(model, ["x"], ["unknown"], TrainingConfig(max_steps=1), tmp_path)


def test_label_set_and_base_path_are_checked(cfg, tmp_path):
    model = modeling.load_base(cfg)
    with pytest.raises(ValueError, match="label set"):
        modeling.check_labels(model, Config(labels=["a", "b"], state_dir=str(tmp_path)))
    bad = Config(labels=LABELS, state_dir=str(tmp_path), model={"base_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        modeling.base_model_path(bad)


def test_any_local_hf_model_folder_works_via_config(tmp_path):
    import shutil

    folder = tmp_path / "my-encoder"
    shutil.copytree(modeling.base_model_path(Config(labels=LABELS, state_dir=str(tmp_path))), folder)
    cfg = Config(labels=LABELS, state_dir=str(tmp_path), model={"base_path": str(folder)})
    model = modeling.load_base(cfg)
    assert modeling.base_model_path(cfg) == folder and model.version == "base:my-encoder"
    assert model.labels == LABELS and len(modeling.score(model, ["hello"]).prediction) == 1
