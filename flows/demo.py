"""The demo: the whole loop as one Prefect flow, on the embedded defaults.

Thin by design: each task wraps one step; the flow only sequences them: simulate the
sources, the line (ingest, dbt build, online features), then the loop's training
(evaluate, register, gate) and batch scoring. Later work adds validation and monitoring.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict

from loopline.settings import get_settings


class DemoParams(BaseModel):
    """Parameters of a demo run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    scale: Literal["small", "demo", "large"] = "demo"
    until: date | None = None


@task(name="simulate sources")
def simulate_sources(scale: str, until: date | None) -> dict[str, object]:
    """Run or continue the simulator; return what it wrote."""
    from loopline.simulate import config_for_scale, load_state, simulate

    settings = get_settings()
    state = load_state(settings)
    config = None
    if state is None:
        config, days = config_for_scale(scale, seed=settings.sim_seed, start=settings.sim_start)  # type: ignore[arg-type]
        until = until or config.date_of(days - 1)
    else:
        until = until or state.config.date_of(state.last_day)
    report = simulate(settings, until, config, progress=False)
    get_run_logger().info(
        "simulated %s days through %s: %s events, %s payments, %s tickets",
        report.days,
        report.last_day,
        report.events_written,
        report.payments_written,
        report.tickets_written,
    )
    return {
        "through": str(report.last_day),
        "bayes_auc": report.bayes_auc,
        "events": report.events_written,
    }


@flow(name="loopline-demo", log_prints=True)
def loopline_demo(params: DemoParams) -> dict[str, str]:
    """Sequence every step that exists so far; return where a person should look."""
    from flows.line import LineParams, line
    from flows.score import ScoreFlowParams, batch_score
    from flows.train import TrainFlowParams, train_models

    settings = get_settings()
    sim = simulate_sources(params.scale, params.until)
    line(LineParams())
    trained = train_models(TrainFlowParams())
    batch_score(ScoreFlowParams())
    churn = trained.get("churn", {})
    recs = trained.get("recommender", {})
    assert isinstance(churn, dict) and isinstance(recs, dict)
    bayes = churn.get("bayes_auc")
    return {
        "source database": settings.resolved_source_db_url,
        "landing files": str(settings.landing_dir),
        "catalogue (API data)": str(settings.sources_dir / "catalogue"),
        "defect manifest": str(settings.sources_dir / "_manifest" / "defects.json"),
        "ground truth": str(settings.sources_dir / "_truth" / "summary.json"),
        "warehouse (DuckDB)": str(settings.resolved_warehouse_path),
        "quarantine": "schema quarantine.* in the warehouse",
        "load accounting": "monitoring.fct_load_accounting in the warehouse",
        "feature store": "features.fs_churn__user_daily, features.feature_sets; online: "
        + (settings.online_store_url or str(settings.data_dir / "online" / "online_store.sqlite")),
        "dbt docs": "make docs  (then http://127.0.0.1:8080)",
        "churn model": f"v{churn.get('version')} ROC AUC {churn.get('roc_auc', 0):.3f}"
        + (f" (Bayes-optimal {bayes:.3f})" if isinstance(bayes, float) else ""),
        "churn report": str(churn.get("report")),
        "recommender": f"v{recs.get('version')} recall@10 {recs.get('recall_at_k', 0):.3f} "
        f"(popularity {recs.get('popularity_recall_at_k', 0):.3f})",
        "predictions": "ml.churn_predictions, ml.recommendations, ml.model_decisions",
        "MLflow UI": f"make mlflow-ui  (store {settings.resolved_mlflow_uri})",
        "serving": "uv run loopline serve  (then http://127.0.0.1:8000/docs)",
        "simulated through": str(sim["through"]),
        "Prefect UI": "uv run prefect server start  (then http://127.0.0.1:4200)",
    }
