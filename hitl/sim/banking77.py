"""A seeded drift scenario built from the real BANKING77 intent dataset.

A launch model is trained on some intents; production traffic then brings intents it has never seen, arriving
more often on the "app" channel. `build` returns everything in memory (for benchmarks); `write` lays it out as
files the pipeline reads as a `files` trace source (`traces/`), plus the ground truth only simulated reviewers
read. Everything is deterministic given the scenario: the same scenario writes byte-identical files.

Data: BANKING77 (train 10,003 rows, test 3,080 rows, 77 intents), licence CC BY 4.0. Casanueva, Temčinas,
Gerz, Henderson, Vulić. "Efficient Intent Detection with Dual Sentence Encoders." NLP4ConvAI workshop, 2020.
arXiv:2003.04807. Source: PolyAI-LDN/task-specific-datasets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hitl.config import ScenarioConfig
from hitl.sim.files import atomic_write, iso, to_utc, write_jsonl

ATTRIBUTION = (
    "BANKING77 (CC BY 4.0): Casanueva et al., Efficient Intent Detection with Dual Sentence Encoders, "
    "NLP4ConvAI 2020, arXiv:2003.04807"
)
TRACE_KEYS = ("trace_id", "timestamp", "input", "output", "channel", "tier", "context", "metadata")
NEW_INTENT_CHANNEL = "app"
_TOP_TIER_SHARE = 0.7  # the first tier gets 70%, the others share the rest
_DAY_MS = 86_400_000
_COLUMNS = ("text", "category")


@dataclass(frozen=True)
class Banking77Scenario:
    data_dir: Path  # folder with train.csv, test.csv, categories.json
    seed: int = 0
    n_new_intents: int = 20  # intents absent at launch, chosen at random (seeded) among the 77
    new_intents: tuple[str, ...] = ()  # or exactly these (then n_new_intents is ignored)
    launch_per_intent: int = 20  # launch training rows per launch intent, drawn from train.csv
    days: int = 28  # production days
    new_from_day: int = 7  # 0-based day from which new-intent traffic appears
    start: str = "2026-01-01"  # first production day (UTC)
    channels: tuple[str, ...] = ("app", "web_chat", "email")
    tiers: tuple[str, ...] = ("free", "premium")
    new_intent_app_share: float = 0.6  # new-intent traffic arrives more often on "app"


@dataclass
class ScenarioData:
    launch: pd.DataFrame  # text, label, channel, tier (launch intents only, launch_per_intent each)
    traffic: pd.DataFrame  # trace_id, timestamp (UTC), day, input, label, group ("launch"/"new"), channel, tier
    test: pd.DataFrame  # text, label, group -- the whole of test.csv, never in traffic or launch
    launch_intents: list[str]
    new_intents: list[str]
    labels: list[str]  # all 77, in categories.json order
    scenario: Banking77Scenario  # what built it (written to scenario.json)


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------
def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"BANKING77 file {path} not found. Point data_dir at the folder holding train.csv, test.csv and "
            "categories.json (e.g. shared/data/banking77)."
        )
    return path


def load_labels(data_dir: Path) -> list[str]:
    """The intents listed in `data_dir`/categories.json, in file order."""
    path = _require(Path(data_dir) / "categories.json")
    labels = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"{path} must be a JSON list of non-empty intent names; re-fetch BANKING77.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path} lists some intents twice; re-fetch BANKING77.")
    return labels


def _read_split(path: Path, labels: list[str]) -> pd.DataFrame:
    """A BANKING77 CSV as text, label columns, checked against the label set."""
    df = pd.read_csv(_require(path), dtype=str, keep_default_na=False)
    if tuple(df.columns) != _COLUMNS:
        raise ValueError(f"{path} has columns {list(df.columns)}, expected {list(_COLUMNS)}; re-fetch BANKING77.")
    if (df["text"].str.strip() == "").any():
        raise ValueError(f"{path} has empty texts; re-fetch BANKING77.")
    unknown = sorted(set(df["category"]) - set(labels))
    if unknown:
        raise ValueError(f"{path} has intents not in categories.json, e.g. {unknown[:3]}; re-fetch BANKING77.")
    return df.rename(columns={"category": "label"})


# ---------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------
def _check(s: Banking77Scenario, n_labels: int) -> pd.Timestamp:
    """Validate the scenario parameters; returns the start day as a UTC timestamp."""
    if not s.new_intents and not 0 < s.n_new_intents < n_labels:
        raise ValueError(f"n_new_intents must be in [1, {n_labels - 1}], got {s.n_new_intents}")
    if s.launch_per_intent < 1:
        raise ValueError(f"launch_per_intent must be >= 1, got {s.launch_per_intent}")
    if not 0 <= s.new_from_day < s.days:
        raise ValueError(f"need 0 <= new_from_day < days, got new_from_day={s.new_from_day}, days={s.days}")
    if not 0.0 <= s.new_intent_app_share <= 1.0:
        raise ValueError(f"new_intent_app_share must be in [0, 1], got {s.new_intent_app_share}")
    if NEW_INTENT_CHANNEL not in s.channels or len(set(s.channels)) != len(s.channels) or len(s.channels) < 2:
        raise ValueError(f"channels must be distinct, at least two, and include {NEW_INTENT_CHANNEL!r}: {s.channels}")
    if not s.tiers or len(set(s.tiers)) != len(s.tiers):
        raise ValueError(f"tiers must be distinct and non-empty, got {s.tiers}")
    try:
        start = to_utc(pd.Timestamp(s.start))
    except ValueError as e:
        raise ValueError(f"start must be a date such as '2026-01-01', got {s.start!r}") from e
    if start != start.normalize():
        raise ValueError(f"start must be a date (midnight UTC), got {s.start!r}")
    return start


def _tiers(rng: np.random.Generator, tiers: tuple[str, ...], n: int) -> np.ndarray:
    """`n` tiers: the first 70% of the time, the others sharing the rest (one tier: always it)."""
    k = len(tiers)
    p = [1.0] if k == 1 else [_TOP_TIER_SHARE] + [(1 - _TOP_TIER_SHARE) / (k - 1)] * (k - 1)
    return np.asarray(tiers, dtype=object)[rng.choice(k, size=n, p=p)]


def _new_channels(rng: np.random.Generator, s: Banking77Scenario, n: int) -> np.ndarray:
    """New-intent channels: NEW_INTENT_CHANNEL with probability new_intent_app_share, else uniform over the rest."""
    others = np.asarray([c for c in s.channels if c != NEW_INTENT_CHANNEL], dtype=object)
    rest = others[rng.integers(len(others), size=n)]
    return np.where(rng.random(n) < s.new_intent_app_share, NEW_INTENT_CHANNEL, rest)


def build(s: Banking77Scenario) -> ScenarioData:
    """The scenario in memory: launch data, timestamped production traffic with its labels, and the test set."""
    data_dir = Path(s.data_dir)
    labels = load_labels(data_dir)
    start = _check(s, len(labels))
    train = _read_split(data_dir / "train.csv", labels)
    test = _read_split(data_dir / "test.csv", labels)
    rng = np.random.default_rng(s.seed)

    if s.new_intents:
        unknown = sorted(set(s.new_intents) - set(labels))
        if unknown or len(set(s.new_intents)) >= len(labels):
            raise ValueError(f"new_intents must be distinct BANKING77 intents, leaving some for launch: {unknown}")
        picked = {labels.index(lab) for lab in s.new_intents}
    else:
        picked = set(rng.choice(len(labels), size=s.n_new_intents, replace=False).tolist())
    new_intents = [lab for i, lab in enumerate(labels) if i in picked]
    launch_intents = [lab for i, lab in enumerate(labels) if i not in picked]

    by_label = train.groupby("label", sort=False).indices
    launch_rows = []
    for lab in launch_intents:
        rows = by_label.get(lab, np.array([], dtype=int))
        if len(rows) < s.launch_per_intent:
            raise ValueError(f"intent {lab!r} has {len(rows)} train rows, fewer than launch_per_intent")
        launch_rows.append(rng.choice(rows, size=s.launch_per_intent, replace=False))
    launch_idx = np.concatenate(launch_rows)
    launch_idx = launch_idx[rng.permutation(len(launch_idx))]
    n_launch = len(launch_idx)
    launch = train.iloc[launch_idx].reset_index(drop=True)
    launch["channel"] = np.asarray(s.channels, dtype=object)[rng.integers(len(s.channels), size=n_launch)]
    launch["tier"] = _tiers(rng, s.tiers, n_launch)

    rest = train.drop(index=train.index[launch_idx]).reset_index(drop=True)
    is_new = rest["label"].isin(new_intents).to_numpy()
    n = len(rest)
    day = np.where(is_new, rng.integers(s.new_from_day, s.days, size=n), rng.integers(0, s.days, size=n))
    ms = rng.integers(0, _DAY_MS, size=n)
    channel = np.where(
        is_new, _new_channels(rng, s, n), np.asarray(s.channels, dtype=object)[rng.integers(len(s.channels), size=n)]
    )
    traffic = pd.DataFrame(
        {
            "timestamp": start + pd.to_timedelta(day * _DAY_MS + ms, unit="ms"),
            "day": day.astype(int),
            "input": rest["text"],
            "label": rest["label"],
            "group": np.where(is_new, "new", "launch"),
            "channel": channel,
            "tier": _tiers(rng, s.tiers, n),
        }
    )
    traffic["timestamp"] = traffic["timestamp"].astype("datetime64[ns, UTC]")
    traffic = traffic.sort_values("timestamp", kind="stable").reset_index(drop=True)
    traffic.insert(0, "trace_id", [f"b77-{s.seed}-{i:06d}" for i in range(n)])

    test["group"] = np.where(test["label"].isin(new_intents), "new", "launch")
    return ScenarioData(launch, traffic, test, launch_intents, new_intents, labels, s)


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------
def _normalise(texts: pd.Series) -> set[str]:
    return set(texts.str.strip().str.lower().str.replace(r"\s+", " ", regex=True))


def duplicate_texts(data: ScenarioData) -> tuple[int, int]:
    """Distinct texts in both train.csv (launch + traffic) and test.csv: exact, and after case/space folding."""
    train = pd.concat([data.launch["text"], data.traffic["input"]], ignore_index=True)
    exact = len(set(train) & set(data.test["text"]))
    return exact, len(_normalise(train) & _normalise(data.test["text"]))


def _trace_records(day: pd.DataFrame) -> list[dict]:
    """Rows in the trace contract: no label, prediction, confidence or model version."""
    return [
        {
            "trace_id": r.trace_id,
            "timestamp": iso(r.timestamp),
            "input": r.input,
            "output": "",
            "channel": r.channel,
            "tier": r.tier,
            "context": None,
            "metadata": "{}",
        }
        for r in day.itertuples(index=False)
    ]


def write(data: ScenarioData, out_dir: Path) -> dict[str, str]:
    """Write launch.csv, traces/YYYY-MM-DD.jsonl, truth.parquet, test.parquet and scenario.json atomically.

    Point a `files` trace source at the returned "traces" folder (the other files are not traces). Raises
    ValueError if traces/ already holds day files this scenario does not write (another scenario's leftovers).
    """
    out_dir = Path(out_dir)
    traces_dir = out_dir / "traces"
    days = {f"{d:%Y-%m-%d}.jsonl": g for d, g in data.traffic.groupby(data.traffic["timestamp"].dt.date, sort=True)}
    stale = sorted(p.name for p in traces_dir.glob("*.jsonl") if p.name not in days) if traces_dir.is_dir() else []
    if stale:
        raise ValueError(
            f"{traces_dir} holds trace files this scenario does not write, e.g. {stale[:3]}; write to an empty folder."
        )

    paths = {
        "launch": atomic_write(
            out_dir / "launch.csv",
            lambda p: data.launch[["text", "label", "channel", "tier"]].to_csv(p, index=False, lineterminator="\n"),
        ),
        "traces": traces_dir,
        "truth": atomic_write(
            out_dir / "truth.parquet", lambda p: data.traffic[["trace_id", "label"]].to_parquet(p, index=False)
        ),
        "test": atomic_write(
            out_dir / "test.parquet", lambda p: data.test[["text", "label", "group"]].to_parquet(p, index=False)
        ),
    }
    for name, day in days.items():
        write_jsonl(_trace_records(day), traces_dir / name)

    exact, folded = duplicate_texts(data)
    meta = {
        "source": ATTRIBUTION,
        "scenario": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(data.scenario).items()},
        "launch_intents": data.launch_intents,
        "new_intents": data.new_intents,
        "rows": {
            "launch.csv": len(data.launch),
            "truth.parquet": len(data.traffic),
            "test.parquet": len(data.test),
            "traces": {name: len(day) for name, day in days.items()},
            "traffic_by_group": {g: int((data.traffic["group"] == g).sum()) for g in ("launch", "new")},
        },
        "train_test_duplicate_texts": exact,
        "train_test_duplicate_texts_case_space_folded": folded,
    }
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    paths["scenario"] = atomic_write(out_dir / "scenario.json", lambda p: p.write_text(text, encoding="utf-8"))
    return {k: str(v) for k, v in paths.items()}


def from_config(cfg: ScenarioConfig) -> Banking77Scenario:
    """The scenario a config's `scenario` section describes."""
    return Banking77Scenario(Path(cfg.data_dir).expanduser(), seed=cfg.seed, n_new_intents=cfg.n_new_intents,
                             new_intents=tuple(cfg.new_intents), launch_per_intent=cfg.launch_per_intent,
                             days=cfg.days, new_from_day=cfg.new_from_day)
