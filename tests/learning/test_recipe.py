"""The training recipe: pure helpers, and a tiny encoder that learns a new label from five examples."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_domain import LAUNCH, NEW, tiny_encoder
from hypothesis import given
from hypothesis import strategies as st

from hitl.config import Config, TrainingConfig
from hitl.learning import modeling, recipe

NEW_HELD_OUT = ["how do i use a crypto wallet", "crypto wallet help", "open crypto wallet", "crypto wallet please"]


def test_validation_split_keeps_rare_labels_whole():
    labels = ["a"] * 20 + ["b"] * 5 + ["c"] * 3
    held = recipe.validation_split(labels, 0.15, 5, seed=1)
    y = np.array(labels)
    assert held[y == "a"].sum() == 3 and held[y == "b"].sum() == 1 and held[y == "c"].sum() == 0
    assert np.array_equal(held, recipe.validation_split(labels, 0.15, 5, seed=1))
    assert not recipe.validation_split(labels, 0.0, 5, seed=1).any()


@given(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=200), st.floats(0.0, 1.0))
def test_sample_weights_balance_labels(labels, power):
    w = recipe.sample_weights(labels, power)
    y = np.array(labels)
    mass = {lab: w[y == lab].sum() for lab in set(labels)}
    counts = {lab: (y == lab).sum() for lab in set(labels)}
    for lab in mass:  # a label's total weight is count^(1 - power)
        assert mass[lab] == pytest.approx(counts[lab] ** (1 - power))


def test_prototypes_are_class_means():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = recipe.prototypes(v, ["x", "x", "y"])
    assert np.allclose(p["x"], [0.5, 0.5]) and np.allclose(p["y"], [1.0, 1.0])


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Config:
    folder = tiny_encoder(tmp_path_factory.mktemp("tiny"))
    return Config(labels=list(LAUNCH), state_dir=str(folder.parent), model={"base_path": str(folder)},
                  training=TrainingConfig(epochs=6, batch_size=8, learning_rate=1e-3, continue_learning_rate=1e-3,
                                          head_learning_rate=1e-2,
                                          validation_share=0.15))


def _data(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    return [t for ts in groups.values() for t in ts], [lab for lab, ts in groups.items() for _ in ts]


@pytest.mark.slow(reason="real fine-tunes of a small encoder, both phases and early stopping, to see a label learnt")
def test_recipe_learns_a_new_label_from_five_examples(tiny_cfg, tmp_path):
    model = modeling.load_base(tiny_cfg)
    texts, labels = _data(LAUNCH)
    metrics = recipe.fine_tune(model, texts, labels, tiny_cfg.training, tmp_path)
    assert metrics["new_head_rows"] == 3 and metrics["validation_rows"] == 3 and "best_epoch" in metrics
    assert modeling.score(model, NEW_HELD_OUT).prediction.count("crypto_wallet") == 0  # not a label yet

    grown_cfg = tiny_cfg.model_copy(update={"labels": [*LAUNCH, NEW[0]]})
    model = modeling.align_labels(model, grown_cfg.labels)  # the label added to the config later
    assert NEW[0] not in model.known_labels
    texts, labels = _data({**LAUNCH, NEW[0]: NEW[1]})  # launch replay + five reviewed examples
    metrics = recipe.fine_tune(model, texts, labels, tiny_cfg.training, tmp_path)
    assert metrics["new_head_rows"] == 1
    learned = modeling.score(model, NEW_HELD_OUT).prediction
    assert learned.count(NEW[0]) >= 3, learned
    kept = modeling.score(model, ["i lost my card on the train", "what is the balance", "transfer failed today"])
    assert kept.prediction == ["card_lost", "balance_inquiry", "transfer_failed"]


def test_unknown_training_label_is_refused(tiny_cfg, tmp_path):
    model = modeling.load_base(tiny_cfg)
    with pytest.raises(ValueError, match="not in the model's label set"):
        recipe.fine_tune(model, ["x"], ["unknown"], tiny_cfg.training, tmp_path)


@pytest.mark.slow(reason="three real fine-tunes of a small encoder: a champion, then two continued runs compared")
def test_distillation_keeps_the_champion_s_old_labels_closer_and_still_learns_the_new_one(tiny_cfg, tmp_path):
    import numpy as np

    champion = modeling.load_base(tiny_cfg)
    recipe.fine_tune(champion, *_data(LAUNCH), tiny_cfg.training, tmp_path)
    saved = modeling.save(champion, tmp_path / "champion")
    labels = [*LAUNCH, NEW[0]]
    launch_texts = _data(LAUNCH)[0]
    before = modeling.probabilities(champion, launch_texts)[:, :len(LAUNCH)]
    drift, learned = {}, {}
    for weight in (0.0, 1.0):
        training = tiny_cfg.training.model_copy(update={"distill_weight": weight})
        model = modeling.align_labels(modeling.load(saved), labels)
        metrics = recipe.fine_tune(model, *_data({**LAUNCH, NEW[0]: NEW[1]}), training, tmp_path / str(weight))
        assert metrics["new_head_rows"] == 1
        after = modeling.probabilities(model, launch_texts)[:, :len(LAUNCH)]
        after = after / after.sum(axis=1, keepdims=True)  # over the old labels, as the distillation term sees them
        drift[weight] = float(np.mean(np.sum(before * (np.log(before + 1e-9) - np.log(after + 1e-9)), axis=1)))
        learned[weight] = modeling.score(model, NEW_HELD_OUT).prediction.count(NEW[0])
    assert drift[1.0] < drift[0.0], drift  # the old labels' probabilities moved less
    assert learned[1.0] >= 3, learned  # and the new label is still learnt from five examples


def test_a_fallback_label_leaves_a_reference_of_the_in_scope_rows(tiny_cfg, tmp_path):
    """Trained with a fallback label, the model keeps its encoder's vectors of the in-scope rows (not the fallback
    label's) as the in-scope score's reference; trained without one, it keeps none."""
    cfg = tiny_cfg.model_copy(update={"labels": [*LAUNCH, "out_of_scope"], "fallback_label": "out_of_scope"})
    model = modeling.load_base(cfg)
    texts, labels = _data({**LAUNCH, "out_of_scope": ["tell me a joke", "what is the weather", "who won"]})
    training = cfg.training.model_copy(update={"max_steps": 2})
    recipe.fine_tune(model, texts, labels, training, tmp_path, fallback_label="out_of_scope")
    in_scope = [t for t, lab in zip(texts, labels, strict=True) if lab != "out_of_scope"]
    assert model.reference.dtype == np.float16 and len(model.reference) == len(in_scope)
    assert np.allclose(model.reference.astype(np.float32), modeling.encode(model, in_scope), atol=2e-3)
    s = modeling.score(model, in_scope)
    assert np.allclose(s.in_scope, 1.0, atol=2e-3)  # each in-scope row has itself in the reference
    recipe.fine_tune(model, in_scope, [lab for lab in labels if lab != "out_of_scope"], training, tmp_path)
    assert model.reference is None


def test_encoder_mix_returns_the_trained_encoder_mixed_with_the_one_it_began_from(tiny_cfg, tmp_path):
    """With `encoder_mix` below 1 the fine-tune returns each encoder weight as that share of the trained weight plus
    the rest of the starting one (WiSE-FT), the head as trained, and the reference from the mixed encoder."""
    cfg = tiny_cfg.model_copy(update={"labels": [*LAUNCH, "out_of_scope"], "fallback_label": "out_of_scope"})
    texts, labels = _data({**LAUNCH, "out_of_scope": ["tell me a joke", "what is the weather", "who won"]})
    start = modeling.load_base(cfg).network.encoder.state_dict()
    trained = {}
    for share in (1.0, 0.25):
        model = modeling.load_base(cfg)
        training = cfg.training.model_copy(update={"max_steps": 3, "encoder_mix": share})
        recipe.fine_tune(model, texts, labels, training, tmp_path / str(share), fallback_label="out_of_scope")
        trained[share] = model
    whole, mixed = (trained[s].network.encoder.state_dict() for s in (1.0, 0.25))
    moved = [k for k, v in whole.items() if v.is_floating_point() and not np.allclose(v, start[k])]
    assert moved  # training changed the encoder, so there is something to mix
    for k in moved:
        assert np.allclose(mixed[k], 0.25 * whole[k] + 0.75 * start[k], atol=1e-6)
    assert np.allclose(trained[0.25].network.weight.detach(), trained[1.0].network.weight.detach())  # the head
    in_scope = [t for t, lab in zip(texts, labels, strict=True) if lab != "out_of_scope"]
    assert np.allclose(trained[0.25].reference.astype(np.float32), modeling.encode(trained[0.25], in_scope),
                       atol=2e-3)


def test_reset_head_restarts_every_head_row_at_its_prototype_when_continuing(tiny_cfg, tmp_path):
    """Continuing from a champion, the head keeps its trained rows; with `reset_head` every label's row starts at
    the prototype of its rows under the champion's encoder, biases at zero (learning rates ~0 to see the start)."""
    import torch

    champion = modeling.load_base(tiny_cfg)
    recipe.fine_tune(champion, *_data(LAUNCH), tiny_cfg.training.model_copy(update={"max_steps": 3}), tmp_path)
    saved = modeling.save(champion, tmp_path / "champion")
    texts, labels = _data(LAUNCH)
    still = tiny_cfg.training.model_copy(update={"max_steps": 1, "continue_learning_rate": 1e-12,
                                                 "head_learning_rate": 1e-12, "checkpoint_steps": 0})
    trained = champion.network.weight.detach().clone()
    means = recipe.prototypes(modeling.encode(champion, texts), labels)
    for reset in (False, True):
        model = modeling.load(saved)
        training = still.model_copy(update={"reset_head": reset})
        assert recipe.fine_tune(model, texts, labels, training, tmp_path / str(reset))["new_head_rows"] == 0
        rows = torch.nn.functional.normalize(torch.stack([torch.from_numpy(means[lab]) for lab in LAUNCH]), dim=-1)
        head = model.network.weight.detach()[:len(LAUNCH)]
        if reset:
            assert torch.allclose(head, rows, atol=1e-4) and float(model.network.bias.detach().abs().max()) < 1e-6
        else:
            assert torch.allclose(head, trained[:len(LAUNCH)], atol=1e-6) and not torch.allclose(head, rows, atol=1e-3)


def test_pseudo_outliers_are_midpoints_of_two_different_in_scope_labels_taught_as_the_fallback_label():
    """The pseudo-outlier term: each row paired with the previous one; pairs of one label, or with the fallback label,
    make none; a pair's normalised midpoint is scored by the head against the fallback label."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from hitl.learning.network import CosineIntentNetwork

    encoder = nn.Module()
    encoder.config = type("C", (), {"hidden_size": 2})()
    net = CosineIntentNetwork(encoder, num_labels=3)
    net.set_prototypes({0: torch.tensor([1.0, 0.0]), 1: torch.tensor([0.0, 1.0])})
    net.activate_without_prototype([2])
    sentence = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.9, 0.2], [0.3, 0.8]]), dim=-1)
    fallback = 2
    # rows 1 and 2 pair with rows 0 and 1 (labels 1/0 and 0/1); row 3 is the fallback's, and row 0's partner is row 3
    labels = torch.tensor([0, 1, 0, 2])
    mid = F.normalize(sentence[[1, 2]] + sentence[[0, 1]], dim=-1)
    expected = F.cross_entropy(net.head(mid), torch.full((2,), fallback))
    assert torch.allclose(net.pseudo_outlier_loss(sentence, labels, fallback), expected)
    none = net.pseudo_outlier_loss(sentence, torch.tensor([0, 0, 2, 2]), fallback)
    assert float(none) == 0.0 and none.requires_grad is sentence.requires_grad
    # the term falls as the head gives the midpoints to the fallback label: its row at their mean direction
    with torch.no_grad():
        net.weight[fallback] = mid.mean(dim=0)
    assert net.pseudo_outlier_loss(sentence, labels, fallback) < expected
