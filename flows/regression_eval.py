"""Flow: champion vs challenger as production estimates by cohort; gate; approval; promotion."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run

from hitl.datasets import versions
from hitl.evaluation import regression, report
from tasks import evaluation, training
from tasks.common import load_model, setup
from tasks.review import approval_form
from tasks.training import CHALLENGER, CHAMPION


@flow(name="regression-eval", log_prints=True)
def regression_eval(config_path: str = "configs/demo.yaml", dataset_version: int | None = None) -> dict:
    """The challenger's dataset version (or the one given) -> both models on its regression set (the random
    draw) and hard cases -> the baseline on the same training rows -> report -> gate -> approval -> promote."""
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
    promoted = False
    if verdict.passed:
        description = (report.to_markdown(ctx) + "\n\n---\n**Approve** moves `@champion` to version "
                       f"{challenger.version}; **reject** keeps version {champion.version}.")
        get_run_logger().info("Waiting for approval: Resume this run in the Prefect UI or run `hitl approve -c %s`",
                              config_path)
        answer = pause_flow_run(wait_for_input=approval_form(description), timeout=cfg.review.timeout_s,
                                poll_interval=max(1, round(cfg.review.poll_interval_s)))
        ctx.decision = f"{answer.decision}d by {answer.approver}: {answer.reason}"
        if answer.decision == "approve":
            evaluation.promote(cfg, champion.version, challenger.version, answer.approver, answer.reason)
            promoted = True
        html, run_id = evaluation.publish(ctx, cfg, run_id)
    get_run_logger().info("%s | decision: %s", report.headline(ctx), ctx.decision)
    o = regression.overall(compared.table)
    return {"report": str(html), "gate": verdict.passed, "promoted": promoted, "decision": ctx.decision,
            "champion_fail_rate": float(o["champion"]), "challenger_fail_rate": float(o["challenger"]),
            "regression_n": int(o["n"]), "eval_run_id": run_id, "table": compared.table.to_dict("records")}


if __name__ == "__main__":
    regression_eval()
