"""The real recipe at the final budget: the bootstrap champion on the launch rows, then a challenger fine-tuned
from it on exactly the rows a strategy labelled (plus the launch replay), each beside the pinned anchor
(frozen MiniLM + logistic regression, C by cross-validation) trained on the same rows, on BANKING77's fixed
test set. Differences are paired on the test items (Agresti-Min interval)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.learning_curves import Seeded
from hitl.config import Config, TrainingConfig
from hitl.evaluation import paired
from hitl.learning import anchor, modeling, recipe


def accuracy_rows(name: str, rows: int, pred: np.ndarray, anchor_pred: np.ndarray, test: pd.DataFrame,
                  seconds: float) -> list[dict]:
    """Accuracy of a model and of the anchor on the same rows, by intent group, with the paired difference."""
    y = test["label"].to_numpy()
    out = []
    for group, mask in (("launch", test["group"].to_numpy() == "launch"), ("new", test["group"].to_numpy() == "new"),
                        ("all", np.ones(len(test), bool))):
        model_fail, anchor_fail = pred[mask] != y[mask], anchor_pred[mask] != y[mask]
        # paired_difference(a, b) is b's fail rate minus a's: anchor fail minus model fail = model minus anchor
        diff, lo, hi = paired.paired_difference(model_fail, anchor_fail)
        out.append({"model": name, "train_rows": rows, "intents": group, "n_test": int(mask.sum()),
                    "model_acc": float(1 - model_fail.mean()), "anchor_acc": float(1 - anchor_fail.mean()),
                    "diff": diff, "diff_low": lo, "diff_high": hi, "seconds": round(seconds)})
    return out


def run(s: Seeded, picks: dict[str, np.ndarray], training: TrainingConfig, log=print
        ) -> tuple[pd.DataFrame, dict[str, modeling.IntentModel]]:
    """Champion, then one challenger per strategy in `picks` (traffic positions labelled by the strategy), each
    trained from where `training.start` says (the champion, or the base model afresh)."""
    data = s.data
    cfg = Config(labels=data.labels, cohorts=["channel"], selection={"strata": ["channel"]},
                 state_dir="/tmp/hitl-bench-unused", training=training)
    test_texts = data.test["text"].tolist()
    rows, models = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        champion = modeling.load_base(cfg)
        recipe.fine_tune(champion, data.launch["text"].tolist(), data.launch["label"].tolist(), training,
                         Path(tmp) / "trainer")
        seconds = time.monotonic() - t0
        launch_anchor = anchor.fit(s.launch, data.launch["label"].to_numpy())
        rows += accuracy_rows("bootstrap champion", len(data.launch), np.asarray(modeling.score(
            champion, test_texts).prediction), launch_anchor.predict(s.test), data.test, seconds)
        log(f"bootstrap champion trained in {seconds:.0f}s")
        saved = modeling.save(champion, Path(tmp) / "champion")
        models["champion"] = champion
        for strategy, pos in picks.items():
            t0 = time.monotonic()
            texts = [*data.launch["text"], *data.traffic["input"].to_numpy()[pos]]
            labels = [*data.launch["label"], *data.traffic["label"].to_numpy()[pos]]
            model = modeling.align_labels(modeling.starting_point(cfg, modeling.load(saved)), data.labels)
            recipe.fine_tune(model, texts, labels, training, Path(tmp) / "trainer")
            seconds = time.monotonic() - t0
            same_rows = anchor.fit(np.vstack([s.launch, s.traffic[pos]]), np.asarray(labels))
            rows += accuracy_rows(f"challenger ({strategy} picks)", len(texts),
                                  np.asarray(modeling.score(model, test_texts).prediction), same_rows.predict(s.test),
                                  data.test, seconds)
            models[strategy] = model
            log(f"challenger on {strategy} picks trained in {seconds:.0f}s")
    return pd.DataFrame(rows), models


def anchor_sanity(encode, data_dir: Path, per_intent: int = 8, seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """The anchor on BANKING77 at `per_intent` examples of all 77 intents (MTEB's protocol: 8 per label), scored
    on the full test set: mean accuracy over seeds, with C by cross-validation (the pinned anchor) and with
    scikit-learn's defaults (what MTEB runs, max_iter=100)."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from hitl.sim import banking77

    labels = banking77.load_labels(data_dir)
    train = banking77._read_split(data_dir / "train.csv", labels)
    test = banking77._read_split(data_dir / "test.csv", labels)
    x_test, y_test = encode(test["text"].tolist()), test["label"].to_numpy()
    cv, default = [], []
    for seed in seeds:
        rows = train.groupby("label").sample(n=per_intent, random_state=seed)
        x = encode(rows["text"].tolist())
        cv.append(float((anchor.fit(x, rows["label"].to_numpy(), seed=seed).predict(x_test) == y_test).mean()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr = LogisticRegression(max_iter=100).fit(x, rows["label"].to_numpy())
        default.append(float((lr.predict(x_test) == y_test).mean()))
    return {"per_intent": per_intent, "seeds": len(seeds), "anchor_cv": float(np.mean(cv)),
            "sklearn_default": float(np.mean(default))}
