"""Representative draw (hitl/sampling/representative.py): allocation, stratified SRS, supplemental draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.sampling.representative import (
    DRAW_COLUMNS,
    allocate,
    draw_rates,
    stratified_draw,
    stratum_key,
    supplemental_draw,
)


def _population(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = np.repeat(list(sizes), list(sizes.values()))
    rng.shuffle(channel)
    return pd.DataFrame({
        "trace_id": [f"tr-{i:05d}" for i in range(channel.size)],
        "channel": channel,
        "tier": rng.choice(["free", "pro"], channel.size),
    }, index=np.arange(channel.size) * 3 + 100)  # a non-default index that must survive the draw


# ---- stratum_key ----

def test_stratum_key_joins_columns_and_defaults_to_all():
    frame = pd.DataFrame({"channel": ["voice", "web"], "tier": ["free", "pro"]}, index=[5, 9])
    key = stratum_key(frame, ["channel", "tier"])
    assert key.tolist() == ["channel=voice|tier=free", "channel=web|tier=pro"]
    assert key.index.tolist() == [5, 9]
    assert stratum_key(frame, []).tolist() == ["all", "all"]
    missing = pd.DataFrame({"channel": ["web", None], "tier": [1, 2]})
    assert stratum_key(missing, ["channel", "tier"]).tolist() == ["channel=web|tier=1", "channel=nan|tier=2"]


# ---- allocate ----

def test_allocate_hand_cases():
    # quotas 5.7, 2.4, 1.9 -> floors 5, 2, 1; the two largest remainders (.9 and .7) get the last two
    assert allocate({"a": 57, "b": 24, "c": 19}, 10, min_per_stratum=0) == {"a": 6, "b": 2, "c": 2}
    # b and c would get 0.4 and 0.2: lifted to the minimum 2, the rest (16) goes to a
    assert allocate({"a": 970, "b": 20, "c": 10}, 20) == {"a": 16, "b": 2, "c": 2}
    # minimums (2 + 2 + 2) exceed n = 4: purely proportional 2, 1, 1
    assert allocate({"a": 200, "b": 100, "c": 100}, 4) == {"a": 2, "b": 1, "c": 1}
    # a stratum smaller than the minimum is taken whole; n beyond the population takes everything
    assert allocate({"a": 1000, "b": 1}, 10, min_per_stratum=3) == {"a": 9, "b": 1}
    assert allocate({"a": 3, "b": 4}, 50) == {"a": 3, "b": 4}
    assert allocate({}, 5) == {}


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=8), n=st.integers(0, 2500),
       min_per_stratum=st.integers(0, 6))
def test_allocate_properties(sizes, n, min_per_stratum):
    strata = {f"s{i}": size for i, size in enumerate(sizes)}
    out = allocate(strata, n, min_per_stratum)
    assert list(out) == list(strata)
    assert sum(out.values()) == min(n, sum(sizes))
    assert all(0 <= out[k] <= strata[k] for k in strata)
    floors = {k: min(min_per_stratum, v) for k, v in strata.items()}
    if n >= sum(floors.values()):
        assert all(out[k] >= floors[k] for k in strata)
    # strata strictly between their bounds share one proportionality factor, up to rounding
    inner = [k for k in strata if floors[k] < out[k] < strata[k]]
    if len(inner) >= 2:
        ratios = [out[k] / strata[k] for k in inner]
        lam_low = max((out[k] - 1) / strata[k] for k in inner)
        lam_high = min((out[k] + 1) / strata[k] for k in inner)
        assert lam_low < lam_high, ratios


def test_allocate_rejects_negative():
    with pytest.raises(ValueError):
        allocate({"a": 5}, -1)


# ---- stratified_draw ----

def test_stratified_draw_inclusion_probabilities_and_rows():
    pop = _population({"web": 700, "app": 250, "voice": 50})
    drawn = stratified_draw(pop, ["channel"], 100, np.random.default_rng(1), min_per_stratum=20)
    alloc = allocate({"channel=app": 250, "channel=voice": 50, "channel=web": 700}, 100, 20)
    assert alloc == {"channel=app": 21, "channel=voice": 20, "channel=web": 59}  # 80 split 700:250 -> 58.9:21.1
    assert len(drawn) == 100 and drawn.index.is_unique
    assert drawn.index.isin(pop.index).all()
    pd.testing.assert_frame_equal(drawn[pop.columns], pop.loc[drawn.index])  # original rows, untouched
    for stratum, group in drawn.groupby("stratum"):
        n_h, big_n = alloc[stratum], int((stratum_key(pop, ["channel"]) == stratum).sum())
        assert len(group) == n_h
        assert (group["stratum_draws"] == n_h).all() and (group["stratum_size"] == big_n).all()
        assert np.allclose(group["inclusion_prob"], n_h / big_n)
    assert (drawn["stratum"] == stratum_key(drawn, ["channel"])).all()


def test_stratified_draw_is_deterministic_and_random():
    pop = _population({"web": 300, "app": 100})
    a = stratified_draw(pop, ["channel", "tier"], 40, np.random.default_rng(3))
    b = stratified_draw(pop, ["channel", "tier"], 40, np.random.default_rng(3))
    c = stratified_draw(pop, ["channel", "tier"], 40, np.random.default_rng(4))
    pd.testing.assert_frame_equal(a, b)
    assert set(a.index) != set(c.index)
    assert a["stratum"].nunique() == 4


def test_stratified_draw_is_uniform_within_strata():
    pop = _population({"web": 40, "voice": 10})
    rng = np.random.default_rng(5)
    reps = 1000
    hits = np.zeros(len(pop))
    for _ in range(reps):
        np.add.at(hits, pop.index.get_indexer(stratified_draw(pop, ["channel"], 10, rng, min_per_stratum=4).index), 1)
    prob = pop["channel"].map({"web": 6 / 40, "voice": 4 / 10}).to_numpy()  # allocation 6 + 4
    assert np.all(np.abs(hits / reps - prob) < 5 * np.sqrt(prob * (1 - prob) / reps))


@pytest.mark.parametrize("n", [0, 5])
def test_stratified_draw_empty(n):
    pop = _population({"web": 5})
    out = stratified_draw(pop.iloc[0:0] if n else pop, ["channel"], n, np.random.default_rng(0))
    assert out.empty
    assert list(out.columns) == [*pop.columns, *DRAW_COLUMNS]


# ---- supplemental_draw / draw_rates ----

def test_supplemental_draw_inclusion_probability_is_exactly_the_rate():
    # rate * N_h is 1.5, 2.5 and 0.4 (default): rounding, flooring or ceiling would miss the rate by >= 0.1
    pop = _population({"web": 5, "app": 10, "voice": 4})
    rates = {"channel=web": 0.3, "channel=app": 0.25}
    expected = pop["channel"].map({"web": 0.3, "app": 0.25, "voice": 0.1})
    rng = np.random.default_rng(11)
    reps = 2000
    hits = np.zeros(len(pop))
    for _ in range(reps):
        drawn = supplemental_draw(pop, ["channel"], rates, 0.1, rng)
        np.add.at(hits, pop.index.get_indexer(drawn.index), 1)
    assert np.allclose(drawn["inclusion_prob"], expected[drawn.index])
    assert (drawn.groupby("stratum").size() == drawn.groupby("stratum")["stratum_draws"].first()).all()
    prob = expected.to_numpy()
    assert np.all(np.abs(hits / reps - prob) < 5 * np.sqrt(prob * (1 - prob) / reps))


def test_supplemental_draw_bounds_counts_and_rejects_bad_rates():
    pop = _population({"web": 10, "app": 3})
    rng = np.random.default_rng(2)
    counts = {supplemental_draw(pop, ["channel"], {"channel=web": 0.37}, 1.0, rng)["channel"].eq("web").sum()
              for _ in range(200)}
    assert counts == {3, 4}  # floor(3.7) or floor(3.7) + 1
    full = supplemental_draw(pop, ["channel"], {}, 1.0, rng)
    assert set(full.index) == set(pop.index)
    with pytest.raises(ValueError):
        supplemental_draw(pop, ["channel"], {"channel=web": 1.2}, 0.1, rng)


def test_draw_rates_round_trip():
    pop = _population({"web": 500, "app": 120, "voice": 30})
    main = stratified_draw(pop, ["channel"], 60, np.random.default_rng(0), min_per_stratum=10)
    rates = draw_rates(main)
    assert set(rates) == {"channel=web", "channel=app", "channel=voice"}
    assert rates["channel=voice"] == pytest.approx(10 / 30)
    late = _population({"web": 200, "app": 50, "voice": 20, "email": 10}, seed=1)
    extra = supplemental_draw(late, ["channel"], rates, 0.5, np.random.default_rng(1))
    got = draw_rates(extra)
    for stratum, rate in rates.items():
        assert got[stratum] == pytest.approx(rate)
    assert got["channel=email"] == 0.5
    with pytest.raises(ValueError):
        draw_rates(main.assign(inclusion_prob=np.linspace(0.1, 0.2, len(main))))
