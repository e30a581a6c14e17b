"""`make bench` (python -m bench [--quick | --estimates]): the proof, side by side, in one run, written to
docs/benchmarks.md. `--estimates` re-runs section 3 alone (seed 0's policy picks, champion and challenger
fine-tuned again) and rewrites that section of docs/benchmarks.md in place, saying when.

1. Learning curves on the BANKING77 drift scenario, several seeds: uniform random, class-stratified random,
   margin, the project's policy and its ablations (bench/learning_curves.py).
2. The real recipe at the final budget for the policy's and random's picks, beside the pinned anchor on the
   same rows; the bootstrap champion beside the anchor on the launch rows (bench/finetune.py).
3. The report's production estimate against an independent sample of the same traffic, on BANKING77 and on
   the synthetic world (bench/estimate_check.py).
4. Speed: scoring and training throughput against raw torch loops and a default pipeline() (bench/speed.py).
5. Scale-out: partitioned scoring on threads and on a local Dask cluster (bench/scaleout.py).
6. Inference engines: the policy challenger on torch, ONNX Runtime fp32 and int8: speed against the length-sorted
   raw torch loop, accuracy and agreement on the test split (bench/engine.py).
7. The MLflow trace source window by window: 25,000 traces over 5 days, capped and late traces, what each run
   reads (bench/mlflow_windows.py). `--mlflow-windows` re-runs section 7 alone and rewrites it in place.
8. Fine-tuning resume on MiniLM: the recipe killed in each phase and resumed ends as the uninterrupted run
   (bench/resume.py; `python -m bench.resume` runs it alone).
9. The review form in the browser: a scripted reviewer labels a 50-item BANKING77 batch in the Prefect UI's form
   with and without suggestions (bench/review_form.py). Only `--review-form` runs it (it writes
   docs/bench/review-form.json and rewrites section 9 in place); a full run keeps the section it finds.
10. Quarter after quarter: three retrain cycles on BANKING77 with drift that keeps arriving, policy and random picks
   on the real recipe, 3 seeds, then the same on the synthetic world, then the report's estimate over the regression
   set as it grows (bench/quarters.py). Only `make bench-quarters` runs it (about 42 fine-tunes, 85 min); a full
   run keeps the section it finds.
11. Out-of-scope: held-out BANKING77 intents as unknown traffic, the product's model against the anchor at one fixed
   false-abstention rate (bench/out_of_scope.py). Only `make bench-oos` (`python -m bench.out_of_scope`) runs it;
   a full run keeps the section it finds.
12. Sampling at scale: the sampling flow's stages on 20,000, 100,000 and 200,000 traces, each in a fresh process,
   against the path before partitioned sampling on the same traces, then the label-efficiency check of the
   large-window shortcut (bench/sampling_scale.py; about 20 min).
   `--sampling-scale` re-runs section 12 alone and rewrites it in place.
`--policy-sections` re-runs sections 1, 2 and 3, what depends on the selection policy's picks, and rewrites them in
place (`policy_sections`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MLFLOW_WINDOWS = "## 7. MLflow trace source, window by window"
DATA = REPO.parent / "shared" / "data" / "banking77"


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quick = "--quick" in argv
    only_estimates = "--estimates" in argv
    out_md = REPO / "docs" / ("benchmarks-quick.md" if quick else "benchmarks.md")
    art = REPO / "docs" / "bench"
    art.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if "--review-form" in argv:
        return review_form_section()
    if "--sampling-scale" in argv:
        from bench import report, sampling_scale

        result = sampling_scale.run(quick=quick, log=_log)
        (art / f"sampling-scale{'-quick' if quick else ''}.json").write_text(json.dumps(result, indent=2, default=str))
        report.replace_section(out_md, sampling_scale.SECTION, sampling_scale.section(result))
        _log(f"done in {(time.monotonic() - started) / 60:.1f} min: section 12 of {out_md.relative_to(REPO)}")
        return 0
    if "--policy-sections" in argv:
        return policy_sections(out_md, art)
    if "--mlflow-windows" in argv:
        from bench import mlflow_windows, report

        result = mlflow_windows.run(log=_log)
        (art / "mlflow-windows.json").write_text(json.dumps(result, indent=2, default=str))
        report.replace_section(out_md, 7, f"{MLFLOW_WINDOWS}\n\n{mlflow_windows.to_markdown(result)}")
        _log(f"done in {(time.monotonic() - started) / 60:.1f} min: section 7 of {out_md.relative_to(REPO)}")
        return 0

    from bench import (
        engine,
        finetune,
        learning_curves,
        mlflow_windows,
        out_of_scope,
        quarters,
        report,
        resume,
        review_form,
        sampling_scale,
        scaleout,
        speed,
    )
    from hitl.config import TrainingConfig

    encoder = learning_curves.frozen_encoder()

    setup = learning_curves.Setup(seeds=[0, 1], rounds=4, per_round=30, n_new_intents=10, launch_per_intent=10,
                                  strategies=["random", "margin", "policy"], traffic_cap=600) if quick else \
        learning_curves.Setup(seeds=[0], strategies=["policy"]) if only_estimates else \
        learning_curves.Setup(seeds=[0, 1, 2, 3, 4])
    _log(f"learning curves: {len(setup.seeds)} seeds x {len(setup.strategies)} strategies x {setup.rounds} rounds "
         f"of {setup.per_round} labels")
    curves, seeded, picks = learning_curves.run(setup, encoder.encode, DATA, log=_log)
    encoder.save()

    # quick: one pass, no early stopping (a smoke run of the whole bench, not evidence)
    training = TrainingConfig(epochs=1, validation_share=0.0) if quick else TrainingConfig()
    ft_seed = setup.seeds[0]
    _log(f"real fine-tunes on seed {ft_seed}: champion, challengers on the policy's and random's picks")
    ft_table, models = finetune.run(seeded[ft_seed], {k: picks[(ft_seed, k)] for k in setup.strategies
                                                      if k in ("policy", "random")}, training, log=_log)

    s = seeded[ft_seed]
    check_table = estimate_checks(s, picks[(ft_seed, "policy")], models, training, ft_seed, quick)
    if only_estimates:
        elapsed = time.monotonic() - started
        (art / "estimate-check.json").write_text(json.dumps({"estimate_check": check_table.to_dict("records"),
                                                             "seconds": elapsed}, indent=2, default=str))
        report.replace_section(out_md, 3, report.estimate_section(check_table, rerun=time.strftime("%Y-%m-%d"),
                                                                  seconds=elapsed))
        _log(f"done in {elapsed / 60:.1f} min: section 3 of {out_md.relative_to(REPO)}")
        return 0

    sanity = finetune.anchor_sanity(encoder.encode, DATA, seeds=(0,) if quick else (0, 1, 2))
    encoder.save()
    _log(f"anchor sanity (8 per intent, all 77): {sanity}")

    _log("speed")
    speed_result = speed.run(quick=quick)
    _log("scale-out: task runners")
    scale = scaleout.run(quick=quick)
    _log("inference engines: torch, ONNX Runtime fp32 and int8")
    test = s.data.test.sample(n=min(300, len(s.data.test)), random_state=0) if quick else s.data.test
    engines = engine.run(models["policy"], test["text"].tolist(), test["label"].tolist(),
                         s.data.launch["text"].tolist(), speed_n=300 if quick else 2000, frozen=not quick, log=_log)
    _log("MLflow trace source, window by window")
    windowed = mlflow_windows.run(per_window=100 if quick else 5000, max_traces=80 if quick else 4000, log=_log)
    _log("fine-tuning resume on MiniLM")
    resumed = resume.run(quick=quick, log=_log)
    _log("sampling at scale: partitioned against the path before")
    scaled = sampling_scale.run(quick=quick, log=_log)

    elapsed = time.monotonic() - started
    curves.to_csv(art / f"curves{'-quick' if quick else ''}.csv", index=False)
    (art / f"results{'-quick' if quick else ''}.json").write_text(json.dumps({
        "finetune": ft_table.to_dict("records"), "estimate_check": check_table.to_dict("records"),
        "anchor_sanity": sanity,
        "speed": speed_result, "scaleout": scale, "engines": engines, "mlflow_windows": windowed, "resume": resumed,
        "sampling_scale": scaled,
        "seconds": elapsed}, indent=2, default=str))
    # measured by --review-form, `make bench-quarters` and `make bench-oos` alone
    kept = "\n".join(t for t in (report.section_text(out_md, review_form.SECTION),
                                 report.section_text(out_md, quarters.SECTION),
                                 report.section_text(out_md, out_of_scope.SECTION)) if t)
    out_md.write_text(report.markdown_doc(setup, curves, ft_table, check_table, sanity, speed_result, elapsed, quick,
                                      art) + "\n## 5. Scale-out: task runners\n\n" + scaleout.to_markdown(scale)
                      + "\n\n## 6. Inference engines\n\n" + engine.to_markdown(engines)
                      + f"\n\n{MLFLOW_WINDOWS}\n\n" + mlflow_windows.to_markdown(windowed) + "\n\n"
                      + resume.to_markdown(resumed) + (f"\n\n{kept}" if kept else "")
                      + "\n\n" + sampling_scale.section(scaled))
    _log(f"done in {elapsed / 60:.1f} min: {out_md.relative_to(REPO)}")
    return 0


def estimate_checks(s, policy_picks: np.ndarray, models: dict, training, seed: int, quick: bool) -> pd.DataFrame:
    """Section 3: the report's estimates against an independent sample, on BANKING77 traffic the policy did not
    pick (champion and policy challenger) and on the synthetic world."""
    from bench import estimate_check, learning_curves, world_check
    from hitl.learning import modeling

    _log("estimate check: BANKING77 traffic, then the synthetic world")
    unseen = s.data.traffic.drop(index=s.data.traffic.index[policy_picks]).reset_index(drop=True)
    if quick:
        unseen = unseen.sample(n=min(3000, len(unseen)), random_state=0).sort_values("timestamp").reset_index(drop=True)
    champ = np.asarray(modeling.score(models["champion"], unseen["input"].tolist()).prediction)
    chall = np.asarray(modeling.score(models["policy"], unseen["input"].tolist()).prediction)
    b77 = estimate_check.run(unseen, champ, chall, learning_curves.bench_config(s.data.labels),
                             n_random=150 if quick else 400, n_independent=800 if quick else 2000, noise=0.05,
                             seed=seed)
    return pd.concat([b77.assign(scenario="BANKING77"),
                      world_check.run(training, quick, log=_log).assign(scenario="synthetic world")],
                     ignore_index=True)


def policy_sections(out_md: Path, art: Path) -> int:
    """`--policy-sections`: re-run what depends on the selection policy's picks and the recipe, for a change of
    either's defaults:
    sections 1 (learning curves), 2 (the real recipe on the picks) and 3 (the estimate checks), rewritten in place,
    each saying so; the speed figures (section 4) and the anchor sanity check are read from docs/bench/results.json,
    the other sections kept. Section 6 measures speed, which the picks do not change (its accuracies are of a model
    of its own protocol), and section 12's label-efficiency check is `--sampling-scale`'s."""
    import tempfile

    from bench import finetune, learning_curves, report
    from hitl.config import TrainingConfig

    started = time.monotonic()
    stored = json.loads((art / "results.json").read_text())
    encoder = learning_curves.frozen_encoder()
    setup = learning_curves.Setup(seeds=[0, 1, 2, 3, 4])
    curves, seeded, picks = learning_curves.run(setup, encoder.encode, DATA, log=_log)
    encoder.save()
    training, s = TrainingConfig(), seeded[setup.seeds[0]]
    _log("real fine-tunes on seed 0: champion, challengers on the policy's and random's picks")
    ft_table, models = finetune.run(s, {k: picks[(0, k)] for k in ("policy", "random")}, training, log=_log)
    checks = estimate_checks(s, picks[(0, "policy")], models, training, 0, False)
    minutes = (time.monotonic() - started) / 60
    note = (f"Re-run on {time.strftime('%Y-%m-%d')} with sections 1, 2 and 3 (`python -m bench "
            f"--policy-sections`, {minutes:.0f} min), what depends on the selection policy's and the recipe's "
            "defaults; the other sections are from the runs they name.")
    doc = report.markdown_doc(setup, curves, ft_table, checks, stored["anchor_sanity"], stored["speed"],
                              minutes * 60, False, art)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh.md"
        fresh.write_text(doc)
        for number in (1, 2, 3):
            heading, _, body = report.section_text(fresh, number).partition("\n")
            report.replace_section(out_md, number, f"{heading}\n\n{note}\n{body}")
    curves.to_csv(art / "curves.csv", index=False)
    (art / "results.json").write_text(json.dumps({
        **stored, "finetune": ft_table.to_dict("records"), "estimate_check": checks.to_dict("records"),
        "policy_sections": {"measured": time.strftime("%Y-%m-%d"), "minutes": minutes}},
        indent=2, default=str))
    _log(f"done in {minutes:.1f} min: sections 1, 2 and 3 of {out_md.relative_to(REPO)}")
    return 0


def review_form_section() -> int:
    """`--review-form`: measure the review form in the browser, record it, and rewrite its section."""
    from bench import report, review_form

    started = time.monotonic()
    result = review_form.run(log=_log)
    elapsed = time.monotonic() - started
    (REPO / "docs" / "bench" / "review-form.json").write_text(json.dumps(
        {**result, "measured": time.strftime("%Y-%m-%d"), "seconds": elapsed}, indent=2))
    report.replace_section(REPO / "docs" / "benchmarks.md", review_form.SECTION,
                           review_form.section(result, time.strftime("%Y-%m-%d"), elapsed))
    _log(f"done in {elapsed / 60:.1f} min: {review_form.to_markdown(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
