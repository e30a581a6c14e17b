"""Speed benchmark: the product scoring and training paths against plain torch and a default `pipeline()`,
all in one process, on the same real BANKING77 texts with the packaged MiniLM encoder.

`python -m bench.speed [--quick]` prints a markdown report; `run()` returns the figures as a dict. torch uses
every core by default; `OMP_NUM_THREADS=N` pins its thread count (the fresh scoring process inherits it).
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("BANKING77_DIR", Path(__file__).resolve().parents[2] / "shared/data/banking77"))
BATCH, MAX_LENGTH, TRAIN_BATCH, WARMUP = 64, 64, 16, 8
SIZES = {True: {"score": 300, "pipeline": 100, "train": 160}, False: {"score": 2000, "pipeline": 500, "train": 640}}

# ru_maxrss of a child started from this process reports the parent's high-water mark (kept across
# vfork + exec), so the child reads its own VmHWM instead.
_CHILD = """
import re, sys, time
from pathlib import Path
from bench.speed import _activate, _config, _data
from hitl.learning import modeling
texts = _data().test["text"].tolist()[:int(sys.argv[1])]
model = modeling.load_base(_config())
_activate(model)
modeling.score(model, texts[:8])
t = time.perf_counter()
modeling.score(model, texts)
rate = len(texts) / (time.perf_counter() - t)
print(rate, int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024)
"""


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _quiet() -> None:
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _data():
    from hitl.sim.banking77 import Banking77Scenario, build

    return build(Banking77Scenario(DATA_DIR))


def _config():
    from hitl.config import Config
    from hitl.sim.banking77 import load_labels

    return Config(labels=load_labels(DATA_DIR))


def _activate(model: Any) -> None:
    """Activate every head row from random vectors: only speed matters here."""
    import torch

    gen = torch.Generator().manual_seed(0)
    hidden = model.network.weight.shape[1]
    model.network.set_prototypes({i: torch.randn(hidden, generator=gen) for i in range(len(model.labels))})


def _rates(fns: list[Callable[[], object]], n: int, reps: int) -> list[float]:
    """Items per second of each of `fns` over `n` items: best of `reps` runs, interleaved so that a change
    in machine load hits every contender alike."""
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return [n / b for b in best]


# ---- scoring ----
def _raw_embed(encoder: Any, tokenizer: Any, texts: list[str]) -> Any:
    """Plain batched loop: tokenize in input order (no length sorting), encode, mean-pool."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="pt")
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
    return torch.cat(out).numpy()


def _scoring(cfg: Any, texts: list[str], pipe_texts: list[str], rss: dict[str, float]) -> dict[str, float]:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from hitl.learning import modeling

    model = modeling.load_base(cfg)
    _activate(model)
    modeling.score(model, texts[:WARMUP])
    rss["after_product_load"] = _peak_rss_mib()
    path = modeling.base_model_path(cfg)
    encoder, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    _raw_embed(encoder, tokenizer, texts[:WARMUP])
    product, raw = _rates([lambda: modeling.score(model, texts), lambda: _raw_embed(encoder, tokenizer, texts)],
                          len(texts), 2)
    rss["after_product_and_raw_scoring"] = _peak_rss_mib()

    clf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(cfg.labels))
    pipe = pipeline("text-classification", model=clf, tokenizer=tokenizer)
    pipe(pipe_texts[:WARMUP])
    (default,) = _rates([lambda: pipe(pipe_texts)], len(pipe_texts), 1)
    rss["after_pipeline_scoring"] = _peak_rss_mib()
    return {"product": product, "raw_torch": raw, "pipeline_default": default, "texts": len(texts),
            "pipeline_texts": len(pipe_texts), "ratio_product_vs_raw": product / raw,
            "ratio_product_vs_pipeline": product / default}


# ---- training ----
def _raw_train(model: Any, texts: list[str], labels: list[str], fused: bool) -> float:
    """One epoch of a plain loop (shuffled, batch 16, dynamic padding, cross-entropy); samples/s."""
    import torch

    net, index = model.network, {lab: i for i, lab in enumerate(model.labels)}
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5, fused=fused)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    net.train()
    t = time.perf_counter()
    for i in range(0, len(order), TRAIN_BATCH):
        idx = order[i:i + TRAIN_BATCH]
        enc = model.tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=MAX_LENGTH,
                              return_tensors="pt")
        loss = net(**enc, labels=torch.tensor([index[labels[j]] for j in idx])).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    rate = len(order) / (time.perf_counter() - t)
    net.eval()
    return rate


def _training(cfg: Any, texts: list[str], labels: list[str], rss: dict[str, float]) -> dict[str, float]:
    from hitl.config import TrainingConfig
    from hitl.learning import modeling
    from hitl.learning.recipe import fine_tune

    raw_model = modeling.load_base(cfg)
    _activate(raw_model)
    _raw_train(raw_model, texts[:TRAIN_BATCH], labels[:TRAIN_BATCH], fused=True)  # warm-up step, untimed

    plain = _raw_train(raw_model, texts, labels, fused=False)  # before and after the product: load drift spreads
    rss["after_raw_adamw_training"] = _peak_rss_mib()
    model = modeling.load_base(cfg)
    training = TrainingConfig(epochs=1, batch_size=TRAIN_BATCH, validation_share=0.0, seed=cfg.training.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        metrics = fine_tune(model, texts, labels, training, Path(tmp), max_length=MAX_LENGTH)
        wall = time.perf_counter() - t
    product = metrics["train_samples_per_second"]
    rss["after_product_training"] = _peak_rss_mib()

    fused = _raw_train(raw_model, texts, labels, fused=True)
    rss["after_raw_fused_training"] = _peak_rss_mib()
    return {"product": product, "product_wall": len(texts) / wall, "raw_torch_adamw": plain,
            "raw_torch_adamw_fused": fused, "rows": len(texts), "epochs": 1,
            "ratio_product_vs_raw": product / plain, "ratio_product_vs_raw_fused": product / fused}


def _fresh_scoring(n: int) -> dict[str, float] | None:
    """Scoring throughput and peak RSS of a scoring run in a fresh interpreter (None if it fails)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(n)], capture_output=True, text=True, cwd=root,
                              env=env, timeout=600, check=True)
        rate, rss = map(float, proc.stdout.split()[-2:])
    except (subprocess.SubprocessError, ValueError):
        return None
    return {"texts_per_s": rate, "peak_rss_mib": rss}


def run(quick: bool = False) -> dict:
    """Measure scoring (texts/s), training (samples/s) and peak RSS (MiB); quick mode uses fewer texts."""
    import torch

    _quiet()
    sizes, load_start = SIZES[quick], os.getloadavg()[0]
    t0 = time.perf_counter()
    data = _data()
    cfg = _config()
    texts = data.test["text"].tolist()[:sizes["score"]]
    rss, phase_s = {"start": _peak_rss_mib()}, {"data": time.perf_counter() - t0}
    t = time.perf_counter()
    scoring = _scoring(cfg, texts, texts[:sizes["pipeline"]], rss)
    phase_s["scoring"], t = time.perf_counter() - t, time.perf_counter()
    rows = data.launch.head(sizes["train"])
    training = _training(cfg, rows["text"].tolist(), rows["label"].tolist(), rss)
    phase_s["training"], t = time.perf_counter() - t, time.perf_counter()
    fresh = _fresh_scoring(len(texts))
    phase_s["fresh_process"] = time.perf_counter() - t
    if fresh:
        rss["fresh_process_scoring"] = fresh["peak_rss_mib"]
        scoring["product_fresh_process"] = fresh["texts_per_s"]
    return {"scoring": scoring, "training": training, "peak_rss_mib": rss, "torch_threads": torch.get_num_threads(),
            "quick": quick, "phase_s": phase_s, "wall_s": time.perf_counter() - t0, "cpus": os.cpu_count(),
            "load_avg_1min": {"start": load_start, "end": os.getloadavg()[0]}}


def to_markdown(result: dict) -> str:
    """Scoring and training tables (with ratios to the product path) and the peak RSS figures."""
    s, t = result["scoring"], result["training"]
    lines = [
        f"### Scoring ({s['texts']} BANKING77 test texts; pipeline on {s['pipeline_texts']}; "
        f"torch threads {result['torch_threads']})", "",
        "| path | texts/s | product / path |", "|---|---:|---:|",
        f"| product `modeling.score` | {s['product']:.1f} | 1.00 |",
        f"| raw torch loop (batch {BATCH}, unsorted) | {s['raw_torch']:.1f} | {s['ratio_product_vs_raw']:.2f} |",
        f"| `pipeline()` defaults (batch 1) | {s['pipeline_default']:.1f} | {s['ratio_product_vs_pipeline']:.2f} |",
    ]
    if "product_fresh_process" in s:
        lines.append(f"| product, fresh process | {s['product_fresh_process']:.1f} | "
                     f"{s['product'] / s['product_fresh_process']:.2f} |")
    lines += [
        "", f"### Training ({t['rows']} BANKING77 rows, {t['epochs']} epoch, batch {TRAIN_BATCH})", "",
        "| path | samples/s | product / path |", "|---|---:|---:|",
        f"| product `recipe.fine_tune` (Trainer, fused AdamW) | {t['product']:.1f} | 1.00 |",
        f"| product, wall time of `fine_tune` | {t['product_wall']:.1f} | {t['product'] / t['product_wall']:.2f} |",
        f"| raw torch loop, AdamW | {t['raw_torch_adamw']:.1f} | {t['ratio_product_vs_raw']:.2f} |",
        f"| raw torch loop, AdamW fused | {t['raw_torch_adamw_fused']:.1f} | {t['ratio_product_vs_raw_fused']:.2f} |",
        "", "### Peak RSS (MiB: the process's running maximum after each phase; a fresh scoring process)", "",
        "| phase | MiB |", "|---|---:|",
        *(f"| {k.replace('_', ' ')} | {v:.0f} |" for k, v in result["peak_rss_mib"].items()),
        "", f"Wall time: {result['wall_s']:.0f} s ({'quick' if result['quick'] else 'full'} mode; "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in result["phase_s"].items()) + "). "
        f"Load average (1 min) {result['load_avg_1min']['start']:.1f} at start, {result['load_avg_1min']['end']:.1f} "
        f"at end, on {result['cpus']} CPUs: above the CPU count, other jobs share the cores and every figure drops.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run(quick="--quick" in sys.argv)))
