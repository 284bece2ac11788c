"""The loop's training flow: churn model and recommender, each evaluated, registered and judged.

Each task wraps one step in `ml/`; a challenger becomes ``@champion`` only if the step's
gate and comparison say so (see `ml.registry`). Each reports one phase line.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, task
from pydantic import BaseModel, ConfigDict, Field

from flows.logs import run_logger
from flows.slots import each_write_takes_the_slot
from loopline.progress import phase
from loopline.settings import get_settings


class TrainFlowParams(BaseModel):
    """Which models to train (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    models: tuple[Literal["churn", "recommender"], ...] = ("churn", "recommender")
    # the churn model learns from the latest N labelled days only (None: conf/ml.yaml's
    # window); the monitor passes retrain.training_days when drift or a rule triggers it
    churn_training_days: int | None = Field(None, ge=2)


@task(name="train churn model")
def train_churn_model(training_days: int | None = None) -> dict[str, object]:
    """Train, evaluate, register and judge the churn model (on the latest `training_days`
    labelled days if given)."""
    from ml.churn.train import train_churn
    from ml.monitoring.run import retraining_config

    settings = get_settings()
    started = time.perf_counter()
    outcome = train_churn(settings, retraining_config(settings, training_days))
    bayes = f" (Bayes {outcome.bayes_auc:.3f})" if outcome.bayes_auc is not None else ""
    phase(
        "train",
        f"churn v{outcome.version} {outcome.kind} ROC AUC "
        f"{outcome.metrics['holdout_roc_auc']:.3f}{bayes}: {outcome.decision.action}",
        time.perf_counter() - started,
    )
    run_logger().info(
        "churn v%s (%s): holdout ROC AUC %.3f, Bayes-optimal %s; %s; report %s",
        outcome.version, outcome.kind, outcome.metrics["holdout_roc_auc"],
        f"{outcome.bayes_auc:.3f}" if outcome.bayes_auc is not None else "n/a",
        outcome.decision.summary(), outcome.report,
    )  # fmt: skip
    return {
        "version": outcome.version,
        "promoted": outcome.decision.promoted,
        "roc_auc": outcome.metrics["holdout_roc_auc"],
        "bayes_auc": outcome.bayes_auc,
        "report": str(outcome.report),
        "decision": outcome.decision,  # the monitor records it with its retrain trigger
    }


@task(name="train recommender")
def train_recommender_model() -> dict[str, object]:
    """Train, evaluate against popularity, register and judge the recommender."""
    from ml.config import load_ml_config
    from ml.recommender.train import train_recommender

    settings = get_settings()
    started = time.perf_counter()
    outcome = train_recommender(settings, load_ml_config(settings.ml_config).recommender)
    phase(
        "train",
        f"recommender v{outcome.version} recall@{outcome.k} {outcome.metrics['recall_at_k']:.3f} "
        f"(popular {outcome.baseline['recall_at_k']:.3f}): {outcome.decision.action}",
        time.perf_counter() - started,
    )
    run_logger().info(
        "recommender v%s: recall@%s %.3f vs popularity %.3f; %s",
        outcome.version, outcome.k, outcome.metrics["recall_at_k"],
        outcome.baseline["recall_at_k"], outcome.decision.summary(),
    )  # fmt: skip
    return {
        "version": outcome.version,
        "promoted": outcome.decision.promoted,
        "recall_at_k": outcome.metrics["recall_at_k"],
        "popularity_recall_at_k": outcome.baseline["recall_at_k"],
    }


@flow(name="loopline-train", log_prints=True)
def train_models(params: TrainFlowParams | None = None) -> dict[str, object]:
    """Train the chosen models in turn; return what each decided."""
    params = params or TrainFlowParams()
    results: dict[str, object] = {}
    # reading the training sets and recording the decisions wait for the warehouse slot;
    # fitting does not hold it, so a line run may write meanwhile (flows/slots.py)
    with each_write_takes_the_slot():
        if "churn" in params.models:
            results["churn"] = train_churn_model(params.churn_training_days)
        if "recommender" in params.models:
            results["recommender"] = train_recommender_model()
    return results
