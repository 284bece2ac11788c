"""The deployments register with a real Prefect server, scheduled, with enforced parameters."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client

from flows.deployments import deployments

EXPECTED = {
    "loopline-line/line": "15 * * * *",
    "loopline-train/train": "0 3 * * 1",
    "loopline-score/score": "0 5 * * *",
    "loopline-demo/demo": None,
}


@pytest.fixture(scope="module")
def registered(prefect_harness) -> dict[str, object]:
    for deployment in deployments():
        deployment.apply()
    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(name) for name in EXPECTED}


def test_every_flow_is_deployed_with_its_schedule(registered) -> None:
    for name, cron in EXPECTED.items():
        deployment = registered[name]
        crons = [s.schedule.cron for s in deployment.schedules]
        assert crons == ([cron] if cron else []), name
        assert deployment.enforce_parameter_schema, name
        assert deployment.description, name


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
