"""The training recipe: how the intent network learns from a few human labels, with transformers `Trainer`.

1. Head rows of labels the network has not been trained on start at their class prototype: the mean of
   the current encoder's sentence vectors of their examples (a fallback label such as out-of-scope has no
   meaningful mean and starts near zero instead).
2. Square-root-balanced sampling (weights 1/count^balance_power, 0.5 by default): a label's share of the
   draws grows with the square root of its row count, so six reviewed examples of a new intent are not
   drowned by two hundred replayed launch rows, yet are not repeated so often that the new intent's region
   swallows launch traffic. Measured on BANKING77 (seed 0, policy picks, docs/benchmarks.md's scenario):
   fully balanced sampling (power 1) sent 64 launch-intent test items to new intents (launch accuracy 90.5%,
   below the frozen anchor's 91.5% on the same rows); power 0.5 sent 38 (91.9%); new intents 84.8% and 85.0%.
3. Epochs by early stopping on a stratified validation split of the training rows (balanced accuracy,
   patience), the best state kept in memory; then (`refit`) a second pass on every row for that many
   epochs. The encoder and the head have their own learning rates; continuing from a trained champion, the
   encoder's is lower (`continue_learning_rate`), so the launch intents are not forgotten.

Pure helpers (`validation_split`, `sample_weights`, `prototypes`) are separate so they can be unit-tested
without a model. torch/transformers are imported inside functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hitl.config import TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from hitl.learning.modeling import IntentModel


def validation_split(labels: list[str], share: float, min_per_class: int, seed: int) -> np.ndarray:
    """Boolean mask of rows held out for validation: about `share` of each label that has at least
    `min_per_class` rows (at least one row of such a label; rarer labels keep every row for training)."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    if share <= 0:
        return mask
    for lab in sorted(set(labels)):
        idx = np.flatnonzero(y == lab)
        if len(idx) < min_per_class:
            continue
        k = max(1, int(round(share * len(idx))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def sample_weights(labels: list[str], power: float) -> np.ndarray:
    """Per-row sampling weights 1 / count(label)^power (0: natural frequencies, 1: labels equally likely)."""
    _, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].astype(float) ** power


def prototypes(vectors: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """Label -> mean of its rows' (normalised) sentence vectors."""
    y = np.asarray(labels)
    return {lab: vectors[y == lab].mean(axis=0) for lab in sorted(set(labels))}


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-label recall over the labels present in `truth`."""
    return float(np.mean([(pred[truth == k] == k).mean() for k in np.unique(truth)]))


def fine_tune(model: IntentModel, texts: list[str], labels: list[str], training: TrainingConfig,
              output_dir: Path, max_length: int = 64, fallback_label: str | None = None) -> dict[str, float]:
    """Fine-tune `model` in place on (texts, labels) with the recipe above; returns training metrics.

    With a validation split: a first pass picks the epoch count by early stopping; with `training.refit`
    the model then restarts from where it began and trains on every row for that many epochs, so no label
    is spent on validation only."""
    index = {lab: i for i, lab in enumerate(model.labels)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"Training labels {unknown} are not in the model's label set; add them to `labels` in "
                         "the config (a label added after the champion was trained gets its head row at the next "
                         "fine-tune)")
    net = model.network
    new = sorted({lab for lab in labels if not bool(net.active[index[lab]])})
    if bool(net.active.any()):  # continuing from a trained model: a gentler encoder rate forgets less
        training = training.model_copy(update={"learning_rate": training.continue_learning_rate})
    held = validation_split(labels, training.validation_share, training.validation_min_per_class, training.seed)
    if training.max_steps > 0:  # a capped run (tests) has no room for early stopping
        held[:] = False
    everything = np.ones(len(labels), dtype=bool)
    if not held.any():
        _init_new_rows(model, texts, labels, everything, new, fallback_label, max_length)
        out = _train(model, texts, labels, everything, None, training.epochs, training, output_dir, max_length)
        return {**out, "validation_rows": 0.0, "new_head_rows": float(len(new))}
    start = {k: v.detach().clone() for k, v in net.state_dict().items()} if training.refit else None
    _init_new_rows(model, texts, labels, ~held, new, fallback_label, max_length)
    first = _train(model, texts, labels, ~held, held, training.epochs, training, output_dir, max_length)
    out = {**first, "validation_rows": float(held.sum()), "new_head_rows": float(len(new))}
    if start is not None:
        net.load_state_dict(start)
        _init_new_rows(model, texts, labels, everything, new, fallback_label, max_length)
        epochs = max(1.0, float(np.ceil(first["best_epoch"])))
        final = _train(model, texts, labels, everything, None, epochs, training, output_dir, max_length)
        out.update({f"refit_{k}": v for k, v in final.items()}, train_rows=final["train_rows"])
    return out


def _init_new_rows(model: IntentModel, texts: list[str], labels: list[str], rows: np.ndarray, new: list[str],
                   fallback_label: str | None, max_length: int) -> None:
    """Head rows of labels never trained: the prototype of their examples among `rows` (a fallback label
    starts near zero instead)."""
    import torch

    from hitl.learning.modeling import encode

    index = {lab: i for i, lab in enumerate(model.labels)}
    with_mean = set(new) - {fallback_label}
    pick = [i for i in np.flatnonzero(rows) if labels[i] in with_mean]
    if pick:
        vecs = encode(model, [texts[i] for i in pick], max_length=max_length)
        protos = prototypes(vecs, [labels[i] for i in pick])
        model.network.set_prototypes({index[lab]: torch.from_numpy(v) for lab, v in protos.items()})
    if fallback_label in new:
        model.network.activate_without_prototype([index[fallback_label]])


def _train(model: IntentModel, texts: list[str], labels: list[str], train_rows: np.ndarray,
           val_rows: np.ndarray | None, epochs: float, training: TrainingConfig, output_dir: Path,
           max_length: int) -> dict[str, float]:
    """One Trainer pass on `train_rows` (sampling weighted by `balance_power`); with `val_rows`, early
    stopping restores the best epoch's weights."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    set_seed(training.seed)
    net, tok = model.network, model.tokenizer
    index = {lab: i for i, lab in enumerate(model.labels)}

    def dataset(mask: np.ndarray) -> Dataset:
        rows = np.flatnonzero(mask)
        enc = tok([texts[i] for i in rows], truncation=True, max_length=max_length)
        return Dataset.from_dict({**enc, "labels": [index[labels[i]] for i in rows]})

    validate = val_rows is not None and val_rows.any()
    train_ds, val_ds = dataset(train_rows), (dataset(val_rows) if validate else None)
    weights = sample_weights([labels[i] for i in np.flatnonzero(train_rows)], training.balance_power)
    best = _best_state(training.early_stopping_patience)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size, per_device_eval_batch_size=64,
        learning_rate=training.learning_rate, weight_decay=training.weight_decay, warmup_steps=0.06,
        seed=training.seed, data_seed=training.seed, save_strategy="no",
        eval_strategy="epoch" if validate else "no", logging_steps=50, report_to=[], disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False,  # the columns are the network's inputs already; skips a datasets map
    )

    class _Trainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            gen = torch.Generator().manual_seed(training.seed)
            return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                                          num_samples=len(weights), replacement=True, generator=gen)

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                head = {id(p) for p in net.head_parameters()}
                decay = [p for n, p in net.named_parameters()
                         if id(p) not in head and not n.endswith("bias") and "LayerNorm" not in n]
                no_decay = [p for n, p in net.named_parameters()
                            if id(p) not in head and (n.endswith("bias") or "LayerNorm" in n)]
                self.optimizer = torch.optim.AdamW([
                    {"params": decay, "weight_decay": training.weight_decay},
                    {"params": no_decay, "weight_decay": 0.0},
                    {"params": net.head_parameters(), "weight_decay": 0.0, "lr": training.head_learning_rate},
                ], lr=training.learning_rate, fused=True)
            return self.optimizer

    def metrics(pred) -> dict[str, float]:
        return {"balanced_accuracy": balanced_accuracy(pred.predictions.argmax(-1), pred.label_ids)}

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers.trainer").setLevel(logging.ERROR)
    trainer = _Trainer(model=net, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                       data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics if validate else None,
                       callbacks=[best] if validate else [])
    trainer.remove_callback(PrinterCallback)  # metrics go to the caller's log, not stdout
    result = trainer.train()
    if best.state is not None:
        net.load_state_dict(best.state)
    net.eval()
    out = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    out.update(train_rows=float(train_rows.sum()), logit_scale=float(net.log_scale.detach().exp()))
    if best.state is not None:
        out.update(best_epoch=float(best.epoch), best_validation_balanced_accuracy=best.score[0])
    return out


def _best_state(patience: int):
    """A Trainer callback that keeps the best weights by validation balanced accuracy (ties: lower loss) in
    memory and stops after `patience` evaluations without improvement (no checkpoints written to disk)."""
    from transformers import TrainerCallback

    class BestState(TrainerCallback):
        def __init__(self) -> None:
            self.bad, self.score, self.epoch, self.state = 0, (-1.0, 0.0), 0.0, None

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            m = metrics or {}
            score = (round(float(m.get("eval_balanced_accuracy", -1.0)), 6), -float(m.get("eval_loss", 0.0)))
            if score > self.score:
                self.score, self.epoch, self.bad = score, float(state.epoch or 0), 0
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                self.bad += 1
                if self.bad >= patience:
                    control.should_training_stop = True
            return control

    return BestState()
