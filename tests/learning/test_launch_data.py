"""The launch-data task: the configured file, else the synthetic world's launch set the flow passes in."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers_domain import make_cfg

from tasks import training


def _world_launch(world_cfg) -> pd.DataFrame:
    return pd.DataFrame({"text": ["lost my card"], "label": ["card_lost"]})


def test_a_configured_file_wins_over_the_synthetic_world(tmp_path):
    path = tmp_path / "launch.csv"
    pd.DataFrame({"text": ["refund please"], "label": ["refund_request"]}).to_csv(path, index=False)
    cfg = make_cfg(tmp_path, source={"launch_path": str(path)})
    assert list(training.launch_data.fn(cfg, _world_launch)["label"]) == ["refund_request"]


def test_without_a_file_the_flows_synthetic_launch_set(tmp_path):
    assert list(training.launch_data.fn(make_cfg(tmp_path), _world_launch)["text"]) == ["lost my card"]


def test_neither_a_file_nor_a_synthetic_world_is_refused(tmp_path):
    with pytest.raises(ValueError, match="launch_path"):
        training.launch_data.fn(make_cfg(tmp_path))


def test_labels_outside_the_label_set_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the config's label set"):
        training.launch_data.fn(make_cfg(tmp_path, labels=["refund_request", "card_arrival"]), _world_launch)
