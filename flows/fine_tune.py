"""Flow: fine-tune the base model afresh (or continue from the champion: `training.start`) on a dataset version's
train split and register it as `@challenger`."""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import flow

from hitl.datasets import versions
from hitl.learning import modeling
from hitl.learning.promotion import CHALLENGER, CHAMPION, STAGE_TAG
from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from hitl.sim import world
from tasks import training
from tasks.common import deployed_top_level, load_model, setup, start_deployment


@flow(name="fine-tune", log_prints=True, on_crashed=[retry_crashed])
def fine_tune(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """Dataset version (digest-checked) -> train split (+ launch replay) -> leakage guard -> Trainer ->
    abstention threshold -> `@challenger` -> (deployed) a run of the regression-eval deployment."""
    cfg = setup(config_path)
    client = MlflowClient()  # one for the run, passed down
    records, dv = versions.load(cfg, dataset_version)
    train, leakage = training.training_rows(records, training.launch_data(cfg, world.launch_data), cfg, dv.ref)
    champion = load_model(cfg, CHAMPION, client)
    parent = champion.version  # the version it would replace (`training.start` says what it trained from)
    model = modeling.align_labels(modeling.starting_point(cfg, champion), cfg.labels)
    metrics = training.train(model, train, cfg, f"{dv.name}-v{dv.version}")
    threshold = training.calibrate_abstention(model, records, cfg)
    ds = versions.as_mlflow_dataset(records, dv.ref, dv.run_id)
    params = {"dataset": dv.ref, "parent_model_version": parent, "train_rows": len(train),
              "abstain_threshold": threshold, **training.recipe_params(cfg)}
    tags = {STAGE_TAG: "fine_tune", versions.DATASET_TAG: dv.ref, "hitl.dataset_run_id": dv.run_id,
            "hitl.parent_model_version": parent, "hitl.leakage_check": leakage.summary}
    store = ReviewStore(cfg.store_url)  # the audit chain's, once for the run
    version = training.register_model(model, cfg, store, client, CHALLENGER, params, metrics, tags, ds,
                                      export_texts=records["text"].tolist())  # checks an ONNX export on them
    out = {"challenger_version": version, "dataset": dv.ref, "train_rows": len(train), **metrics}
    if deployed_top_level():  # retrain is one chain: the challenger's regression eval (it waits for approval)
        run = start_deployment(cfg, config_path, "regression-eval", key="regression-eval-after",
                               dataset_version=dv.version)
        out["regression_eval_run"] = str(run.id)
    return out


if __name__ == "__main__":
    fine_tune()
