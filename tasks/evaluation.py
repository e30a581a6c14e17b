"""Tasks of the regression-eval stage: compare champion and challenger, publish the report, promote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hitl.config import Config
from hitl.evaluation import regression, report
from hitl.learning import modeling
from tasks.training import CHALLENGER, CHAMPION, PREVIOUS


@task(name="compare-on-holdout", cache_policy=NO_CACHE)
def compare(holdout: pd.DataFrame, champion: modeling.IntentModel, challenger: modeling.IntentModel,
            cfg: Config) -> pd.DataFrame:
    texts = holdout["text"].tolist()
    a = modeling.score(champion, texts, cfg.model.score_batch_size, cfg.model.max_length).prediction
    b = modeling.score(challenger, texts, cfg.model.score_batch_size, cfg.model.max_length).prediction
    return regression.cohort_table(holdout, a, b, cfg.cohorts)


@task(name="publish-report", cache_policy=NO_CACHE)
def publish(ctx: report.ReportContext, cfg: Config, run_id: str | None) -> tuple[Path, str]:
    """Write Markdown+HTML, attach them as a Prefect artifact and to the eval MLflow run. Returns (html, run)."""
    import mlflow

    stem = f"regression-{ctx.dataset.replace('@', '-v')}-champ{ctx.champion_version}-chall{ctx.challenger_version}"
    md_path, html_path = report.write(ctx, cfg.reports_dir, stem)
    create_markdown_artifact(key="regression-report", markdown=md_path.read_text(),
                             description=report.headline(ctx))
    mlflow.set_experiment(cfg.eval_experiment)
    with mlflow.start_run(run_id=run_id, run_name=stem) as run:
        overall = ctx.table[ctx.table["cohort"] == regression.OVERALL].iloc[0]
        mlflow.log_metrics({"champion_fail_rate": overall["champion_fail_rate"],
                            "challenger_fail_rate": overall["challenger_fail_rate"],
                            "delta": overall["delta"], "holdout_n": float(overall["n"])})
        mlflow.set_tags({"hitl.dataset": ctx.dataset, "hitl.champion_version": ctx.champion_version,
                         "hitl.challenger_version": ctx.challenger_version,
                         "hitl.gate": "pass" if ctx.gate.passed else "fail", "hitl.decision": ctx.decision})
        mlflow.log_artifact(str(md_path), "report")
        mlflow.log_artifact(str(html_path), "report")
        mlflow.log_text(ctx.table.to_csv(index=False), "report/cohort_regression.csv")
    get_run_logger().info("Report: %s", html_path)
    return html_path, run.info.run_id


@task(name="promote-challenger", cache_policy=NO_CACHE)
def promote(cfg: Config, champion_version: str, challenger_version: str, approver: str, reason: str) -> None:
    """Move `@champion` to the challenger; the old champion keeps `@previous`. Decision tagged on both."""
    from mlflow import MlflowClient

    client, name = MlflowClient(), cfg.model.registered_name
    client.set_registered_model_alias(name, PREVIOUS, champion_version)
    client.set_registered_model_alias(name, CHAMPION, challenger_version)
    client.delete_registered_model_alias(name, CHALLENGER)
    for k, v in {"hitl.approved_by": approver, "hitl.approval_reason": reason,
                 "hitl.replaced_version": champion_version}.items():
        client.set_model_version_tag(name, challenger_version, k, v)
    get_run_logger().info("Promoted %s v%s to @champion (approved by %s); v%s is @previous",
                          name, challenger_version, approver, champion_version)
