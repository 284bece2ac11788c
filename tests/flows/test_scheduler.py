"""Prefect's scheduler creates runs of a served deployment, and the serving process runs them.

A real `prefect server start` (scheduler every 2 s) and a real `serve()` process; the test
itself never creates a run. This fails with a version set whose scheduler breaks (prefect
3.8.8 with SQLAlchemy 2.1: "Can't evaluate bulk DML statement", no run ever scheduled).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from loopline import services

SERVED = """
from prefect import flow, serve

@flow(name="tick")
def tick() -> str:
    return "ticked"

if __name__ == "__main__":
    serve(tick.to_deployment("every-5s", interval=5))
"""


@pytest.fixture
def serving(prefect_server, tmp_path: Path):
    """A process serving a deployment that runs every 5 s (no run is asked for)."""
    (tmp_path / "served.py").write_text(SERVED)
    process = services.launch(
        "serving", [sys.executable, str(tmp_path / "served.py")], tmp_path / "serving.log",
        prefect_server.env,
    )  # fmt: skip
    try:
        yield prefect_server.api_url, [prefect_server.log, tmp_path / "serving.log"]
    finally:
        services.stop(process)


def test_a_scheduled_run_is_created_by_the_scheduler_and_executed(serving):
    api, logs_of = serving
    deadline = time.monotonic() + 150
    completed: list[dict] = []
    scheduled: list[dict] = []
    with httpx.Client(base_url=api + "/", timeout=10) as client:
        while time.monotonic() < deadline and not completed:
            time.sleep(1)
            deployment = client.get("deployments/name/tick/every-5s")
            if deployment.status_code != 200:
                continue  # not served yet
            ours = {"deployments": {"id": {"any_": [deployment.json()["id"]]}}}
            scheduled = client.post("flow_runs/filter", json={**ours, "limit": 5}).json()
            done = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
            completed = client.post("flow_runs/filter", json={**ours, **done, "limit": 5}).json()
        logs = "".join(path.read_text() for path in logs_of)
        assert scheduled, f"the scheduler created no run:\n{logs[-3000:]}"
        assert completed, f"no scheduled run completed:\n{logs[-3000:]}"
        run = completed[0]
        assert run["auto_scheduled"], run
        # made by the scheduler for the deployment's schedule, not by anyone asking for it
        assert run["deployment_id"] is not None
        assert run["idempotency_key"].startswith("scheduled ")
        assert run["created_by"]["type"] == "SCHEDULE", run["created_by"]
        # the serving process ran it: its log lines reach the server (sent in batches)
        messages: list[str] = []
        while time.monotonic() < deadline + 30 and not any("Completed" in m for m in messages):
            time.sleep(0.5)
            result_logs = client.post(
                "logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}
            ).json()
            messages = [log["message"] for log in result_logs]
    assert any("Finished in state Completed" in m for m in messages), messages
    assert "bulk DML" not in logs
