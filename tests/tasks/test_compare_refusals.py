"""compare-champion-and-challenger on real (packaged MiniLM) models with a fallback label: the refusal rows are
the judged predictions' refusals (abstention cross-fitted), and name the labels the champion did not know."""

from __future__ import annotations

import numpy as np
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
