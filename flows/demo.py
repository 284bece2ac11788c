"""The demo: the whole loop as one Prefect flow, on the embedded defaults.

Thin by design: each task wraps one step; the flow only sequences them: simulate the
sources, the line (ingest, dbt build, online features), then the loop's training
(evaluate, register, gate), batch scoring, then validation of what scoring wrote (the
line already audited what it built before publishing it) and the monitor, which retrains
when drift or a failed rule asks for it. The simulator is the demo's source: this flow runs
the simulated vendor's catalogue API for the line to extract from; nothing else imports
the simulator.

Each step prints one phase line (what it did, how long it took) and a bar while it runs;
the flow returns a short "where to look" table that fits an 80-column terminal.
"""

from __future__ import annotations

import os
import time
from datetime import date

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict

from loopline.paths import shown
from loopline.progress import phase
from loopline.settings import Scale, Settings, get_settings


class DemoParams(BaseModel):
    """Parameters of a demo run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    scale: Scale = "demo"
    until: date | None = None


@task(name="simulate sources")
def simulate_sources(scale: Scale, until: date | None) -> dict[str, object]:
    """Run or continue the simulator (the step `loopline simulate` runs); return what it wrote."""
    from loopline.simulate import Scenario, simulate_company

    report = simulate_company(get_settings(), Scenario(scale=scale), until=until)
    get_run_logger().info(
        "simulated %s days through %s: %s events, %s payments, %s tickets",
        report.days,
        report.last_day,
        report.events_written,
        report.payments_written,
        report.tickets_written,
    )
    return {
        "from": str(report.company_start),
        "through": str(report.last_day),
        "bayes_auc": report.bayes_auc,
        "events": report.events_written,
    }


def _quiet_mlflow() -> None:
    """MLflow's own messages (database set-up, "Created version ...", download bars) are
    noise in the demo: the training phase lines say what was registered."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # importing this module switches MLflow's event logs back on when it is done (mlflow
    # 3.17), and `log_model` imports it lazily: import it first, then switch them off
    import mlflow.types.responses  # noqa: F401
    from mlflow.utils.logging_utils import disable_logging

    disable_logging()


@flow(name="loopline-demo", log_prints=True)
def loopline_demo(params: DemoParams) -> dict[str, str]:
    """Sequence every step that exists so far; return where a person should look."""
    from flows.line import LineParams, line
    from flows.monitor import MonitorFlowParams, monitor_models
    from flows.score import ScoreFlowParams, batch_score
    from flows.train import TrainFlowParams, train_models
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer

    started = time.perf_counter()
    settings = get_settings()
    _quiet_mlflow()
    sim = simulate_sources(params.scale, params.until)
    with CatalogueServer(catalogue_dir(settings)) as vendor:  # for this run, on a free port
        line(LineParams(catalogue_url=vendor.url))
    trained = train_models(TrainFlowParams())
    batch_score(ScoreFlowParams())
    checked = validate_task()
    monitored = monitor_models(MonitorFlowParams())
    churn = trained.get("churn", {})
    recs = trained.get("recommender", {})
    assert isinstance(churn, dict) and isinstance(recs, dict)
    phase("demo", "done: the line, training, scoring, validation, monitoring",
          time.perf_counter() - started)  # fmt: skip
    return where_to_look(settings, sim, churn, recs, checked, monitored)


@task(name="validate")
def validate_task() -> str:
    """Run the prediction suites (the line audited the rest before publishing it); return
    one summary line (printed as a phase)."""
    from expectations.run import validate

    started = time.perf_counter()
    report = validate(get_settings(), ["ml"], lines="problems")
    failed = report.failed_suites()
    line = f"{len(report.suites)} prediction suites, {len(failed)} failed (marts: line's audit)"
    phase("validate", line, time.perf_counter() - started, ok=not failed)
    return line


def _monitoring_line(monitored: dict[str, object]) -> str:
    """e.g. ``drift in 2 features, 0 rules failed; retrained v3: kept``."""
    if "summary" not in monitored:
        return "not run"
    retrained = monitored.get("retrained") or {}
    assert isinstance(retrained, dict)
    if retrained:
        action = "promoted" if retrained.get("promoted") else "kept"
        after = f"retrained v{retrained.get('version')}: {action}"
    else:
        after = "no retrain"
    return (
        f"drift in {monitored.get('drifted')} features, "
        f"{monitored.get('rules_failed')} rules failed; {after}"
    )


def where_to_look(
    settings: Settings,
    sim: dict[str, object],
    churn: dict[str, object],
    recs: dict[str, object],
    validation: str = "not run",
    monitoring: dict[str, object] | None = None,
) -> dict[str, str]:
    """Short labels, paths relative to the repo root: one line each at 80 columns."""
    bayes = churn.get("bayes_auc")
    auc = churn.get("roc_auc", float("nan"))
    recall = recs.get("recall_at_k", float("nan"))
    popular = recs.get("popularity_recall_at_k", float("nan"))
    landing = settings.landing_dir
    return {
        "warehouse": shown(settings.resolved_warehouse_path),
        "marts": "core.*, features.*, monitoring.fct_load_accounting",
        "rejects": f"quarantine.* tables; files in {shown(landing / '_rejected')}",
        "dbt log": shown(settings.data_dir / "dbt" / "logs" / "dbt.log"),
        "simulated": f"{sim['from']} .. {sim['through']} in {shown(settings.sources_dir)}",
        "ground truth": shown(settings.sources_dir / "_truth" / "summary.json"),
        "churn model": f"v{churn.get('version')} ROC AUC {auc:.3f}"
        + (f" (Bayes-optimal {bayes:.3f})" if isinstance(bayes, float) else "")
        + ("" if churn.get("promoted") else ", kept: not promoted"),
        "churn report": shown(str(churn.get("report"))),
        "recommender": f"v{recs.get('version')} recall@10 {recall:.3f} (popularity {popular:.3f})",
        "predictions": "ml.churn_predictions, ml.recommendations, ml.model_decisions",
        "UIs": "make up  (Prefect, MLflow, dbt docs, API: prints each URL)",
        "validation": validation,
        "data docs": shown(settings.data_dir / "gx" / "data_docs" / "index.html")
        + "; monitoring.validation_results",
        "monitoring": _monitoring_line(monitoring or {}),
        "drift report": shown(str((monitoring or {}).get("report", "not run"))),
    }
