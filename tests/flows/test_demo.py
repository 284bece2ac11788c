"""The demo flow runs under a real (temporary) Prefect server and reports where to look."""

from __future__ import annotations

import json

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.demo import DemoParams, loopline_demo
from loopline.settings import get_settings


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_demo_flow_simulates_and_points_at_the_results(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        where = loopline_demo(DemoParams(scale="small", until="2026-01-04"))
    finally:
        get_settings.cache_clear()
    manifest = json.loads((tmp_path / "sources" / "_manifest" / "defects.json").read_text())
    assert manifest["through"] == "2026-01-04"
    assert where["simulated through"] == "2026-01-04"
    assert (tmp_path / "sources" / "oltp.sqlite").exists()
    # the line ran inside the demo: the warehouse holds built marts
    import duckdb

    con = duckdb.connect(where["warehouse (DuckDB)"])
    try:
        (users,) = con.execute("select count(*) from core.dim_users").fetchone()
    finally:
        con.close()
    assert users > 250


def test_demo_params_reject_an_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        DemoParams(scale="huge")
