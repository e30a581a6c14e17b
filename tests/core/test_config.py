"""Configuration (hitl/config.py): the demo file loads, mistakes are refused with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
import yaml
from helpers_domain import make_cfg

from hitl.config import CONFIG_ENV, Config, load_config
from hitl.environment import apply_environment

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_config_loads():
    cfg = load_config(DEMO)
    assert len(cfg.labels) == 10 and len(set(cfg.labels)) == 10
    assert "card_lost" in cfg.labels
    assert cfg.cohorts == ["channel", "locale", "tier"]
    assert set(cfg.selection.strata) <= set(cfg.cohorts)
    assert (cfg.selection.budget, cfg.dataset.hard_case_share) == (900, 0.2)
    assert cfg.selection.budget <= cfg.review.batch_size * cfg.deployments.open_reviews  # the day's review: one wave
    assert cfg.prefect_api_url == "http://127.0.0.1:4270/api"
    assert cfg.mlflow_uri == "http://127.0.0.1:5070"
    assert cfg.state.is_absolute() and cfg.state.parts[-2:] == (".hitl", "demo")


def test_config_env_var_is_the_default(tmp_path, monkeypatch):
    raw = _demo_raw() | {"project": "from-env"}
    monkeypatch.setenv(CONFIG_ENV, str(_write(tmp_path, raw)))
    assert load_config().project == "from-env"
    assert load_config(DEMO).project == "hitl-demo"  # an explicit path wins


def test_missing_file_is_a_helpful_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError) as err:
        load_config(missing)
    msg = str(err.value)
    assert str(missing) in msg and "--config" in msg and CONFIG_ENV in msg


@pytest.mark.parametrize("where", [(), ("selection",), ("review",), ("stack",)])
def test_unknown_keys_are_refused(tmp_path, where):
    raw = _demo_raw()
    section = raw
    for key in where:
        section = section[key]
    section["budgett"] = 5
    with pytest.raises(pydantic.ValidationError, match="budgett"):
        load_config(_write(tmp_path, raw))


def test_duplicate_labels_are_refused(tmp_path):
    raw = _demo_raw()
    raw["labels"] = ["card_lost", "refund_request", "card_lost"]
    with pytest.raises(pydantic.ValidationError, match=r"duplicates: \['card_lost'\]"):
        load_config(_write(tmp_path, raw))


def test_fewer_than_two_labels_are_refused(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="at least two labels"):
        Config(labels=["only"], state_dir=str(tmp_path))
    with pytest.raises(pydantic.ValidationError, match="labels"):
        load_config(_write(tmp_path, {"project": "x"}))


def test_random_draw_strata_must_be_cohorts(tmp_path):
    raw = _demo_raw()
    raw["selection"]["strata"] = ["region"]
    with pytest.raises(pydantic.ValidationError, match=r"selection.strata \['region'\] are not among cohorts"):
        load_config(_write(tmp_path, raw))
    raw["selection"]["strata"] = []
    assert load_config(_write(tmp_path, raw)).selection.strata == []
    raw["cohorts"], raw["selection"]["strata"] = ["channel", "region"], ["region", "channel"]
    assert load_config(_write(tmp_path, raw)).selection.strata == ["region", "channel"]


def test_fallback_label_and_label_groups_must_name_labels(tmp_path):
    raw = _demo_raw() | {"fallback_label": "out_of_scope"}
    with pytest.raises(pydantic.ValidationError, match="fallback_label='out_of_scope' is not one of labels"):
        load_config(_write(tmp_path, raw))
    raw = _demo_raw() | {"evaluation": {"label_groups": {"new": ["card_lost", "crypto"]}}}
    with pytest.raises(pydantic.ValidationError, match=r"label_groups name labels that are not in labels"):
        load_config(_write(tmp_path, raw))


def test_unknown_selection_components_are_refused(tmp_path):
    raw = _demo_raw()
    raw["selection"]["components"] = {"uncertain": 1.0, "vibes": 0.5}
    with pytest.raises(pydantic.ValidationError, match="unknown selection components"):
        load_config(_write(tmp_path, raw))


@pytest.mark.parametrize(("section", "key", "value"), [
    ("selection", "random_share", 1.5), ("selection", "budget", 0), ("review", "batch_size", 0),
    ("dataset", "hard_case_share", 1.0), ("world", "invalid_share", 0.9), ("review", "overlap_share", -0.1),
])
def test_out_of_range_values_are_refused(tmp_path, section, key, value):
    raw = _demo_raw()
    raw[section][key] = value
    with pytest.raises(pydantic.ValidationError, match=key):
        load_config(_write(tmp_path, raw))


def test_simulation_needs_two_distinct_reviewers(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="two distinct"):
        Config(labels=["a", "b"], simulation={"reviewers": ["alice", "alice"]})


@pytest.mark.parametrize(("text", "match"), [
    ("labels: [a, b\nproject: x", "not valid YAML"),
    ("- a\n- b\n", "mapping at the top level"),
])
def test_malformed_yaml_is_refused(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_config(_write(tmp_path, text))


def test_derived_locations(tmp_path):
    cfg = Config(labels=["a", "b"], state_dir=str(tmp_path / "s"))
    assert cfg.state == (tmp_path / "s").resolve()
    assert cfg.store_url == f"sqlite:///{cfg.state / 'review.db'}"
    assert cfg.quarantine_dir == cfg.state / "quarantine"
    assert cfg.traces_path == cfg.state / "world" / "traces"
    other = Config(labels=["a", "b"], state_dir=str(tmp_path), review={"store_url": "postgresql://db/x"},
                   source={"kind": "files", "path": str(tmp_path / "in")})
    assert other.store_url == "postgresql://db/x"
    assert other.traces_path == (tmp_path / "in").resolve()


def test_flow_run_url_is_the_page_prefect_itself_links_to():
    """One link per waiting run for the inbox, the logs and Prefect's notifications (its `ui_url`)."""
    from prefect.settings import PREFECT_UI_URL, temporary_settings
    from prefect.utilities.urls import url_for

    cfg = Config(labels=["a", "b"], stack={"host": "10.0.0.5", "prefect_port": 4300})
    run_id = "123e4567-e89b-12d3-a456-426614174000"
    assert cfg.flow_run_url(run_id) == f"http://10.0.0.5:4300/runs/flow-run/{run_id}"
    with temporary_settings(updates={PREFECT_UI_URL: cfg.prefect_ui_url}):
        assert cfg.flow_run_url(run_id) == url_for("flow-run", obj_id=run_id)


def test_apply_environment_points_clients_at_the_stack(monkeypatch):
    keys = ["PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_UI_URL", "MLFLOW_TRACKING_URI",
            "MLFLOW_REGISTRY_URI", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PREFECT_SERVER_ANALYTICS_ENABLED",
            "PREFECT_LOGGING_LEVEL", "TOKENIZERS_PARALLELISM", "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"]
    for k in keys:  # monkeypatch restores each of these after the test
        monkeypatch.setenv(k, "before")
        monkeypatch.delenv(k)
    cfg = Config(labels=["a", "b"], stack={"host": "10.0.0.5", "prefect_port": 4300, "mlflow_port": 5300})
    apply_environment(cfg)
    assert os.environ["PREFECT_API_URL"] == "http://10.0.0.5:4300/api"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://10.0.0.5:5300"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_banking77_config_matches_the_dataset_and_writes_its_scenario(tmp_path):
    """The label set is BANKING77's own; the scenario's new intents are the report's "new" label group; the
    scenario's files land where the `files` source, the launch data and the simulated reviewers look."""
    from hitl.sim import banking77

    raw = yaml.safe_load((DEMO.parent / "banking77.yaml").read_text())
    data_dir = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"
    raw |= {"state_dir": str(tmp_path / "state")}
    raw["scenario"]["data_dir"] = str(data_dir)
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.labels == banking77.load_labels(data_dir)
    assert cfg.evaluation.label_groups["new"] == cfg.scenario.new_intents and len(cfg.scenario.new_intents) == 20
    written = banking77.write(banking77.build(banking77.from_config(cfg.scenario)), cfg.scenario_dir)
    assert Path(written["traces"]) == cfg.traces_path and Path(written["launch"]) == cfg.launch_path
    assert Path(written["truth"]) == cfg.truth_path


@pytest.mark.parametrize(("key", "default", "bad"), [
    ("blind_share", 0.2, (-0.1, 1.5)),  # a fifth of the policy's items are labelled blind
    ("suggestions", 5, (-1, 21)),  # the champion's top five first in the form
])
def test_review_settings_have_their_defaults_and_bounds(tmp_path, key, default, bad):
    assert getattr(make_cfg(tmp_path).review, key) == default
    for value in bad:
        with pytest.raises(pydantic.ValidationError):
            make_cfg(tmp_path, review={key: value})


@pytest.mark.parametrize(("dataset", "evaluation", "match"), [
    ({"retention_days": 30}, {}, "shorter than evaluation.horizon_days"),
    ({"retention_days": 400}, {"horizon_days": None}, "needs evaluation.horizon_days"),
])
def test_retention_must_cover_the_production_horizon(tmp_path, dataset, evaluation, match):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=match):
        Config(labels=["a", "b"], state_dir=str(tmp_path), dataset=dataset, evaluation=evaluation)
    ok = Config(labels=["a", "b"], state_dir=str(tmp_path), dataset={"retention_days": 365})
    assert ok.dataset.retention_days == 365 and ok.evaluation.horizon_days == 91
