"""A monitoring run on the shared test company: tables written, report produced, MLflow run."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from ml.churn.model import TrainParams
from ml.churn.score import score_churn
from ml.churn.train import train_churn
from ml.config import ChurnConfig, RecommenderConfig
from ml.monitoring.config import load_monitoring_config
from ml.monitoring.run import MONITORING_EXPERIMENT, monitor
from ml.recommender.score import recommend_all
from ml.recommender.train import train_recommender
from ml.registry import PromotionPolicy
from tests.conftest import copy_company, query

# the small company is too small for a user-disjoint holdout (see tests/ml/test_loop_e2e.py)
FAST = ChurnConfig(
    train=TrainParams.model_validate(
        {"entity": None, "candidates": ["logreg"], "logreg_grid": {"C": [1.0]}}
    ),
    policy=PromotionPolicy(gate={"roc_auc": 0.5}, compare_on="roc_auc", margin=0.01),
    importance_rows=200,
)
LABELLED_DAY = date(2026, 1, 12)  # its 30-day outcome is known by 2026-02-14


@pytest.fixture(scope="module")
def monitored(built_warehouse, tmp_path_factory) -> dict[str, Any]:
    """A champion scored on the newest day and on a labelled day, then one monitoring run
    with retraining switched off."""
    settings = copy_company(built_warehouse[0], tmp_path_factory.mktemp("monitor") / "data")
    train_churn(settings, FAST)
    train_recommender(settings, RecommenderConfig())
    score_churn(settings)
    score_churn(settings, LABELLED_DAY)
    recommend_all(settings, None, 10)
    recommend_all(settings, date(2026, 2, 1), 10)
    served = write_prediction_log(settings)
    outcome = monitor(settings, load_monitoring_config(), retrain=False)
    return {"settings": settings, "outcome": outcome, "served": served}


def write_prediction_log(settings: Any) -> int:
    """Churn requests as the API logs them (ml.serve's own writer): the newest day's features
    of every user, answered by v1; returns how many."""
    from datetime import UTC, datetime

    from loopline.warehouse import reading
    from ml.registry import configure, version_tags
    from ml.serving.prediction_log import PredictionLog

    columns = json.loads(
        version_tags(configure(settings), "loopline-churn", "1")["feature_columns"]
    )
    with reading(settings) as con:
        rows = con.execute(
            "select * from features.fs_churn__user_daily "
            "where as_of_date = (select max(as_of_date) from features.fs_churn__user_daily)"
        ).df()
    log = PredictionLog(settings.data_dir / "predictions" / "serving")
    for row in rows.to_dict("records"):
        log.put(
            {
                "logged_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
                "endpoint": "churn", "model_name": "loopline-churn", "model_version": "1",
                "user_id": int(row["user_id"]), "churn_probability": 0.1,
                "features_from": "online_store",
                "features": {c: (None if row[c] is None or row[c] != row[c] else row[c])
                             for c in columns},
            }
        )  # fmt: skip
    log.close()
    return len(rows)


def test_a_run_writes_its_tables_and_judges_labelled_windows(monitored) -> None:
    settings, result = monitored["settings"], monitored["outcome"].result
    runs = query(
        settings, "select run_id, champion_version, report_path from monitoring.monitor_runs"
    )
    assert runs == [(result.run_id, "1", str(result.report))]
    drift = query(
        settings,
        "select scope, count(distinct feature) from monitoring.feature_drift group by 1 order by 1",
    )
    assert drift[0][0] == "features" and drift[0][1] > 15
    assert drift[1] == ("predictions", 1)
    # the API's prediction log is compared too: the same features as the scored window
    assert monitored["served"] > 100 and drift[2] == ("served", drift[0][1])
    statuses = dict(
        query(
            settings,
            "select window_start, list(distinct status) from monitoring.model_performance "
            "where model = 'churn' and status <> 'info' group by 1",
        )
    )
    # the labelled day's week is judged (pass or fail); the newest day's waits for labels
    assert set(statuses) == {date(2026, 1, 12)}
    assert set(statuses[date(2026, 1, 12)]) <= {"pass", "fail"}
    recs = query(
        settings,
        "select count(*) from monitoring.model_performance where model = 'recommender' "
        "and metric = 'recall_at_10' and status in ('pass', 'fail')",
    )
    assert recs == [(1,)]  # 2026-02-01's lists have their 7 days; the newest do not


def test_the_report_shows_distributions_statistics_performance_and_data_quality(monitored) -> None:
    page = monitored["outcome"].result.report.read_text()
    for heading in ("Feature drift", "Distributions", "Prediction drift", "Performance over time",
                    "Data quality", "Reference lineage"):  # fmt: skip
        assert heading in page, heading
    assert page.count("data:image/png;base64,") >= 3  # self-contained: plots inlined
    assert "training_set.content_hash" in page


def test_the_run_is_logged_to_mlflow_and_linked_to_the_champion(monitored) -> None:
    import mlflow

    from ml.registry import CHURN_MODEL, configure

    settings, result = monitored["settings"], monitored["outcome"].result
    client = configure(settings)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["champion_version"] == "1"
    experiment = mlflow.get_experiment_by_name(MONITORING_EXPERIMENT)
    assert experiment is not None and experiment.tags.get("mlflow.note.content")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} == {
        "report/report.html"
    }
    version = client.get_model_version(CHURN_MODEL, "1")
    assert version.tags["monitoring.last_run_id"] == run.info.run_id


def test_with_retraining_off_a_trigger_is_recorded_but_nothing_trains(monitored) -> None:
    settings, outcome = monitored["settings"], monitored["outcome"]
    assert outcome.retrained is None
    versions = query(
        settings, "select count(*) from ml.model_decisions where model_name = 'loopline-churn'"
    )
    assert versions == [(1,)]
    triggers = query(settings, "select action, reasons from monitoring.retrain_triggers")
    if outcome.result.trigger is None:
        assert triggers == []
    else:
        assert [t[0] for t in triggers] == ["disabled"]
        assert json.loads(triggers[0][1]) == outcome.result.trigger.reasons


def test_the_command_runs_the_same_step_and_says_where_the_report_is(monitored, monkeypatch):
    """`loopline monitor --no-retrain`: one more run in the tables, the report path printed."""
    from typer.testing import CliRunner

    from loopline.cli import app
    from loopline.settings import get_settings

    settings = monitored["settings"]
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["monitor", "--no-retrain"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "monitoring" in result.output
    runs = query(settings, "select count(*), count(distinct run_id) from monitoring.monitor_runs")
    assert runs == [(2, 2)]
    assert query(
        settings, "select count(*) from ml.model_decisions where model_name = 'loopline-churn'"
    ) == [(1,)]


def test_without_a_churn_champion_the_run_still_reports(built_warehouse, tmp_path) -> None:
    """Nothing passed the gate yet (the smallest demo): no drift to measure, still a report."""
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    outcome = monitor(settings, load_monitoring_config(), retrain=False)
    assert outcome.result.champion_version is None and outcome.retrained is None
    assert outcome.result.report.exists()
    (runs,) = query(settings, "select count(*) from monitoring.monitor_runs")
    assert runs == (1,)


def test_the_gx_monitoring_suite_runs_on_the_window(monitored) -> None:
    settings, result = monitored["settings"], monitored["outcome"].result
    assert result.suite is not None
    [suite] = result.suite.suites
    rows = query(
        settings,
        "select asset, count(*), count(*) filter (where critical), "
        "count(distinct column_name), count(*) filter (where success) "
        f"from monitoring.validation_results where run_id = '{result.run_id}' group by 1",
    )
    assert rows == [
        ("monitoring.fs_churn__user_daily", suite.evaluated, 0, rows[0][3], suite.passed)
    ]
    assert rows[0][3] > 15  # every feature the champion reads
    assert not [r.expectation for r in result.suite.rows if r.exception]
    assert f"GX monitoring suite {suite.passed}/{suite.evaluated} passed" in result.summary()
    assert "monitoring.fs_churn__user_daily" in (settings.data_dir / "gx" / "data_docs" /
                                                 "index.html").read_text()  # fmt: skip
    assert "GX monitoring suite" in result.report.read_text()
