"""The recommender's training and batch steps: warehouse in, registered pyfunc and top-N out.

`train_recommender` splits viewing interactions in time, fits the item-item model
(`ml.recommend`) on the days before the cut, and evaluates it and the popularity baseline on
the "next new show" task after it. The version is registered as ``@challenger`` and judged
like the churn model, with one extra gate rule: it must beat popularity on recall@k.
The registered model is the one evaluated (fit before the cut), so its numbers are the
numbers of what is served; the champion is scored on the same split for the comparison.
The run also gets recall@k, NDCG@k, catalogue coverage and popularity bias over k for the
model and the baseline (`ml.recommend.ranking_curves`): as step metrics (``curve.<model>.
<metric>``, step k: line charts in the MLflow UI), as plots, and in the HTML report
(``<reports>/recommender/v<N>/evaluation.html``, also logged to the run).

`recommend_all` writes every recent viewer's top-k into ``ml.recommendations`` (idempotent per
as-of day and model version) and refreshes their histories in the online store for serving.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from loopline.settings import Settings
from loopline.warehouse import RECOMMENDATIONS_TABLE
from ml.config import RecommenderConfig
from ml.recommend import (
    EVENTS_RELATION,
    HISTORY_FEATURE_SET,
    ItemItemRecommender,
    PopularityRecommender,
    RecEvaluation,
    batch_recommend,
    default_cut,
    evaluate_recommender,
    load_interactions,
    log_recommender,
    plot_ranking_curves,
    ranking_curves,
    split_by_time,
    user_histories,
)
from ml.registry import (
    CHAMPION,
    RECS_MODEL,
    Decision,
    alias_version,
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


@dataclass(frozen=True)
class RecsScoreReport:
    """What one batch-recommendation run wrote."""

    model_version: str
    as_of: date
    rows: int
    users: int
    table: str


@dataclass(frozen=True)
class LoadedRecommender:
    """A registered recommender version and the in-memory model behind its pyfunc."""

    version: str
    model: ItemItemRecommender


def load_recommender(settings: Settings, alias: str = CHAMPION) -> LoadedRecommender | None:
    """The recommender under `alias`, or None if there is none yet."""
    import mlflow

    client = configure(settings)
    version = alias_version(client, RECS_MODEL, alias)
    if version is None:
        return None
    pyfunc = mlflow.pyfunc.load_model(f"models:/{RECS_MODEL}/{version}")
    model = pyfunc.unwrap_python_model().model
    if model is None:
        raise RuntimeError(f"{RECS_MODEL} v{version} loaded without its model")
    return LoadedRecommender(version, model)


def _last_day(con: Any) -> date:
    (last,) = con.execute(f"select max(event_date) from {EVENTS_RELATION}").fetchone() or (None,)
    if last is None:
        raise ValueError("no viewing events in the warehouse yet; run the line first")
    return last


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
        interactions = load_interactions(con, None, _last_day(con))
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


def materialize_histories(settings: Settings, con: Any, as_of: date | None = None) -> int:
    """Write every recent viewer's history to the online store; return the rows written."""
    from ml.config import load_ml_config

    params = load_ml_config(settings.ml_config).recommender.params
    histories = user_histories(
        con, as_of or _last_day(con), params.history_window_days, params.max_history
    )
    return _write_histories(settings, histories)


def _write_histories(settings: Settings, histories: pd.DataFrame) -> int:
    from ml.online_store import materialize, open_online_store

    if histories.empty:
        return 0
    with open_online_store(settings) as store:
        return materialize(store, HISTORY_FEATURE_SET, histories, ["user_id"]).written


def recommend_all(settings: Settings, as_of: date | None, k: int) -> RecsScoreReport | None:
    """Top-k for every user who watched in the history window, into the warehouse.

    Returns None when no recommender is registered yet.
    """
    from loopline.warehouse import ensure, writing

    loaded = load_recommender(settings, CHAMPION)
    if loaded is None:
        return None
    params = loaded.model.params
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    with writing(settings) as con:
        as_of = as_of or _last_day(con)
        histories = user_histories(con, as_of, params.history_window_days, params.max_history)
        recs = batch_recommend(loaded.model, histories, k)
        n = len(recs)
        table_ = pa.table(
            {
                "user_id": pa.array(recs["user_id"].astype(str).tolist(), pa.string()),
                "as_of_date": pa.array([as_of] * n, pa.date32()),
                "rank": pa.array(recs["rank"].to_numpy(), pa.int32()),
                "show_id": pa.array(recs["show_id"].astype(str).tolist(), pa.string()),
                "score": pa.array(recs["score"].to_numpy(), pa.float64()),
                "model_name": pa.array([RECS_MODEL] * n, pa.string()),
                "model_version": pa.array([loaded.version] * n, pa.string()),
                "scored_at": pa.array([scored_at] * n, pa.timestamp("us")),
            }
        )
        ensure(con, RECOMMENDATIONS_TABLE)
        con.register("_recs", table_)
        con.execute("begin transaction")
        con.execute(
            f"delete from {RECOMMENDATIONS_TABLE} where as_of_date = ? and model_version = ?",
            [as_of, loaded.version],
        )
        con.execute(f"insert into {RECOMMENDATIONS_TABLE} select * from _recs")
        con.execute("commit")
        con.unregister("_recs")
        _write_histories(settings, histories)  # the same histories the top-k came from
    return RecsScoreReport(
        loaded.version, as_of, n, histories["user_id"].nunique(), RECOMMENDATIONS_TABLE
    )
