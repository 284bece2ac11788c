"""Prefect's scheduler creates runs of a served deployment, and the serving process runs them.

A real `prefect server start` (scheduler every 2 s) and a real `serve()` process; the test
itself never creates a run. This fails with a version set whose scheduler breaks (prefect
3.8.8 with SQLAlchemy 2.1: "Can't evaluate bulk DML statement", no run ever scheduled).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from loopline import services

SERVED = """
import os, time, httpx
from prefect import flow, serve

@flow(name="tick")
def tick() -> str:
    return "ticked"

if __name__ == "__main__":
    url = os.environ["PREFECT_API_URL"]
    while True:  # started beside the server, to import Prefect while it boots
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    serve(tick.to_deployment("every-5s", interval=5))
"""


@pytest.fixture
def server_and_serving(tmp_path: Path):
    port = services.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp_path / "prefect").mkdir()
    (tmp_path / "served.py").write_text(SERVED)
    server = services.launch(
        "prefect",
        services._prefect_server_command(port, "--no-ui"),
        tmp_path / "prefect.log",
        env,
        port=port,
    )
    serving = services.launch(
        "serving",
        [services.sys.executable, str(tmp_path / "served.py")],
        tmp_path / "serving.log",
        env,
    )
    try:
        services.wait_ready(server, f"{api}/health", timeout_s=300)
        yield api, tmp_path
    finally:
        services.stop(serving)
        services.stop(server)


def test_a_scheduled_run_is_created_by_the_scheduler_and_executed(server_and_serving):
    api, folder = server_and_serving
    deadline = time.monotonic() + 150
    completed: list[dict] = []
    scheduled: list[dict] = []
    with httpx.Client(base_url=api + "/", timeout=10) as client:
        while time.monotonic() < deadline and not completed:
            scheduled = client.post("flow_runs/filter", json={"limit": 5}).json()
            done = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
            completed = client.post("flow_runs/filter", json={**done, "limit": 5}).json()
            time.sleep(1)
        logs = (folder / "prefect.log").read_text() + (folder / "serving.log").read_text()
        assert scheduled, f"the scheduler created no run:\n{logs[-3000:]}"
        assert completed, f"no scheduled run completed:\n{logs[-3000:]}"
        run = completed[0]
        assert run["auto_scheduled"], run
        # made by the scheduler for the deployment's schedule, not by anyone asking for it
        assert run["deployment_id"] is not None
        assert run["idempotency_key"].startswith("scheduled ")
        assert run["created_by"]["type"] == "SCHEDULE", run["created_by"]
        result_logs = client.post(
            "logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}
        ).json()
    assert any("Finished in state Completed" in log["message"] for log in result_logs)
    assert "bulk DML" not in logs
