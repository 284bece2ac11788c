"""The loop's monitoring flow: measure, and feed what it finds back into training.

The same steps as `loopline monitor` (`ml.monitoring.run.monitor`), as tasks: measure drift,
performance rules and data quality (stored, reported, logged to MLflow); when a rule of the
churn champion failed or drift is confirmed on its features, the training flow runs as a
subflow (its gate and champion comparison decide the promotion); the trigger and the
decision are stored with their evidence.
"""

from __future__ import annotations

import time

from prefect import flow, task
from pydantic import BaseModel, ConfigDict

from flows.logs import run_logger
from flows.slots import each_write_takes_the_slot
from loopline import progress
from loopline.settings import get_settings


class MonitorFlowParams(BaseModel):
    """Whether the monitor may start a training run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    retrain: bool = True


@task(name="measure drift, performance and data quality")
def measure_task(retrain: bool) -> dict[str, object]:
    """One monitoring run: stored, reported, logged; returns its summary and trigger."""
    from ml.monitoring.config import load_monitoring_config
    from ml.monitoring.run import measure

    settings = get_settings()
    started = time.perf_counter()
    result = measure(
        settings, load_monitoring_config(settings.monitoring_config), retrain_enabled=retrain
    )
    trigger = result.trigger
    progress.phase("monitor", result.summary(), time.perf_counter() - started, ok=trigger is None)
    for reason in trigger.reasons if trigger else []:
        run_logger().warning("retrain trigger: %s", reason)
    return {
        "run_id": result.run_id,
        "summary": result.summary(),
        "drifted": len(result.confirmed),
        "rules_failed": result.count("fail"),
        "report": str(result.report),
        "trigger": trigger,
    }


@task(name="record the retrain trigger")
def record_task(trigger: object, decision: object | None) -> None:
    """Store the trigger and the registry's decision on the version it trained."""
    from ml.monitoring.retrain import Trigger, record_trigger
    from ml.registry import Decision

    assert isinstance(trigger, Trigger)
    record_trigger(get_settings(), trigger, decision if isinstance(decision, Decision) else None)


@flow(name="loopline-monitor", log_prints=True)
def monitor_models(params: MonitorFlowParams | None = None) -> dict[str, object]:
    """Measure; retrain the churn model when the trigger fires; record the decision."""
    from flows.train import TrainFlowParams, train_models
    from ml.monitoring.config import load_monitoring_config

    params = params or MonitorFlowParams()
    # each opening of the warehouse holds its slot while it lasts (flows/slots.py)
    with each_write_takes_the_slot():
        measured = measure_task(params.retrain)
        trigger = measured["trigger"]
        retrained: dict[str, object] = {}
        if trigger is not None:
            decision = None
            if getattr(trigger, "fires", False):
                settings = get_settings()
                days = load_monitoring_config(settings.monitoring_config).retrain.training_days
                trained = train_models(TrainFlowParams(models=("churn",), churn_training_days=days))
                churn = trained.get("churn")
                retrained = dict(churn) if isinstance(churn, dict) else {}
                decision = retrained.pop("decision", None)
            record_task(trigger, decision)
    return {**{k: v for k, v in measured.items() if k != "trigger"}, "retrained": retrained}
