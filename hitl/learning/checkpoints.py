"""Resumable training phases: what a sealed checkpoint holds and the Trainer pieces that make a resumed run
draw and keep what an uninterrupted one would (the crash safety of `hitl.learning.recipe`, point 5).

A checkpoint counts only once `seal` has written its marker, last, after Trainer's files and the early-stopping
state; `last_sealed` finds the newest such one. torch/transformers are imported inside functions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hitl import faults

SEALED = "hitl-sealed.json"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def rng_state() -> dict:
    import random

    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import random

    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def epoch_sampler(weights: np.ndarray, seed: int):
    """Weighted draws with replacement whose epoch-k order is the k-th draw of a generator seeded with
    `seed` (Trainer calls `set_epoch`): the same orders as one generator run through the epochs, yet a
    resumed run gets them without replaying the epochs before."""
    import torch

    class EpochSampler(torch.utils.data.WeightedRandomSampler):
        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(seed)
            for _ in range(epoch):
                torch.multinomial(self.weights, self.num_samples, self.replacement, generator=self.generator)

    return EpochSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(weights), replacement=True,
                        generator=torch.Generator().manual_seed(seed))


def seal(phase_dir: Path, step: int, loss_sum: float, best) -> None:
    """Mark checkpoint `step` complete (written last, after Trainer's files and the early-stopping state),
    then drop older checkpoints and best weights no sealed checkpoint needs."""
    ckpt = phase_dir / f"checkpoint-{step}"
    kept = best.dump(phase_dir) if best is not None else None
    write_atomic(ckpt / SEALED, json.dumps({"step": step, "loss_sum": loss_sum, "best": kept}))
    for old in phase_dir.glob("checkpoint-*"):
        if old != ckpt:
            shutil.rmtree(old, ignore_errors=True)
    for f in phase_dir.glob("best-*.safetensors"):
        if kept is None or f.name != kept["file"]:
            f.unlink(missing_ok=True)


def last_sealed(phase_dir: Path) -> Path | None:
    """The newest checkpoint of the phase that was sealed (a crash mid-save leaves an unsealed one)."""
    sealed = [p for p in phase_dir.glob("checkpoint-*") if (p / SEALED).exists()]
    return max(sealed, key=lambda p: int(p.name.rsplit("-", 1)[1])) if sealed else None


def fault_points(phase: str, every: int):
    """A Trainer callback: fault point `train:<phase>:step-<n>` after each optimizer step; a checkpoint due at
    an epoch's last step is written after that epoch's evaluation (so it holds the evaluation's early-stopping
    state and the RNG state after it); no extra full checkpoint at the very end (the phase saves its weights)."""
    from transformers import TrainerCallback

    class FaultPoints(TrainerCallback):
        def __init__(self) -> None:
            self.save_after_epoch = False

        def on_step_end(self, args, state, control, **kwargs):
            faults.checkpoint(f"train:{phase}:step-{state.global_step}")
            if state.global_step >= state.max_steps and every and state.global_step % every:
                control.should_save = False
            elif control.should_save and abs(state.epoch - round(state.epoch)) < 1e-6:
                control.should_save, self.save_after_epoch = False, True
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.save_after_epoch:
                control.should_save, self.save_after_epoch = True, False
            return control

    return FaultPoints()


def best_state(patience: int):
    """A Trainer callback that keeps the best weights by validation balanced accuracy (ties: lower loss) in
    memory and stops after `patience` evaluations without improvement; `dump`/`restore` carry it through a
    checkpoint."""
    from safetensors.torch import load_file, save_file
    from transformers import TrainerCallback

    class BestState(TrainerCallback):
        def __init__(self) -> None:
            self.bad, self.score, self.epoch, self.state, self.step = 0, (-1.0, 0.0), 0.0, None, 0

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            m = metrics or {}
            score = (round(float(m.get("eval_balanced_accuracy", -1.0)), 6), -float(m.get("eval_loss", 0.0)))
            if score > self.score:
                self.score, self.epoch, self.bad = score, float(state.epoch or 0), 0
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                self.step = state.global_step
            else:
                self.bad += 1
                if self.bad >= patience:
                    control.should_training_stop = True
            return control

        def dump(self, folder: Path) -> dict:
            """Write the best weights (once per best) next to the checkpoints; the counters as a dict."""
            name = f"best-{self.step}.safetensors"
            if self.state is not None and not (folder / name).exists():
                save_file({k: v.contiguous() for k, v in self.state.items()}, str(folder / "best.tmp"))
                (folder / "best.tmp").replace(folder / name)
            return {"bad": self.bad, "score": list(self.score), "epoch": self.epoch, "step": self.step,
                    "file": name if self.state is not None else None}

        def restore(self, folder: Path, d: dict) -> None:
            self.bad, self.score, self.epoch, self.step = d["bad"], tuple(d["score"]), d["epoch"], d["step"]
            self.state = load_file(str(folder / d["file"])) if d["file"] else None

    return BestState()
