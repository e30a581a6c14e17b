"""Rollback of `@champion` (hitl/learning/promotion.py, `hitl rollback`): which version may be restored, what the
registry shows afterwards, and the rollback as a row of the report's trend (hitl/evaluation/summary.py)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from hitl.evaluation import report_charts, summary
from hitl.learning import promotion
from hitl.learning.promotion import ROLLED_BACK, Promotion, RollbackRefused

ROOT = Path(tempfile.gettempdir())  # a model version's source: the registry reads only its tags and aliases here


@pytest.fixture(scope="module")
def registry(local_mlflow):
    from mlflow import MlflowClient

    return MlflowClient()


def _model(client, name: str, approved: tuple[str, ...] = ("2", "3"), stage1: str = promotion.BOOTSTRAP) -> str:
    """Versions 1-3 of `name`: v1 from the bootstrap (or `stage1`), the `approved` ones approved, v3 @champion
    promoted over v2, which is @previous."""
    client.create_registered_model(name)
    for v in ("1", "2", "3"):
        client.create_model_version(name, source=str(ROOT))
        client.set_model_version_tag(name, v, promotion.STAGE_TAG, stage1 if v == "1" else "fine_tune")
    for v in approved:
        client.set_model_version_tag(name, v, promotion.APPROVED_BY, "ann")
    client.set_registered_model_alias(name, promotion.PREVIOUS, "2")
    client.set_registered_model_alias(name, promotion.CHAMPION, "3")
    return name


def _aliases(client, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_rollback_restores_previous_and_marks_the_version_rolled_back(registry):
    name = _model(registry, "rb-default")
    assert promotion.rollback_target(name, None, registry) == ("3", "2")
    promotion.rollback(name, Promotion("3", "2", "bo", "v3 misroutes card_lost since Tuesday", kind=promotion.ROLLBACK,
                                       at="2026-12-04T10:00:00+00:00", entry=7), registry)
    assert _aliases(registry, name) == {"champion": "2", "previous": "3"}
    tags = registry.get_model_version(name, "3").tags
    assert (tags[ROLLED_BACK["by"]], tags[ROLLED_BACK["to"]], tags[ROLLED_BACK["entry"]]) == ("bo", "2", "7")
    assert registry.get_model_version(name, "2").tags[promotion.APPROVED_BY] == "ann"  # its approval untouched
    assert promotion.PENDING_TAG not in registry.get_registered_model(name).tags
    (rb,) = promotion.rollbacks(name, registry)
    assert rb == {"at": "2026-12-04T10:00:00+00:00", "from_version": "3", "to_version": "2", "by": "bo",
                  "reason": "v3 misroutes card_lost since Tuesday"}
    # @previous is now the version rolled back: rolling "back" again would bring it back, so it must be named
    with pytest.raises(RollbackRefused, match="rolled back by bo.*name the version to restore with --to"):
        promotion.rollback_target(name, None, registry)
    assert promotion.rollback_target(name, "v3", registry) == ("2", "3")  # named on purpose (as status prints it)
    assert promotion.rollback_target(name, "1", registry) == ("2", "1")  # the launch champion


@pytest.mark.parametrize(("to", "says"), [
    ("3", "v3 is already @champion"),
    ("9", "has no version 9"),
    ("1", "v1 was never approved"),
])
def test_a_rollback_that_would_not_restore_an_approved_champion_is_refused(registry, to, says):
    name = _model(registry, f"rb-refused-{to}", stage1="fine_tune")
    with pytest.raises(RollbackRefused, match=says):
        promotion.rollback_target(name, to, registry)
    assert _aliases(registry, name) == {"champion": "3", "previous": "2"}


def test_without_previous_or_champion_the_refusal_says_what_to_do(registry):
    registry.create_registered_model("rb-none")
    with pytest.raises(RollbackRefused, match="no @champion"):
        promotion.rollback_target("rb-none", None, registry)
    registry.create_model_version("rb-none", source=str(ROOT))
    registry.set_registered_model_alias("rb-none", promotion.CHAMPION, "1")
    with pytest.raises(RollbackRefused, match="no @previous .*--to"):
        promotion.rollback_target("rb-none", None, registry)


def _eval(at: str, champion: str, challenger: str, rate: float) -> dict:
    return {"at": pd.Timestamp(at, tz="UTC"), "champion_version": champion, "challenger_version": challenger,
            **{k: rate for k in summary.TREND_ESTIMATES}, "n": 400, "decision": "approve"}


def test_the_trend_shows_every_release_and_each_rollback_in_time_order():
    evals = [_eval("2026-09-01 10:00", "1", "2", 0.2), _eval("2026-12-01 10:00", "2", "3", 0.1)]
    rollbacks = [{"at": "2026-12-03T09:30:00+00:00", "from_version": "3", "to_version": "2", "by": "bo",
                  "reason": "v3 misroutes card_lost"}]
    t = summary.releases(evals, rollbacks)
    assert t["when"].tolist() == ["09-01 10:00", "12-01 10:00", "12-03 09:30"]
    assert t["decision"].tolist()[-1] == "rollback to v2 by bo: v3 misroutes card_lost"
    assert (t.iloc[-1]["champion_version"], t.iloc[-1]["challenger_version"]) == ("3", "2")
    assert all(math.isnan(t.iloc[-1][k]) for k in summary.TREND_ESTIMATES) and t.iloc[-1]["n"] == 0
    # a rollback before the next eval sorts between them; the chart draws it without estimates
    later = summary.releases([*evals, _eval("2027-03-01 10:00", "2", "4", 0.08)], rollbacks)
    assert later["decision"].tolist()[2].startswith(summary.ROLLBACK) and later["challenger_version"].iloc[3] == "4"
    assert report_charts.trend_png(later, "95%")
    assert summary.releases([], []).empty and len(summary.releases([], rollbacks)) == 1


def test_an_approval_made_against_a_champion_rolled_back_since_is_not_carried_out(registry):
    """An eval of v4 against champion v3 waits for approval; meanwhile v3 is rolled back to v2. Approving v4
    then would set @previous to the version rolled back and skip the comparison with v2: refused, nothing moves."""
    name = _model(registry, "rb-stale")
    registry.create_model_version(name, source=str(ROOT))  # v4, the challenger evaluated against v3
    promotion.rollback(name, Promotion("3", "2", "bo", "v3 misroutes card_lost since Tuesday",
                                       kind=promotion.ROLLBACK, at="2026-12-04T10:00:00+00:00", entry=7), registry)
    with pytest.raises(promotion.ChampionMoved, match="@champion of rb-stale is v2, not v3.*run the regression eval"):
        promotion.promote(name, Promotion("3", "4", "ann", "gate passed"), registry)
    assert _aliases(registry, name) == {"champion": "2", "previous": "3"}
    assert promotion.PENDING_TAG not in registry.get_registered_model(name).tags
    promotion.promote(name, Promotion("2", "4", "ann", "gate passed against v2"), registry)  # a fresh eval's
    assert _aliases(registry, name) == {"champion": "4", "previous": "2"}
    promotion.promote(name, Promotion("2", "4", "ann", "gate passed against v2"), registry)  # again: a no-op
    assert _aliases(registry, name) == {"champion": "4", "previous": "2"}


def test_the_eval_records_an_approval_it_could_not_carry_out_and_the_chain_still_verifies(registry, tmp_path,
                                                                                           monkeypatch):
    """tasks/evaluation.promote (its body, without Prefect's run context): after a rollback the stale approval
    returns False, moves nothing, and is in the audit chain as 'approve, not carried out'."""
    import logging

    from helpers_domain import make_cfg

    from hitl.audit import evidence
    from hitl.review.store import ReviewStore
    from tasks import evaluation

    monkeypatch.setattr(evaluation, "get_run_logger", lambda: logging.getLogger("test"))
    name = _model(registry, "rb-task")
    registry.create_model_version(name, source=str(ROOT))  # v4, evaluated against v3
    promotion.rollback(name, Promotion("3", "2", "bo", "v3 misroutes card_lost since Tuesday",
                                       kind=promotion.ROLLBACK, at="2026-12-04T10:00:00+00:00", entry=1), registry)
    cfg = make_cfg(tmp_path, model={"registered_name": name})
    cfg.state.mkdir(parents=True)
    store = ReviewStore(cfg.store_url)
    assert evaluation.promote.fn(cfg, store, registry, "3", "4", "ann", "gate passed on the estimate") is False
    assert _aliases(registry, name) == {"champion": "2", "previous": "3"}
    log = evidence.open_log(cfg, store)
    (entry,) = [e for e in log.entries() if e.kind == "decision"]
    assert entry.ref["decision"] == evaluation.NOT_CARRIED_OUT and "is v2, not v3" in entry.ref["reason"]
    assert evidence.verify(log, store, name, mlflow=True).ok
