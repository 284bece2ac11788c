"""Prefect servers for the flow tests: the test harness, and a real `prefect server start`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from loopline import services


@pytest.fixture(scope="package")
def prefect_harness():
    """One temporary Prefect server for every flow test (it takes ~25 s to start)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass(frozen=True)
class RealServer:
    api_url: str
    env: dict[str, str]  # what a client process of this server needs
    log: Path


@pytest.fixture(scope="package")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """A real `prefect server start` with every service, the scheduler looping every 2 s."""
    folder = tmp_path_factory.mktemp("prefect_server")
    port = services.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    (folder / "home").mkdir()
    log = folder / "prefect.log"
    server = services.launch(
        "prefect", services._prefect_server_command(port, "--no-ui"), log, env, port=port
    )
    try:
        services.wait_ready(server, f"{api}/health", timeout_s=300)
        yield RealServer(api, env, log)
    finally:
        services.stop(server)
