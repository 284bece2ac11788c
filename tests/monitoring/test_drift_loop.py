"""The closed loop end to end: a price rise one window before the monitor runs is flagged as
drift and retrains the churn model; over the same dates without it nothing is retrained."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from loopline.settings import Settings
from ml.monitoring.config import load_monitoring_config
from ml.monitoring.run import monitor
from tests.conftest import query, small_config
from tests.monitoring.test_monitor_run import FAST

TRAINED_ON = date(2026, 3, 15)  # labels through mid-February: past the 30-day warm-up
DRIFT_FROM = date(2026, 3, 18)
MONITORED_ON = date(2026, 3, 22)  # the latest window holds the first post-drift days

pytestmark = pytest.mark.slow


def _loop(data_dir: Path, drift: bool) -> dict[str, Any]:
    from loopline.dbt import run_dbt
    from loopline.ingest.run import ingest
    from loopline.simulate import simulate
    from ml.churn.score import score_churn
    from ml.churn.train import train_churn

    settings = Settings(data_dir=data_dir)
    scenario = {"drift_kind": "price_rise", "drift_start": DRIFT_FROM} if drift else {}
    simulate(settings, TRAINED_ON, small_config(**scenario), progress=False)
    ingest(settings, progress=False)
    run_dbt(settings, ["build"])
    champion = train_churn(settings, FAST)
    simulate(settings, MONITORED_ON, None, progress=False)  # continues the same company
    ingest(settings, progress=False)
    run_dbt(settings, ["build"])
    score_churn(settings)
    trained = []

    def retrain() -> Any:
        trained.append(train_churn(settings, FAST))
        return trained[-1]

    outcome = monitor(settings, load_monitoring_config(), retrain=True, train=retrain)
    return {"settings": settings, "champion": champion, "outcome": outcome, "trained": trained}


def test_a_price_rise_is_flagged_within_one_window_and_retrains(tmp_path) -> None:
    loop = _loop(tmp_path / "drift", drift=True)
    result = loop["outcome"].result
    assert result.feature_drift is not None and "plan_price_usd" in result.feature_drift.confirmed
    assert result.trigger is not None and result.trigger.fires
    assert len(loop["trained"]) == 1
    rows = query(
        loop["settings"],
        "select action, new_version, decision, evidence from monitoring.retrain_triggers",
    )
    assert [r[:3] for r in rows] == [("retrained", "2", loop["trained"][0].decision.action)]
    assert "plan_price_usd" in rows[0][3]
    decisions = query(
        loop["settings"], "select version from ml.model_decisions order by decided_at"
    )
    assert decisions == [("1",), ("2",)]  # the new version went through the registry's gate


def test_without_the_scenario_over_the_same_dates_nothing_is_retrained(tmp_path) -> None:
    loop = _loop(tmp_path / "calm", drift=False)
    result = loop["outcome"].result
    assert result.feature_drift is not None and not result.feature_drift.drifted
    assert result.trigger is None and loop["trained"] == []
    tables = query(
        loop["settings"],
        "select table_name from information_schema.tables where table_schema = 'monitoring'",
    )
    assert ("monitor_runs",) in tables and ("retrain_triggers",) not in tables
