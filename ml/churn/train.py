"""The churn model's training step: warehouse in, a registered and judged MLflow version out.

`train_churn` reads a point-in-time training set from the feature store, trains and
calibrates (`ml.churn.model`), evaluates on a time-based holdout (`ml.churn.evaluate`), logs everything
to MLflow with lineage, registers the version as ``@challenger``, scores the current
``@champion`` on the *same* holdout, and lets `ml.registry.decide` promote or keep.

The operating threshold is chosen on the latest training days (the last time fold's
validation days), never on the holdout, so the holdout's precision and recall are honest.

In MLflow the training is one parent run (metrics, plots, report, the registered model) with
one nested run per grid point of the search (`log_candidates`: its kind, hyperparameters and
ROC AUC on each time fold, tagged ``candidate.chosen`` for the one that was calibrated), so
the search can be compared in the UI's table and chart views.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.settings import Settings
from ml.churn.evaluate import (
    Evaluation,
    choose_threshold,
    evaluate,
    permutation_importance_table,
    plot_evaluation,
    quality_gate,
)
from ml.churn.model import (
    CandidateResult,
    TrainedModel,
    as_model_input,
    split_by_time,
    time_folds,
    train,
)
from ml.config import ChurnConfig
from ml.features.definitions import CHURN
from ml.features.training_sets import churn_training_set, dbt_manifest_hash
from ml.registry import (
    CHAMPION,
    CHURN_MODEL,
    SKOPS_TRUSTED_TYPES,
    Decision,
    alias_version,
    apply_decision,
    configure,
    decide,
    describe_registered_model,
    experiment_for,
    git_commit,
    mlflow_may_reload_its_own_save,
    model_requirements,
    record_decision,
)
from ml.report import images, table, verdict, write_report

LABEL = "churned_within_30d"
TIME = "as_of_date"


@dataclass(frozen=True)
class ChurnOutcome:
    """What one training run produced and decided."""

    run_id: str
    version: str
    kind: str
    metrics: dict[str, float]
    bayes_auc: float | None
    decision: Decision
    report: Path


def label_window(con: Any) -> tuple[date, date]:
    """The first and last as-of day that has churn labels."""
    import duckdb

    try:
        start, end = con.execute(
            "select min(as_of_date), max(as_of_date) from features.label_churn__user_daily"
        ).fetchone()
    except duckdb.CatalogException as exc:
        raise ValueError(
            "the warehouse has no churn labels table: run `loopline ingest` and `loopline build`"
        ) from exc
    if start is None:
        raise ValueError("no churn labels yet: the data must span more than the 30-day window")
    return start, end


def threshold_from_training(
    trained: TrainedModel, train_part: pd.DataFrame, config: ChurnConfig
) -> float:
    """The operating threshold, chosen on the latest training days (not the holdout)."""
    ordered = train_part.sort_values(TIME, kind="stable").reset_index(drop=True)
    _, last_val = time_folds(ordered, TIME, config.train.n_splits, config.train.entity)[-1]
    rows = ordered.iloc[last_val]
    return choose_threshold(
        rows[LABEL].astype(int),
        trained.predict_proba(rows),
        config.threshold.rule,
        config.threshold.capacity_share,
    )


def bayes_auc_on(settings: Settings, holdout: pd.DataFrame) -> float | None:
    """The reference (Bayes) AUC on the holdout's rows: the true churn probabilities from the
    source's ground-truth file, when the source has one (the simulator writes
    `<sources>/_truth/churn_reference.parquet`); None otherwise. The machinery reads the
    file, never the simulator."""
    from sklearn.metrics import roc_auc_score

    path = settings.sources_dir / "_truth" / "churn_reference.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["user_id", "as_of_date", "p_churn_30d"])
    truth = truth.assign(
        user_id=truth["user_id"].astype("int64"), as_of_date=pd.to_datetime(truth["as_of_date"])
    )
    rows = holdout[["user_id", TIME, LABEL]].assign(
        user_id=holdout["user_id"].astype("int64"), as_of_date=pd.to_datetime(holdout[TIME])
    )
    joined = rows.merge(truth, on=["user_id", "as_of_date"], how="inner")
    if joined.empty or joined[LABEL].nunique() < 2:
        return None
    return float(roc_auc_score(joined[LABEL].astype(int), joined["p_churn_30d"]))


def _flat_params(trained: TrainedModel, config: ChurnConfig, version: str) -> dict[str, Any]:
    return {
        "estimator": trained.kind,
        **{f"best.{k}": v for k, v in trained.best_params.items()},
        "candidates": ",".join(config.train.candidates),
        "n_splits": config.train.n_splits,
        "calibration": config.train.calibration,
        "class_weight": config.train.class_weight,
        "holdout_fraction": config.holdout_fraction,
        "training_days": config.training_days,
        "threshold_rule": config.threshold.rule,
        "capacity_share": config.threshold.capacity_share,
        "feature_set": CHURN.name,
        "feature_set_version": version,
        "as_known_at": config.as_known_at,
        "n_features": len(trained.feature_columns),
    }


def split_tags(config: ChurnConfig) -> dict[str, str]:
    """How a version's holdout was drawn; versions are compared only on the same rule."""
    return {
        "split.entity": str(config.train.entity),
        "split.holdout_fraction": str(config.holdout_fraction),
        "split.gap_days": str(config.gap_days),
    }


def champion_metrics_on(
    settings: Settings, model_name: str, holdout: pd.DataFrame, split: dict[str, str]
) -> tuple[str | None, dict[str, float] | None]:
    """(champion version, its metrics on this holdout), or None where it cannot score it.

    A champion whose holdout was drawn by another rule may have trained on these rows'
    users, so it is not scored on them (None): the gate alone decides then.
    """
    from ml.registry import load_sklearn_version, version_tags

    client = configure(settings)
    champion = alias_version(client, model_name, CHAMPION)
    if champion is None:
        return None, None
    tags = version_tags(client, model_name, champion)
    columns = json.loads(tags.get("feature_columns", "[]"))
    if not columns or any(c not in holdout.columns for c in columns):
        return champion, None
    if any(tags.get(key) != value for key, value in split.items()):
        return champion, None
    model = load_sklearn_version(model_name, champion)
    proba = model.predict_proba(holdout[columns])[:, 1]
    threshold = float(tags.get("threshold", 0.5))
    return champion, evaluate(holdout[LABEL].astype(int), proba, threshold).metrics()


def candidate_rows(trained: TrainedModel) -> list[dict[str, Any]]:
    """One row per grid point, best mean CV ROC AUC first (for reports)."""
    chosen = trained.chosen
    ranked = sorted(trained.candidates, key=lambda c: -c.mean_score)
    return [
        {
            "candidate": c.name,
            "cv ROC AUC": c.mean_score,
            "std": c.std_score,
            "folds": ", ".join(f"{s:.3f}" for s in c.fold_scores),
            "fit seconds": f"{c.fit_seconds:.1f}",
            "chosen": "yes" if c is chosen else "",
        }
        for c in ranked
    ]


def _candidate_params(candidate: CandidateResult) -> dict[str, Any]:
    return {"estimator": candidate.kind, **{k: str(v) for k, v in candidate.params.items()}}


def log_candidates(trained: TrainedModel, experiment: str, n_splits: int) -> list[str]:
    """Log one run per grid point, nested under the active run; return their run ids."""
    import mlflow

    chosen = trained.chosen
    ranked = sorted(trained.candidates, key=lambda c: -c.mean_score)
    run_ids = []
    for rank, candidate in enumerate(ranked, start=1):
        with mlflow.start_run(
            experiment_id=experiment, run_name=candidate.name, nested=True
        ) as child:
            mlflow.set_tags(
                {
                    "model": CHURN_MODEL,
                    "candidate.kind": candidate.kind,
                    "candidate.rank": str(rank),
                    "candidate.chosen": str(candidate is chosen).lower(),
                }
            )
            mlflow.log_params({**_candidate_params(candidate), "n_splits": n_splits})
            mlflow.log_metrics(
                {
                    "cv_roc_auc": candidate.mean_score,
                    "cv_roc_auc_std": candidate.std_score,
                    **{f"cv_roc_auc_fold_{i}": v for i, v in enumerate(candidate.fold_scores)},
                    "fit_seconds": candidate.fit_seconds,
                }
            )
            run_ids.append(child.info.run_id)
    return run_ids


def _report(
    path: Path,
    version: str,
    evaluation: Evaluation,
    bayes_auc: float | None,
    decision: Decision,
    plots: list[Path],
    importance: pd.DataFrame,
    lineage: dict[str, str],
    search: list[dict[str, Any]],
) -> Path:
    headline = {"ROC AUC (holdout)": evaluation.roc_auc}
    if bayes_auc is not None:
        headline["Bayes-optimal ROC AUC (same rows)"] = bayes_auc
        headline["gap"] = bayes_auc - evaluation.roc_auc
    metrics = {k: v for k, v in evaluation.metrics().items() if k not in ("n", "tn", "fp", "fn")}
    return write_report(
        path,
        f"Churn model v{version}",
        [
            ("Decision", verdict(decision.promoted, decision.summary())),
            ("Headline", table(headline)),
            ("Holdout metrics", table(metrics)),
            ("Plots", images(plots)),
            ("Permutation importance (top 15)", table(importance.head(15).to_dict("records"))),
            ("Model search (ROC AUC on each time fold's validation days)", table(search)),
            ("Lineage", table(lineage)),
        ],
    )


def train_churn(settings: Settings, config: ChurnConfig) -> ChurnOutcome:
    """Train, evaluate, log, register as challenger, and promote if it earns it."""
    from threadpoolctl import threadpool_limits

    # fits, importance and scoring alike: see "Threads" in ml/churn/model.py
    with threadpool_limits(limits=config.train.threads_per_fit):
        return _train_churn(settings, config)


@dataclass(frozen=True, eq=False)
class ChurnFit:
    """A trained and calibrated churn model judged on its holdout, before anything is logged."""

    training_set: Any  # ml.features.training_sets.TrainingSet
    train_part: pd.DataFrame
    holdout: pd.DataFrame
    trained: TrainedModel
    threshold: float
    proba: np.ndarray  # calibrated churn probabilities of the holdout rows
    evaluation: Evaluation
    bayes_auc: float | None
    version_used: str


def churn_split(
    settings: Settings, config: ChurnConfig
) -> tuple[Any, pd.DataFrame, pd.DataFrame, str]:
    """(training set, train part, holdout, feature-set version) as `train_churn` splits them."""
    from loopline.warehouse import reading

    with reading(settings) as con:
        start, end = label_window(con)
        if config.training_days is not None:  # a sliding window: the latest labelled days
            start = max(start, end - timedelta(days=config.training_days - 1))
        training_set = churn_training_set(
            con, start, end, config.feature_set_version, as_known_at=config.as_known_at
        )
    frame = as_model_input(training_set.frame.dropna(subset=[LABEL]))
    version_used = ",".join(training_set.feature_set_versions.get(CHURN.relation, []))
    train_part, holdout = split_by_time(
        frame, TIME, config.holdout_fraction, LABEL, config.train.entity, config.gap_days
    )
    return training_set, train_part, holdout, version_used


def fit_churn(settings: Settings, config: ChurnConfig) -> ChurnFit:
    """Read the training set, split, search, calibrate and evaluate on the holdout: the
    steps of `train_churn` before MLflow (bench/learning.py measures exactly these)."""
    training_set, train_part, holdout, version_used = churn_split(settings, config)
    trained = train(train_part, LABEL, TIME, config.train)
    threshold = threshold_from_training(trained, train_part, config)
    y_holdout = holdout[LABEL].astype(int).to_numpy()
    proba = trained.predict_proba(holdout)
    return ChurnFit(
        training_set=training_set,
        train_part=train_part,
        holdout=holdout,
        trained=trained,
        threshold=threshold,
        proba=proba,
        evaluation=evaluate(y_holdout, proba, threshold),
        bayes_auc=bayes_auc_on(settings, holdout),
        version_used=version_used,
    )


def _train_churn(settings: Settings, config: ChurnConfig) -> ChurnOutcome:
    import mlflow
    from mlflow.models import infer_signature

    fit = fit_churn(settings, config)
    training_set, holdout, trained = fit.training_set, fit.holdout, fit.trained
    threshold, evaluation, bayes_auc = fit.threshold, fit.evaluation, fit.bayes_auc
    version_used = fit.version_used
    gate = quality_gate(evaluation, config.policy.gate)
    sample = holdout.sample(min(len(holdout), config.importance_rows), random_state=0)
    importance = permutation_importance_table(
        trained.model, sample[trained.feature_columns], sample[LABEL].astype(int)
    )

    manifest = settings.data_dir / "dbt" / "target"
    lineage = training_set.lineage(
        {
            "lineage.dbt_manifest_hash": (
                dbt_manifest_hash(manifest) if (manifest / "manifest.json").exists() else "unknown"
            ),
            "lineage.git_commit": git_commit(),
        }
    )
    client = configure(settings)
    experiment = experiment_for(settings, CHURN_MODEL)
    metrics = {f"holdout_{k}": v for k, v in evaluation.metrics().items()}
    metrics.update({f"cv_roc_auc_{k}": v for k, v in trained.cv_scores.items()})
    if bayes_auc is not None:
        metrics["bayes_roc_auc"] = bayes_auc
        metrics["bayes_roc_auc_gap"] = bayes_auc - evaluation.roc_auc

    with tempfile.TemporaryDirectory(prefix="loopline-churn-") as tmp:
        plots = plot_evaluation(evaluation, importance, Path(tmp) / "plots")
        chosen = trained.chosen
        description = (
            f"Chose {chosen.name if chosen else trained.kind} out of {len(trained.candidates)} "
            f"candidates x {config.train.n_splits} time folds (nested runs); holdout ROC AUC "
            f"{evaluation.roc_auc:.3f}"
            + (
                f", Bayes-optimal {bayes_auc:.3f} on the same rows."
                if bayes_auc is not None
                else "."
            )
        )
        with mlflow.start_run(
            experiment_id=experiment, run_name=f"churn-{trained.kind}", description=description
        ) as run:
            mlflow.set_tags({**lineage, "model": CHURN_MODEL, "estimator": trained.kind})
            log_candidates(trained, experiment, config.train.n_splits)
            mlflow.log_params(_flat_params(trained, config, version_used))
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(Path(tmp) / "plots"), "plots")
            mlflow.log_table(importance, "evaluation/permutation_importance.json")
            example = holdout[trained.feature_columns].head(3)
            # MLflow checks the input example by reloading the folder it just wrote from
            # this model (`configure` otherwise forbids MLflow to deserialise models)
            with mlflow_may_reload_its_own_save():
                info = mlflow.sklearn.log_model(
                    trained.model,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=SKOPS_TRUSTED_TYPES,
                    signature=infer_signature(example, trained.model.predict_proba(example)),
                    input_example=example,
                    pyfunc_predict_fn="predict_proba",
                    registered_model_name=CHURN_MODEL,
                    pip_requirements=model_requirements(),
                    metadata={"feature_columns": trained.feature_columns, "threshold": threshold},
                )
            version = str(info.registered_model_version)
            describe_registered_model(client, CHURN_MODEL)
            for key, value in {
                "feature_columns": json.dumps(trained.feature_columns),
                "numeric_columns": json.dumps(trained.numeric),
                "threshold": repr(threshold),
                "feature_set": CHURN.name,
                "feature_set_version": version_used,
                "estimator": trained.kind,
                "holdout_roc_auc": f"{evaluation.roc_auc:.6f}",
                **split_tags(config),
            }.items():
                client.set_model_version_tag(CHURN_MODEL, version, key, value)

            champion, champion_metrics = champion_metrics_on(
                settings, CHURN_MODEL, holdout, split_tags(config)
            )
            decision = decide(
                CHURN_MODEL,
                version,
                config.policy,
                evaluation.metrics(),
                gate.failures,
                champion,
                champion_metrics,
                run_id=run.info.run_id,
            )
            apply_decision(client, decision)
            mlflow.set_tags(
                {"decision.action": decision.action, "decision.reason": decision.reason}
            )
            report = _report(
                settings.reports_dir / "churn" / f"v{version}" / "evaluation.html",
                version, evaluation, bayes_auc, decision, plots, importance, lineage,
                candidate_rows(trained),
            )  # fmt: skip
            mlflow.log_artifact(str(report), "report")
    record_decision(settings, decision)
    return ChurnOutcome(
        run_id=run.info.run_id,
        version=version,
        kind=trained.kind,
        metrics={k: float(v) for k, v in metrics.items() if np.isfinite(v)},
        bayes_auc=bayes_auc,
        decision=decision,
        report=report,
    )
