"""The benchmark's own machinery (bench/): the warm-started learner, curve summaries, the estimate check."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_domain import make_cfg

from bench import estimate_check
from bench import learning_curves as lc


def test_warm_lr_matches_scikit_learn_and_keeps_weights_across_rounds():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8))
    y = rng.integers(0, 5, 400)
    X = centers[y] + 0.8 * rng.normal(size=(400, 8))
    labels = np.array([f"c{i}" for i in y])
    ours = lc.WarmLR(C=10.0).fit(X[:300], labels[:300])
    ref = LogisticRegression(C=10.0, max_iter=2000, tol=1e-8).fit(X[:300], labels[:300])
    assert (ours.predict(X[300:]) == ref.predict(X[300:])).mean() >= 0.98
    assert np.allclose(ours.predict_proba(X[300:]), ref.predict_proba(X[300:]), atol=0.02)
    more = np.r_[labels[:300], ["new"] * 20]
    ours.fit(np.vstack([X[:300], rng.normal(5, 0.3, size=(20, 8))]), more)  # a class appears: warm start grows
    assert list(ours.classes_) == sorted(set(more)) and ours.predict(np.full((1, 8), 5.0))[0] == "new"


def test_auc_reach_and_paired_difference_on_fixed_curves():
    curves = pd.DataFrame([
        {"seed": s, "strategy": k, "labels": x, "acc_new": a}
        for s in (0, 1, 2) for k, pts in (("a", [0.0, 0.5, 0.8]), ("b", [0.0, 0.3, 0.6]))
        for x, a in zip((0, 100, 200), np.asarray(pts) + 0.01 * s, strict=True)
    ])
    one = curves[(curves["seed"] == 0) & (curves["strategy"] == "a")]
    assert lc.auc(one) == pytest.approx((0.25 * 100 + 0.65 * 100) / 200)
    assert lc.labels_to_reach(one, 0.65) == pytest.approx(150.0)
    assert lc.labels_to_reach(one, 0.9) == float("inf")
    m, lo, hi = lc.paired_auc_difference(curves, "a", "b")
    assert m == pytest.approx(100 * (0.45 - 0.30)) and lo == pytest.approx(m) == pytest.approx(hi)  # no spread


def test_estimate_check_agrees_with_an_independent_sample(tmp_path):
    """A population with a known fail pattern: the report's estimate and the independent sample agree."""
    rng = np.random.default_rng(1)
    n = 20_000
    cfg = make_cfg(tmp_path, labels=["a", "b", "c"], cohorts=["channel"],
                   selection={"strata": ["channel"], "window": "day"})
    traffic = pd.DataFrame({
        "trace_id": [f"t{i}" for i in range(n)],
        "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 86400, n), "s"),
        "label": rng.choice(["a", "b", "c"], n), "channel": rng.choice(["app", "web"], n, p=[0.2, 0.8])})
    wrong = rng.random(n) < np.where(traffic["channel"] == "app", 0.4, 0.1)
    champion = np.where(wrong, np.where(traffic["label"] == "a", "b", "a"), traffic["label"])
    challenger = traffic["label"].to_numpy().copy()
    out = estimate_check.run(traffic, champion, challenger, cfg, n_random=400, n_independent=2000, noise=0.05,
                             seed=3).set_index("model")
    assert out.loc["champion", "independent_fail_rate"] == pytest.approx(0.16, abs=0.03)
    assert out["within"].all(), out


def test_replace_section_rewrites_one_section_and_keeps_the_rest(tmp_path):
    from bench.report import replace_section

    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n## 2. Two\n\nkeep\n\n## 3. Three\n\nold\nold\n\n## 4. Four\n\nkeep too\n")
    replace_section(doc, 3, "## 3. Three\n\nnew\n")
    assert doc.read_text() == "# B\n\n## 2. Two\n\nkeep\n\n## 3. Three\n\nnew\n\n## 4. Four\n\nkeep too\n"
    replace_section(doc, 4, "## 4. Four\n\nlast\n")  # the last section runs to the end of the file
    assert doc.read_text().endswith("## 4. Four\n\nlast\n")


def test_a_missing_section_is_appended_and_section_text_reads_it_back(tmp_path):
    """`--review-form` writes its section into a file without one; a full bench run carries it over."""
    from bench.report import replace_section, section_text

    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n## 6. Six\n\nkeep\n")
    assert section_text(doc, 7) == "" and section_text(tmp_path / "none.md", 7) == ""
    replace_section(doc, 7, "## 7. Seven\n\nform\n")
    assert doc.read_text() == "# B\n\n## 6. Six\n\nkeep\n\n## 7. Seven\n\nform\n"
    assert section_text(doc, 7) == "## 7. Seven\n\nform\n" and section_text(doc, 6) == "## 6. Six\n\nkeep\n"


# ---------------------------------------------------------------------------------------------- quarters
def test_quarters_scenario_brings_each_group_in_its_quarter_and_never_reuses_a_row():
    from pathlib import Path

    from bench import quarters as qb

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"
    setup = qb.Setup()
    s = qb.build(data, seed=1, setup=setup)
    assert sorted(sum(s.groups.values(), [])) == sorted(s.labels)  # every intent in exactly one group
    assert [len(s.groups[g]) for g in ("q1-new", "q2-new")] == list(setup.new_per_quarter)
    assert set(s.launch["label"]) == set(s.groups["launch"])
    assert (s.launch["label"].value_counts() == setup.launch_per_intent).all()
    arrived = set(s.groups["launch"])
    seen = set(s.launch["text"])
    for q, traffic in enumerate(s.quarters, start=1):
        arrived |= set(s.groups.get(f"q{q}-new", []))
        assert set(traffic["label"]) == arrived  # what has arrived, and nothing that has not
        assert (traffic["group"] == traffic["label"].map({lab: g for g, ls in s.groups.items() for lab in ls})).all()
        spoken = traffic["channel"] == qb.VOICE
        if q == setup.voice_quarter:
            assert abs(spoken.mean() - setup.voice_share) < 0.05
            assert not traffic.loc[spoken, "input"].str.contains(r"[A-Z?.,!]").any()
        else:
            assert not spoken.any()
        assert traffic["trace_id"].is_unique and traffic["timestamp"].is_monotonic_increasing
        typed = set(traffic.loc[~spoken, "input"])
        assert not typed & seen  # BANKING77 has a few repeated texts; none is split across launch and quarters
        seen |= typed
    assert len(s.test) == len(s.test_voice) == 3080 and (s.test.groupby("group").size() >= 1000).all()


def test_world_quarters_scenario_brings_its_intents_quarter_by_quarter_and_speaks_from_its_templates():
    from bench import quarters as qb

    setup = qb.Setup(**qb.WORLD_SETUP)
    s = qb.build(Path("unused"), seed=2, setup=setup)
    assert sorted(sum(s.groups.values(), [])) == sorted(s.labels) and len(s.groups["launch"]) == 4
    assert [len(s.groups[g]) for g in ("q1-new", "q2-new")] == [3, 3]
    arrived = set(s.groups["launch"])
    for q, traffic in enumerate(s.quarters, start=1):
        arrived |= set(s.groups.get(f"q{q}-new", []))
        assert set(traffic["label"]) == arrived
        spoken = traffic["channel"] == qb.VOICE
        assert spoken.any() == (q == setup.voice_quarter)
        assert not traffic.loc[spoken, "input"].str.contains(r"[A-Z?.,!]").any()
    assert len(s.test) == len(s.test_voice) == 10 * qb.WORLD_TEST
    again = qb.build(Path("unused"), seed=2, setup=setup)
    assert again.test_voice.equals(s.test_voice) and again.quarters[2]["input"].equals(s.quarters[2]["input"])


def _bag_of_words(texts: list[str]) -> np.ndarray:
    """A stand-in encoder for fast bench tests: hashed word counts, L2-normalised."""
    import zlib

    out = np.zeros((len(texts), 256))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 256] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_growing_regression_set_reads_one_quarter_or_every_window_against_the_truth():
    from bench import quarters as qb

    setup = qb.Setup(**qb.WORLD_SETUP)
    rows = pd.DataFrame(qb.growing_set_seed(0, setup, _bag_of_words, Path("unused")))
    assert list(rows["quarter"].unique()) == [1, 2, 3] and set(rows["horizon"]) == {"one quarter", "every window"}
    quarter, every = (rows[rows["horizon"] == h].set_index("quarter") for h in ("one quarter", "every window"))
    assert (quarter.loc[1, "n"] == every.loc[1, "n"]) and quarter.loc[1, "older"] == 0
    assert every.loc[3, "n"] == sum(quarter.loc[q, "n"] for q in (1, 2, 3)) and every.loc[3, "older"] == 0
    assert quarter.loc[3, "older"] == quarter.loc[1, "n"] + quarter.loc[2, "n"]
    for who in ("champion", "challenger"):
        assert rows[f"{who}_truth"].between(0, 1).all() and rows[who].between(0, 1).all()
    text = qb.growing_set_markdown({"seeds": [0], "rows": rows.to_dict("records"), "measured": "today",
                                    "minutes": 0.1, "budget": setup.budget, "quarter_days": 28})
    assert text.count("| one quarter |") == 3 and "within the binomial's central 95%" in text


def test_voice_rendering_is_lower_case_without_punctuation_and_seeded():
    from bench import quarters as qb

    text = "Why hasn't my Card arrived yet? It's been 2 weeks!"
    a = qb.voice(text, np.random.default_rng(5))
    assert a == qb.voice(text, np.random.default_rng(5)) and a == a.lower()
    assert not set("?!.,") & set(a)
    words = ["why", "hasn't", "my", "card", "arrived", "yet", "it's", "been", "2", "weeks"]
    spoken = a.split()[-len(words):]  # a filler may come first; a swap keeps a word's letters
    assert [sorted(w) for w in spoken] == [sorted(w) for w in words]
    rendered = [qb.voice(text, np.random.default_rng(k)) for k in range(200)]
    assert 0.3 < np.mean([r.split()[0] != "why" for r in rendered]) < 0.7  # a filler about half the time


def test_seed_blocked_paired_difference():
    from bench import quarters as qb

    rng = np.random.default_rng(0)
    other = rng.random(1000) < 0.3
    model = np.where(rng.random(1000) < 0.1, ~other, other)
    d, var = qb._paired(model, other)
    assert d == pytest.approx(other.mean() - model.mean())
    m1, lo1, hi1 = qb.blocked([(model, other)])
    m3, lo3, hi3 = qb.blocked([(model, other)] * 3)  # three identical seeds: same mean, interval sqrt(3) narrower
    assert m1 == pytest.approx(100 * d) == pytest.approx(m3)
    assert (hi1 - lo1) / (hi3 - lo3) == pytest.approx(np.sqrt(3)) and hi1 - lo1 == pytest.approx(
        2 * 1.96 * 100 * np.sqrt(var), rel=1e-3)


def test_the_head_only_line_says_where_launch_accuracy_is_lost_from_its_own_figures():
    from bench import quarters as qb

    def variant(high: float) -> dict:
        rows = [{"strategy": "policy", "group": "launch", "quarter": q, "vs_bootstrap": -2.0 * q,
                 "vs_bootstrap_low": -2.0 * q - 1, "vs_bootstrap_high": high, "vs_anchor": -1.0,
                 "vs_anchor_low": -2.0, "vs_anchor_high": 0.0} for q in (1, 2, 3)]
        return {"setup": {"seeds": [0, 1], "training": {"continue_learning_rate": 1e-9}}, "table": rows}

    lost = qb.frozen_encoder_line(variant(-0.5))
    assert "-2.0 [-3.0, -0.5] pts at quarter 1 and -6.0 [-7.0, -0.5] pts at quarter 3 (2 seeds)" in lost
    assert "not in the encoder" in lost
    assert "the loss from continuing is in the encoder" in qb.frozen_encoder_line(variant(+0.5))



def test_launch_items_are_read_among_the_launch_intents_alone_and_counted_when_sent_to_later_ones():
    """`_within` restricts each prediction to the launch intents; the summary pairs those predictions with the
    bootstrap champion and counts launch items sent to intents added later, for the model and the anchor."""
    from bench import quarters as qb

    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    assert list(qb._within(probs, ["a", "new", "b"], ["a", "b"])) == ["b", "a", "b"]
    test = pd.DataFrame({"text": ["x"] * 4, "label": ["a", "b", "a", "new"], "group": ["launch"] * 3 + ["q1-new"]})
    s = qb.Scenario(pd.DataFrame(), [], test, pd.Series(["x"] * 4), {"launch": ["a", "b"], "q1-new": ["new"]},
                    ["a", "b", "new"])
    pred = np.array(["new", "b", "a", "new"], dtype=object)  # the first launch item taken for the new intent
    within = np.array(["a", "b", "a", "a"], dtype=object)  # ... and right among the launch intents alone
    anchor_pred = np.array(["a", "a", "a", "new"], dtype=object)
    rows = []
    for seed in (0, 1):
        rows += qb._rows(seed, "policy", 1, 10, s, pred, pred, anchor_pred, anchor_pred, pred, (within, anchor_pred))
    launch = qb.summary(rows).set_index("group").loc["launch"]
    assert launch["model_acc"] == pytest.approx(100 * 2 / 3) and launch["within_acc"] == pytest.approx(100)
    assert launch["sent_later"] == pytest.approx(100 / 3) and launch["anchor_sent_later"] == 0
    assert launch["anchor_within_acc"] == pytest.approx(100 * 2 / 3) and launch["within_vs_bootstrap"] > 0
    assert "within_acc" not in qb.summary([{k: v for k, v in r.items() if "within" not in k and "later" not in k}
                                           for r in rows])


def test_the_launch_loss_lines_read_their_figures_and_say_nothing_for_runs_without_them():
    from bench import quarters as qb

    def result(low: float) -> dict:
        rows = [{"strategy": "bootstrap", "group": "launch", "quarter": 0, "model_acc": 93.0}]
        rows += [{"strategy": "policy", "group": "launch", "quarter": q, "model_acc": 93.0 - q,
                  "within_acc": 93.0 - q / 3, "within_vs_bootstrap": -0.3 * q, "within_vs_bootstrap_low": low,
                  "within_vs_bootstrap_high": 1.0, "sent_later": 1.5 * q, "anchor_sent_later": 1.0 * q,
                  "vs_bootstrap_low": -1.5 * q, "train_rows": 540 + 150 * q} for q in (1, 2, 3)]
        costs = [{"seed": k, "launch_alone": 95.0, "every_intent": 95.0 - d, "sent_later": 4.0 + k, "C": 10.0,
                  "intents": [27, 77], "train_rows": 10003} for k, d in enumerate((2.0, 3.0, 4.0))]
        tuned = [{"seed": k, "epochs": 3.0, "launch_alone": 96.0, "every_intent": 96.0 - d, "sent_later": 2.0 + k,
                  "intents": [27, 77], "launch_alone_rows": 3500 + k, "every_intent_rows": 10003}
                 for k, d in enumerate((1.0, 2.0))]
        return {"table": rows, "label_set_cost": costs,
                "label_set_cost_fine_tune": {"seeds": tuned, "measured": "2026-12-07", "minutes": 40.0}}

    held, lines, tuned = qb.launch_loss_lines(result(-0.4))
    assert "At quarter 3 the model is -3.0 pts against it on the launch test items: -2.0 from items it takes for " \
           "intents added later (it sends 4.5% of them there; the anchor on the same rows 3.0%), and -1.0 among the " \
           "launch intents themselves" in held
    assert "-0.3 [-0.4, +1.0] -> -0.6 [-0.4, +1.0] -> -0.9 [-0.4, +1.0] pts" in held
    assert "lowest lower bound -0.4 (above -1)" in held and "the loss is launch traffic taken for" in held
    assert "27 launch intents alone; knowing all 77, 92.0% (-3.0 pts; by seed -2.0, -3.0, -4.0), sending 5.0% of " \
           "them to the intents added later." in lines
    assert "2 seeds, 3 epochs each" in tuned and "launch intents (3500 rows) scores 96.0%" in tuned
    assert "all 77 (10003), 94.5% (-1.5 pts; by seed -1.0, -2.0), sending 2.5% of them" in tuned
    assert "The model of quarter 3 (990 rows) scores 90.0% there: -4.5 pts against the recipe on every row" in tuned
    assert "told apart less well among themselves" in qb.launch_loss_lines(result(-1.5))[0]
    old = result(-0.4)
    assert qb.launch_loss_lines({"table": [{k: v for k, v in r.items() if "within" not in k} for r in old["table"]]}) \
        == []
    met = {**old, "table": [{**r, "vs_bootstrap_low": -0.5} for r in old["table"]]}
    assert qb.launch_loss_lines(met) == []  # no loss to read


def test_the_price_of_a_larger_label_set_is_measured_on_every_training_row():
    from bench import quarters as qb

    setup = qb.Setup(**qb.WORLD_SETUP)
    cost = qb.label_set_cost(0, setup, _bag_of_words, Path("unused"))
    assert cost["intents"] == [4, 10] and cost["train_rows"] == 10 * qb.WORLD_TRAIN
    assert 0 <= cost["every_intent"] <= 100 and 0 <= cost["launch_alone"] <= 100 and 0 <= cost["sent_later"] <= 100
    assert cost["every_intent"] <= 100 - cost["sent_later"] + 1e-9  # an item sent to a later intent is wrong


def test_the_quarters_say_which_selection_each_run_picked_with():
    """A run that recorded no selection (before 2026-12-06) picked with the defaults before; one of a selection
    variant with that variant's settings; today's defaults are named as such."""
    from bench import quarters as qb

    old = {"setup": {"seeds": [0], "training": {}}}
    today = {"setup": {"seeds": [0], "training": {}}, "policy_selection": qb.policy_selection()}
    variant = {"setup": {"seeds": [0], "training": {}, "selection": "policy-consensus"}}
    line = qb.selection_line(old, {"x": today, "y": variant})
    assert re.search(r"picks\): default(, x)? picked with uncertain 0\.35, novel 0\.3, disagreement 0\.2, flagged "
                     r"0\.15; 3 per cluster, best first; 10 neighbours", line), line
    assert "y picked with novel 0.3, flagged 0.15, consensus 1; 1 per cluster, typical first; 10 neighbours" in line
    assert line.count("(the product defaults today)") == 1


def test_a_policy_only_run_of_new_selection_defaults_replaces_only_the_policy_rows():
    from bench import quarters as qb

    setup = {"seeds": [0, 1], "budget": 150, "training": {}, "strategies": ["policy", "random"], "selection": "",
             "from_base": True}

    def row(strategy: str, acc: float) -> dict:
        return {"strategy": strategy, "quarter": 1, "group": "launch", "model_acc": acc, "vs_bootstrap": 0.0}

    base = {"setup": setup, "measured": "2026-12-04", "minutes": 66.0, "checks": [{"seed": 0, "within": False}],
            "table": [row("bootstrap", 92.3), row("policy", 91.6), row("random", 91.7)]}
    variant = {"setup": {**setup, "strategies": ["policy"], "selection": "policy-consensus"}, "measured": "2026-12-06",
               "minutes": 40.0, "checks": [{"seed": 0, "within": True}],
               "table": [row("bootstrap", 92.3), row("policy", 90.0)]}
    adopted, before = qb.adopt_policy(base, variant)
    assert {(r["strategy"], r["model_acc"]) for r in adopted["table"]} == {("bootstrap", 92.3), ("random", 91.7),
                                                                         ("policy", 90.0)}
    assert adopted["checks"] == variant["checks"] and adopted["policy_measured"] == "2026-12-06"
    assert adopted["policy_selection"] == qb.policy_selection("policy-consensus")
    assert {(r["strategy"], r["model_acc"]) for r in before["table"]} == {("bootstrap", 92.3), ("policy", 91.6)}
    assert before["policy_selection"]["cluster_pick"] == "best" and before["setup"]["strategies"] == ["policy"]
    newer = {**variant, "setup": {**variant["setup"], "scenario": "banking77"}}
    assert qb.adopt_policy(base, newer)[0]["table"] == adopted["table"]  # settings added since: their defaults
    with pytest.raises(ValueError, match="differ in budget"):
        qb.adopt_policy(base, {**variant, "setup": {**variant["setup"], "budget": 100}})
    with pytest.raises(ValueError, match="policy alone"):
        qb.adopt_policy(base, {**variant, "setup": {**variant["setup"], "strategies": ["policy", "random"]}})
    with pytest.raises(ValueError, match="bootstrap rows of the two runs differ"):
        qb.adopt_policy(base, {**variant, "table": [row("bootstrap", 92.4), row("policy", 90.0)]})


def test_a_variant_s_launch_path_is_read_beside_the_default_s_with_its_own_bootstrap():
    from bench import quarters as qb

    def res(accs: list[float], seeds: list[int], training: dict, from_base: bool = True) -> dict:
        rows = [{"strategy": "bootstrap" if q == 0 else "policy", "group": g, "quarter": q,
                 "model_acc": a if g == "launch" else 0.0} for q, a in enumerate(accs) for g in ("voice", "launch")]
        return {"setup": {"seeds": seeds, "training": training, "from_base": from_base}, "table": rows}

    line = qb.launch_path_line(res([93.4, 92.5, 92.2, 91.7], [0, 1, 2], {}), "continue",
                               res([92.3, 91.6, 89.9, 89.4], [0, 1], {"validation_share": 0.15}, from_base=False))
    assert "to quarter 3, continue (validation_share=0.15, from the champion) (2 seeds): 92.3 -> 91.6 -> 89.9 -> " \
           "89.4;" in line
    assert "the default (3 seeds): 93.4 -> 92.5 -> 92.2 -> 91.7." in line
    assert "-1.1 pts on launch against the default's" in line and "a weaker bootstrap" in line
    assert "at the last quarter it is -2.3 pts against the default" in line
    stronger = qb.launch_path_line(res([92.0, 92.5], [0], {}), "w", res([93.0, 92.0], [0], {}))
    assert "a stronger bootstrap" in stronger and "to quarter 1" in stronger and "-0.5 pts against the default" in \
        stronger


def test_a_run_names_what_its_recipe_changes_from_today_s_default():
    """A run records its whole recipe; one written before it did (its overrides, with `validation_share` and
    `from_base` spelled out) is read as those overrides over today's defaults, so a later change of a default
    does not rename a run."""
    from bench import quarters as qb
    from hitl.config import TrainingConfig

    today = TrainingConfig().model_dump(include=set(qb.RECIPE_KEYS))
    assert qb._recipe_name("default", {"setup": {"training": {}}, "recipe": today}) == "default"
    older = {**today, "start": "champion" if today["start"] == "base" else "base", "balance_power": 0.25,
             "reset_head": not today["reset_head"]}
    name = qb._recipe_name("old", {"setup": {"training": {}, "selection": "policy-consensus"}, "recipe": older})
    assert name.startswith("old (balance_power=0.25, ") and "reset_head=" in name and name.endswith(
        "selection policy-consensus)") and ("from the champion" in name or "from base" in name)
    before = {"setup": {"training": {"validation_share": 0.15}, "from_base": False}}
    assert qb.recipe_of(before) == {**today, "validation_share": 0.15, "start": "champion"}


def test_the_joint_training_line_reads_the_launch_path_beside_the_anchor_s():
    from bench import quarters as qb

    def res(model: list[float], anchor: list[float], low: float) -> dict:
        rows = [{"strategy": "bootstrap" if q == 0 else "policy", "group": "launch", "quarter": q, "model_acc": m,
                 "anchor_acc": a, "vs_bootstrap": m - model[0], "vs_bootstrap_low": low if q else 0.0,
                 "vs_bootstrap_high": 0.0} for q, (m, a) in enumerate(zip(model, anchor, strict=True))]
        return {"setup": {"seeds": [0, 1]}, "table": rows}

    gains = qb.joint_training_line(res([93.4, 92.5, 91.7], [90.9, 92.1, 91.5], -2.6))
    assert "By quarter 2 launch accuracy is -1.7 [-2.6, +0.0] pts" in gains and "does not meet" in gains
    assert "the anchor refitted on the same rows gains 0.6 pts" in gains and "from +2.5 to +0.2 pts" in gains
    assert "does not explain the loss by itself" in gains
    loses = qb.joint_training_line(res([93.4, 91.7], [90.9, 89.9], -2.6))
    assert "loses 1.0 pts" in loses and "part of the loss is the cost of more intents" in loses
    assert qb.joint_training_line(res([93.4, 93.0], [90.9, 91.0], -0.5)).endswith("meets the launch criterion "
                                                                                   "(lower bound above -1 point) here.")


def test_each_recipe_is_judged_on_its_lowest_bounds_over_the_quarters():
    """Per recipe: the lowest lower bound of launch vs bootstrap, launch vs anchor and any judged new group vs
    anchor (groups not arrived yet, the voice channel and groups under 1,000 test items left out); all above -1
    meets the criteria."""
    from bench import quarters as qb

    def res(launch_low: float, new_low: float, training: dict) -> dict:
        rows = []
        for q in (1, 2, 3):
            rows.append({"strategy": "policy", "group": "launch", "quarter": q, "n_test": 1080, "model_acc": 90.0,
                         "vs_bootstrap_low": launch_low - q, "vs_anchor_low": launch_low + 1 - q})
            rows.append({"strategy": "policy", "group": "q2-new", "quarter": q, "n_test": 1000,
                         "model_acc": 5.0 if q == 1 else 70.0, "vs_anchor_low": -9.0 if q == 1 else new_low + q})
            rows.append({"strategy": "policy", "group": qb.VOICE, "quarter": q, "n_test": 3080, "model_acc": 50.0,
                         "vs_anchor_low": -9.0})
            rows.append({"strategy": "policy", "group": "q3-few", "quarter": q, "n_test": 400, "model_acc": 50.0,
                         "vs_anchor_low": -9.0})
        return {"setup": {"seeds": [0, 1], "training": training}, "table": rows}

    lines = qb.criteria_by_recipe(res(-0.5, -1.0, {}), {"x": res(1.5, 0.0, {"balance_power": 0.0})})
    assert "| default | [0, 1] | -3.5 (quarter 3) | -2.5 (quarter 3) | +1.0 (quarter 2, q2-new) | no |" in lines
    assert "| x (balance_power=0) | [0, 1] | -1.5 (quarter 3) | -0.5 (quarter 3) | +2.0 (quarter 2, q2-new) | no |" \
        in lines
    assert lines[-1].endswith("| no |")
    met = qb.criteria_by_recipe(res(2.5, 0.0, {}), {})
    assert met[-1] == "| default | [0, 1] | -0.5 (quarter 3) | +0.5 (quarter 3) | +2.0 (quarter 2, q2-new) | yes |"


def test_a_world_variant_says_when_its_picks_teach_the_anchor_more_than_the_fine_tune():
    """The world's variants: at the last quarter on voice, the model and the anchor on the same rows beside the
    default's, and the report estimates' checks."""
    from bench import quarters as qb

    def res(model: float, anchor: float, within: list[bool], selection: str = "") -> dict:
        rows = [{"strategy": "policy", "group": qb.VOICE, "quarter": q, "model_acc": model - 3 + q,
                 "anchor_acc": anchor - 3 + q, "vs_anchor": model - anchor, "vs_anchor_low": model - anchor - 1,
                 "vs_anchor_high": model - anchor + 1} for q in (1, 2, 3)]
        return {"setup": {"seeds": [0], "training": {}, "selection": selection}, "table": rows,
                "checks": [{"within": w} for w in within]}

    line, = qb.anchor_gap_lines(res(89.2, 90.1, [True, True]),
                                {"consensus": res(89.3, 95.5, [True, False], "policy-consensus")})
    assert line.startswith("- consensus (selection policy-consensus), quarter 3, voice: the model 89.3 (default 89.2), "
                           "the anchor on the same rows 95.5 (default 90.1); model - anchor -6.2 [-7.2, -5.2] "
                           "(default -0.9 [-1.9, +0.1])."), line
    assert line.endswith("within tolerance in 50% of 2 checks (default 100%)."), line


# ---------------------------------------------------------------------------------------------- out-of-scope
def test_out_of_scope_folds_keep_unknown_intents_apart_from_the_out_of_scope_rows_trained_on():
    from pathlib import Path

    from bench import out_of_scope as oos
    from hitl.sim import banking77

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"
    labels = banking77.load_labels(data)
    setup = oos.Setup()
    folds = oos.folds_of(labels, seed=3, setup=setup)
    assert len(folds) == setup.folds
    assert sorted(sum((f.unknown for f in folds), [])) == sorted(set(sum((f.unknown for f in folds), [])))
    for f in folds:
        assert len(f.unknown) == len(f.oos_train) == setup.per_fold
        assert not set(f.unknown) & set(f.oos_train) and not (set(f.unknown) | set(f.oos_train)) & set(f.known)
        assert sorted([*f.unknown, *f.oos_train, *f.known]) == sorted(labels)
    assert folds == oos.folds_of(labels, seed=3, setup=setup) and folds != oos.folds_of(labels, seed=4, setup=setup)
    train = banking77._read_split(data / "train.csv", labels)
    texts, y = oos.training_rows(train, folds[0], np.random.default_rng(0), setup)
    counts = pd.Series(y).value_counts()
    assert counts[oos.FALLBACK] == setup.per_fold * setup.oos_per_intent
    known = counts.drop(oos.FALLBACK)
    assert len(counts) == len(folds[0].known) + 1 and set(known) == {setup.train_per_intent, setup.few_per_intent}
    assert (known == setup.few_per_intent).sum() == round(setup.few_share * len(folds[0].known))  # the few-example half
    _, again = oos.training_rows(train, folds[0], np.random.default_rng(0), setup)
    assert again == y  # seeded
    unknown_texts = set(train.loc[train["label"].isin(folds[0].unknown), "text"])
    assert not unknown_texts & set(texts)  # no row of an unknown intent is trained on, under any label
    with pytest.raises(ValueError, match="need more than"):
        oos.folds_of(labels, 0, oos.Setup(folds=7, per_fold=11))


def test_cross_fitted_thresholds_hold_the_false_abstention_rate_on_other_folds():
    from bench import out_of_scope as oos
    from hitl.learning import abstention

    rng = np.random.default_rng(1)
    n = 20_000
    in_scope = rng.random(n) < 0.8
    scores = np.where(in_scope, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n))
    cal = abstention.fold_of([str(i) for i in range(n)], 5)
    t = oos.thresholds_at(scores, in_scope, cal, 5, 0.05)
    assert len(np.unique(t)) == 5  # one threshold per fold, each fitted without that fold
    for g in range(5):  # the threshold of fold g comes from the other folds' in-scope scores only
        assert t[cal == g][0] == pytest.approx(np.quantile(scores[in_scope & (cal != g)], 0.05))
    assert abs((scores[in_scope] < t[in_scope]).mean() - 0.05) < 0.01
    from scipy.stats import norm
    expected_recall = norm.cdf(norm.ppf(0.05) + 1.0 - (-1.0))  # the unknown's scores sit 2 sd lower
    assert abs((scores[~in_scope] < t[~in_scope]).mean() - expected_recall) < 0.03


def test_cluster_interval_resamples_whole_intents():
    from bench import out_of_scope as oos

    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(40), 50)
    per_cluster = rng.random(40) < 0.5  # all of a cluster's items agree: 40 independent units, not 2,000
    values = per_cluster[clusters].astype(float)
    m, lo, hi = oos.cluster_interval(values, clusters)
    assert m == pytest.approx(values.mean())
    naive = 1.96 * np.sqrt(m * (1 - m) / len(values))
    clustered = 1.96 * np.sqrt(m * (1 - m) / 40)
    assert hi - lo == pytest.approx(2 * clustered, rel=0.25) and hi - lo > 4 * naive
    assert lo < m < hi


def test_mahalanobis_prefers_the_nearer_class_in_the_stretched_direction():
    from bench import out_of_scope as oos

    rng = np.random.default_rng(3)
    cov = np.diag([9.0, 0.25])  # wide along x, narrow along y
    a = rng.multivariate_normal([0, 0], cov, 500)
    b = rng.multivariate_normal([0, 3], cov, 500)
    train, labels = np.vstack([a, b]), np.array(["a"] * 500 + ["b"] * 500)
    score, at = oos.mahalanobis(train, labels, np.array([[4.0, 0.2], [0.0, 2.9], [0.0, 20.0]]))
    assert list(at[:2]) == [0, 1]  # (4, 0.2) is 4 away in x, yet a's: x is the wide direction
    assert score[2] < score[0] < 0  # far off both classes scores lowest


def test_label_share_is_read_seed_by_seed_against_each_seed_s_random_final():
    from bench.report import goal_line, label_share

    def curve(seed, strategy, accs):
        return [{"seed": seed, "strategy": strategy, "round": r, "labels": 100 * r, "acc_new": a}
                for r, a in enumerate(accs)]

    rows = [*curve(0, "random", [0, 0.2, 0.4, 0.6, 0.8]), *curve(0, "policy", [0, 0.4, 0.8, 0.9, 0.9]),
            *curve(1, "random", [0, 0.1, 0.2, 0.3, 0.4]), *curve(1, "policy", [0, 0.2, 0.3, 0.5, 0.6])]
    shares, (m, lo, hi) = label_share(pd.DataFrame(rows))
    assert shares == pytest.approx([200 / 400, 250 / 400])  # seed 1: 0.4 reached half-way from 200 to 300 labels
    assert m == pytest.approx(0.5625) and lo < m < hi
    line = goal_line(pd.DataFrame(rows), {"random_final_new": 0.6, "policy_reach": 220.0}, 400)
    assert "**not met**" in line and "56% of random's labels" in line and "by 6 points" in line
    never = [*rows, *curve(2, "random", [0, 0.5, 0.6, 0.7, 0.8]), *curve(2, "policy", [0, 0.1, 0.1, 0.1, 0.1])]
    shares, (m, _, _) = label_share(pd.DataFrame(never))
    assert np.isinf(shares[-1]) and np.isinf(m)


def test_sampling_scale_texts_are_distinct_and_its_bars_are_read_from_the_runs(tmp_path):
    import json

    from bench import sampling_scale as ss

    texts = ss.unique_texts(20_000)
    assert len(set(texts)) == 20_000  # BANKING77's 13k texts, then typo'd copies
    ss.write_traces(120, tmp_path / "t")
    lines = (tmp_path / "t" / "traces-000.jsonl").read_text().splitlines()
    assert len(lines) == 120 and len({json.loads(x)["trace_id"] for x in lines}) == 120

    def row(n, wall, peak, path="partitioned", engine="onnx-int8"):
        return {"n": n, "wall_s": wall, "traces_per_s": n / wall, "peak_rss_mib": peak, "path": path,
                "engine": engine, "selected": 1, "stages_s": {}}

    rows = [row(100, 1.0, 1000, "before (x)", "torch"), row(100, 0.25, 1000), row(1000, 2.6, 1200)]
    v = ss.verdict(rows, (100, 1000))
    assert v["per_trace_vs_smallest"][1000] == pytest.approx(1.04) and v["linear"]
    assert v["peak_vs_smallest"][1000] == pytest.approx(1.2) and v["memory"]
    assert v["rate_vs_before"] == pytest.approx(4.0) and v["min_rate"] == pytest.approx(1000 / 2.6)
    slower = ss.verdict([*rows[:2], row(1000, 3.0, 1300)], (100, 1000))
    assert not slower["linear"] and not slower["memory"]  # 1.2x the time a trace, 1.3x the peak


def test_the_served_score_is_ranked_and_thresholded_without_the_item_s_fold():
    from bench import out_of_scope as oos
    from hitl.learning import abstention

    rng = np.random.default_rng(3)
    n = 4000
    in_scope = rng.random(n) < 0.8
    parts = np.column_stack([np.where(in_scope, rng.normal(1, 1, n), rng.normal(-1, 1, n)),
                             np.where(in_scope, rng.normal(3, 2, n), rng.normal(0, 2, n))])
    cal = abstention.fold_of([str(i) for i in range(n)], 5)
    score, abstain = oos.cross_fitted_abstain(parts, in_scope, cal, 5, 0.05)
    truth = np.where(in_scope, "in", oos.FALLBACK)
    for g in range(5):  # fold g: ranked on the scale of the other folds' in-scope items, cut at their 5% quantile
        rest = cal != g
        combined = abstention.combine(parts, abstention.fit_scale(parts[rest], truth[rest], oos.FALLBACK))
        assert np.allclose(score[cal == g], combined[cal == g])
        assert np.array_equal(abstain[cal == g], combined[cal == g] < np.quantile(combined[in_scope & rest], 0.05))
    assert abs(abstain[in_scope].mean() - 0.05) < 0.015
    one, one_abstain = oos.cross_fitted_abstain(parts[:, 0], in_scope, cal, 5, 0.05)  # one score: as before
    assert np.array_equal(one_abstain, parts[:, 0] < oos.thresholds_at(parts[:, 0], in_scope, cal, 5, 0.05))


def test_an_ablation_drops_its_component_and_its_signal_from_the_consensus():
    cfg = lc.bench_config(["a", "b"])
    full = lc._policy_kwargs("policy", cfg)
    assert full["signals"] == ("uncertain", "novel", "disagreement") and full["weights"] == cfg.selection.components
    no_novel = lc._policy_kwargs("policy-no-novel", cfg)
    assert no_novel["signals"] == ("uncertain", "disagreement") and "novel" not in no_novel["weights"]
    no_consensus = lc._policy_kwargs("policy-no-consensus", cfg)
    assert "consensus" not in no_consensus["weights"] and no_consensus["signals"] == full["signals"]
    assert lc._policy_kwargs("policy-no-diversity", cfg)["diversity"] is False
    assert set(lc.ABLATIONS) == {f"policy-no-{x}" for x in ("uncertain", "novel", "disagreement", "diversity",
                                                              "dedup")}


def test_selection_variants_are_valid_settings_and_their_section_reads_the_figures():
    from bench import selection_variants as sv

    for name, settings in lc.VARIANTS.items():
        cfg = lc.bench_config(["a", "b"], settings)
        assert cfg.selection.model_dump()["components"] == settings["components"], name

    def curve(seed, strategy, accs):
        return [{"seed": seed, "strategy": strategy, "round": r, "labels": 100 * r, "acc_new": a, "acc_launch": 0.9,
                 "acc_all": 0.8} for r, a in enumerate(accs)]

    rows = [*curve(0, "random", [0, 0.2, 0.4, 0.6, 0.8]), *curve(0, "policy", [0, 0.4, 0.8, 0.9, 0.9]),
            *curve(0, "policy-x", [0, 0.8, 0.9, 0.9, 0.9]),
            *curve(1, "random", [0, 0.1, 0.2, 0.3, 0.4]), *curve(1, "policy", [0, 0.2, 0.3, 0.5, 0.6]),
            *curve(1, "policy-x", [0, 0.3, 0.5, 0.6, 0.7])]
    s = sv.summarize(pd.DataFrame(rows), ["random", "policy", "policy-x"])
    policy, x = s["rows"]
    assert s["random_final_new"] == pytest.approx(0.6)
    assert policy["share"][0] == pytest.approx(0.5625) and "share_vs_policy" not in policy
    assert x["shares"] == pytest.approx([100 / 400, (100 + 100 / 2) / 400])  # seed 1: 0.4 half-way to 0.5
    assert x["share_vs_policy"][0] == pytest.approx(np.mean([0.25 - 0.5, 0.375 - 0.625]))
    result = {"date": "2026-12-06", "minutes": 1.0, "variants": {"policy-x": {"cluster_quota": 1}},
              "sets": {"fresh seeds": {"seeds": [0, 1], **s}}}
    md = sv.to_markdown(result)
    assert md.startswith("## 13. ") and "`policy-x`: `cluster_quota: 1`" in md
    assert "| fresh seeds (0, 1) | policy | " in md and "56.2% [" in md
    assert f"reaches random's final (60.0%) at {100 * x['reach'] / 400:.1f}% of random's labels" in md
    # the seed mean is under half; the upper bound is not, with two seeds this far apart
    assert "At most half on the seed mean: **yes**; with the interval's upper bound too: **no**." in md


def test_an_out_of_scope_run_says_how_its_model_trained():
    from bench import out_of_scope as oos

    assert oos._recipe_text({}) == ""  # a run before runs recorded their recipe
    early = oos._recipe_text({"recipe": {"epochs": 8.0, "validation_share": 0.15}})
    assert early == (" The product's model trained with early stopping on a 15% validation split (at most 8 epochs), "
                     "then a refit on every row.")
    assert oos._recipe_text({"recipe": {"epochs": 8.0, "validation_share": 0.0}}) == \
        " The product's model trained 8 epochs on every row."
    assert oos._recipe_text({"recipe": {"epochs": 8.0, "validation_share": 0.0, "pseudo_outlier_weight": 0.0}}) == \
        " The product's model trained 8 epochs on every row, without pseudo outliers."
    assert oos._recipe_text({"recipe": {"epochs": 8.0, "validation_share": 0.0, "pseudo_outlier_weight": 1.0}}) \
        .startswith(" The product's model trained 8 epochs on every row, with pseudo outliers (weight 1: ")


def test_out_of_scope_summary_reads_recall_seed_by_seed_and_against_the_anchor():
    """Section 11's table from items: recall on unknown intents per scorer and per seed (a gap between seeds is
    shown, not only their mean), false abstention on in-scope ones, and the difference against the anchor."""
    from bench import out_of_scope as oos

    rows = []
    for seed in (0, 1):
        for i in range(40):
            unknown = i < 20
            rows.append({"seed": seed, "fold": 0, "intent": f"i{seed}{i % 4}", "group": "g", "unknown": unknown,
                         "examples": 0 if unknown else 20, "product_argmax_fallback": False,
                         # the product refuses every unknown item of seed 0 and none of seed 1; every other scorer
                         # refuses nothing; nobody refuses an in-scope item
                         **{f"{n}_abstain": unknown and seed == 0 and n == "product" for n in oos.SCORERS},
                         **{f"{n}_correct": not unknown for n in oos.SCORERS}})
    s = oos.summary(pd.DataFrame(rows))
    product = next(r for r in s["scorers"] if r["scorer"] == "product")
    assert product["recall"] == pytest.approx(50.0) and product["false_abstention"] == 0.0
    assert product["vs_anchor"] == pytest.approx(50.0)
    by_seed = {b["value"]: b["product_recall"] for b in s["by"] if b["by"] == "seed"}
    assert by_seed == {"0": pytest.approx(100.0), "1": pytest.approx(0.0)}
    assert s["unknown_intents"] == 8 and s["in_scope_items"] == 40
    # the same fine-tune with its encoder mixed refuses none of them: paired against the served model
    assert s["mixed_vs_product"]["difference"] == pytest.approx(-50.0)
    assert s["mixed_vs_product"]["in_scope_accuracy"] == pytest.approx(0.0)
