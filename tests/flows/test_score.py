"""The scoring flow before any model passed its gate: a phase line saying so, no crash."""

from __future__ import annotations

from flows.score import ScoreFlowParams, batch_score
from loopline.settings import get_settings


def test_scoring_without_a_champion_is_skipped_with_a_line(
    prefect_harness, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    capfd.readouterr()
    try:
        result = batch_score(ScoreFlowParams())
    finally:
        get_settings.cache_clear()
    err = capfd.readouterr().err
    assert result == {
        "churn": {"as_of": None, "rows": 0, "version": None},
        "recommendations": {"rows": 0},
    }
    assert "! score      no churn @champion yet" in err
    assert "! recommend  no recommender @champion yet: skipped" in err
    assert "Traceback" not in err


def test_the_command_and_the_scoring_deployment_leave_the_same_tables(
    prefect_harness, built_warehouse, tmp_path, monkeypatch
):
    """`loopline score` runs the scoring flow's steps: both leave the same predictions."""
    import shutil
    from datetime import date

    from typer.testing import CliRunner

    from loopline.cli import app
    from ml.churn.train import train_churn
    from ml.config import RecommenderConfig
    from ml.recommender.train import train_recommender
    from tests.conftest import copy_company, query
    from tests.monitoring.test_monitor_run import FAST

    trained = copy_company(built_warehouse[0], tmp_path / "trained")
    train_churn(trained, FAST)
    train_recommender(trained, RecommenderConfig())
    as_of = date(2026, 2, 1)
    tables = {}
    for path in ("cli", "flow"):
        folder = tmp_path / path
        shutil.copytree(trained.data_dir, folder)
        monkeypatch.setenv("LOOPLINE_DATA_DIR", str(folder))
        get_settings.cache_clear()
        try:
            if path == "cli":
                result = CliRunner().invoke(app, ["score", "--as-of", as_of.isoformat()])
                assert result.exit_code == 0, result.output
            else:
                batch_score(ScoreFlowParams(as_of=as_of))
            settings = get_settings()
            tables[path] = {
                table: sorted(
                    query(settings, f"select * exclude (scored_at) from {table}"), key=repr
                )
                for table in ("ml.churn_predictions", "ml.recommendations")
            }
        finally:
            get_settings.cache_clear()
    assert tables["cli"]["ml.churn_predictions"], "nothing scored"
    assert tables["cli"]["ml.recommendations"], "nothing recommended"
    assert tables["cli"] == tables["flow"]
