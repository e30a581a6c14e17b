"""The intent model on the packaged MiniLM: scoring, save/load round trip, label-set growth, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hitl.config import Config
from hitl.learning import abstention, modeling

LABELS = ["card_lost", "balance_inquiry", "transfer_failed"]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> Config:
    return Config(labels=LABELS, state_dir=str(tmp_path_factory.mktemp("m")))


def test_base_model_knows_no_label_until_trained(cfg):
    model = modeling.load_base(cfg)
    assert model.labels == LABELS and model.known_labels == []
    model.network.set_prototypes({0: torch.ones(model.network.weight.shape[1])})
    s = modeling.score(model, ["anything at all", "what is my balance"])
    assert s.prediction == ["card_lost", "card_lost"]  # the only active label
    assert np.allclose(s.probs[:, 1:], 0.0, atol=1e-6)


def test_a_fine_tune_starts_from_the_champion_or_afresh_from_the_base_model(cfg):
    champion = modeling.load_base(cfg)
    champion.network.set_prototypes({0: torch.ones(champion.network.weight.shape[1])})
    with torch.no_grad():
        next(champion.network.encoder.parameters()).add_(1.0)  # a trained encoder differs from the base's
    def start(where: str):
        return modeling.starting_point(cfg.model_copy(update={"training": cfg.training.model_copy(
            update={"start": where})}), champion)

    assert start("champion") is champion
    fresh = start("base")  # the default
    assert cfg.training.start == "base"
    base = modeling.load_base(cfg)
    assert fresh is not champion and fresh.known_labels == [] and fresh.version == base.version
    assert all(torch.equal(a, b) for a, b in zip(fresh.network.encoder.parameters(), base.network.encoder.parameters(),
                                                strict=True))


def test_score_shapes_and_ranges(cfg):
    model = modeling.load_base(cfg)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(3)})
    texts = ["i lost my card", "what is my balance", "my transfer failed", "x"] * 3
    s = modeling.score(model, texts, batch_size=5)
    assert len(s.prediction) == len(texts) and set(s.prediction) <= set(LABELS)
    assert np.allclose(s.probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all((s.confidence > 0) & (s.confidence <= 1)) and np.all(s.margin >= 0)
    assert np.all((s.entropy >= 0) & (s.entropy <= 1))
    # the same text scores the same wherever it sits in a length-sorted batch
    assert np.allclose(s.probs[0], s.probs[4], atol=1e-5)


def test_save_load_round_trip(cfg, tmp_path):
    model = modeling.load_base(cfg)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(2)})
    model.trained_counts = {"card_lost": 3, "balance_inquiry": 2}
    back = modeling.load(modeling.save(model, tmp_path / "m"))
    texts = ["i lost my card", "what is my balance"]
    assert back.labels == model.labels and back.known_labels == ["card_lost", "balance_inquiry"]
    assert back.trained_counts == model.trained_counts
    assert np.allclose(modeling.score(model, texts).probs, modeling.score(back, texts).probs, atol=1e-6)


def test_abstention_predicts_the_fallback_label(tmp_path):
    cfg = Config(labels=[*LABELS, "out_of_scope"], fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(3)})
    s = modeling.score(model, ["i lost my card", "what is my balance"])
    model.abstain_threshold = float(s.confidence.max()) + 1e-3
    assert modeling.score(model, ["i lost my card", "what is my balance"]).prediction == ["out_of_scope"] * 2


def test_a_calibrated_model_refuses_by_its_threshold_alone(tmp_path):
    """Not yet calibrated, a model answers its top label over every label, the fallback class included; calibrated,
    the fallback only below its threshold, and otherwise its top in-scope label, even where the fallback class has
    the top probability (so a fixed false-abstention rate holds as set)."""
    cfg = Config(labels=[*LABELS, "out_of_scope"], fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    texts = ["i lost my card", "what is my balance"]
    vecs = torch.from_numpy(modeling.encode(model, texts))
    torch.manual_seed(0)
    model.network.set_prototypes({0: vecs[0], 1: torch.randn(vecs.shape[1]), 2: torch.randn(vecs.shape[1]),
                                  3: vecs[1]})  # the fallback class's row at the second text
    s = modeling.score(model, texts)
    assert s.prediction == ["card_lost", "out_of_scope"]
    model.abstain_threshold = 0.0  # never refuse
    assert modeling.score(model, texts).prediction == ["card_lost", LABELS[int(s.probs[1, :3].argmax())]]
    model.abstain_threshold = float(s.in_scope.max()) + 1e-3  # refuse everything
    assert modeling.score(model, texts).prediction == ["out_of_scope"] * 2


def test_a_reference_decides_abstention_and_travels_with_the_model(tmp_path):
    cfg = Config(labels=[*LABELS, "out_of_scope"], fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    torch.manual_seed(0)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(3)})
    inside = ["i lost my card", "what is my balance"]
    texts = [*inside, "the weather on mars is cold today"]
    plain = modeling.score(model, texts)
    assert np.array_equal(plain.in_scope, plain.confidence)  # no reference: the top probability stands in
    model.reference = modeling.encode(model, inside).astype(np.float16)
    s = modeling.score(model, texts, batch_size=2)
    assert np.allclose(s.probs, plain.probs, atol=1e-6)  # one pass for probabilities and vectors: the same ones
    assert np.allclose(s.in_scope[:2], 1.0, atol=2e-3) and s.in_scope[2] < s.in_scope[:2].min()
    model.abstain_threshold = float(s.in_scope[2] + s.in_scope[:2].min()) / 2
    assert modeling.score(model, texts).prediction[2] == "out_of_scope"
    assert "out_of_scope" not in modeling.score(model, inside).prediction

    back = modeling.load(modeling.save(model, tmp_path / "m"))
    assert back.reference.shape == model.reference.shape and back.abstain_threshold == model.abstain_threshold
    assert np.allclose(modeling.score(back, texts).in_scope, s.in_scope, atol=1e-6)
    assert s.in_scope_parts.shape == (3, 2) and np.array_equal(s.in_scope, s.in_scope_parts[:, 0])  # no scale yet
    assert np.allclose(s.in_scope_parts[:, 1], s.probs[:, :3].max(axis=1))  # the top in-scope probability

    # calibrated: the in-scope score is the parts' mean rank on the scale, which travels with the model too
    model.in_scope_scale = abstention.fit_scale(np.tile(s.in_scope_parts, (10, 1)), np.array(["card_lost"] * 30),
                                                "out_of_scope")
    ranked = modeling.score(model, texts)
    # its own parts: another batch size may move a part by a float's last bit, and a rank read at a point of the
    # scale (these parts are its points) jumps there
    assert np.allclose(ranked.in_scope_parts, s.in_scope_parts, atol=1e-5)
    assert np.allclose(ranked.in_scope, abstention.combine(ranked.in_scope_parts, model.in_scope_scale))
    back = modeling.load(modeling.save(model, tmp_path / "m"))
    assert np.allclose(back.in_scope_scale, model.in_scope_scale)
    assert np.allclose(modeling.score(back, texts).in_scope, ranked.in_scope, atol=1e-6)
    model.reference, model.in_scope_scale = None, None
    back = modeling.load(modeling.save(model, tmp_path / "m"))
    assert back.reference is None and back.in_scope_scale is None  # the old file does not linger


def test_label_set_grows_but_never_shrinks(cfg, tmp_path):
    model = modeling.load_base(cfg)
    model.network.set_prototypes({0: torch.randn(model.network.weight.shape[1])})
    row = model.network.weight.detach()[0].clone()
    grown = modeling.align_labels(model, ["new_intent", *LABELS])
    assert grown.labels == ["new_intent", *LABELS] and grown.known_labels == ["card_lost"]
    assert torch.equal(grown.network.weight.detach()[1], row)
    with pytest.raises(ValueError, match="can grow, not shrink"):
        modeling.align_labels(grown, ["balance_inquiry", "transfer_failed"])


def test_label_set_and_base_path_are_checked(cfg, tmp_path):
    model = modeling.load_base(cfg)
    with pytest.raises(ValueError, match="not in the config's label set"):
        modeling.check_labels(model, Config(labels=["a", "b"], state_dir=str(tmp_path)))
    modeling.check_labels(model, Config(labels=[*LABELS, "later"], state_dir=str(tmp_path)))  # grown: fine
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
