"""compare-champion-and-challenger on real (packaged MiniLM) models with a fallback label: the refusal rows are
the judged predictions' refusals (abstention cross-fitted), and name the labels the champion did not know."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch
from prefect.logging import disable_run_logger
from test_calibrate_abstention import INSIDE, LABELS, _records

from hitl.config import Config
from hitl.evaluation import refusals, regression
from hitl.learning import modeling
from tasks import evaluation, training


def _model(cfg: Config, known: list[int], records) -> modeling.IntentModel:
    model = modeling.load_base(cfg)
    torch.manual_seed(len(known))
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in known})
    model.reference = modeling.encode(model, INSIDE).astype(np.float16)
    with disable_run_logger():
        training.calibrate_abstention.fn(model, records, cfg)
    return model


def test_refusal_rows_are_the_judged_refusals(tmp_path):
    cfg = Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(tmp_path))
    records = _records(60).assign(channel=lambda f: np.where(np.arange(len(f)) % 3, "web", "voice"),
                                  locale="en-US", tier="free")
    champion, challenger = _model(cfg, [0, 2], records), _model(cfg, [0, 1, 2], records)
    assert "balance_inquiry" not in champion.known_labels
    settings = regression.Settings.of(cfg)
    with disable_run_logger():
        compared = evaluation.compare.fn(records, champion, challenger, cfg, settings)
    t = compared.refusals.set_index(["traffic", "cohort"])
    judged = np.asarray(compared.challenger_pred)
    inside = (records["label"] != "out_of_scope").to_numpy()
    w = 1.0 / records["inclusion_prob"].to_numpy()
    refused = judged == "out_of_scope"
    assert t.loc[(refusals.IN_SCOPE, refusals.ALL), "challenger"] == np.sum(w * refused * inside) / w[inside].sum()
    assert t.loc[(refusals.OUT_OF_SCOPE, refusals.ALL), "challenger"] == \
        np.sum(w * refused * ~inside) / w[~inside].sum()
    new = t.loc[(refusals.IN_SCOPE, refusals.NEW_LABELS)]
    assert new["value"] == "balance_inquiry" and new["n"] == int((records["label"] == "balance_inquiry").sum())
    assert t.loc[(refusals.IN_SCOPE, "channel"), "value"].tolist() == ["voice", "web"]
    assert evaluation.CALIBRATION_NOTE in compared.calibration


def test_the_eval_run_keeps_the_refusal_table_and_both_models_rates(local_mlflow, tmp_path):
    """The eval run keeps the table and the rates it has draws for; the next report's trend reads them back
    (an eval run from before the fallback label existed has none)."""
    import mlflow

    refused = pd.DataFrame([
        {"traffic": refusals.IN_SCOPE, "cohort": refusals.ALL, "value": refusals.ALL, "n": 40, "champion": 0.05,
         "challenger": 0.075},
        {"traffic": refusals.OUT_OF_SCOPE, "cohort": refusals.ALL, "value": refusals.ALL, "n": 0,
         "champion": np.nan, "challenger": np.nan}])
    cfg = Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(tmp_path))
    fail_rates = {f"{who}_fail_rate{s}": 0.2 for who in ("champion", "challenger") for s in ("", "_low", "_high")}
    mlflow.set_experiment(cfg.eval_experiment)
    with mlflow.start_run():
        mlflow.log_metrics(fail_rates)  # an eval from before the fallback label
    with mlflow.start_run() as run:
        mlflow.log_metrics(fail_rates)
        evaluation.log_refusals(refused)
    got = mlflow.get_run(run.info.run_id)
    assert {k: v for k, v in got.data.metrics.items() if k not in fail_rates} == {
        "champion_refused_in_scope": 0.05, "challenger_refused_in_scope": 0.075}
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/report/refusals.csv")
    assert pd.read_csv(io.StringIO(text))["traffic"].tolist() == [refusals.IN_SCOPE, refusals.OUT_OF_SCOPE]
    with disable_run_logger():
        trend = evaluation.trend.fn(cfg, mlflow.MlflowClient())
    assert len(trend) == 2 and trend["challenger_refused_in_scope"].isna().tolist() == [True, False]
    assert trend["challenger_refused_in_scope"].iloc[1] == 0.075
    assert "challenger_out_of_scope_recall" not in trend.columns  # no out-of-scope draws, no metric
