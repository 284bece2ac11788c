"""`loopline monitor`: measure drift, performance and data quality; store, report, feed back.

`measure` is one monitoring run: it refreshes the outcome marts (predictions now have labels
they lacked at the last build), rebuilds the churn champion's training set by its lineage
(`ml.monitoring.reference`), compares it with the latest window of scored features, compares
the champion's holdout scores with its current scores, judges the performance rules per
weekly window, summarises the latest validation run, and stores it all
(``monitoring.monitor_runs``, ``monitoring.feature_drift``, ``monitoring.model_performance``),
with an HTML report under ``<data_dir>/reports/monitoring/<run>/`` logged to MLflow on a
run tagged with the champion version. Its `Trigger`, if any, says whether to retrain.

`monitor` is `measure`, then the training run the trigger asks for (`ml.churn.train_churn`,
judged by the gate and the champion comparison as always), then the trigger's record.
The Prefect flow (`flows/monitor.py`) runs the same steps as tasks and a training subflow.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from expectations.results import MONITORING_ASSET_SCHEMA
from loopline.settings import Settings
from loopline.warehouse import (
    FEATURE_DRIFT_TABLE,
    MODEL_PERFORMANCE_TABLE,
    MONITOR_RUNS_TABLE,
    PREDICTIONS_TABLE,
    RETRAIN_TRIGGERS_TABLE,
    VALIDATION_RESULTS_TABLE,
    NoWarehouseError,
)
from ml.features.definitions import CHURN
from ml.monitoring.config import MonitoringConfig
from ml.monitoring.drift_check import (
    PREDICTION,
    DriftCheck,
    compare,
    latest_window,
    reference_rows,
    served_window,
    snapshot_sample,
    unfilled_windows,
)
from ml.monitoring.performance import (
    churn_metrics,
    churn_window_metrics,
    performance_rows,
    recommender_window_metrics,
)
from ml.monitoring.reference import ChampionReference, champion_reference
from ml.monitoring.retrain import Trigger, decide_trigger, record_trigger, standing
from ml.monitoring.rules import FAIL, METRIC_COLUMNS, NO_DATA, PASS, failures

if TYPE_CHECKING:
    from expectations.run import ValidationReport
    from ml.churn.train import ChurnOutcome
    from ml.config import ChurnConfig

MONITORING_EXPERIMENT = "loopline-monitoring"
EXPERIMENT_DESCRIPTION = (
    "One run per `loopline monitor`: how many features drifted, whether the scores drifted, "
    "the performance rules passed and failed, whether retraining was triggered, and the HTML "
    "report. Each run is tagged with the churn champion version it judged; the version carries "
    "monitoring.last_run_id back."
)
OUTCOME_MODELS = (
    "stg_ml__churn_predictions",
    "stg_ml__recommendations",
    "fct_churn_prediction_outcomes",
    "fct_recommendation_outcomes",
)
_CHURN_OUTCOMES = "monitoring.fct_churn_prediction_outcomes"
_RECS_OUTCOMES = "monitoring.fct_recommendation_outcomes"
_TOP_PLOTS = 6


FEATURES, SERVED, PREDICTIONS = "features", "served", "predictions"


@dataclass(frozen=True, eq=False)
class MonitorResult:
    """What one monitoring run measured, stored and decided."""

    run_id: str
    champion_version: str | None
    drift: dict[str, DriftCheck]  # by scope: features, served (the API's log), predictions
    performance: pd.DataFrame
    data_quality: pd.DataFrame
    trigger: Trigger | None
    report: Path
    mlflow_run_id: str | None
    window: tuple[date, date] | None
    notes: list[str]
    suite: ValidationReport | None = None  # the GX monitoring suite on the current window

    @property
    def feature_drift(self) -> DriftCheck | None:
        """The champion's training set against the latest window of scored features."""
        return self.drift.get(FEATURES)

    @property
    def prediction_drift(self) -> DriftCheck | None:
        """The champion's holdout scores against its scores in the latest window."""
        return self.drift.get(PREDICTIONS)

    @property
    def confirmed(self) -> list[str]:
        """Features with drift confirmed in the scored window or in the served requests."""
        names = [n for scope in (FEATURES, SERVED) if scope in self.drift
                 for n in self.drift[scope].confirmed]  # fmt: skip
        return list(dict.fromkeys(names))

    def count(self, status: str) -> int:
        """Rules with this status (pass, fail, no_data) in this run."""
        judged = self.performance[self.performance["status"] != "info"]
        return int((judged["status"] == status).sum())

    def suite_summary(self, columns: bool = True) -> str | None:
        """The GX monitoring suite's count (and the columns it warned on, with `columns`)."""
        if self.suite is None:
            return None
        suite = self.suite.suites[0]
        text = f"GX monitoring suite {suite.passed}/{suite.evaluated} passed"
        warned = list(dict.fromkeys(str(r.column_name) for r in self.suite.rows if not r.success))
        return text + (f", warnings on {', '.join(warned)}" if columns and warned else "")

    def summary(self) -> str:
        """One line for the terminal."""
        if self.feature_drift is None:
            drift = "drift: no churn champion"
        elif self.confirmed:
            drift = f"drift on {', '.join(self.confirmed)}"
        else:
            drift = "no drift"
        rules = (
            f"rules {self.count(PASS)} passed, {self.count(FAIL)} failed, "
            f"{self.count(NO_DATA)} waiting for labels"
        )
        if self.suite is not None:
            drift += f" ({self.suite_summary(columns=False)})"
        if self.trigger is None:
            action = "no retrain"
        elif self.trigger.fires:
            action = "retrain triggered"
        else:
            action = "retrain disabled"
        return f"{drift}; {rules}; {action}"


@dataclass(frozen=True)
class MonitorOutcome:
    """A monitoring run and the training run it triggered, if any."""

    result: MonitorResult
    retrained: ChurnOutcome | None


def _exists(con: Any, relation: str) -> bool:
    schema, name = relation.split(".")
    (found,) = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(found)


def _frame(con: Any, relation: str, sql: str = "select * from {r}") -> pd.DataFrame:
    if not _exists(con, relation):
        return pd.DataFrame()
    return con.execute(sql.format(r=relation)).df()


def data_quality_summary(con: Any) -> pd.DataFrame:
    """Per asset of the latest validation run: expectations, critical and warning failures.

    The monitoring suites (assets ``monitoring.*``, `MONITORING_ASSET_SCHEMA`) are the
    monitor's own runs, not validation runs: they are left out."""
    return _frame(
        con,
        VALIDATION_RESULTS_TABLE,
        """
        with latest as (
            select run_id from {r} where asset not like '"""
        + MONITORING_ASSET_SCHEMA
        + """.%'
            order by validated_at desc limit 1
        )
        select
            run_id, asset,
            count(*) as expectations,
            count(*) filter (where not success and critical) as critical_failed,
            count(*) filter (where not success and not critical) as warnings
        from {r} where run_id in (select run_id from latest)
        group by run_id, asset order by critical_failed desc, warnings desc, asset
        """,
    )


def _newest_scored_day(con: Any, version: str) -> date | None:
    if not _exists(con, PREDICTIONS_TABLE):
        return None
    (day,) = con.execute(
        f"select max(as_of_date) from {PREDICTIONS_TABLE} where model_version = ?", [version]
    ).fetchone() or (None,)
    return day


def _window_end(con: Any, reference: ChampionReference) -> date:
    scored = _newest_scored_day(con, reference.version)
    if scored is not None:
        return scored
    (day,) = con.execute(
        f"select max(as_of_date) from {CHURN.relation} where feature_set_version = ?",
        [reference.feature_set_version],
    ).fetchone() or (None,)
    if day is None:
        raise ValueError(f"no rows of feature set version {reference.feature_set_version!r}")
    return day


def _current_scores(con: Any, version: str, start: date, end: date) -> pd.DataFrame:
    return con.execute(
        f"""
        select user_id, churn_probability from {PREDICTIONS_TABLE}
        where model_version = ? and as_of_date >= ? and as_of_date <= ?
        qualify row_number() over (partition by user_id order by as_of_date desc) = 1
        """,
        [version, start, end],
    ).df()


def _drift_rows(
    check: DriftCheck, scope: str, run_id: str, at: datetime, version: str
) -> pd.DataFrame:
    rows = check.rows.assign(
        run_id=run_id,
        measured_at=at,
        model_name="loopline-churn",
        model_version=version,
        scope=scope,
    )
    columns = [
        "run_id", "measured_at", "model_name", "model_version", "scope", "feature", "aspect",
        "kind", "test", "statistic", "p_value", "p_adjusted", "effect_name", "effect",
        "min_effect", "drifted", "is_ignored", "psi", "n_reference", "n_current",
        "reference_mean", "current_mean", "note",
    ]  # fmt: skip
    return rows[columns]


def _append(con: Any, table: str, frame: pd.DataFrame) -> None:
    from loopline.warehouse import ensure

    ensure(con, table)
    if frame.empty:
        return
    con.register("_monitor_rows", frame)
    try:
        con.execute(f"insert into {table} by name select * from _monitor_rows")
    finally:
        con.unregister("_monitor_rows")


def _plots(
    check: DriftCheck | None, reference: pd.DataFrame, current: pd.DataFrame, out: Path
) -> list[Path]:
    from ml.monitoring.report import distribution_plot

    if check is None:
        return []
    values = check.rows[check.rows["aspect"] == "values"]
    ranked = values.sort_values(["drifted", "effect"], ascending=[False, False])
    names = list(dict.fromkeys(ranked["feature"]))[:_TOP_PLOTS]
    return [distribution_plot(reference[n], current[n], n, out) for n in names]


def _holdout_scored(reference: ChampionReference) -> pd.DataFrame:
    """The champion's holdout rows with its scores (`PREDICTION`): the model is loaded and
    run once for both the prediction reference and the holdout metrics."""
    from ml.registry import load_sklearn_version

    holdout = reference.holdout
    if holdout.empty:
        return holdout.assign(**{PREDICTION: pd.Series(dtype=float)})
    model = load_sklearn_version(reference.model_name, reference.version)
    scores = model.predict_proba(holdout[reference.feature_columns])[:, 1]
    return holdout.assign(**{PREDICTION: scores})


def _prediction_reference(
    scored: pd.DataFrame, reference: ChampionReference, config: MonitoringConfig
) -> pd.DataFrame:
    """The champion's scores on its holdout rows that found a feature row, one per user
    drawn as the current window is (`snapshot_sample`)."""
    found = scored[reference.feature_columns].notna().any(axis=1)
    sample = snapshot_sample(
        scored[found], "as_of_date", config.drift.entity, config.drift.window_days,
        config.drift.sample_seed,
    )  # fmt: skip
    return sample[[PREDICTION]]


def _holdout_metrics(scored: pd.DataFrame, reference: ChampionReference) -> dict[str, float]:
    """The champion's churn metrics on its own holdout rows (as at training), computed as a
    monitoring window's are (`churn_metrics`): what its rules are held against."""
    from ml.churn.train import LABEL

    rows = scored.dropna(subset=[LABEL])
    if rows.empty:
        return {}
    return churn_metrics(
        rows[LABEL].astype(int).to_numpy(), rows[PREDICTION].to_numpy(), reference.threshold
    )


def _served(settings: Settings, reference: ChampionReference, config: MonitoringConfig,
            ref_rows: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    served = served_window(
        settings.data_dir / "predictions" / "serving", reference.version,
        reference.feature_columns, config.drift.window_days, config.drift.entity,
    )  # fmt: skip
    for column in reference.feature_columns:  # JSON nulls must not turn a number into text
        if column in served and pd.api.types.is_numeric_dtype(ref_rows[column]):
            served[column] = pd.to_numeric(served[column], errors="coerce")
    return served


def _monitoring_suite(
    settings: Settings, ref_rows: pd.DataFrame, cur_rows: pd.DataFrame, columns: list[str],
    config: MonitoringConfig, run_id: str, window: tuple[date, date] | None,
) -> ValidationReport:  # fmt: skip
    """The GX monitoring suite derived from the reference, run on the current window (Data
    Docs now; its rows reach monitoring.validation_results with the run's other tables)."""
    from expectations.run import validate_frame
    from expectations.suites.monitoring import asset_name, monitoring_suite

    expectations = monitoring_suite(
        ref_rows[columns], current_size=len(cur_rows), alpha=config.drift.alpha,
        min_effect=config.drift.min_effect, ignore=config.drift.ignore,
    )  # fmt: skip
    where = f"{CHURN.relation}[{window[0]}..{window[1]}]" if window else CHURN.relation
    return validate_frame(
        settings, asset_name(CHURN.relation), cur_rows[columns], expectations,
        relation=where, record=False, run_id=run_id,
    )  # fmt: skip


def monitoring_run_id(started: datetime, suffix: str | None = None) -> str:
    """`mon-<UTC date>-<time>_<4 hex>`: the suffix follows `_`, not `-`, because GX's Data Docs
    read a run name with dateutil, which took `-4240` as a UTC offset of -42:40 and failed to
    render the run's page whenever the four hex digits were all decimal ones."""
    return f"mon-{started:%Y%m%d-%H%M%S}_{suffix or uuid.uuid4().hex[:4]}"


def measure(
    settings: Settings,
    config: MonitoringConfig,
    *,
    retrain_enabled: bool = True,
    refresh_marts: bool = True,
) -> MonitorResult:
    """One monitoring run: measure, store, report, log to MLflow; return it with its trigger."""
    from loopline.warehouse import reading
    from ml.registry import RegistryError

    if not settings.resolved_warehouse_path.exists():
        raise NoWarehouseError(settings.resolved_warehouse_path)
    started = datetime.now(UTC).replace(tzinfo=None)
    run_id = monitoring_run_id(started)
    notes: list[str] = []
    if refresh_marts:
        from loopline.dbt import run_dbt

        run_dbt(settings, ["build", "--select", *OUTCOME_MODELS])

    reference: ChampionReference | None = None
    window: tuple[date, date] | None = None
    data_from: date | None = None
    ref_rows = cur_rows = scores = pd.DataFrame()
    with reading(settings) as con:
        try:
            reference = champion_reference(settings, con)
        except RegistryError as exc:
            notes.append(str(exc))
        if reference is not None:
            (data_from,) = con.execute(
                f"select min(as_of_date) from {CHURN.relation} where feature_set_version = ?",
                [reference.feature_set_version],
            ).fetchone() or (None,)
            end = _window_end(con, reference)
            cur_rows = latest_window(
                con, CHURN.relation, reference.feature_set_version, end,
                config.drift.window_days, config.drift.entity,
            )  # fmt: skip
            window = (min(cur_rows["as_of_date"]).date() if len(cur_rows) else end, end)
            ref_rows = reference_rows(
                reference.frame, "as_of_date", data_from, reference.feature_columns, config.drift
            )
            if _exists(con, PREDICTIONS_TABLE):
                scores = _current_scores(con, reference.version, *window)
        churn_outcomes = _frame(con, _CHURN_OUTCOMES)
        recs_outcomes = _frame(con, _RECS_OUTCOMES)
        data_quality = data_quality_summary(con)
        history = _frame(con, MODEL_PERFORMANCE_TABLE)

    drift: dict[str, DriftCheck] = {}
    suite = None
    scored = _holdout_scored(reference) if reference is not None else None
    if reference is not None and len(cur_rows):
        columns = reference.feature_columns
        unfilled = unfilled_windows(
            ref_rows, "as_of_date", data_from, columns, config.drift.window_pattern
        )
        if unfilled:
            notes.append(f"{', '.join(unfilled)}: their look-back windows were not yet full on "
                         "the reference's first days; compared, never confirmed")  # fmt: skip
        drift[FEATURES] = compare(ref_rows, cur_rows, columns, config.drift, unfilled)
        if not reference.reproduced:
            notes.append("the rebuilt training set differs from the logged one (content hash)")
        served = _served(settings, reference, config, ref_rows)
        if len(served) >= config.drift.min_served_rows:
            drift[SERVED] = compare(ref_rows, served, columns, config.drift, unfilled)
        else:
            notes.append(f"{len(served)} served requests of v{reference.version} in the window: "
                         f"fewer than {config.drift.min_served_rows}, not compared")  # fmt: skip
        suite = _monitoring_suite(settings, ref_rows, cur_rows, columns, config, run_id, window)
        if len(scores) and scored is not None:
            ref_scores = _prediction_reference(scored, reference, config)
            drift[PREDICTIONS] = compare(ref_scores, scores, [PREDICTION], config.drift)
        else:
            notes.append(f"no predictions of v{reference.version} yet: prediction drift skipped")

    metrics = [
        churn_window_metrics(churn_outcomes) if len(churn_outcomes) else pd.DataFrame(),
        recommender_window_metrics(recs_outcomes) if len(recs_outcomes) else pd.DataFrame(),
    ]
    metrics = [m for m in metrics if not m.empty]
    performance = performance_rows(
        pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(columns=METRIC_COLUMNS),
        config.performance.rules,
        config.performance.min_rows,
    ).assign(run_id=run_id, measured_at=started)

    version = reference.version if reference else None
    judged = [drift[s].rows.assign(scope=s) for s in (FEATURES, SERVED) if s in drift]
    result = MonitorResult(
        run_id, version, drift, performance, data_quality, None,
        settings.reports_dir / "monitoring" / run_id / "report.html", None, window, notes, suite,
    )  # fmt: skip
    holdout = _holdout_metrics(scored, reference) if scored is not None and reference else None
    failed = failures(performance, "churn", version) if len(performance) else performance
    for _, row in failed[standing(failed, holdout, config.retrain.standing_tolerance)].iterrows():
        notes.append(
            f"{row['rule']} failed in the week of {row['window_start']} ({row['value']:.3f}) as "
            f"on v{version}'s own holdout ({(holdout or {})[row['metric']]:.3f}): a standing "
            "failure of the version the gate let through, not a reason to retrain"
        )
    trigger = decide_trigger(
        run_id, "loopline-churn", version, performance,
        pd.concat(judged, ignore_index=True) if judged else pd.DataFrame(), result.confirmed,
        config.retrain, retrain_enabled, holdout,
    )  # fmt: skip
    result = replace(result, trigger=trigger)
    run_row = _run_row(settings, result, started, len(ref_rows), len(cur_rows), reference)

    parts = [h for h in (history, performance) if not h.empty]
    all_history = pd.concat(parts, ignore_index=True) if parts else performance
    _write_report(result, run_row, reference, ref_rows, cur_rows, all_history, data_quality)
    result = replace(result, mlflow_run_id=_log_mlflow(settings, result, run_row))
    run_row.update(mlflow_run_id=result.mlflow_run_id,
                   finished_at=datetime.now(UTC).replace(tzinfo=None))  # fmt: skip
    _store(settings, result, run_row, started)
    return result


def _run_row(
    settings: Settings,
    result: MonitorResult,
    started: datetime,
    reference_rows: int,
    current_rows: int,
    reference: ChampionReference | None,
) -> dict[str, Any]:
    quality = result.data_quality
    window = result.window
    prediction = result.prediction_drift
    return {
        "run_id": result.run_id,
        "started_at": started,
        "model_name": "loopline-churn",
        "champion_version": result.champion_version,
        "recommender_version": _champion("loopline-recommender", settings),
        "reference_rows": reference_rows,
        "reference_reproduced": reference.reproduced if reference else None,
        "current_window_start": window[0] if window else None,
        "current_window_end": window[1] if window else None,
        "current_rows": current_rows,
        "dataset_drifted": bool(result.confirmed) if result.feature_drift else None,
        "drifted_features": json.dumps(result.confirmed),
        "prediction_drifted": prediction.drifted if prediction else None,
        "rules_failed": result.count(FAIL),
        "rules_passed": result.count(PASS),
        "rules_no_data": result.count(NO_DATA),
        "validation_run_id": str(quality["run_id"].iloc[0]) if len(quality) else None,
        "validation_critical_failed": int(quality["critical_failed"].sum())
        if len(quality)
        else None,
        "validation_warnings": int(quality["warnings"].sum()) if len(quality) else None,
        "retrain_triggered": bool(result.trigger and result.trigger.fires),
        "report_path": str(result.report),
    }


def _store(
    settings: Settings, result: MonitorResult, run_row: dict[str, Any], at: datetime
) -> None:
    from loopline.warehouse import ensure, writing

    with writing(settings) as con:
        _append(con, MONITOR_RUNS_TABLE, pd.DataFrame([run_row]))
        ensure(con, RETRAIN_TRIGGERS_TABLE)  # queryable (empty) before the first trigger
        version = result.champion_version
        for scope, check in result.drift.items():
            if version is not None:
                _append(
                    con, FEATURE_DRIFT_TABLE, _drift_rows(check, scope, result.run_id, at, version)
                )
        _append(con, MODEL_PERFORMANCE_TABLE, result.performance)
        if result.suite is not None:
            from expectations.results import append

            append(con, result.suite.rows)


def _champion(model_name: str, settings: Settings) -> str | None:
    from ml.registry import CHAMPION, alias_version, configure

    return alias_version(configure(settings), model_name, CHAMPION)


def _write_report(
    result: MonitorResult,
    run_row: dict[str, Any],
    reference: ChampionReference | None,
    ref_rows: pd.DataFrame,
    cur_rows: pd.DataFrame,
    history: pd.DataFrame,
    data_quality: pd.DataFrame,
) -> Path:
    from ml.monitoring.report import performance_plots, write_monitoring_report

    if result.trigger is None:
        retrain = "No retraining: nothing asked for it."
    elif result.trigger.fires:
        retrain = (
            "Retraining triggered: the new version is promoted only if it passes the gate "
            "and beats the champion on the latest labelled days."
        )
    else:
        retrain = "Retraining is disabled (retrain.enabled or --no-retrain): reported only."
    summary = {k: v for k, v in run_row.items() if k not in ("report_path",)}
    summary.update({"notes": "; ".join(result.notes) or "-"})
    if result.suite is not None:
        summary["monitoring_suite"] = (
            f"{result.suite_summary()} (Data Docs: {result.suite.data_docs})"
        )
    with tempfile.TemporaryDirectory(prefix="loopline-monitor-") as tmp:
        plots = _plots(result.feature_drift, ref_rows, cur_rows, Path(tmp))
        charts = performance_plots(history, Path(tmp)) if not history.empty else []
        return write_monitoring_report(
            result.report, summary, result.trigger.reasons if result.trigger else [], retrain,
            result.feature_drift.rows if result.feature_drift else pd.DataFrame(),
            result.prediction_drift.rows if result.prediction_drift else pd.DataFrame(),
            result.drift[SERVED].rows if SERVED in result.drift else pd.DataFrame(),
            plots, result.performance, charts, data_quality,
            reference.lineage if reference else {},
        )  # fmt: skip


def _log_mlflow(settings: Settings, result: MonitorResult, run_row: dict[str, Any]) -> str:
    import mlflow

    from ml.registry import CHURN_MODEL, DESCRIPTION_TAG, configure, experiment_for

    client = configure(settings)
    experiment = experiment_for(settings, MONITORING_EXPERIMENT)
    if client.get_experiment(experiment).tags.get(DESCRIPTION_TAG) is None:
        client.set_experiment_tag(experiment, DESCRIPTION_TAG, EXPERIMENT_DESCRIPTION)
    tags = {
        "monitor.run_id": result.run_id,
        "model": CHURN_MODEL,
        "champion_version": str(result.champion_version),
        DESCRIPTION_TAG: f"Monitoring run: {result.summary()}",
    }
    metrics = {
        "drifted_features": float(len(result.confirmed)),
        "dataset_drifted": float(bool(result.confirmed)),
        "prediction_drifted": float(
            bool(result.prediction_drift and result.prediction_drift.drifted)
        ),
        "rules_failed": float(run_row["rules_failed"]),
        "rules_passed": float(run_row["rules_passed"]),
        "retrain_triggered": float(run_row["retrain_triggered"]),
    }
    with mlflow.start_run(experiment_id=experiment, run_name=result.run_id) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifact(str(result.report), "report")
    if result.champion_version is not None:
        client.set_model_version_tag(
            CHURN_MODEL, result.champion_version, "monitoring.last_run_id", run.info.run_id
        )
    return str(run.info.run_id)


def retraining_config(settings: Settings, training_days: int | None) -> ChurnConfig:
    """`conf/ml.yaml`'s churn settings, on the latest `training_days` labelled days if set
    (the window a triggered retrain learns from: `retrain.training_days`)."""
    from ml.config import load_ml_config

    churn = load_ml_config(settings.ml_config).churn
    if training_days is None:
        return churn
    return churn.model_copy(update={"training_days": training_days})


def default_training(settings: Settings, training_days: int | None) -> Callable[[], ChurnOutcome]:
    """The ordinary churn training step (what a trigger runs), on the retrain window."""
    from ml.churn.train import train_churn

    return lambda: train_churn(settings, retraining_config(settings, training_days))


def monitor(
    settings: Settings,
    config: MonitoringConfig,
    *,
    retrain: bool = True,
    train: Callable[[], ChurnOutcome] | None = None,
    refresh_marts: bool = True,
) -> MonitorOutcome:
    """`measure`, then the training the trigger asks for, then the trigger's record."""
    result = measure(settings, config, retrain_enabled=retrain, refresh_marts=refresh_marts)
    outcome = None
    if result.trigger is not None:
        if result.trigger.fires:
            try:
                training = train or default_training(settings, config.retrain.training_days)
                outcome = training()
            except Exception as exc:
                record_trigger(settings, result.trigger, error=str(exc))
                raise
        record_trigger(settings, result.trigger, outcome.decision if outcome else None)
    return MonitorOutcome(result, outcome)
