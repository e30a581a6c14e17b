"""Flow: champion vs challenger as production estimates by cohort; gate; approval; promotion."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE

from hitl.datasets import versions
from hitl.evaluation import regression, report
from tasks import evaluation, training
from tasks.common import load_model, setup, wait_for_people
from tasks.review import OVERRIDE, approval_form
from tasks.training import CHALLENGER, CHAMPION


@task(name="evaluate-release", cache_policy=TASK_SOURCE + INPUTS + RUN_ID, persist_result=True)
def evaluate_release(config_path: str, dataset_version: int | None) -> tuple[report.ReportContext, Path, str]:
    """The gate's settings recorded, then both models on the regression set and hard cases, the baseline on the
    same training rows, the decision, the published report. Persisted per run: the approval's resume does not
    redo it."""
    cfg = setup(config_path)
    champion, challenger = load_model(cfg, CHAMPION), load_model(cfg, CHALLENGER)
    settings = evaluation.gate_settings(cfg, champion.version, challenger.version)  # before any label is read
    records, dv = versions.load(cfg, dataset_version or training.dataset_of(cfg, challenger.version))
    train, leakage = training.training_rows(records, training.launch_data(cfg), cfg, dv.ref)
    compared = evaluation.compare(records, champion, challenger, cfg, settings)
    verdict = regression.gate(compared.table, cfg, settings)
    lineage = {**versions.lineage(dv), "random draw": evaluation.completeness(cfg, records),
               "leakage guard": leakage.summary,
               "models": f"{cfg.model.registered_name} champion v{champion.version}, challenger v{challenger.version}"}
    ctx = report.ReportContext("Regression eval: champion vs challenger", dv.ref, champion.version,
                               challenger.version, compared.table, verdict, AWAITING[verdict.outcome],
                               compared.latest, compared.latest_window, compared.hard,
                               evaluation.baseline(train, records, compared, cfg, settings), evaluation.trend(cfg),
                               lineage, latest_min_n=cfg.evaluation.latest_min_n, calibration=compared.calibration)
    html, run_id = evaluation.publish(ctx, cfg, None)
    return ctx, html, run_id


AWAITING = {"PASS": "awaiting approval", "INCONCLUSIVE": "awaiting a decision (gate INCONCLUSIVE: never promoted "
                                                         "automatically)",
            "FAIL": "not promoted unless overridden (gate FAIL)"}
ASK = {"PASS": "**Approve** moves `@champion` to version {chall}; **reject** keeps version {champ}.",
       "INCONCLUSIVE": "The gate is **INCONCLUSIVE**: the data do not decide this release, and nothing is promoted "
                       "automatically. **Approve** moves `@champion` to version {chall} on your judgement; "
                       "**reject** keeps version {champ}. Either way, write why: the reason is in the audit chain.",
       "FAIL": "The gate **FAILED**. **Reject** keeps version {champ}. **Override** (break-glass) moves `@champion` "
               "to version {chall} against the gate: only with a written reason, recorded in the audit chain and "
               "the report."}


@flow(name="regression-eval", log_prints=True)
def regression_eval(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """The challenger's dataset version (or the one given) -> report and release decision -> a person's
    decision -> promote. PASS asks to approve; INCONCLUSIVE and FAIL are never promoted without a person's
    written reason (a FAIL only by a break-glass override).

    Deployed, the approval suspends the run (no worker held); the resume re-runs it from the top and reads
    the evaluation back from its persisted result."""
    cfg = setup(config_path)
    ctx, html, run_id = evaluate_release(config_path, dataset_version)
    outcome = ctx.gate.outcome
    description = (report.to_markdown(ctx) + "\n\n---\n"
                   + ASK[outcome].format(chall=ctx.challenger_version, champ=ctx.champion_version))
    get_run_logger().info("Gate %s. Waiting for a decision: Resume this run in the Prefect UI or run "
                          "`hitl approve -c %s`", outcome, config_path)
    answer = wait_for_people(approval_form(description, outcome), cfg, key="approval")
    promoted = answer.decision in ("approve", OVERRIDE)
    break_glass = promoted and outcome != "PASS"
    done = f"approved (break-glass, gate {outcome})" if break_glass else {"approve": "approved",
                                                                           "reject": "rejected"}[answer.decision]
    ctx.decision = f"{done} by {answer.approver}: {answer.reason}"
    if promoted:
        evaluation.promote(cfg, ctx.champion_version, ctx.challenger_version, answer.approver, answer.reason,
                           gate=outcome, break_glass=break_glass)
    else:
        evaluation.record_decision(cfg, ctx.champion_version, ctx.challenger_version, answer.decision,
                                   answer.approver, answer.reason, gate=outcome)
    html, run_id = evaluation.publish(ctx, cfg, run_id)
    get_run_logger().info("%s | decision: %s", report.headline(ctx), ctx.decision)
    o = regression.overall(ctx.table)
    return {"report": str(html), "gate": ctx.gate.passed, "gate_outcome": outcome, "promoted": promoted,
            "decision": ctx.decision, "champion_fail_rate": float(o["champion"]),
            "challenger_fail_rate": float(o["challenger"]), "regression_n": int(o["n"]), "eval_run_id": run_id,
            "table": ctx.table.to_dict("records")}


if __name__ == "__main__":
    regression_eval()
