"""One temporary Prefect server for every flow test (it takes ~25 s to start)."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="package")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield
