"""Flow: champion vs challenger as production estimates by cohort; gate; approval; promotion."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE

from hitl.datasets import versions
from hitl.evaluation import regression, report
from tasks import evaluation, training
from tasks.common import load_model, setup, wait_for_people
from tasks.review import approval_form
from tasks.training import CHALLENGER, CHAMPION


@task(name="evaluate-release", cache_policy=TASK_SOURCE + INPUTS + RUN_ID, persist_result=True)
def evaluate_release(config_path: str, dataset_version: int | None) -> tuple[report.ReportContext, Path, str]:
    """Both models on the regression set and hard cases, the baseline on the same training rows, the gate,
    the published report. Persisted per run: the approval's resume does not redo it."""
    cfg = setup(config_path)
    champion, challenger = load_model(cfg, CHAMPION), load_model(cfg, CHALLENGER)
    records, dv = versions.load(cfg, dataset_version or training.dataset_of(cfg, challenger.version))
    train, leakage = training.training_rows(records, training.launch_data(cfg), cfg, dv.ref)
    compared = evaluation.compare(records, champion, challenger, cfg)
    verdict = regression.gate(compared.table, cfg)
    lineage = {**versions.lineage(dv), "random draw": evaluation.completeness(cfg, records),
               "leakage guard": leakage.summary,
               "models": f"{cfg.model.registered_name} champion v{champion.version}, challenger v{challenger.version}"}
    ctx = report.ReportContext("Regression eval: champion vs challenger", dv.ref, champion.version,
                               challenger.version, compared.table, verdict,
                               "awaiting approval" if verdict.passed else "not promoted (gate failed)",
                               compared.latest, compared.latest_window, compared.hard,
                               evaluation.baseline(train, records, cfg), evaluation.trend(cfg), lineage)
    html, run_id = evaluation.publish(ctx, cfg, None)
    return ctx, html, run_id


@flow(name="regression-eval", log_prints=True)
def regression_eval(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """The challenger's dataset version (or the one given) -> report and gate -> approval -> promote.

    Deployed, the approval suspends the run (no worker held); the resume re-runs it from the top and reads
    the evaluation back from its persisted result."""
    cfg = setup(config_path)
    ctx, html, run_id = evaluate_release(config_path, dataset_version)
    promoted = False
    if ctx.gate.passed:
        description = (report.to_markdown(ctx) + "\n\n---\n**Approve** moves `@champion` to version "
                       f"{ctx.challenger_version}; **reject** keeps version {ctx.champion_version}.")
        get_run_logger().info("Waiting for approval: Resume this run in the Prefect UI or run `hitl approve -c %s`",
                              config_path)
        answer = wait_for_people(approval_form(description), cfg, key="approval")
        ctx.decision = f"{answer.decision}d by {answer.approver}: {answer.reason}"
        if answer.decision == "approve":
            evaluation.promote(cfg, ctx.champion_version, ctx.challenger_version, answer.approver, answer.reason)
            promoted = True
        else:
            evaluation.record_decision(cfg, ctx.champion_version, ctx.challenger_version, answer.decision,
                                       answer.approver, answer.reason)
        html, run_id = evaluation.publish(ctx, cfg, run_id)
    get_run_logger().info("%s | decision: %s", report.headline(ctx), ctx.decision)
    o = regression.overall(ctx.table)
    return {"report": str(html), "gate": ctx.gate.passed, "promoted": promoted, "decision": ctx.decision,
            "champion_fail_rate": float(o["champion"]), "challenger_fail_rate": float(o["challenger"]),
            "regression_n": int(o["n"]), "eval_run_id": run_id, "table": ctx.table.to_dict("records")}


if __name__ == "__main__":
    regression_eval()
