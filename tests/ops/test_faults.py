"""kill -9 at the loop's fault points (hitl/faults.py), then the re-run: fine-tuning resumes from its last
checkpoint and ends as an uninterrupted run does; a dataset version is complete or absent; `@champion`
never points at a version that was not approved after its evaluation.

The killed step runs in a subprocess with `HITL_FAULT` set; MLflow is a SQLite file here (no server):
tests/e2e/test_faults_e2e.py does the same through the `hitl` commands on the real stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers_domain import LAUNCH, tiny_encoder

from hitl.config import Config, TrainingConfig
from hitl.learning import checkpoints, modeling, recipe

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, fault: str | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess:
    """`python -c script args` from the repo root, with the fault point `fault` armed."""
    full = {**os.environ, **(env or {})}
    full.pop("HITL_FAULT", None)
    if fault:
        full["HITL_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          cwd=REPO, env=full, timeout=300)


def _killed(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == -signal.SIGKILL, f"expected kill -9, got {p.returncode}:\n{p.stdout}\n{p.stderr}"


# ---------------------------------------------------------------- fine-tuning
TRAIN = """
    import json, sys
    from pathlib import Path
    from hitl.config import Config
    from hitl.learning import modeling, recipe
    cfg = Config.model_validate_json(Path(sys.argv[1]).read_text())
    texts, labels = json.loads(Path(sys.argv[2]).read_text())
    model = modeling.load_base(cfg)
    recipe.fine_tune(model, texts, labels, cfg.training, Path(sys.argv[3]))
"""
PROBE = ["i lost my card on the train", "what is the balance", "transfer failed today", "card balance transfer"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_encoder(tmp_path_factory.mktemp("tiny"))


def _launch() -> tuple[list[str], list[str]]:
    return [t for ts in LAUNCH.values() for t in ts], [lab for lab, ts in LAUNCH.items() for _ in ts]


@pytest.mark.slow(reason="per case: a fine-tune, one killed in a subprocess (imports transformers), its resume")
@pytest.mark.parametrize(("fault", "refit", "resumed_from"), [("train:select:step-8", False, 6),
                                                              ("train:refit:step-3", True, 2)])
def test_fine_tuning_resumes_after_kill_and_ends_as_an_uninterrupted_run(fault, refit, resumed_from, tiny, tmp_path):
    """21 training rows in batches of 8 are 3 steps an epoch; a checkpoint is sealed every 2 steps. With these
    rates validation gets worse after epoch 1, so early stopping (patience 2) ends the first phase at epoch 3.
    Killed at step 8 (mid-epoch 3, one evaluation without improvement behind it), or in the refit's only
    epoch, the re-run resumes from the last sealed checkpoint, early-stopping counter, best weights and
    sampler included, and ends with the metrics and weights of an uninterrupted run."""
    cfg = Config(labels=list(LAUNCH), state_dir=str(tmp_path), model={"base_path": str(tiny)},
                 training=TrainingConfig(epochs=8, batch_size=8, learning_rate=3e-2, head_learning_rate=3e-1,
                                         validation_share=0.15, early_stopping_patience=2, checkpoint_steps=2,
                                         refit=refit))
    texts, labels = _launch()
    model = modeling.load_base(cfg)
    expected = recipe.fine_tune(model, texts, labels, cfg.training, tmp_path / "whole")
    probs = modeling.score(model, PROBE).probs
    assert expected["epoch"] == 3 and expected["best_epoch"] == 1  # early stopping did stop the run

    cfg_file, data_file, out = tmp_path / "cfg.json", tmp_path / "data.json", tmp_path / "trainer"
    cfg_file.write_text(cfg.model_dump_json())
    data_file.write_text(json.dumps([texts, labels]))
    _killed(_run(TRAIN, str(cfg_file), str(data_file), str(out), fault=fault))
    run_dir = next(out.glob("run-*"))
    phase = fault.split(":")[1]
    sealed = [p.name for p in (run_dir / phase).glob("checkpoint-*") if (p / checkpoints.SEALED).exists()]
    assert sealed == [f"checkpoint-{resumed_from}"]
    if phase == "refit":
        assert (run_dir / "select" / recipe.DONE).exists()  # the finished phase is not trained again

    model = modeling.load_base(cfg)
    metrics = recipe.fine_tune(model, texts, labels, cfg.training, out)
    assert metrics["resumed_from_step" if phase == "select" else "refit_resumed_from_step"] == resumed_from
    quality = {k: v for k, v in expected.items() if "runtime" not in k and "per_second" not in k}
    assert {k: pytest.approx(v, abs=1e-6) for k, v in quality.items()} == {k: metrics[k] for k in quality}
    assert np.allclose(modeling.score(model, PROBE).probs, probs, atol=1e-6)
    assert not any(out.iterdir())  # the run folder goes once fine_tune returns


def test_epoch_sampler_draws_as_one_generator_through_the_epochs():
    """The sampler's epoch-k order is what a single seeded generator gives at its k-th draw (so resuming needs
    no replay, and runs before checkpoints existed draw the same batches)."""
    import torch

    weights = recipe.sample_weights(["a"] * 7 + ["b"] * 2 + ["c"], 0.5)
    gen = torch.Generator().manual_seed(3)
    plain = torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), len(weights), generator=gen)
    expected = [list(plain) for _ in range(4)]
    sampler = checkpoints.epoch_sampler(weights, 3)
    for epoch in (2, 0, 3, 1):
        sampler.set_epoch(epoch)
        assert list(sampler) == expected[epoch]


# ---------------------------------------------------------------- MLflow on a SQLite file
@pytest.fixture(scope="module")
def tracking(local_mlflow):
    """An MLflow tracking + registry URI on SQLite with artifacts in a folder; env for the subprocesses."""
    import mlflow

    root, uri = local_mlflow
    mlflow.create_experiment("faults-datasets", artifact_location=str(root / "artifacts"))
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "_root": str(root)}


REGISTER = """
    import sys
    import pandas as pd
    from hitl.config import load_config
    from hitl.datasets import versions
    dv, created = versions.register(pd.read_parquet(sys.argv[2]), load_config(sys.argv[1]))
    print(dv.version, created)
"""


def _records(n: int) -> pd.DataFrame:
    from hitl.datasets import versions

    rows = [{"trace_id": f"t{i}", "text": f"text {i}", "label": "a" if i % 2 else "b",
             "split": "regression" if i < 3 else "train", "selection_reason": "random" if i < 3 else "uncertain",
             "text_group": f"g{i}", "inclusion_prob": 0.5, "window": "2026-01-01", "stratum": "x",
             "reviewers": "alice", "annotation_ids": str(i), "source": "human_review"} for i in range(n)]
    return pd.DataFrame(rows)[versions.RECORD_COLUMNS]


def test_dataset_version_is_complete_or_absent(tracking, tmp_path):
    """Killed after the parquet is logged and before the version is sealed: no version; the re-run writes
    version 1 whole and marks the half-written run abandoned; a third run finds nothing new."""
    import mlflow

    from hitl.datasets import versions

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({"project": "faults", "labels": ["a", "b"], "state_dir": str(tmp_path),
                                        "dataset": {"name": "faults-ds", "min_rows": 1}}))
    cfg = Config(labels=["a", "b"], project="faults", dataset={"name": "faults-ds", "min_rows": 1})
    data = tmp_path / "records.parquet"
    _records(12).to_parquet(data, index=False)
    env = {k: v for k, v in tracking.items() if not k.startswith("_")}

    _killed(_run(REGISTER, str(cfg_path), str(data), fault="dataset:after-artifact", env=env))
    assert versions.list_versions(cfg) == []
    exp = mlflow.get_experiment_by_name(cfg.dataset_experiment)
    (partial,) = mlflow.MlflowClient().search_runs([exp.experiment_id])
    assert partial.data.tags[versions.TAG + "status"] == versions.WRITING
    assert mlflow.MlflowClient().list_artifacts(partial.info.run_id, versions.ARTIFACT_DIR)  # it got that far

    dv, created = versions.register(_records(12), cfg)  # the re-run
    assert created and dv.version == 1
    (v1,) = versions.list_versions(cfg)
    records, dv = versions.load(cfg, 1)  # digest-checked
    assert v1.version == 1 and len(records) == 12 and dv.run_id != partial.info.run_id
    again = mlflow.MlflowClient().get_run(partial.info.run_id)
    assert again.data.tags[versions.TAG + "status"] == versions.ABANDONED and again.info.status == "KILLED"

    assert versions.register(_records(12), cfg) == (v1, False)
    assert [v.version for v in versions.list_versions(cfg)] == [1]


PROMOTE = """
    import sys
    from hitl.learning import promotion
    promotion.promote(sys.argv[1], promotion.Promotion("1", "2", "ann", "voice fixed", "eval-run"))
"""


@pytest.mark.parametrize("fault", ["promote:approved", "promote:previous-moved", "promote:champion-moved"])
def test_promotion_never_leaves_champion_on_an_unapproved_model(fault, tracking):
    """Killed between the registry writes of a promotion, `@champion` is the old champion or the approved
    challenger; the next run (the recovery any model load does, or the same approval promoted again)
    leaves champion v2, previous v1, no challenger, nothing pending."""
    from mlflow import MlflowClient

    from hitl.learning import promotion

    client = MlflowClient()
    name = f"faults-{fault.split(':')[1]}"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=f"{tracking['_root']}/model")
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    env = {k: v for k, v in tracking.items() if not k.startswith("_")}

    _killed(_run(PROMOTE, name, fault=fault, env=env))
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1" or champion.tags.get("hitl.approved_by") == "ann"
    pending = client.get_registered_model(name).tags.get(promotion.PENDING_TAG)
    assert pending

    for rerun in ("finish", "promote"):  # either way of re-running ends in the same place
        if rerun == "promote":  # back to the killed state, then the flow's resume promotes again
            client.set_registered_model_tag(name, promotion.PENDING_TAG, pending)
            client.set_registered_model_alias(name, "challenger", "2")
            promotion.promote(name, promotion.Promotion("1", "2", "ann", "voice fixed", "eval-run"))
        else:
            assert promotion.finish_pending(name).promoted == "2"
        model = client.get_registered_model(name)
        assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "2", "previous": "1"}
        assert promotion.PENDING_TAG not in model.tags
        tags = client.get_model_version(name, "2").tags
        assert tags["hitl.approved_by"] == "ann" and tags["hitl.eval_run_id"] == "eval-run"
        assert promotion.finish_pending(name) is None
