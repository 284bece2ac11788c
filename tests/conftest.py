"""Shared fixtures: one small simulated company per test session, services checks."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from loopline.ingest.run import IngestReport
from loopline.settings import Settings
from loopline.simulate import SimConfig, SimReport, simulate

# a fresh Prefect home per test run: a stale temporary-server database can stay locked
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="loopline-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

SMALL_UNTIL = date(2026, 2, 14)  # 45 days from the default start


def small_config(**overrides: object) -> SimConfig:
    """The test-scale company: 300 users."""
    return SimConfig.model_validate({"users": 300, **overrides})


def run_small(
    data_dir: Path, until: date = SMALL_UNTIL, **overrides: object
) -> tuple[Settings, SimReport]:
    settings = Settings(data_dir=data_dir)
    return settings, simulate(settings, until, small_config(**overrides), progress=False)


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, SimReport]:
    """One simulated company shared by every test that only reads it."""
    return run_small(tmp_path_factory.mktemp("small_sim"))


def copy_company(source: Settings, target: Path) -> Settings:
    """A private copy of a simulated company (ingest moves rejected files aside)."""
    import shutil

    shutil.copytree(source.data_dir, target)
    return Settings(data_dir=target, dbt_project_dir=source.dbt_project_dir)


@pytest.fixture(scope="session")
def built_warehouse(small_sim, tmp_path_factory):
    """One ingested and built warehouse for the session: (settings, first ingest report)."""
    from loopline.dbt import run_dbt

    settings = copy_company(small_sim[0], tmp_path_factory.mktemp("line") / "data")
    report = ingest_simulated(settings)
    run_dbt(settings, ["build"])
    return settings, report


def ingest_simulated(settings: Settings) -> IngestReport:
    """An ingest with the simulated vendor's catalogue API running, as the demo wires it."""
    from loopline.ingest.run import ingest
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer

    with CatalogueServer(catalogue_dir(settings)) as vendor:
        return ingest(settings, catalogue_url=vendor.url, progress=False)


def query(settings: Settings, sql: str) -> list[tuple]:
    """Rows of one query on the warehouse (same connection config as in-process dbt)."""
    import duckdb

    con = duckdb.connect(str(settings.resolved_warehouse_path))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Fail in CI, skip elsewhere, with a message that names the missing service."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}; start it to run this test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"loopline_test_{os.getpid()}"
    admin = "postgresql://root@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"drop database if exists {name}")
        con.execute(f"create database {name}")
    yield f"postgresql://root@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"drop database if exists {name} with (force)")
