"""Flow: champion vs challenger as production estimates by cohort; gate; approval; promotion."""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import flow, get_run_logger

from hitl.evaluation import decision, regression, report
from hitl.ops.orphans import retry_crashed
from hitl.review.store import ReviewStore
from hitl.sim import world
from tasks import evaluation
from tasks.common import setup, wait_for_people
from tasks.review import approval_form

ASK = {"PASS": "**Approve** moves `@champion` to version {chall}; **reject** keeps version {champ}.",
       "INCONCLUSIVE": "The gate is **INCONCLUSIVE**: the data do not decide this release, and nothing is promoted "
                       "automatically. **Approve** moves `@champion` to version {chall} on your judgement; "
                       "**reject** keeps version {champ}. Either way, write why: the reason is in the audit chain.",
       "FAIL": "The gate **FAILED**. **Reject** keeps version {champ}. **Override** (break-glass) moves `@champion` "
               "to version {chall} against the gate: only with a written reason, recorded in the audit chain and "
               "the report."}


@flow(name="regression-eval", log_prints=True, on_crashed=[retry_crashed])
def regression_eval(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """The challenger's dataset version (or the one given) -> report and release decision -> a person's
    decision -> promote. PASS asks to approve; INCONCLUSIVE and FAIL are never promoted without a person's
    written reason (a FAIL only by a break-glass override).

    Deployed, the approval suspends the run (no worker held); the resume re-runs it from the top and reads
    the evaluation back from its persisted result."""
    cfg = setup(config_path)
    store, client = ReviewStore(cfg.store_url), MlflowClient()  # one of each for the run, passed down
    ctx, html, run_id = evaluation.evaluate_release(config_path, dataset_version, store, client, world.launch_data)
    outcome = ctx.gate.outcome
    first_screen = ctx.summary()  # once, for the approval form and the notification
    description = (report.to_markdown(ctx, first_screen) + "\n\n---\n"
                   + ASK[outcome].format(chall=ctx.challenger_version, champ=ctx.champion_version))
    evaluation.announce_release(config_path, first_screen.announcement, outcome, f"{cfg.model.registered_name} "
                                f"v{ctx.challenger_version} (champion v{ctx.champion_version})")
    get_run_logger().info("Gate %s. Waiting for a decision: Resume this run in the Prefect UI or run "
                          "`hitl approve -c %s`", outcome, config_path)
    answer = wait_for_people(approval_form(description, outcome), cfg, key="approval")
    decided = decision.decide(answer.decision, outcome, answer.approver, answer.reason)
    promoted, break_glass, ctx.decision = decided.promoted, decided.break_glass, decided.text
    if promoted:
        promoted = evaluation.promote(cfg, store, client, ctx.champion_version, ctx.challenger_version,
                                      answer.approver, answer.reason, gate=outcome, break_glass=break_glass)
        if not promoted:
            ctx.decision += " (not carried out: @champion changed since this eval; run the eval again)"
    else:
        evaluation.record_decision(cfg, store, client, ctx.champion_version, ctx.challenger_version, answer.decision,
                                   answer.approver, answer.reason, gate=outcome)
    html, run_id = evaluation.publish(ctx, cfg, store, run_id)
    get_run_logger().info("%s | decision: %s", report.headline(ctx), ctx.decision)
    o = regression.overall(ctx.table)
    return {"report": str(html), "gate": ctx.gate.passed, "gate_outcome": outcome, "promoted": promoted,
            "decision": ctx.decision, "champion_fail_rate": float(o["champion"]),
            "challenger_fail_rate": float(o["challenger"]), "regression_n": int(o["n"]), "eval_run_id": run_id,
            "table": ctx.table.to_dict("records")}


if __name__ == "__main__":
    regression_eval()
