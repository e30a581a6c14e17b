"""Tests for the seeded synthetic customer-support world."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from hitl.config import WorldConfig
from hitl.sim import files, phrases, world

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cfg() -> WorldConfig:
    return WorldConfig(seed=3, launch_per_intent=12, production_size=400, drift_share=0.3, invalid_share=0.02)


@pytest.fixture(scope="module")
def window(cfg: WorldConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    return world.production_requests(cfg, START)


def _records(
    cfg: WorldConfig, requests: pd.DataFrame, truth: pd.DataFrame, wrong_every: int = 2
) -> list[dict]:
    """Simulate with every `wrong_every`-th prediction wrong (shifted to the next intent)."""
    preds = []
    for i, label in enumerate(truth["label"]):
        shifted = world.INTENTS[(world.INTENTS.index(label) + 1) % len(world.INTENTS)]
        preds.append(shifted if i % wrong_every == 0 else label)
    return world.simulate_production(requests, truth, preds, [0.8] * len(preds), "v1", cfg)


def _template_label(text: str) -> set[str]:
    """The intents whose standard templates could have produced `text` (greeting/thanks optional)."""
    found = set()
    for label, templates in phrases.STANDARD_TEMPLATES.items():
        for template in templates:
            body = re.sub(r"\\\{\w+\\\}", ".*?", re.escape(template))
            if re.fullmatch(rf"(?:\w+(?: there| morning)?, )?{body}(?: Thank.*)?", text, re.IGNORECASE):
                found.add(label)
    return found


def _is_corrupt(rec: dict, seen_ids: set[str]) -> bool:
    """True when a record is broken in one of the ways the world produces."""
    conf = rec.get("confidence")
    try:
        json.loads(rec.get("metadata", ""))
        bad_meta = False
    except (json.JSONDecodeError, TypeError):
        bad_meta = True
    return (
        "input" not in rec
        or rec["input"] == ""
        or not isinstance(conf, float)
        or not 0.0 <= conf <= 1.0
        or rec["timestamp"] == "not-a-date"
        or rec["trace_id"] in seen_ids
        or bad_meta
    )


def test_constants() -> None:
    assert len(world.INTENTS) == 10
    assert (world.INTENTS[0], world.INTENTS[-1]) == ("card_lost", "password_reset")
    assert world.CHANNELS == ("web_chat", "email", "app")
    assert set(phrases.STANDARD_TEMPLATES) == set(world.INTENTS) == set(phrases.VOICE_TEMPLATES)
    assert all(len(t) >= 8 for t in phrases.STANDARD_TEMPLATES.values())
    assert all(len(t) >= 6 for t in phrases.VOICE_TEMPLATES.values())


def test_launch_data_all_intents_no_drift_channel(cfg: WorldConfig) -> None:
    launch = world.launch_data(cfg)
    assert list(launch.columns) == ["text", "label", "channel", "locale", "tier"]
    assert len(launch) == cfg.launch_per_intent * len(world.INTENTS)
    assert launch["label"].value_counts().to_dict() == dict.fromkeys(world.INTENTS, cfg.launch_per_intent)
    assert cfg.drift_channel not in set(launch["channel"])
    assert set(launch["channel"]) <= set(world.CHANNELS)
    assert set(launch["locale"]) <= set(world.LOCALES) and set(launch["tier"]) <= set(world.TIERS)
    assert all(label in _template_label(t) for t, label in zip(launch["text"], launch["label"], strict=True))
    words = launch["text"].str.split().str.len()
    assert words.between(3, 30).all()


def test_launch_data_deterministic(cfg: WorldConfig) -> None:
    pd.testing.assert_frame_equal(world.launch_data(cfg), world.launch_data(cfg))
    other = world.launch_data(cfg.model_copy(update={"seed": cfg.seed + 1}))
    assert not other["text"].equals(world.launch_data(cfg)["text"])


def test_production_deterministic_and_offsets_differ(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    again, again_truth = world.production_requests(cfg, START)
    pd.testing.assert_frame_equal(requests, again)
    pd.testing.assert_frame_equal(truth, again_truth)
    fresh, _ = world.production_requests(cfg, START, seed_offset=1)
    assert not set(fresh["trace_id"]) & set(requests["trace_id"])
    assert list(fresh["input"]) != list(requests["input"])


def test_production_shape_and_schema(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    assert len(requests) == cfg.production_size == len(truth)
    cols = ["trace_id", "timestamp", "input", "channel", "locale", "tier", "context"]
    assert list(requests.columns) == cols
    assert "label" not in requests.columns and list(truth.columns) == ["trace_id", "label"]
    assert requests["trace_id"].is_unique and list(truth["trace_id"]) == list(requests["trace_id"])
    assert set(truth["label"]) == set(world.INTENTS)
    ts = requests["timestamp"]
    assert str(ts.dt.tz) == "UTC" and ts.is_monotonic_increasing
    assert ts.min() >= START and ts.max() < START + timedelta(hours=24)
    context_share = requests["context"].notna().mean()
    assert 0.2 < context_share < 0.4
    assert all(c is None or c.startswith("Account note") for c in requests["context"])


def test_drift_share_and_voice_style(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    voice = requests["channel"] == cfg.drift_channel
    assert voice.mean() == pytest.approx(cfg.drift_share, abs=0.02)
    assert set(requests.loc[~voice, "channel"]) <= set(world.CHANNELS)
    spoken = requests.loc[voice, "input"]
    assert (spoken == spoken.str.lower()).all()
    assert not spoken.str.contains(r"[.,?!]").any()
    written = requests.loc[~voice, "input"]
    assert written.str.contains(r"[.?!]$").all()
    labels = truth.loc[~voice, "label"]
    assert all(label in _template_label(t) for t, label in zip(written, labels, strict=True))
    assert not any(_template_label(t) for t in spoken)


def test_no_drift_when_share_zero(cfg: WorldConfig) -> None:
    requests, _ = world.production_requests(cfg.model_copy(update={"drift_share": 0.0}), START, n=100)
    assert cfg.drift_channel not in set(requests["channel"])


def test_naive_start_taken_as_utc(cfg: WorldConfig) -> None:
    requests, _ = world.production_requests(cfg, START.replace(tzinfo=None), n=20)
    assert requests["timestamp"].min() >= START


def test_reply_for() -> None:
    replies = {world.reply_for(label) for label in world.INTENTS}
    assert len(replies) == len(world.INTENTS)
    with pytest.raises(ValueError):
        world.reply_for("not_an_intent")


def test_simulate_production_counts_and_corruption(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    records = _records(cfg, requests, truth)
    k = world.corrupted_count(len(requests), cfg.invalid_share)
    assert k >= 1 and len(records) == len(requests) + k
    clean, extra = records[: len(requests)], records[len(requests) :]
    assert [r["trace_id"] for r in clean] == list(requests["trace_id"])
    ids = {r["trace_id"] for r in clean}
    assert not any(_is_corrupt(r, set()) for r in clean)
    assert all(_is_corrupt(r, ids) for r in extra)
    for rec in clean:
        meta = json.loads(rec["metadata"])
        assert meta["outcome"] in {"resolved", "escalated"} and isinstance(meta["turns"], int)
        assert pd.Timestamp(rec["timestamp"]).tzinfo is not None
        assert rec["output"].startswith(world.reply_for(rec["prediction"]))
        assert rec["model_version"] == "v1" and "label" not in rec


def test_every_corruption_kind_appears(cfg: WorldConfig) -> None:
    big = cfg.model_copy(update={"invalid_share": 0.05})
    requests, truth = world.production_requests(big, START, n=200)
    extra = _records(big, requests, truth)[len(requests) :]
    assert len(extra) == 10
    assert any("input" not in r for r in extra)
    assert any(r.get("input") == "" for r in extra)
    assert any(r["timestamp"] == "not-a-date" for r in extra)
    assert any(isinstance(r["confidence"], str) for r in extra)
    assert any(isinstance(r["confidence"], float) and not 0 <= r["confidence"] <= 1 for r in extra)
    assert any(r["trace_id"] in set(requests["trace_id"]) for r in extra)


def test_at_least_one_corrupted_record(cfg: WorldConfig) -> None:
    tiny = cfg.model_copy(update={"invalid_share": 0.001})
    requests, truth = world.production_requests(tiny, START, n=60)
    assert len(_records(tiny, requests, truth)) == 61
    none = cfg.model_copy(update={"invalid_share": 0.0})
    assert len(_records(none, requests, truth)) == 60


def test_escalation_more_frequent_when_wrong(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    records = _records(cfg, requests, truth)[: len(requests)]
    escalated = [json.loads(r["metadata"])["outcome"] == "escalated" for r in records]
    wrong = [r["prediction"] != label for r, label in zip(records, truth["label"], strict=True)]
    rate_wrong = sum(e for e, w in zip(escalated, wrong, strict=True) if w) / sum(wrong)
    rate_right = sum(e for e, w in zip(escalated, wrong, strict=True) if not w) / (len(wrong) - sum(wrong))
    assert rate_wrong > 0.5
    assert rate_right < 0.15
    cued = [r for r, e in zip(records, escalated, strict=True) if e and "human agent" in r["output"]]
    assert 0 < len(cued) < sum(escalated)
    assert all(any(r["output"].endswith(c) for c in world.ESCALATION_CUES) for r in cued)


def test_simulate_production_deterministic_and_validates(cfg: WorldConfig, window: tuple) -> None:
    requests, truth = window
    assert _records(cfg, requests, truth) == _records(cfg, requests, truth)
    with pytest.raises(ValueError):
        world.simulate_production(requests, truth, ["card_lost"], [0.5], "v1", cfg)
    with pytest.raises(ValueError):
        world.simulate_production(requests, truth.iloc[1:], list(truth["label"]), [0.5] * 400, "v1", cfg)


def test_write_jsonl_round_trip(cfg: WorldConfig, window: tuple, tmp_path: Path) -> None:
    requests, truth = window
    records = _records(cfg, requests, truth)
    path = files.write_jsonl(iter(records), tmp_path / "nested" / "dir" / "traces.jsonl")
    assert path.exists() and list(path.parent.iterdir()) == [path]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    files.write_jsonl(records[:3], path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path: Path) -> None:
    target = files.atomic_write(tmp_path / "a" / "out.txt", lambda p: p.write_text("old", encoding="utf-8"))
    assert target.read_text(encoding="utf-8") == "old"

    def half_then_fail(p: Path) -> None:
        p.write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, half_then_fail)
    assert target.read_text(encoding="utf-8") == "old"
    assert [f.name for f in target.parent.iterdir()] == ["out.txt"]


def test_trace_timestamps_are_utc_with_milliseconds() -> None:
    assert files.iso(pd.Timestamp("2026-01-02T03:04:05.678901")) == "2026-01-02T03:04:05.678Z"
    assert files.iso(pd.Timestamp("2026-01-02T04:04:05+01:00")) == "2026-01-02T03:04:05.000Z"
