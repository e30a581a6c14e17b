"""Inference engines side by side (`model.engine`): a fine-tuned intent model scored by torch (the reference), ONNX
Runtime fp32 and ONNX Runtime int8, on BANKING77, in one process with the same texts and threads.

- Speed: texts/s of the length-sorted raw torch loop (the issue's reference), the product's torch path and each
  ONNX engine through the product's `modeling.score`; best of 3 interleaved runs, so a change in machine load
  hits every contender alike. The frozen encoder's engines the same way.
- Accuracy: every engine on the whole test split: accuracy, its difference to torch with a paired 95% interval
  (Agresti-Min, `hitl.evaluation.paired`), and the share of texts whose prediction matches torch's.
- The bar (issue 24): an engine at least 2x the raw loop, accuracy within 0.5 points of torch (interval within
  +/- 1 point), predictions agreeing on at least 99% of texts.

`python -m bench.engine [--quick] [--texts N] [--model DIR]`: without `--model`, fine-tunes MiniLM on 15 rows of
each of the 77 intents for 2 epochs first (minutes); `make bench` passes its policy challenger to `run`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("BANKING77_DIR", Path(__file__).resolve().parents[2] / "shared/data/banking77"))
BATCH, MAX_LENGTH, REPS = 64, 64, 3
BAR = {"speedup": 2.0, "accuracy_points": 0.5, "interval_points": 1.0, "agreement": 0.99}


def _best_rates(fns: dict[str, Callable[[], object]], n: int, reps: int = REPS) -> dict[str, float]:
    """Items per second of each function over `n` items: best of `reps` interleaved runs (one warm-up each)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: n / v for k, v in best.items()}


def raw_sorted_loop(model: Any, texts: list[str]) -> np.ndarray:
    """A plain torch loop: length-sorted batches of 64, the network's forward and softmax, no product code."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), len(model.labels)), dtype=np.float32)
    net = model.network.eval()
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            idx = order[i:i + BATCH]
            enc = model.tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=MAX_LENGTH,
                                  return_tensors="pt")
            out[idx] = torch.softmax(net(**enc).logits, dim=-1).numpy()
    return out


def fine_tuned_model(per_intent: int = 15, epochs: float = 2, log=print) -> Any:
    """MiniLM fine-tuned by the product's recipe on `per_intent` train rows of each BANKING77 intent."""
    from hitl.config import Config, TrainingConfig
    from hitl.learning import modeling, recipe
    from hitl.sim import banking77

    labels = banking77.load_labels(DATA_DIR)
    rows = banking77._read_split(DATA_DIR / "train.csv", labels).groupby("label").sample(n=per_intent,
                                                                                        random_state=0)
    training = TrainingConfig(epochs=epochs, validation_share=0.0)
    model = modeling.load_base(Config(labels=labels, training=training, state_dir=tempfile.gettempdir()))
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        recipe.fine_tune(model, rows["text"].tolist(), rows["label"].tolist(), training, Path(tmp))
    log(f"fine-tuned on {len(rows)} rows in {time.perf_counter() - t:.0f}s")
    return model


def run(model: Any, test_texts: list[str], test_labels: list[str], probe_texts: list[str], speed_n: int = 2000,
        frozen: bool = True, log=print) -> dict:
    """Export `model` (as a registration does, checked on `probe_texts`), then speed on `speed_n` test texts and
    accuracy/agreement on all of them, per engine."""
    import torch

    from hitl.evaluation import paired
    from hitl.learning import modeling, onnx_engine

    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.engine = None
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        meta = onnx_engine.export_network(model, Path(tmp), probe_texts, BATCH, MAX_LENGTH)
        export_s = time.perf_counter() - t
        engines = {"onnx": onnx_engine.load_engine(Path(tmp), "onnx"),
                   "onnx-int8": onnx_engine.load_engine(Path(tmp), "onnx-int8")}
    log(f"exported in {export_s:.0f}s; int8 {'ships' if meta['int8'].get('file') else 'refused'}")

    def scorer(engine) -> Callable[[list[str]], modeling.Scores]:
        def score(texts: list[str]) -> modeling.Scores:
            model.engine = engine
            try:
                return modeling.score(model, texts, BATCH, MAX_LENGTH)
            finally:
                model.engine = None
        return score

    paths = {"torch": scorer(None), **{k: scorer(e) for k, e in engines.items()}}
    speed_texts = test_texts[:speed_n]
    rates = _best_rates({"raw torch loop (length-sorted)": lambda: raw_sorted_loop(model, speed_texts),
                         **{f"product, {k}": (lambda f=f: f(speed_texts)) for k, f in paths.items()}},
                        len(speed_texts))
    log(f"speed on {len(speed_texts)} texts: " + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items()))
    raw = rates["raw torch loop (length-sorted)"]

    y = np.asarray(test_labels)
    engines["onnx-int8"].rechecked = 0  # count the test split's re-checks only
    preds = {k: np.asarray(f(test_texts).prediction) for k, f in paths.items()}
    rechecked = engines["onnx-int8"].rechecked if engines["onnx-int8"].recheck is not None else None
    torch_fail = preds["torch"] != y
    accuracy = []
    for k, p in preds.items():
        diff, lo, hi = paired.paired_difference(torch_fail, p != y)  # engine fail minus torch fail
        row = {"engine": k, "texts_per_s": rates[f"product, {k}"], "vs_raw": rates[f"product, {k}"] / raw,
               "accuracy": float((p == y).mean()), "diff_points": -100 * diff, "diff_low": -100 * hi,
               "diff_high": -100 * lo, "agreement": float((p == preds["torch"]).mean())}
        row["meets_bar"] = bool(row["vs_raw"] >= BAR["speedup"] and abs(row["diff_points"]) <= BAR["accuracy_points"]
                                and row["diff_low"] >= -BAR["interval_points"]
                                and row["diff_high"] <= BAR["interval_points"] and row["agreement"] >= BAR["agreement"])
        accuracy.append(row)
    out = {"rates": rates, "engines": accuracy, "n_test": len(test_texts), "n_speed": len(speed_texts),
           "export_s": export_s, "export": {k: meta[k] for k in ("fp32", "int8")},
           "int8_rechecked_on_test": rechecked, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if frozen:
        out["frozen"] = _frozen(model, speed_texts, log)
    out["wall_s"] = time.perf_counter() - t0
    out["load_avg_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    return out


def _frozen(model: Any, texts: list[str], log=print) -> dict:
    """The frozen encoder (base MiniLM, mean pooling) on each engine: texts/s and cosine to torch's vectors."""
    from hitl.config import Config
    from hitl.learning import modeling
    from hitl.learning.embeddings import FrozenEncoder

    path = modeling.base_model_path(Config(labels=["a", "b"]))
    with tempfile.TemporaryDirectory() as tmp:
        encoders = {k: FrozenEncoder(path, Path(tmp), BATCH, MAX_LENGTH, engine=k) for k in ("torch", "onnx",
                                                                                             "onnx-int8")}
        for enc in encoders.values():
            enc.encode(texts[:8])  # exports once (checked on these texts) and loads
        fresh = {k: (lambda e=e: (e.clear_cache(), e.encode(texts))) for k, e in encoders.items()}
        rates = _best_rates(fresh, len(texts))
        vectors = {k: e.encode(texts) for k, e in encoders.items()}
        served = {k: e.serving_engine for k, e in encoders.items()}
    cos = {k: float((vectors["torch"] * v).sum(1).min()) for k, v in vectors.items()}
    log("frozen encoder: " + ", ".join(f"{k} {v:.0f}/s (served by {served[k]}, min cosine {cos[k]:.4f})"
                                       for k, v in rates.items()))
    return {"rates": rates, "served_by": served, "min_cosine": cos}


def to_markdown(r: dict) -> str:
    rate_rows = [f"| {k} | {v:.0f} | {v / r['rates']['raw torch loop (length-sorted)']:.2f} |"
                 for k, v in r["rates"].items()]
    acc_rows = [f"| {e['engine']} | {100 * e['accuracy']:.2f}% | {e['diff_points']:+.2f} ({e['diff_low']:+.2f} to "
                f"{e['diff_high']:+.2f}) | {100 * e['agreement']:.2f}% | {e['vs_raw']:.2f}x | "
                f"{'yes' if e['meets_bar'] else 'no'} |" for e in r["engines"]]
    q = r["export"]["int8"]
    lines = [f"### Scoring engines ({r['n_speed']} BANKING77 test texts for speed, all {r['n_test']} for accuracy; "
             f"{r['torch_threads']} threads each)", "",
             "| path | texts/s | / raw loop |", "|---|---:|---:|", *rate_rows, "",
             "| engine | accuracy | vs torch, points (95% paired) | agrees with torch | speed / raw loop | meets "
             "the bar |", "|---|---:|---:|---:|---:|---|", *acc_rows, "",
             f"The bar: at least {BAR['speedup']:g}x the raw loop, accuracy within {BAR['accuracy_points']:g} points "
             f"of torch with the interval within +/-{BAR['interval_points']:g}, agreement at least "
             f"{100 * BAR['agreement']:g}%. Export and check took {r['export_s']:.0f}s; at export (on {q['n']} probe "
             f"texts) int8 agreed on {100 * q['agreement']:.2f}% "
             f"({q.get('rechecked', 0)} close calls re-scored in fp32) and "
             f"{'ships' if q.get('file') else 'was refused: ' + q.get('refused', '')}; on the test split "
             f"{r['int8_rechecked_on_test']} of {r['n_test']} texts were re-scored in fp32."]
    if "frozen" in r:
        f = r["frozen"]
        lines += ["", "| frozen encoder | texts/s | served by | min cosine to torch |", "|---|---:|---|---:|",
                  *(f"| {k} | {v:.0f} | {f['served_by'][k]} | {f['min_cosine'][k]:.4f} |"
                    for k, v in f["rates"].items())]
    lines += ["", f"Wall time {r['wall_s']:.0f}s. Load average (1 min) {r['load_avg_1min']['start']:.1f} at start, "
              f"{r['load_avg_1min']['end']:.1f} at end, on {r['cpus']} CPUs."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from hitl.learning import modeling
    from hitl.sim import banking77

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 texts for speed and accuracy, no frozen encoder")
    ap.add_argument("--texts", type=int, default=None, help="test texts for accuracy (default: all)")
    ap.add_argument("--model", type=Path, default=None, help="a saved model folder (modeling.save); default: fine-tune")
    args = ap.parse_args(argv)
    labels = banking77.load_labels(DATA_DIR)
    test = banking77._read_split(DATA_DIR / "test.csv", labels).sample(frac=1, random_state=0)
    n = 300 if args.quick else args.texts
    test = test.iloc[:n] if n else test
    train = banking77._read_split(DATA_DIR / "train.csv", labels)
    model = modeling.load(args.model) if args.model else fine_tuned_model()
    result = run(model, test["text"].tolist(), test["label"].tolist(), train["text"].tolist(),
                 speed_n=min(len(test), 300 if args.quick else 2000), frozen=not args.quick)
    print(to_markdown(result))


if __name__ == "__main__":
    main()
