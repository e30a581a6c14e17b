"""calibrate-abstention on a real (packaged MiniLM) model: the scale and the threshold it fits are the ones the
model then serves, and they travel with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from prefect.logging import disable_run_logger

from hitl.config import Config
from hitl.learning import abstention, modeling
from tasks import training

LABELS = ["card_lost", "balance_inquiry", "out_of_scope"]
INSIDE = ["i lost my card", "my card is gone", "someone stole my card", "what is my balance",
          "how much money do i have", "show my account balance"]
OUTSIDE = ["the weather on mars is cold today", "recommend a pizza place", "who won the football match",
           "translate hello into french"]


def _records(n: int) -> pd.DataFrame:
    """A dataset version's random draw of `n` rows in one day window, in scope and out of scope."""
    rng = np.random.default_rng(0)
    texts = [*(INSIDE * n)[: int(0.8 * n)], *(OUTSIDE * n)[: n - int(0.8 * n)]]
    labels = ["card_lost" if "card" in t else "balance_inquiry" if t in INSIDE else "out_of_scope" for t in texts]
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(n)], "text": texts, "label": labels,
                         "selection_reason": "random", "split": "regression", "window": "2026-01-01",
                         "inclusion_prob": rng.uniform(0.2, 0.8, n)})


def test_calibration_fits_the_scale_then_the_threshold_the_model_serves(tmp_path):
    cfg = Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(3)})
    model.reference = modeling.encode(model, INSIDE).astype(np.float16)
    records = _records(60)
    with disable_run_logger():
        thr = training.calibrate_abstention.fn(model, records, cfg)
    assert model.in_scope_scale is not None and model.in_scope_scale.shape == (2, abstention.SCALE_POINTS)
    assert model.abstain_threshold == thr
    # the scale is the in-scope rows' weighted quantiles of the two parts, as scored without a scale
    plain = modeling.IntentModel(model.network, model.tokenizer, model.labels, fallback_label="out_of_scope",
                                 reference=model.reference)
    parts = modeling.score(plain, records["text"].tolist()).in_scope_parts
    w = 1.0 / records["inclusion_prob"].to_numpy()
    expected = abstention.fit_scale(parts, records["label"].to_numpy(), "out_of_scope", w)
    assert np.allclose(model.in_scope_scale, expected)
    served = modeling.score(model, records["text"].tolist())
    assert np.allclose(served.in_scope, abstention.combine(parts, expected))
    refused = served.in_scope < thr
    assert np.array_equal(np.asarray(served.prediction)[refused], ["out_of_scope"] * int(refused.sum()))
    assert "out_of_scope" not in set(np.asarray(served.prediction)[~refused])  # the threshold alone refuses
    back = modeling.load(modeling.save(model, tmp_path / "m"))
    assert np.allclose(modeling.score(back, OUTSIDE).in_scope, modeling.score(model, OUTSIDE).in_scope, atol=1e-6)


def test_too_few_in_scope_rows_serve_the_nearest_row_alone(tmp_path):
    cfg = Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    model.network.set_prototypes({i: torch.randn(model.network.weight.shape[1]) for i in range(3)})
    model.reference = modeling.encode(model, INSIDE).astype(np.float16)
    with disable_run_logger():
        training.calibrate_abstention.fn(model, _records(abstention.MIN_SCALE_ROWS), cfg)  # 80% in scope: too few
    assert model.in_scope_scale is None
    s = modeling.score(model, OUTSIDE)
    assert np.array_equal(s.in_scope, s.in_scope_parts[:, 0])


def test_without_a_random_draw_there_is_nothing_to_calibrate_on(tmp_path):
    cfg = Config(labels=LABELS, fallback_label="out_of_scope", state_dir=str(tmp_path))
    model = modeling.load_base(cfg)
    with disable_run_logger():  # it warns that the model answers its top label over every label
        assert training.calibrate_abstention.fn(model, _records(30).assign(selection_reason="uncertain"), cfg) is None
    assert model.abstain_threshold is None
