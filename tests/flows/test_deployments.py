"""The deployments register with a real Prefect server, scheduled, with enforced parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from prefect.client.orchestration import get_client

from flows.deployments import deployments

NAMES = [
    "loopline-line/line", "loopline-train/train", "loopline-score/score",
    "loopline-monitor/monitor", "loopline-demo/demo",
]  # fmt: skip
START = datetime(2031, 3, 2, tzinfo=UTC)  # eight days from here hold one Monday or two
WINDOW = timedelta(days=8)


@pytest.fixture(scope="module")
def registered(prefect_harness) -> dict[str, object]:
    for deployment in deployments():
        deployment.apply()
    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(name) for name in NAMES}


@pytest.fixture(scope="module")
def planned(registered) -> dict[str, list[datetime]]:
    """The run times the server plans from each deployment's schedules over eight days.

    The same server code the scheduler service calls (`schedule_runs`), asked directly.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    out: dict[str, list[datetime]] = {}
    with get_client(sync_client=True) as client:
        for name, deployment in registered.items():
            answer = client.request(
                "POST",
                "/deployments/{id}/schedule",
                path_params={"id": deployment.id},
                json={
                    "start_time": START.isoformat(),
                    "end_time": (START + WINDOW).isoformat(),
                    "min_time": WINDOW.total_seconds(),
                    "max_runs": 500,
                },
            )
            assert answer.status_code < 300, answer.text
            runs = []
            while not runs or len(runs) % 200 == 0:  # pages of the API's most: 200
                page = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=200,
                    offset=len(runs),
                )
                runs.extend(page)
                if not page:
                    break
            out[name] = [
                r.expected_start_time
                for r in runs
                if r.auto_scheduled and START <= r.expected_start_time < START + WINDOW
            ]
    return out


def test_the_line_runs_every_30_minutes_and_the_demo_only_on_demand(planned) -> None:
    line = planned["loopline-line/line"]
    assert len(line) >= 8 * 48
    assert all(b - a <= timedelta(minutes=30) for a, b in pairwise(line))
    assert planned["loopline-demo/demo"] == []


def test_scoring_runs_daily_on_fresh_data(planned) -> None:
    score, line = planned["loopline-score/score"], planned["loopline-line/line"]
    assert len({t.date() for t in score}) == len(score) == 8  # once per UTC day
    for at in score:
        before = [t for t in line if t < at]
        assert before and at - before[-1] <= timedelta(hours=1), at  # the line ran just before


def test_monitoring_runs_daily_after_that_days_scoring(planned) -> None:
    monitor, score = planned["loopline-monitor/monitor"], planned["loopline-score/score"]
    assert len({t.date() for t in monitor}) == len(monitor) == 8  # once per UTC day
    for at in monitor:
        same_day = [t for t in score if t.date() == at.date()]
        assert same_day and same_day[0] < at, at  # judges the scores written that morning


def test_training_runs_weekly_after_the_line_and_before_that_days_scoring(planned) -> None:
    train, score, line = (
        planned["loopline-train/train"], planned["loopline-score/score"], planned["loopline-line/line"]
    )  # fmt: skip
    assert 1 <= len(train) <= 2
    assert all(b - a == timedelta(days=7) for a, b in pairwise(train))
    for at in train:
        assert any(t < at for t in line), at  # trains on features a line run just built
        same_day = [t for t in score if t.date() == at.date()]
        assert same_day and same_day[0] > at, at  # the new model is scored that morning


def test_parameters_are_the_flows_pydantic_models(registered) -> None:
    schema = registered["loopline-score/score"].parameter_openapi_schema
    assert set(schema["properties"]) == {"params"}
    demo = registered["loopline-demo/demo"].parameter_openapi_schema
    assert "DemoParams" in str(demo)


def test_a_run_with_a_bad_parameter_is_refused_before_it_starts(registered) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    demo = registered["loopline-demo/demo"]
    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError, match=r"409|422"):
            client.create_flow_run_from_deployment(
                demo.id,
                parameters={"params": {"scale": "huge"}},
            )
        run = client.create_flow_run_from_deployment(
            demo.id,
            parameters={"params": {"scale": "small"}},
        )
    assert run.parameters == {"params": {"scale": "small"}}


def test_every_entry_point_loads_the_flow_its_deployment_names(monkeypatch) -> None:
    """A served run imports its flow from the entry point, from the repo root: each must load."""
    from pathlib import Path

    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    built = deployments()
    assert [f"{d.flow_name}/{d.name}" for d in built] == NAMES
    for deployment in built:
        assert deployment.entrypoint is not None
        loaded = load_flow_from_entrypoint(deployment.entrypoint)
        assert loaded.name == deployment.flow_name, deployment.entrypoint
