"""The report's refusal rows (hitl/evaluation/refusals.py): what they count, and their intervals against the truth
of a finite population in simulation, drawn as the sampling flow draws (stratified, unequal weights)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg

from hitl.evaluation import refusals, regression

FALLBACK = "out_of_scope"
LAUNCH, NEW = ["card_lost", "balance"], ["crypto_wallet"]
LABELS = [*LAUNCH, *NEW, FALLBACK]


def _cfg(tmp_path, **evaluation):
    return make_cfg(tmp_path, labels=LABELS, fallback_label=FALLBACK, cohorts=["channel"],
                    evaluation={"label_groups": {"launch": LAUNCH}, **evaluation})


def _sample(labels: list[str], channels: list[str], strata: list[str] | None = None,
            inclusion: list[float] | None = None) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(n)], "label": labels, "channel": channels,
                         "window": "2026-01-01", "stratum": strata or ["s"] * n,
                         "inclusion_prob": inclusion or [0.5] * n})


def test_rows_count_refusals_of_in_scope_and_out_of_scope_traffic_apart(tmp_path):
    cfg = _cfg(tmp_path)
    labels = ["card_lost", "balance", "crypto_wallet", "crypto_wallet", FALLBACK, FALLBACK, FALLBACK, FALLBACK]
    channels = ["web", "web", "web", "voice", "web", "voice", "voice", "web"]
    champion = ["card_lost", "balance", FALLBACK, FALLBACK, FALLBACK, "balance", "card_lost", "balance"]
    challenger = ["card_lost", FALLBACK, "crypto_wallet", FALLBACK, FALLBACK, FALLBACK, FALLBACK, "balance"]
    t = refusals.table(_sample(labels, channels), champion, challenger, FALLBACK, NEW, cfg,
                       regression.Settings.of(cfg)).set_index(["traffic", "cohort", "value"])
    inside = t.loc[(refusals.IN_SCOPE, refusals.ALL, refusals.ALL)]
    assert (inside["n"], inside["champion"], inside["challenger"]) == (4, 0.5, 0.5)
    assert t.loc[(refusals.IN_SCOPE, "label_group", "launch"), ["champion", "challenger"]].tolist() == [0.0, 0.5]
    new = t.loc[(refusals.IN_SCOPE, refusals.NEW_LABELS, "crypto_wallet")]
    assert (new["n"], new["champion"], new["challenger"]) == (2, 1.0, 0.5)
    out = t.loc[(refusals.OUT_OF_SCOPE, refusals.ALL, refusals.ALL)]
    assert (out["n"], out["champion"], out["challenger"]) == (4, 0.25, 0.75)  # recall
    assert out["delta"] == pytest.approx(0.5)
    assert t.loc[(refusals.OUT_OF_SCOPE, "channel", "voice"), "challenger"] == 1.0
    assert t.loc[(refusals.IN_SCOPE, "channel", "voice"), "n"] == 1
    for _, r in t.iterrows():
        for who in ("champion", "challenger", "delta"):
            assert r[f"{who}_low"] - 1e-12 <= r[who] <= r[f"{who}_high"] + 1e-12


def test_no_out_of_scope_draws_is_a_row_without_estimates(tmp_path):
    cfg = _cfg(tmp_path)
    t = refusals.table(_sample(["card_lost", "balance"], ["web", "web"]), ["card_lost", FALLBACK],
                       ["card_lost", "balance"], FALLBACK, [], cfg, regression.Settings.of(cfg))
    assert refusals.overall(t, refusals.OUT_OF_SCOPE) is None
    assert refusals.overall(t, refusals.IN_SCOPE)["delta"] == pytest.approx(-0.5)
    assert refusals.NEW_LABELS not in set(t["cohort"])


def test_the_new_labels_row_names_a_few_and_counts_the_rest(tmp_path):
    labels = [f"intent_{i}" for i in range(8)]
    cfg = make_cfg(tmp_path, labels=[*labels, FALLBACK], fallback_label=FALLBACK, cohorts=["channel"])
    t = refusals.table(_sample(labels, ["web"] * 8), labels, labels, FALLBACK, labels[::-1], cfg,
                       regression.Settings.of(cfg))
    row = t[t["cohort"] == refusals.NEW_LABELS].iloc[0]
    assert row["value"] == "intent_0, intent_1, intent_2, intent_3, intent_4 and 3 more" and row["n"] == 8


DRAWS = 1000
# population: three day-window strata of unequal size, each drawn with 120 traces (weights about 1:3:7)
SIZES = {"w1": 2_000, "w2": 6_000, "w3": 14_000}
PER_STRATUM = 120


def _population(rng: np.random.Generator) -> pd.DataFrame:
    """Labels and each model's refusals, fixed: the truth is the population's own shares. Refusal rates differ
    by stratum, label group and model (the challenger refuses out-of-scope traffic more, new intents less)."""
    parts = []
    for k, (stratum, size) in enumerate(SIZES.items()):
        kind = rng.choice(["launch", "new", "out"], size=size, p=[0.75 - 0.05 * k, 0.15, 0.10 + 0.05 * k])
        champion_p = np.select([kind == "launch", kind == "new"], [0.03 + 0.01 * k, 0.20], 0.40 + 0.1 * k)
        challenger_p = np.select([kind == "launch", kind == "new"], [0.04, 0.12 + 0.02 * k], 0.55 + 0.1 * k)
        u = rng.random(size)  # one uniform: the models' refusals are correlated, as on the same traces
        label = np.where(kind == "launch", rng.choice(LAUNCH, size=size), np.where(kind == "new", NEW[0], FALLBACK))
        parts.append(pd.DataFrame({"label": label, "channel": rng.choice(["web", "voice"], size=size),
                                   "window": "2026-01-01", "stratum": stratum, "inclusion_prob": PER_STRATUM / size,
                                   "champion": np.where(u < champion_p, FALLBACK, "card_lost"),
                                   "challenger": np.where(u < challenger_p, FALLBACK, "balance")}))
    return pd.concat(parts, ignore_index=True)


def _truth(pop: pd.DataFrame, mask: np.ndarray) -> dict[str, float]:
    a, b = (pop.loc[mask, "champion"] == FALLBACK).mean(), (pop.loc[mask, "challenger"] == FALLBACK).mean()
    return {"champion": a, "challenger": b, "delta": b - a}


@pytest.mark.slow(reason="1,000 simulated draws through the report's refusal table (about 10 s)")
def test_refusal_intervals_hold_the_population_truth(tmp_path):
    cfg = _cfg(tmp_path)
    settings = regression.Settings.of(cfg)
    rng = np.random.default_rng(7)
    pop = _population(rng)
    inside = (pop["label"] != FALLBACK).to_numpy()
    truths = {(refusals.IN_SCOPE, refusals.ALL): _truth(pop, inside),
              (refusals.IN_SCOPE, "label_group"): _truth(pop, pop["label"].isin(LAUNCH).to_numpy()),
              (refusals.IN_SCOPE, refusals.NEW_LABELS): _truth(pop, (pop["label"] == NEW[0]).to_numpy()),
              (refusals.OUT_OF_SCOPE, refusals.ALL): _truth(pop, ~inside)}
    groups = [np.flatnonzero((pop["stratum"] == s).to_numpy()) for s in SIZES]
    covered = {(key, who): 0 for key in truths for who in ("champion", "challenger", "delta")}
    errors = {key: [] for key in truths}
    for _ in range(DRAWS):
        idx = np.concatenate([rng.choice(g, PER_STRATUM, replace=False) for g in groups])
        s = pop.iloc[idx].reset_index(drop=True)
        t = refusals.table(s, list(s["champion"]), list(s["challenger"]), FALLBACK, NEW, cfg, settings)
        t = t[t["cohort"] != "channel"].set_index(["traffic", "cohort"])
        for key, truth in truths.items():
            r = t.loc[key]
            errors[key].append(r["delta"] - truth["delta"])
            for who in ("champion", "challenger", "delta"):
                low, high = r[f"{who}_low" if who != "delta" else "delta_low"], r[f"{who}_high"]
                covered[(key, who)] += low <= truth[who] <= high
    target = 1 - settings.look_alpha
    mcse = np.sqrt(target * (1 - target) / DRAWS)
    coverage = {k: v / DRAWS for k, v in covered.items()}
    low = {k: c for k, c in coverage.items() if c < target - 3 * mcse}
    assert not low, f"intervals hold the truth less often than {target:.1%}: {low}"
    # rates only: the change's variance is floored on purpose (few discordant pairs never give a narrow interval)
    useless = {k: c for k, c in coverage.items() if k[1] != "delta" and c > 0.995}
    assert not useless, f"intervals far wider than the truth needs: {useless}"
    bias = {k: float(np.mean(v)) for k, v in errors.items() if abs(np.mean(v)) > 3 * np.std(v) / np.sqrt(DRAWS)}
    assert not bias, f"the change is biased: {bias}"
