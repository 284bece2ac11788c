"""The recommender's training and batch steps: warehouse in, registered pyfunc and top-N out.

`train_recommender` splits viewing interactions in time, fits the item-item model
(`ml.recommender.model`) on the days before the cut, and evaluates it and the popularity baseline on
the "next new show" task after it. The version is registered as ``@challenger`` and judged
like the churn model, with one extra gate rule: it must beat popularity on recall@k.
The registered model is the one evaluated (fit before the cut), so its numbers are the
numbers of what is served; the champion is scored on the same split for the comparison.
The run also gets recall@k, NDCG@k, catalogue coverage and popularity bias over k for the
model and the baseline (`ml.recommender.evaluate.ranking_curves`): as step metrics (``curve.<model>.
<metric>``, step k: line charts in the MLflow UI), as plots, and in the HTML report
(``<reports>/recommender/v<N>/evaluation.html``, also logged to the run).

The version is tagged with the ``recs_user_history`` feature-set version current at training
time: batch scoring and serving read the histories of that version.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.settings import Settings
from ml.config import RecommenderConfig
from ml.features.definitions import USER_HISTORY, resolve_version
from ml.recommender.evaluate import (
    RecEvaluation,
    evaluate_recommender,
    plot_ranking_curves,
    ranking_curves,
)
from ml.recommender.interactions import (
    EVENTS_RELATION,
    default_cut,
    last_day,
    load_interactions,
    split_by_time,
)
from ml.recommender.model import ItemItemRecommender, PopularityRecommender
from ml.recommender.persistence import load_recommender, log_recommender
from ml.registry import (
    CHAMPION,
    RECS_MODEL,
    Decision,
    apply_decision,
    configure,
    decide,
    describe_registered_model,
    experiment_for,
    git_commit,
    model_requirements,
    record_decision,
)
from ml.report import images, table, verdict, write_report

CURVE_K_MAX = 20  # the report's and the MLflow curves' longest list


@dataclass(frozen=True)
class RecsOutcome:
    """What one recommender training run produced and decided."""

    run_id: str
    version: str
    k: int
    metrics: dict[str, float]
    baseline: dict[str, float]
    decision: Decision
    report: Path


def _gate_failures(
    config: RecommenderConfig, evaluation: RecEvaluation, baseline: RecEvaluation
) -> list[str]:
    failures = []
    if not evaluation.recall_at_k > baseline.recall_at_k:
        failures.append(
            f"recall@{evaluation.k} {evaluation.recall_at_k:.4f} does not beat popularity "
            f"{baseline.recall_at_k:.4f}"
        )
    metrics = evaluation.metrics()
    for name, minimum in config.policy.gate.items():
        if name not in metrics:
            raise ValueError(f"unknown recommender gate metric {name!r}; have {sorted(metrics)}")
        if not metrics[name] >= minimum:
            failures.append(f"{name}={metrics[name]:.4f} is below the minimum {minimum}")
    return failures


def _log_curves(client: Any, run_id: str, curves: dict[str, pd.DataFrame]) -> None:
    """Each curve as a step metric (step = k), in one call: line charts in the MLflow UI."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"curve.{label.replace('-', '_')}.{column}", float(value), now, int(k))
        for label, frame in curves.items()
        for column in ("recall", "ndcg", "coverage", "popularity")
        for k, value in zip(frame["k"], frame[column], strict=True)
    ]
    client.log_batch(run_id, metrics=metrics)


def _report(
    path: Path,
    version: str,
    config: RecommenderConfig,
    cut: date,
    decision: Decision,
    evaluation: RecEvaluation,
    baseline: RecEvaluation,
    curves: dict[str, pd.DataFrame],
    plots: list[Path],
) -> Path:
    ks = [k for k in (1, 5, config.k, CURVE_K_MAX) if k <= CURVE_K_MAX]
    rows = [
        {"model": label, **{c: (int(v) if c == "k" else float(v)) for c, v in row.items()}}
        for label, frame in curves.items()
        for row in frame[frame["k"].isin(sorted(set(ks)))].to_dict("records")
    ]
    return write_report(
        path,
        f"Recommender v{version}",
        [
            ("Decision", verdict(decision.promoted, decision.summary())),
            (
                f"Next new show after {cut} (top {config.k})",
                table(
                    [
                        {"model": "item-item", **evaluation.metrics()},
                        {"model": "popularity", **baseline.metrics()},
                    ]
                ),
            ),
            ("Over k: ranking, coverage and popularity bias", images(plots)),
            (
                "Over k (coverage: share of the catalogue recommended to anyone; popularity: "
                "mean popularity percentile of what is recommended, 1 = most watched)",
                table(rows),
            ),
            ("Parameters", table(config.params.model_dump())),
        ],
    )


def train_recommender(settings: Settings, config: RecommenderConfig) -> RecsOutcome:
    """Fit, evaluate against popularity, log, register as challenger, promote if it earns it."""
    import mlflow

    from loopline.warehouse import reading

    with reading(settings) as con:
        interactions = load_interactions(con, None, last_day(con))
        history_version = resolve_version(con, USER_HISTORY, None)
    cut = default_cut(interactions, config.holdout_days)
    train_part, test = split_by_time(interactions, cut)
    model = ItemItemRecommender().fit(train_part, config.params)
    baseline_model = PopularityRecommender().fit(train_part, config.params)
    evaluation = evaluate_recommender(model, train_part, test, config.k)
    baseline = evaluate_recommender(baseline_model, train_part, test, config.k)
    failures = _gate_failures(config, evaluation, baseline)

    client = configure(settings)
    current = load_recommender(settings, CHAMPION)
    champion = current.version if current is not None else None
    champion_metrics = None
    if current is not None:
        champion_metrics = evaluate_recommender(current.model, train_part, test, config.k).metrics()

    k_max = max(CURVE_K_MAX, config.k)
    curves = {
        "item-item": ranking_curves(model, train_part, test, k_max),
        "popularity": ranking_curves(baseline_model, train_part, test, k_max),
    }
    experiment = experiment_for(settings, RECS_MODEL)
    window = (interactions["first_watched_at"].min(), interactions["last_watched_at"].max())
    lift = evaluation.recall_at_k - baseline.recall_at_k
    description = (
        f"Item-item vs popularity on the new shows users started from {cut}: recall@"
        f"{config.k} {evaluation.recall_at_k:.3f} vs {baseline.recall_at_k:.3f} "
        f"({evaluation.users} users)."
    )
    with (
        tempfile.TemporaryDirectory(prefix="loopline-recs-") as tmp,
        mlflow.start_run(
            experiment_id=experiment, run_name="recommender-item-item", description=description
        ) as run,
    ):
        mlflow.set_tags(
            {
                "model": RECS_MODEL,
                "lineage.data_window": f"{window[0]}..{window[1]}",
                "lineage.cut": str(cut),
                "lineage.source": EVENTS_RELATION,
                "lineage.history_feature_set_version": history_version,
                "lineage.git_commit": git_commit(),
                "training_set.rows": str(len(train_part)),
            }
        )
        mlflow.log_params({**config.params.model_dump(), "k": config.k, "cut": str(cut)})
        mlflow.log_metrics(
            {
                **{f"holdout_{k}": v for k, v in evaluation.metrics().items()},
                **{f"popularity_{k}": v for k, v in baseline.metrics().items()},
                "recall_lift_over_popularity": lift,
            }
        )
        _log_curves(client, run.info.run_id, curves)
        plots = plot_ranking_curves(curves, Path(tmp) / "plots")
        mlflow.log_artifacts(str(Path(tmp) / "plots"), "plots")
        for label, frame in curves.items():
            mlflow.log_table(frame, f"evaluation/curves_{label.replace('-', '_')}.json")
        example = pd.DataFrame(
            {"history": [[str(s) for s in model.show_ids[:3]]], "just_watched": [None]}
        )
        info = log_recommender(
            model, "model", example, registered_model_name=RECS_MODEL, k=config.k,
            pip_requirements=model_requirements(),
        )  # fmt: skip
        version = str(info.registered_model_version)
        # batch scoring and serving read the histories of this version
        client.set_model_version_tag(
            RECS_MODEL, version, "history_feature_set_version", history_version
        )
        describe_registered_model(client, RECS_MODEL)
        decision = decide(
            RECS_MODEL,
            version,
            config.policy,
            evaluation.metrics(),
            failures,
            champion,
            champion_metrics,
            run_id=run.info.run_id,
        )
        apply_decision(client, decision)
        mlflow.set_tags({"decision.action": decision.action, "decision.reason": decision.reason})
        final = _report(
            settings.reports_dir / "recommender" / f"v{version}" / "evaluation.html",
            version, config, cut, decision, evaluation, baseline, curves, plots,
        )  # fmt: skip
        mlflow.log_artifact(str(final), "report")
    record_decision(settings, decision)
    return RecsOutcome(
        run_id=run.info.run_id,
        version=version,
        k=config.k,
        metrics=evaluation.metrics(),
        baseline=baseline.metrics(),
        decision=decision,
        report=final,
    )
