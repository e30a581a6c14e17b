"""Fine-tuning resume on MiniLM: the recipe killed (kill -9, `HITL_FAULT=train:<phase>:step-<n>`) in each of its
two phases and resumed from its last sealed checkpoint ends as the uninterrupted run does. tests/ops/test_faults.py
checks the same on a tiny encoder; this is the packaged MiniLM (all-MiniLM-L6-v2) on BANKING77 rows.

For each kill point: the uninterrupted run's metrics and probabilities on held-out texts, then a fresh process
that fine-tunes the same rows with the fault armed (killed), then the resume in this process; reported: the step
it resumed from, what the checkpoints cost, the largest metric and probability differences and the share of
held-out predictions that agree.

`python -m bench.resume [--quick]` runs this section alone and writes section 8 of docs/benchmarks.md (and
docs/bench/resume.json); `make bench` runs it as section 8.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hitl.config import Config, TrainingConfig
from hitl.learning import checkpoints, modeling, recipe

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BANKING77_DIR", REPO.parent / "shared" / "data" / "banking77"))
SECTION = 8
TITLE = f"## {SECTION}. Fine-tuning resume on MiniLM"
TRAIN = """
    import json, sys
    from pathlib import Path
    from hitl.config import Config
    from hitl.learning import modeling, recipe
    cfg = Config.model_validate_json(Path(sys.argv[1]).read_text())
    texts, labels = json.loads(Path(sys.argv[2]).read_text())
    recipe.fine_tune(modeling.load_base(cfg), texts, labels, cfg.training, Path(sys.argv[3]))
"""


def rows(data_dir: Path, intents: int, per_intent: int, probe: int, seed: int = 0
         ) -> tuple[list[str], list[str], list[str]]:
    """Training texts and labels (`per_intent` rows of the first `intents` intents of BANKING77's train split)
    and `probe` held-out test texts of the same intents."""
    train, test = (pd.read_csv(data_dir / f"{split}.csv") for split in ("train", "test"))
    keep = sorted(train["category"].unique())[:intents]
    picked = train[train["category"].isin(keep)].groupby("category").sample(n=per_intent, random_state=seed)
    held = test[test["category"].isin(keep)].sample(n=probe, random_state=seed)
    return picked["text"].tolist(), picked["category"].tolist(), held["text"].tolist()


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def run(quick: bool = False, data_dir: Path = DATA_DIR, log=print) -> dict:
    """The uninterrupted run, then each kill point killed and resumed; returns the figures (see the docstring)."""
    texts, labels, probe = rows(data_dir, intents=6 if quick else 10, per_intent=10 if quick else 12,
                                probe=60 if quick else 200)
    training = TrainingConfig(epochs=3 if quick else 4, batch_size=16, validation_share=0.15,
                              validation_min_per_class=3, early_stopping_patience=2, checkpoint_steps=4)
    out: dict = {"train_rows": len(texts), "intents": len(set(labels)), "probe_texts": len(probe),
                 "checkpoint_steps": training.checkpoint_steps, "cases": []}
    with tempfile.TemporaryDirectory(prefix="hitl-bench-resume-") as tmp:
        work = Path(tmp)
        cfg = Config(labels=sorted(set(labels)), state_dir=str(work / "state"), training=training)
        t0 = time.monotonic()
        model = modeling.load_base(cfg)
        expected = recipe.fine_tune(model, texts, labels, training, work / "whole")
        probs = np.asarray(modeling.score(model, probe).probs)
        out["uninterrupted_s"] = time.monotonic() - t0
        log(f"uninterrupted: {out['uninterrupted_s']:.0f} s, {expected}")
        (work / "cfg.json").write_text(cfg.model_dump_json())
        (work / "data.json").write_text(json.dumps([texts, labels]))
        out["steps"], faults = _faults(expected, len(texts), training)
        for fault in faults:
            out["cases"].append(_case(fault, expected, probs, cfg, texts, labels, probe, work, log))
    return out


def _faults(expected: dict, n: int, training: TrainingConfig) -> tuple[dict[str, int], list[str]]:
    """Steps of each phase, and a kill point mid early-stopping phase and one at the refit's last step but one,
    each past the phase's first sealed checkpoint."""
    select_rows = n - int(expected["validation_rows"])
    steps = {"select": round(expected["epoch"] * -(-select_rows // training.batch_size)),
             "refit": round(expected["refit_epoch"] * -(-n // training.batch_size))}
    first = training.checkpoint_steps + 1
    return steps, [f"train:select:step-{max(first, steps['select'] // 2 + 1)}",
                   f"train:refit:step-{max(first, steps['refit'] - 1)}"]


def _case(fault: str, expected: dict, probs: np.ndarray, cfg: Config, texts: list[str], labels: list[str],
          probe: list[str], work: Path, log) -> dict:
    out_dir = work / fault.replace(":", "-")
    env = {**os.environ, "HITL_FAULT": fault}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(TRAIN), str(work / "cfg.json"), str(work / "data.json"),
                        str(out_dir)], capture_output=True, text=True, cwd=REPO, env=env, timeout=3600)
    killed_s = time.monotonic() - t0
    if p.returncode != -signal.SIGKILL:
        raise RuntimeError(f"{fault}: expected kill -9, got exit {p.returncode}: {p.stderr[-2000:]}")
    run_dir = next(out_dir.glob("run-*"))
    phase = fault.split(":")[1]
    sealed = sorted(c for c in (run_dir / phase).glob("checkpoint-*") if (c / checkpoints.SEALED).exists())
    size = _size_mb(sealed[-1]) if sealed else 0.0
    select_done = (run_dir / "select" / recipe.DONE).exists()  # before the resume, which removes the run folder
    t0 = time.monotonic()
    model = modeling.load_base(cfg)
    metrics = recipe.fine_tune(model, texts, labels, cfg.training, out_dir)
    resumed_s = time.monotonic() - t0
    again = np.asarray(modeling.score(model, probe).probs)
    quality = [k for k in expected if "runtime" not in k and "per_second" not in k and k in metrics]
    diffs = {k: abs(float(metrics[k]) - float(expected[k])) for k in quality}
    worst = max(diffs, key=diffs.get)
    case = {"fault": fault, "resumed_from": metrics.get("resumed_from_step" if phase == "select"
                                                        else "refit_resumed_from_step"),
            "sealed_checkpoints": len(sealed), "checkpoint_mb": size, "killed_run_s": killed_s,
            "resumed_s": resumed_s, "max_metric_diff": diffs[worst], "worst_metric": worst,
            "max_prob_diff": float(np.abs(again - probs).max()),
            "agreement": float((again.argmax(1) == probs.argmax(1)).mean()),
            "finished_phase_retrained": phase == "refit" and not select_done}
    log(f"{fault}: {case}")
    return case


def to_markdown(r: dict) -> str:
    """Section 8 of docs/benchmarks.md."""
    when, steps = time.strftime("%Y-%m-%d"), r["steps"]
    lines = [TITLE, "",
             f"`python -m bench.resume` ({when}): MiniLM fine-tuned by the recipe on {r['train_rows']} "
             f"BANKING77 rows ({r['intents']} intents), a checkpoint every {r['checkpoint_steps']} steps; killed with "
             f"kill -9 at each point in a fresh process, then resumed. Differences are against the uninterrupted run "
             f"({r['uninterrupted_s']:.0f} s: {steps['select']} steps of early stopping, then {steps['refit']} "
             f"of refit); probabilities on {r['probe_texts']} held-out test texts.", "",
             "| kill point | resumed from step | checkpoint MB | killed run s | resume s | largest metric diff "
             "| largest probability diff | predictions agreeing |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for c in r["cases"]:
        lines.append(f"| `{c['fault']}` | {c['resumed_from']:.0f} | {c['checkpoint_mb']:.0f} | {c['killed_run_s']:.0f} "
                     f"| {c['resumed_s']:.0f} | {c['max_metric_diff']:.1e} ({c['worst_metric']}) "
                     f"| {c['max_prob_diff']:.1e} | {c['agreement']:.1%} |")
    return "\n".join(lines) + "\n"


def write(r: dict, md: Path) -> None:
    """Section 8 of `md` replaced (or appended), and docs/bench/resume.json."""
    from bench import report

    (REPO / "docs" / "bench").mkdir(parents=True, exist_ok=True)
    (REPO / "docs" / "bench" / "resume.json").write_text(json.dumps(r, indent=2))
    if md.exists() and TITLE in md.read_text():
        report.replace_section(md, SECTION, to_markdown(r))
    else:
        md.write_text((md.read_text().rstrip("\n") + "\n\n" if md.exists() else "") + to_markdown(r))


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = run(quick=quick)
    write(result, REPO / "docs" / ("benchmarks-quick.md" if quick else "benchmarks.md"))
    bad = [c["fault"] for c in result["cases"] if c["max_prob_diff"] > 1e-5 or c["finished_phase_retrained"]]
    print(f"resume: {len(result['cases']) - len(bad)} of {len(result['cases'])} kill points end as the "
          f"uninterrupted run" + (f"; not: {bad}" if bad else ""))
    sys.exit(1 if bad else 0)
