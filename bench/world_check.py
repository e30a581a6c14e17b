"""The estimate check on the synthetic world (the demo's traffic): a champion trained on the launch data, a
challenger fine-tuned on labelled traces of a production day, then bench/estimate_check.py on the rest of
that day's traffic."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench import estimate_check
from hitl.config import Config, TrainingConfig
from hitl.learning import modeling, recipe
from hitl.sim import world


def run(training: TrainingConfig, quick: bool, log=print) -> pd.DataFrame:
    cfg = Config(labels=list(world.INTENTS), cohorts=["channel", "locale", "tier"], selection={"strata": ["channel"]},
                 state_dir="/tmp/hitl-bench-unused", training=training,
                 world={"production_size": 1500 if quick else 3000, "launch_per_intent": 20 if quick else 40})
    launch = world.launch_data(cfg.world)
    requests, truth = world.production_requests(cfg.world, datetime(2026, 1, 1, tzinfo=UTC))
    traffic = requests.assign(label=truth["label"].to_numpy())
    rng = np.random.default_rng(5)
    trained = rng.choice(len(traffic), size=150 if quick else 300, replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        champion = modeling.load_base(cfg)
        recipe.fine_tune(champion, launch["text"].tolist(), launch["label"].tolist(), training, Path(tmp))
        challenger = modeling.starting_point(cfg, modeling.load(modeling.save(champion, Path(tmp) / "champion")))
        rows = traffic.iloc[trained]
        recipe.fine_tune(challenger, [*launch["text"], *rows["input"]], [*launch["label"], *rows["label"]],
                         training, Path(tmp))
    log("synthetic world: champion and challenger trained")
    rest = traffic.drop(index=traffic.index[trained]).reset_index(drop=True)
    texts = rest["input"].tolist()
    champ = np.asarray(modeling.score(champion, texts).prediction)
    chall = np.asarray(modeling.score(challenger, texts).prediction)
    return estimate_check.run(rest, champ, chall, cfg, n_random=150 if quick else 270,
                              n_independent=800 if quick else 1500, noise=cfg.simulation.noise, seed=7)
