"""Tests for the BANKING77 drift scenario (reads the real data set from shared/data/banking77)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from hitl.sim import banking77 as b77

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"
TRACE_KEYS = {"trace_id", "timestamp", "input", "output", "channel", "tier", "context", "metadata"}
ISO_MS_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.fixture(scope="module")
def scenario() -> b77.Banking77Scenario:
    return b77.Banking77Scenario(data_dir=DATA_DIR)


@pytest.fixture(scope="module")
def data(scenario: b77.Banking77Scenario) -> b77.ScenarioData:
    return b77.build(scenario)


@pytest.fixture(scope="module")
def written(data: b77.ScenarioData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return b77.write(data, tmp_path_factory.mktemp("b77"))


@pytest.fixture(scope="module")
def records(written: dict[str, str]) -> dict[str, list[dict]]:
    """Parsed JSONL records per trace file name."""
    files = sorted(Path(written["traces"]).glob("*.jsonl"))
    return {p.name: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for p in files}


def _csv(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / name, dtype=str, keep_default_na=False)


def test_intent_split(data: b77.ScenarioData, scenario: b77.Banking77Scenario) -> None:
    assert data.labels == json.loads((DATA_DIR / "categories.json").read_text()) and len(data.labels) == 77
    assert len(data.new_intents) == scenario.n_new_intents
    assert not set(data.new_intents) & set(data.launch_intents)
    assert sorted(data.new_intents + data.launch_intents) == sorted(data.labels)
    counts = data.launch["label"].value_counts()
    assert set(counts.index) == set(data.launch_intents)
    assert (counts == scenario.launch_per_intent).all()
    assert list(data.launch.columns) == ["text", "label", "channel", "tier"]
    assert set(data.launch["channel"]) == set(scenario.channels) and set(data.launch["tier"]) == set(scenario.tiers)


def test_launch_and_traffic_partition_train_and_test_is_whole(data: b77.ScenarioData) -> None:
    train = _csv("train.csv")
    used = Counter(zip(data.launch["text"], data.launch["label"], strict=True))
    used.update(zip(data.traffic["input"], data.traffic["label"], strict=True))
    assert len(data.launch) + len(data.traffic) == len(train) == 10_003
    assert used == Counter(zip(train["text"], train["category"], strict=True))  # each train row used exactly once
    test = _csv("test.csv")
    assert (
        data.test["text"].tolist() == test["text"].tolist() and data.test["label"].tolist() == test["category"].tolist()
    )
    expected = ["new" if lab in data.new_intents else "launch" for lab in data.test["label"]]
    assert data.test["group"].tolist() == expected


def test_traffic_days_groups_and_timestamps(data: b77.ScenarioData, scenario: b77.Banking77Scenario) -> None:
    t = data.traffic
    assert (t["group"] == "new").tolist() == t["label"].isin(data.new_intents).tolist()
    assert t.loc[t["group"] == "new", "day"].min() == scenario.new_from_day
    assert t.loc[t["group"] == "launch", "day"].min() == 0
    assert t["day"].max() == scenario.days - 1
    start = pd.Timestamp(scenario.start, tz="UTC")
    assert (t["timestamp"].dt.floor("D") == start + pd.to_timedelta(t["day"], unit="D")).all()
    assert t["timestamp"].is_monotonic_increasing
    assert t["trace_id"].tolist() == [f"b77-{scenario.seed}-{i:06d}" for i in range(len(t))]
    assert t["trace_id"].is_unique


def test_channel_drift_after_new_from_day(data: b77.ScenarioData, scenario: b77.Banking77Scenario) -> None:
    after = data.traffic[data.traffic["day"] >= scenario.new_from_day]
    is_new = after["group"] == "new"
    on_app = after["channel"] == "app"
    assert is_new[on_app].mean() > is_new[~on_app].mean() + 0.15
    assert abs(on_app[is_new].mean() - scenario.new_intent_app_share) < 0.05
    launch = after[~is_new]
    assert abs((launch["channel"] == "app").mean() - 1 / len(scenario.channels)) < 0.05


def test_build_is_deterministic_and_seed_matters(data: b77.ScenarioData, scenario: b77.Banking77Scenario) -> None:
    again = b77.build(scenario)
    for name in ("launch", "traffic", "test"):
        pd.testing.assert_frame_equal(getattr(data, name), getattr(again, name))
    assert (again.new_intents, again.launch_intents) == (data.new_intents, data.launch_intents)
    other = b77.build(replace(scenario, seed=1))
    assert other.new_intents != data.new_intents


def test_write_is_byte_identical(data: b77.ScenarioData, written: dict[str, str], tmp_path: Path) -> None:
    first_root = Path(written["scenario"]).parent
    second = b77.write(b77.build(data.scenario), tmp_path)
    first_files = sorted(p.relative_to(first_root) for p in first_root.rglob("*") if p.is_file())
    second_files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert first_files == second_files and len(first_files) == 4 + data.scenario.days
    for rel in first_files:
        assert (first_root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert set(second) == {"launch", "traces", "truth", "test", "scenario"}


def test_jsonl_traces_follow_the_contract(data: b77.ScenarioData, records: dict[str, list[dict]]) -> None:
    flat = [r for recs in records.values() for r in recs]
    assert len(flat) == len(data.traffic)
    for name, recs in records.items():
        for r in recs:
            assert set(r) == TRACE_KEYS, r
            assert ISO_MS_Z.fullmatch(r["timestamp"]) and r["timestamp"].startswith(name.removesuffix(".jsonl"))
            assert r["output"] == "" and r["context"] is None and json.loads(r["metadata"]) == {}
    expected = data.traffic.set_index("trace_id")
    assert [r["trace_id"] for r in flat] == data.traffic["trace_id"].tolist()
    assert [r["input"] for r in flat] == expected["input"].tolist()
    assert [r["channel"] for r in flat] == expected["channel"].tolist()
    stamps = pd.to_datetime(pd.Series([r["timestamp"] for r in flat]), utc=True)
    assert (stamps.to_numpy() == data.traffic["timestamp"].to_numpy()).all()  # ms precision round-trips


def test_truth_launch_and_test_files(data: b77.ScenarioData, written: dict[str, str], records: dict) -> None:
    truth = pd.read_parquet(written["truth"])
    assert list(truth.columns) == ["trace_id", "label"]
    ids = [r["trace_id"] for recs in records.values() for r in recs]
    assert truth["trace_id"].tolist() == ids
    assert truth["label"].tolist() == data.traffic["label"].tolist()
    launch = pd.read_csv(written["launch"], dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(launch, data.launch, check_dtype=False)
    test = pd.read_parquet(written["test"])
    pd.testing.assert_frame_equal(test, data.test[["text", "label", "group"]], check_dtype=False)


def test_scenario_json_counts(data: b77.ScenarioData, written: dict[str, str], records: dict) -> None:
    meta = json.loads(Path(written["scenario"]).read_text(encoding="utf-8"))
    assert meta["scenario"]["seed"] == data.scenario.seed and meta["scenario"]["days"] == data.scenario.days
    assert (meta["launch_intents"], meta["new_intents"]) == (data.launch_intents, data.new_intents)
    rows = meta["rows"]
    assert rows["launch.csv"] == len(pd.read_csv(written["launch"])) == 57 * 20
    assert rows["truth.parquet"] == len(pd.read_parquet(written["truth"])) == 10_003 - 57 * 20
    assert rows["test.parquet"] == 3080
    assert rows["traces"] == {name: len(recs) for name, recs in records.items()}
    assert list(rows["traces"])[0] == "2026-01-01.jsonl" and len(rows["traces"]) == data.scenario.days
    assert rows["traffic_by_group"]["new"] == int(data.traffic["label"].isin(data.new_intents).sum())
    exact = len(set(_csv("train.csv")["text"]) & set(_csv("test.csv")["text"]))
    assert meta["train_test_duplicate_texts"] == exact
    assert meta["train_test_duplicate_texts_case_space_folded"] >= exact


def test_missing_or_malformed_data_gives_clear_errors(tmp_path: Path, scenario: b77.Banking77Scenario) -> None:
    with pytest.raises(FileNotFoundError, match=r"categories\.json.*data_dir"):
        b77.build(replace(scenario, data_dir=tmp_path / "nowhere"))
    (tmp_path / "categories.json").write_text((DATA_DIR / "categories.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        b77.build(replace(scenario, data_dir=tmp_path))
    (tmp_path / "train.csv").write_text("sentence,intent\nhello,card_arrival\n")
    with pytest.raises(ValueError, match=r"train\.csv has columns \['sentence', 'intent'\]"):
        b77.build(replace(scenario, data_dir=tmp_path))
    with pytest.raises(ValueError, match="new_from_day"):
        b77.build(replace(scenario, new_from_day=28))


def test_write_refuses_stale_trace_files(data: b77.ScenarioData, tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "2025-12-31.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="2025-12-31.jsonl"):
        b77.write(data, tmp_path)
    assert not (tmp_path / "launch.csv").exists()
