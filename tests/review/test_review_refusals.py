"""Bad review input (issue 17): labels outside the set, an empty reviewer, an oversize rationale, a replayed
resume and a config with a typo are each refused with a one-line message, store nothing, and show no traceback,
at the store (ReviewStore.submit) and through the CLI (`hitl review`, `hitl relabel`, any command's config).

The CLI tests stand in for the Prefect server only where it is needed: the paused run is listed by a fake
`paused_runs`, and `resume_flow_run` validates the answers with the run's real form (tasks/review.py) and
then stores them as the review flow does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pydantic
import pytest
import yaml
from helpers_domain import LABELS, review_items
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from hitl.review import forms, prefect_api
from hitl.review.store import Base, ReviewError, ReviewStore

RATIONALE_LIMIT = 40
REFUSED = {"store": 0, "cli": 0}


def snapshot(store: ReviewStore) -> dict[str, list[tuple]]:
    """Every row of every table of the store: equal before and after means nothing was stored."""
    with store.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in Base.metadata.sorted_tables}


def one_line(message: str) -> bool:
    return "\n" not in message.strip() and message.strip() != ""


# ---- the store ----

@pytest.fixture(scope="module")
def open_batch(tmp_path_factory):
    store = ReviewStore(f"sqlite:///{tmp_path_factory.mktemp('refusals') / 'review.db'}")
    store.enqueue(review_items(4), ["channel", "locale", "tier"])
    return store, store.take_batch(4)


bad_labels = st.text(max_size=30).filter(lambda s: s not in LABELS and s != forms.NONE_FITS)
blank = st.text(alphabet=" \t\r\n\u00a0\u2003", max_size=5)
long_names = st.text(min_size=101, max_size=300).filter(lambda s: len(s.strip()) > 100)
long_notes = st.text(min_size=RATIONALE_LIMIT + 1, max_size=500)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fault=st.sampled_from(["label", "reviewer", "long_reviewer", "rationale", "stranger"]), data=st.data())
def test_bad_submissions_are_refused_whole_with_one_line(open_batch, fault, data):
    store, batch = open_batch
    ids = [it["trace_id"] for it in batch.items]
    labels: dict[str, tuple[str, str | None]] = {t: (LABELS[0], "fine") for t in ids}
    reviewer = "alice"
    target = data.draw(st.sampled_from(ids))
    if fault == "label":
        labels[target] = (data.draw(bad_labels), None)
    elif fault == "reviewer":
        reviewer = data.draw(blank)
    elif fault == "long_reviewer":
        reviewer = data.draw(long_names)
    elif fault == "rationale":
        labels[target] = (LABELS[1], data.draw(long_notes))
    else:
        labels["not-in-this-batch"] = (LABELS[0], None)
    before = snapshot(store)
    with pytest.raises(ReviewError) as err:
        store.submit(batch.id, reviewer, labels, LABELS, max_rationale_chars=RATIONALE_LIMIT)
    assert one_line(str(err.value))
    assert snapshot(store) == before
    REFUSED["store"] += 1


def test_a_replayed_submission_stores_nothing_the_second_time(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue(review_items(3), ["channel", "locale", "tier"])
    batch = store.take_batch(3)
    answer = {it["trace_id"]: (LABELS[0], "clear") for it in batch.items}
    assert store.submit(batch.id, "alice", answer, LABELS).stored == 3
    after_first = snapshot(store)
    for who, labels in (("alice", answer), ("bob", {t: (LABELS[1], None) for t in answer})):
        again = store.submit(batch.id, who, labels, LABELS)
        assert again.already_submitted and again.stored == 0
        assert snapshot(store) == after_first
        REFUSED["store"] += 1


def test_adjudication_and_correction_refuse_bad_input(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue(review_items(1), ["channel", "locale", "tier"])
    before = snapshot(store)
    for reviewer, label in (("", LABELS[0]), ("x" * 101, LABELS[0]), ("ann", "not_a_label")):
        with pytest.raises(ReviewError) as err:
            store.resolve("t000", label, reviewer, "because", "correction", LABELS)
        assert one_line(str(err.value))
        REFUSED["store"] += 1
    assert snapshot(store) == before


# ---- the command line ----

def _write_config(tmp_path: Path, **overrides) -> Path:
    raw = {"labels": LABELS, "state_dir": str(tmp_path / "state"),
           "review": {"max_rationale_chars": RATIONALE_LIMIT}} | overrides
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class PausedReview:
    """One paused review run over a real batch; resuming validates with the run's form, then stores."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        from prefect.exceptions import NotPausedError

        from hitl.config import load_config
        from tasks.review import build_form

        self.config = _write_config(tmp_path)
        self.cfg = load_config(self.config)
        self.cfg.state.mkdir(parents=True)
        self.store = ReviewStore(self.cfg.store_url)
        self.store.enqueue(review_items(2), self.cfg.cohorts)
        self.run_id = str(uuid.uuid4())
        self.batch = self.store.take_batch(2)
        self.store.attach_flow_run(self.batch.id, self.run_id)
        self.form = build_form(self.batch, self.cfg)
        self.run = prefect_api.PausedRun(self.run_id, "review-batch-x", "review-batch", prefect_api.REVIEW_FORM,
                                         self.form.model_json_schema(), "## Review batch", "2026-01-01T00:00:00")
        self.paused, self.listed = True, True

        def resume_flow_run(flow_run_id, run_input):
            if not self.paused:
                raise NotPausedError("Cannot resume a run that isn't paused!")
            try:
                self.form.model_validate(run_input)
            except pydantic.ValidationError as e:
                raise RuntimeError(f"Cannot resume this run: Run input validation failed: {e}") from None
            self.paused = False
            reviewer, labels = forms.parse_answer(run_input, self.batch.items, self.cfg.labels)
            self.store.submit(self.batch.id, reviewer, labels, self.cfg.labels,
                              max_rationale_chars=self.cfg.review.max_rationale_chars)

        monkeypatch.setattr(prefect_api, "paused_runs", lambda form=None: [self.run] if self.listed else [])
        monkeypatch.setattr("prefect.flow_runs.resume_flow_run", resume_flow_run)
        monkeypatch.setattr("hitl.cli.reviewer._stack_ready", lambda cfg: None)
        monkeypatch.setattr("hitl.cli.apply_environment", lambda cfg: None)

    def hitl(self, *args: str, input: str | None = None):
        from hitl.cli import app

        return CliRunner().invoke(app, [*args, "-c", str(self.config)], input=input)


@pytest.fixture
def paused(tmp_path, monkeypatch):
    return PausedReview(tmp_path, monkeypatch)


def _refused(result, code: int, message: str) -> None:
    """Exit `code`, `message` on a line of its own (one line), no traceback."""
    out = result.output
    assert result.exit_code == code, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    assert [line for line in out.splitlines() if message in line], f"{message!r} not in {out!r}"
    REFUSED["cli"] += 1


def test_cli_review_happy_path_stores_the_labels(paused):
    result = paused.hitl("review", "--reviewer", "alice", input="1\nclear\n2\n\n")
    assert result.exit_code == 0, result.output
    assert "Submitted 2 labels as alice" in result.output
    assert sorted(paused.store.annotations()["label"]) == sorted(LABELS[:2])


def test_cli_review_refuses_a_label_outside_the_set(paused):
    before = snapshot(paused.store)
    result = paused.hitl("review", "--reviewer", "alice", input="crypto_wallet\n9\n")
    _refused(result, 1, "Input ended before the batch was complete: nothing was submitted.")
    lines = result.output.splitlines()  # (a prompt and the answer after it share a line: input is not echoed)
    assert any(line.endswith("'crypto_wallet' is not a label. Type a number 1-4 or a label name.") for line in lines)
    assert any(line.endswith("'9' is not a label. Type a number 1-4 or a label name.") for line in lines)
    assert snapshot(paused.store) == before


@pytest.mark.parametrize("how", [["--reviewer", "   "], ["--reviewer", "r" * 101], []])
def test_cli_review_refuses_an_empty_or_overlong_reviewer_before_any_labelling(paused, how):
    before = snapshot(paused.store)
    result = paused.hitl("review", *how, input="\n1\n\n1\n\n")
    _refused(result, 1, "Not submitted: the reviewer name must be 1 to 100 characters (--reviewer NAME).")
    assert "label>" not in result.output
    assert snapshot(paused.store) == before


def test_cli_review_refuses_an_oversize_rationale_and_asks_again(paused):
    before = snapshot(paused.store)
    long = "x" * (RATIONALE_LIMIT + 1)
    result = paused.hitl("review", "--reviewer", "alice", input=f"1\n{long}\n")
    _refused(result, 1, f"That is {RATIONALE_LIMIT + 1} characters; at most {RATIONALE_LIMIT} "
                        "(review.max_rationale_chars). Type a shorter one.")
    assert snapshot(paused.store) == before
    fixed = paused.hitl("review", "--reviewer", "alice", input=f"1\n{long}\nshort\n1\n\n")
    assert fixed.exit_code == 0, fixed.output
    assert list(paused.store.annotations()["rationale"].dropna()) == ["short"]


def test_cli_review_replayed_resume_stores_nothing(paused):
    answers = "1\n\n2\n\n"
    assert paused.hitl("review", "--reviewer", "alice", input=answers).exit_code == 0
    after_first = snapshot(paused.store)
    paused.listed = False  # the server no longer lists the resumed run
    _refused(paused.hitl("review", "--reviewer", "alice", "--run", paused.run_id, input=answers), 1,
             f"Not submitted: run {paused.run_id} is not a paused review batch")
    paused.listed = True  # a stale listing: the resume itself is refused, and the late path stores nothing
    _refused(paused.hitl("review", "--reviewer", "bob", input=answers), 1,
             f"Not submitted: batch {paused.batch.id} was already submitted; nothing was stored again.")
    assert snapshot(paused.store) == after_first


def test_cli_review_server_refusal_is_one_line(paused):
    """Whatever the server says when it refuses the values (pydantic's reasons span lines) is shown on one:
    here the run's form was built with a stricter rationale limit than this terminal's config."""
    from tasks.review import build_form

    before = snapshot(paused.store)
    strict = paused.cfg.review.model_copy(update={"max_rationale_chars": 3})
    paused.form = build_form(paused.batch, paused.cfg.model_copy(update={"review": strict}))
    result = paused.hitl("review", "--reviewer", "alice", input="1\nmore than three\n1\n\n")
    _refused(result, 1, "Not submitted: Cannot resume this run: Run input validation failed:")
    assert snapshot(paused.store) == before


def test_cli_relabel_refuses_bad_input(paused):
    before = snapshot(paused.store)
    _refused(paused.hitl("relabel", "t000", "not_a_label", "--reviewer", "ann", "--reason", "r"), 1,
             "Not corrected: Label 'not_a_label' is not in the label set")
    _refused(paused.hitl("relabel", "t000", LABELS[0], "--reviewer", " ", "--reason", "r"), 1,
             "Not corrected: Reviewer name is empty")
    assert snapshot(paused.store) == before


TYPOS = [("review", "max_rationale_char", "unknown key 'review.max_rationale_char' (did you mean "
                                          "'max_rationale_chars'?)"),
         (None, "lables", "unknown key 'lables' (did you mean 'labels'?)"),
         ("selection", "budgett", "unknown key 'selection.budgett' (did you mean 'budget'?)")]


@pytest.mark.parametrize(("section", "key", "message"), TYPOS)
@pytest.mark.parametrize("command", [["review"], ["metrics"], ["relabel", "t000", "card_lost", "--reviewer", "a",
                                                                "--reason", "r"]])
def test_cli_config_typo_is_one_line_exit_2(tmp_path, monkeypatch, command, section, key, message):
    from hitl.cli import app

    path = _write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    (raw.setdefault(section, {}) if section else raw)[key] = 1
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr("hitl.cli.apply_environment", lambda cfg: None)
    result = CliRunner().invoke(app, [*command, "-c", str(path)])
    _refused(result, 2, f"Config error: {path}: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()  # nothing created, let alone stored


def test_cli_config_typo_in_a_real_terminal_process(tmp_path):
    path = _write_config(tmp_path, reviw={"batch_size": 5})
    proc = subprocess.run([sys.executable, "-m", "hitl.cli", "review", "-c", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).parents[2])
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    assert out == f"Config error: {path}: unknown key 'reviw' (did you mean 'review'?)"
    REFUSED["cli"] += 1


def test_zz_refusal_figures():
    """Runs last in this module: how many bad review requests were refused (docs/reliability.md)."""
    if REFUSED["store"] == 0 and not os.environ.get("CI"):  # run on its own (-k); in CI the refusals run first
        pytest.skip("the refusal tests did not run in this session")
    print(f"\nbad review input: {REFUSED['store']} store submissions and {REFUSED['cli']} CLI requests refused, "
          "each with a one-line message, nothing stored, no traceback")
    assert REFUSED["store"] >= 150
