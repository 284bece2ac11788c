"""Prefect deployments of the flows: the line every 30 minutes, training weekly, scoring and
monitoring daily.

    make up            # the Prefect server, and this module served beside it (`deployments`)

or by hand: `make deployments` with ``PREFECT_API_URL`` pointing at a running server. Either
registers them with the server and serves them from this process: the server's scheduler
creates runs on time and this process executes them; any of them can be started from the
UI or with ``prefect deployment run 'loopline-train/train'``. Parameters are the flows' pydantic
models, enforced by the server, so a run with a bad parameter is refused before it starts.
Runs that write the warehouse queue on its writer lock (docs/architecture.md). The line
extracts the catalogue API at ``LOOPLINE_CATALOGUE_URL``: under `make up`, the simulated
vendor's (the ``catalogue`` service). New files in the landing folder also start the line
(the ``push`` service's events and the line's trigger, loopline/push/watcher.py).

Serving runs every deployment in this one process; for workers (several processes or hosts)
the same deployments are declared in ``prefect.yaml`` (README: which one when).
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.demo import loopline_demo
from flows.line import line
from flows.monitor import monitor_models
from flows.score import batch_score
from flows.slots import ensure_limits
from flows.train import train_models
from loopline.push.watcher import LINE_TRIGGER


def _built(deployment: object) -> RunnerDeployment:
    # `to_deployment` is sync-compatible: outside an event loop it returns the deployment
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("build the deployments outside a running event loop")
    return deployment


def deployments() -> list[RunnerDeployment]:
    """The deployments `make deployments` serves (schedules in UTC)."""
    built = [
        line.to_deployment(
            "line",
            cron="15,45 * * * *",
            tags=["line"],
            description="Extract and load every source, dbt build, refresh online features.",
            triggers=[DeploymentEventTrigger.model_validate(LINE_TRIGGER)],
        ),
        train_models.to_deployment(
            "train",
            cron="0 3 * * 1",
            tags=["loop"],
            description="Train, evaluate and register both models; promote what earns it.",
        ),
        batch_score.to_deployment(
            "score",
            cron="0 5 * * *",
            tags=["loop"],
            description="Churn scores and top-N recommendations for every active user.",
        ),
        monitor_models.to_deployment(
            "monitor",
            cron="0 6 * * *",
            tags=["loop"],
            description="Drift, performance rules and data quality; retrain when they say so.",
        ),
        loopline_demo.to_deployment(
            "demo",
            tags=["demo"],
            description="The whole loop on the embedded defaults (on demand).",
        ),
    ]
    return [_built(d) for d in built]


if __name__ == "__main__":  # pragma: no cover - long-running server process
    ensure_limits()  # the warehouse-writer slot, visible in the UI before the first run
    serve(*deployments())
