"""Churn scoring partitioned on Dask (prefect-dask) leaves what a single-process run leaves."""

from __future__ import annotations

from datetime import date

import pytest

from flows.score import ScoreFlowParams, batch_score
from loopline.settings import get_settings
from tests.conftest import copy_company, query

AS_OF = date(2026, 2, 1)
PREDICTIONS = (
    "select user_id, as_of_date, is_high_risk, threshold, model_name, model_version, "
    "feature_set_version, churn_probability from ml.churn_predictions order by user_id"
)


def _assert_same_predictions(rows: list[tuple], expected: list[tuple]) -> None:
    """Row for row: every column equal, probabilities to 1e-12.

    Not bit for bit: the test model's (a logistic regression's) matrix product changes in
    the last bits with the size of the batch it is given (so does a single-process run
    with another chunk size); the difference seen is below 1e-16.
    """
    assert [row[:-1] for row in rows] == [row[:-1] for row in expected]
    assert [row[-1] for row in rows] == pytest.approx([row[-1] for row in expected], abs=1e-12)


def _partition_runs() -> int:
    """Completed task runs of the Dask partition task, over the whole test server."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        # limit and sort given: the server (FastAPI 0.154) refuses the client's nulls
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="score churn partition")),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
    return sum(1 for run in runs if run.state is not None and run.state.is_completed())


def test_scoring_on_dask_equals_the_single_process_run_and_reruns_in_place(
    prefect_harness, built_warehouse, tmp_path, monkeypatch
):
    """Same users, version and probabilities whether scored in one process, in 2 partitions
    on a LocalCluster the flow starts, or in 3 on a scheduler named by LOOPLINE_DASK_ADDRESS;
    each run replaces the day's slice, so reruns leave no duplicates."""
    from distributed import LocalCluster

    from ml.churn.train import train_churn
    from tests.monitoring.test_monitor_run import FAST

    settings = copy_company(built_warehouse[0], tmp_path / "data")
    train_churn(settings, FAST)
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("LOOPLINE_DASK_ADDRESS", raising=False)
    get_settings.cache_clear()
    try:
        single = batch_score(ScoreFlowParams(as_of=AS_OF))["churn"]
        expected = query(settings, PREDICTIONS)
        ((first_scored,),) = query(settings, "select max(scored_at) from ml.churn_predictions")
        runs_before = _partition_runs()

        # a LocalCluster of the flow's own (2 worker processes)
        on_dask = batch_score(ScoreFlowParams(as_of=AS_OF, partitions=2))["churn"]
        _assert_same_predictions(query(settings, PREDICTIONS), expected)
        ((older,),) = query(
            settings,
            f"select count(*) from ml.churn_predictions where scored_at <= '{first_scored}'",
        )
        assert older == 0, "the partitioned run left rows of the single-process run"
        assert _partition_runs() - runs_before == 2

        # a running scheduler, by its address in the environment: the production path
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster:
            monkeypatch.setenv("LOOPLINE_DASK_ADDRESS", cluster.scheduler_address)
            get_settings.cache_clear()
            again = batch_score(ScoreFlowParams(as_of=AS_OF, partitions=3))["churn"]
        _assert_same_predictions(query(settings, PREDICTIONS), expected)
        assert _partition_runs() - runs_before == 2 + 3
    finally:
        get_settings.cache_clear()
    assert single["rows"] == on_dask["rows"] == again["rows"] == len(expected) > 100
    assert single["version"] == on_dask["version"] == again["version"] == "1"
    assert not list(settings.resolved_score_stage_dir.glob("*")), "staged parts left behind"
