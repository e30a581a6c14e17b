"""Tasks of the regression-eval stage: score both models on the regression set and the hard cases, the
frozen-embedding baseline on the challenger's training rows, the trend of earlier evals, publish, promote;
`evaluate-release` runs them for one release and is persisted per flow run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE

from hitl.audit import evidence
from hitl.audit.chain import Entry
from hitl.config import Config
from hitl.datasets import versions
from hitl.evaluation import horizon, refusals, regression, report, summary
from hitl.learning import abstention, anchor, modeling, promotion
from hitl.learning.embeddings import FrozenEncoder
from hitl.learning.promotion import CHALLENGER, CHAMPION
from hitl.ops.deploy import CPU_TAG
from hitl.review.store import ReviewStore
from tasks import training
from tasks.common import load_model, setup
from tasks.scoring import score_texts

if TYPE_CHECKING:
    from mlflow import MlflowClient

NOT_CARRIED_OUT = "approve, not carried out"  # an approval refused because @champion changed since the eval
CALIBRATION_NOTE = (f"with a fallback label, each model's abstention threshold on the regression set is "
                    f"cross-fitted ({abstention.VERDICT_FOLDS} folds by trace id: every row is judged with a "
                    f"threshold, and in-scope score ranks, fitted without it); the served ones are fitted on the "
                    f"whole random draw inside the production horizon")


@dataclass
class Comparison:
    table: pd.DataFrame  # production estimates by domain (the random draw)
    latest: pd.DataFrame  # the same, latest window only
    latest_window: str
    hard: pd.DataFrame  # hard-case hold-out (policy picks)
    challenger_pred: list[str]  # on the random draw, as judged (for the baseline comparison)
    calibration: str  # how anything fitted on labels was kept off the verdict rows ("" when nothing is)
    refusals: pd.DataFrame | None = None  # with a fallback label: refusal rates in and out of scope (refusals.py)


@task(name="record-gate-settings", cache_policy=NO_CACHE)
def gate_settings(cfg: Config, store: ReviewStore, client: MlflowClient, champion_version: str,
                  challenger_version: str) -> regression.Settings:
    """The gate's settings for this look at the challenger (earlier eval reports of the same version count as
    earlier looks), recorded in the audit chain before any label is read."""
    import mlflow

    earlier = 0
    if (exp := mlflow.get_experiment_by_name(cfg.eval_experiment)) is not None:
        runs = client.search_runs(
            [exp.experiment_id], f"tags.`hitl.challenger_version` = '{challenger_version}'", max_results=1000)
        earlier = sum(1 for r in runs if r.data.tags.get("hitl.model") in (None, cfg.model.registered_name)
                      and "delta" in r.data.metrics)
    st = regression.Settings.of(cfg, earlier + 1)
    entry = evidence.record_gate_settings(evidence.open_log(cfg, store), cfg.model.registered_name, champion_version,
                                       challenger_version, st.as_dict())
    get_run_logger().info("Gate settings for look %d at v%s (margin %.1f pts, alpha %.3g of %g, power %g): audit "
                          "entry %s", st.look, challenger_version, 100 * st.margin, st.look_alpha, st.alpha, st.power,
                          entry.short)
    return st


def _served_score(model: modeling.IntentModel, scores: modeling.Scores) -> np.ndarray:
    """What the verdict cross-fits abstention on, as the model serves it: the in-scope parts when it ranks them
    (a scale; the verdict refits it without each fold), else its one in-scope score."""
    return scores.in_scope if model.in_scope_scale is None or scores.in_scope_parts is None \
        else scores.in_scope_parts


def _judged(model: modeling.IntentModel, scores: modeling.Scores, sample: pd.DataFrame, rate: float | None
            ) -> np.ndarray:
    """Predictions on the random draw as the verdict sees them: abstention cross-fitted (by the served rule,
    `model.abstention_rate`) when the model has one."""
    k = len(sample)
    if not model.fallback_label or k == 0:
        return np.asarray(scores.prediction[:k])
    return abstention.verdict_predictions(scores.probs[:k], model.labels, model.fallback_label,
                                          sample["label"].to_numpy(), 1.0 / sample["inclusion_prob"].to_numpy(float),
                                          sample["trace_id"].astype(str), in_scope=_served_score(model, scores)[:k],
                                          rate=rate)


@task(name="compare-champion-and-challenger", tags=[CPU_TAG], cache_policy=NO_CACHE)
def compare(records: pd.DataFrame, champion: modeling.IntentModel, challenger: modeling.IntentModel,
            cfg: Config, settings: regression.Settings) -> Comparison:
    sample, _ = horizon.random_draw(records, cfg.evaluation.horizon_days)
    hard = records[records["split"] == "hard_case"].reset_index(drop=True)
    texts = [*sample["text"], *hard["text"]]
    sa, sb = score_texts(champion, texts, cfg), score_texts(challenger, texts, cfg)  # in partitions when large
    k = len(sample)
    rate = cfg.model.abstention_rate
    a, b = _judged(champion, sa, sample, rate), _judged(challenger, sb, sample, rate)
    table = regression.production_table(sample, list(a), list(b), cfg, settings)
    window, m = regression.latest_window(sample)
    latest = regression.production_table(sample[m].reset_index(drop=True), list(a[m]), list(b[m]), cfg, settings) \
        if m is not None and m.any() else pd.DataFrame()
    hard_table = regression.hard_case_table(hard, list(sa.prediction[k:]), list(sb.prediction[k:]),
                                            settings.look_alpha) if len(hard) else pd.DataFrame()
    o = regression.overall(table) if len(table) else None
    if o is not None:
        get_run_logger().info("Production estimate on %d random-draw traces: %.1f%% -> %.1f%% (change %+.1f pts, "
                              "%s CI %+.1f to %+.1f): %s", o["n"], 100 * o["champion"], 100 * o["challenger"],
                              100 * o["delta"], report.level_text(o["level"]), 100 * o["delta_low"],
                              100 * o["delta_high"], o["outcome"])
    fallback = champion.fallback_label or challenger.fallback_label
    if not fallback:
        return Comparison(table, latest, window, hard_table, list(b), "")
    rule = "best accuracy" if rate is None else f"refusing at most {rate:.0%} of in-scope rows (model.abstention_rate)"
    new = [x for x in challenger.known_labels if x not in set(champion.known_labels)]
    refused = refusals.table(sample, list(a), list(b), fallback, new, cfg, settings)
    return Comparison(table, latest, window, hard_table, list(b), f"{CALIBRATION_NOTE}; rule: {rule}", refused)


@task(name="frozen-embedding-baseline", tags=[CPU_TAG], cache_policy=NO_CACHE)
def baseline(train: pd.DataFrame, records: pd.DataFrame, compared: Comparison, cfg: Config,
             settings: regression.Settings) -> dict | None:
    """The anchor (frozen MiniLM + logistic regression, C by cross-validation) trained on exactly the rows the
    challenger was trained on, estimated on the same random draw and paired with the challenger there."""
    sample, _ = horizon.random_draw(records, cfg.evaluation.horizon_days)
    if not cfg.evaluation.baseline or sample.empty or train["label"].nunique() < 2:
        return None
    encoder = FrozenEncoder(modeling.base_model_path(cfg), cfg.state / "cache", max_length=cfg.model.max_length,
                            engine=cfg.model.engine)
    fitted = anchor.fit(encoder.encode(train["text"].tolist()), train["label"].to_numpy())
    pred = fitted.predict(encoder.encode(sample["text"].tolist()))
    encoder.save()
    return {"name": f"frozen embeddings + logistic regression (C={fitted.C:g}) on the challenger's "
                    f"{len(train)} training rows",
            **regression.versus_baseline(sample, compared.challenger_pred, list(pred), settings)}


@task(name="random-draw-completeness", cache_policy=NO_CACHE)
def completeness(cfg: Config, store: ReviewStore, records: pd.DataFrame) -> str:
    """How much of the random draw is in this dataset version, and what is still missing (never dropped
    silently: disputed and unreviewed random items are counted here)."""
    drawn = store.random_items()
    if drawn.empty:
        return "no random draw yet"
    labelled = int(drawn["trace_id"].isin(records["trace_id"]).sum())
    missing = drawn[~drawn["trace_id"].isin(records["trace_id"])]
    by_status = ", ".join(f"{n} {s}" for s, n in missing["status"].value_counts().items()) or "none"
    return f"{len(drawn)} traces drawn, {labelled} labelled in this version, {len(missing)} missing ({by_status})"


@task(name="earlier-evals", cache_policy=NO_CACHE)
def trend(cfg: Config, client: MlflowClient) -> pd.DataFrame:
    """Overall estimates of every earlier regression eval (MLflow eval runs; with a fallback label, both models'
    overall refusal rates too) and every rollback, oldest first (summary.releases)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(cfg.eval_experiment)
    runs = [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                                                     max_results=500)
    evals = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        if "champion_fail_rate" not in m or "champion_fail_rate_low" not in m:
            continue
        evals.append({"at": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC"),
                      "champion_version": t.get("hitl.champion_version", "?"),
                      "challenger_version": t.get("hitl.challenger_version", "?"),
                      **{f"{who}{suffix}": m.get(f"{who}_fail_rate{suffix}") for who in ("champion", "challenger")
                         for suffix in ("", "_low", "_high")},
                      **{c: m[c] for c in refusals.TREND_COLUMNS if c in m},
                      "n": int(m.get("regression_n", 0)), "decision": t.get("hitl.decision", "")})
    return summary.releases(evals, promotion.rollbacks(cfg.model.registered_name, client))


@task(name="publish-report", cache_policy=NO_CACHE)
def publish(ctx: report.ReportContext, cfg: Config, store: ReviewStore, run_id: str | None) -> tuple[Path, str]:
    """Write Markdown+HTML (the lineage names the release's audit chain entries), attach them as a Prefect
    artifact (described by the report's sentence) and to the eval MLflow run (with the first screen as
    report/summary.json), and record the files in the audit chain. Returns (html, run)."""
    import mlflow

    chain = evidence.open_log(cfg, store)
    ctx = replace(ctx, lineage={**ctx.lineage, "audit chain": evidence.release_line(
        chain, ctx.dataset, cfg.model.registered_name, ctx.challenger_version)})
    stem = f"regression-{ctx.dataset.replace('@', '-v')}-champ{ctx.champion_version}-chall{ctx.challenger_version}"
    summary = ctx.summary()  # the first screen: the same structure in every format below
    md_path, html_path = report.write(ctx, cfg.reports_dir, stem, summary)
    create_markdown_artifact(key="regression-report", markdown=md_path.read_text(), description=summary.sentence)
    mlflow.set_experiment(cfg.eval_experiment)
    with mlflow.start_run(run_id=run_id, run_name=stem) as run:
        o = regression.overall(ctx.table)
        mlflow.log_metrics({f"{who}_fail_rate{suffix}": float(o[f"{who}{suffix}"])
                            for who in ("champion", "challenger") for suffix in ("", "_low", "_high")})
        mlflow.log_metrics({"delta": float(o["delta"]), "delta_low": float(o["delta_low"]),
                            "delta_high": float(o["delta_high"]), "regression_n": float(o["n"]),
                            "look_alpha": float(ctx.gate.settings.get("look_alpha", 0.05)),
                            "regression_n_eff": float(o["n_eff"])})
        mlflow.set_tags({versions.DATASET_TAG: ctx.dataset, "hitl.champion_version": ctx.champion_version,
                         "hitl.challenger_version": ctx.challenger_version,
                         "hitl.model": cfg.model.registered_name, "hitl.gate": ctx.gate.outcome.lower(),
                         "hitl.look": str(ctx.gate.settings.get("look", 1)), "hitl.decision": ctx.decision})
        mlflow.log_artifact(str(md_path), "report")
        mlflow.log_artifact(str(html_path), "report")
        mlflow.log_dict(summary.as_dict(), "report/summary.json")
        mlflow.log_text(ctx.table.to_csv(index=False), "report/production_estimates.csv")
        if ctx.hard is not None and len(ctx.hard):
            mlflow.log_text(ctx.hard.to_csv(index=False), "report/hard_cases.csv")
        if ctx.refusals is not None and len(ctx.refusals):
            log_refusals(ctx.refusals)
    evidence.record_report(chain, run.info.run_id, {f"report/{p.name}": p for p in (md_path, html_path)},
                        {"dataset": ctx.dataset, "champion_version": ctx.champion_version,
                         "challenger_version": ctx.challenger_version, "decision": ctx.decision})
    get_run_logger().info("Report: %s", html_path)
    return html_path, run.info.run_id


def log_refusals(refused: pd.DataFrame) -> None:
    """Into the active MLflow run: the refusal table as report/refusals.csv, and both models' overall rates as
    metrics (`champion_refused_in_scope`, `challenger_out_of_scope_recall`, ...) where they have draws."""
    import mlflow

    mlflow.log_text(refused.to_csv(index=False), "report/refusals.csv")
    if rates := refusals.overall_rates(refused):
        mlflow.log_metrics(rates)


@task(name="promote-challenger", cache_policy=NO_CACHE)
def promote(cfg: Config, store: ReviewStore, client: MlflowClient, champion_version: str, challenger_version: str,
            approver: str, reason: str, eval_run_id: str | None = None, gate: str = "", break_glass: bool = False
            ) -> bool:
    """Move `@champion` to the challenger; the old champion keeps `@previous`; the decision is tagged on the
    challenger's version first. Safe to repeat, and a crash half-way is finished by the next run
    (hitl/learning/promotion.py). `break_glass`: approved against a gate that did not PASS. False, with the
    approval recorded as not carried out, when `@champion` changed since the eval (a rollback meanwhile)."""
    name = cfg.model.registered_name
    try:
        promotion.promote(name, promotion.Promotion(champion_version, challenger_version, approver, reason,
                                                    eval_run_id), client)
    except promotion.ChampionMoved as e:
        entry = _record_decision(cfg, store, client, champion_version, challenger_version, NOT_CARRIED_OUT,
                                 approver, f"{reason} ({e})", gate, break_glass)
        get_run_logger().error("Not promoted: %s Audit entry %s.", e, entry.short)
        return False
    _record_decision(cfg, store, client, champion_version, challenger_version, "approve", approver, reason, gate,
                     break_glass)
    get_run_logger().info("Promoted %s v%s to @champion (approved by %s%s); v%s is @previous", name,
                          challenger_version, approver, f", overriding gate {gate}" if break_glass else "",
                          champion_version)
    return True


@task(name="record-release-decision", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def record_decision(cfg: Config, store: ReviewStore, client: MlflowClient, champion_version: str,
                    challenger_version: str, decision: str, approver: str, reason: str, gate: str = "") -> str:
    """A person's decision on a release in the audit chain (`promote` records approvals itself: call this for a
    rejection). Returns the entry, as "#seq (sha256 ...)"."""
    entry = _record_decision(cfg, store, client, champion_version, challenger_version, decision, approver, reason,
                             gate)
    get_run_logger().info("Decision %s on v%s by %s: audit entry %s", decision, challenger_version, approver,
                          entry.short)
    return entry.short


def _record_decision(cfg: Config, store: ReviewStore, client: MlflowClient, champion_version: str,
                     challenger_version: str, decision: str, approver: str, reason: str, gate: str = "",
                     break_glass: bool = False) -> Entry:
    """The decision as an audit entry (with the gate outcome it answered), whose hash then tags the challenger's
    model version."""
    name = cfg.model.registered_name
    entry = evidence.record_decision(evidence.open_log(cfg, store), name, champion_version, challenger_version,
                                     decision, approver, reason, gate, break_glass)
    evidence.tag_release(name, challenger_version, entry, client)
    return entry


# The key leaves out the run's store and MLflow client: the resumed run opens new ones, and finds the result
@task(name="evaluate-release", cache_policy=TASK_SOURCE + INPUTS + RUN_ID - "store" - "client", persist_result=True)
def evaluate_release(config_path: str, dataset_version: int | None, store: ReviewStore, client: MlflowClient,
                     synthetic_launch: training.SyntheticLaunch | None = None
                     ) -> tuple[report.ReportContext, Path, str]:
    """The gate's settings recorded, then both models on the regression set and hard cases, the baseline on the
    same training rows, the decision, the published report. Persisted per run: the approval's resume does not
    redo it. `synthetic_launch`: the launch data without `source.launch_path` (training.launch_data)."""
    cfg = setup(config_path)
    champion, challenger = load_model(cfg, CHAMPION, client), load_model(cfg, CHALLENGER, client)
    settings = gate_settings(cfg, store, client, champion.version, challenger.version)  # before any label is read
    records, dv = versions.load(cfg, dataset_version or training.dataset_of(cfg, client, challenger.version))
    train, leakage = training.training_rows(records, training.launch_data(cfg, synthetic_launch), cfg, dv.ref)
    compared = compare(records, champion, challenger, cfg, settings)
    verdict = regression.gate(compared.table, cfg, settings)
    lineage = {**versions.lineage(dv), "random draw": completeness(cfg, store, records),
               "production": horizon.random_draw(records, cfg.evaluation.horizon_days)[1].describe(),
               "leakage guard": leakage.summary,
               "models": f"{cfg.model.registered_name} champion v{champion.version}, challenger v{challenger.version}",
               "scored by": f"champion {champion.serving_engine}, challenger {challenger.serving_engine} (the "
                            "engine that serves each)"}
    ctx = report.ReportContext("Regression eval: champion vs challenger", dv.ref, champion.version,
                               challenger.version, compared.table, verdict, AWAITING[verdict.outcome],
                               compared.latest, compared.latest_window, compared.hard,
                               baseline(train, records, compared, cfg, settings), trend(cfg, client),
                               lineage, latest_min_n=cfg.evaluation.latest_min_n, calibration=compared.calibration,
                               refusals=compared.refusals)
    html, run_id = publish(ctx, cfg, store, None)
    return ctx, html, run_id


AWAITING = {"PASS": "awaiting approval", "INCONCLUSIVE": "awaiting a decision (gate INCONCLUSIVE: never promoted "
                                                         "automatically)",
            "FAIL": "not promoted unless overridden (gate FAIL)"}


@task(name="announce-release", cache_policy=TASK_SOURCE + INPUTS + RUN_ID, persist_result=True)
def announce_release(config_path: str, headline: str, gate: str, models: str) -> bool:
    """Tell the approvers (the `hitl.release.awaiting-approval` event their automation sends on). Persisted per
    run: the approval's resume re-runs the flow from the top and finds this done, so nobody is told twice."""
    from prefect.context import get_run_context

    from hitl.ops import notify_reconcile

    cfg = setup(config_path)
    notify_reconcile.announce_release(cfg, str(get_run_context().task_run.flow_run_id), headline, gate, models)
    return cfg.notifications.enabled
