"""Shared fixtures: one small simulated company per test session, services checks."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from loopline.ingest.run import IngestReport
from loopline.settings import Settings
from loopline.simulate import SimConfig, SimReport, simulate

# a fresh Prefect home per test run: a stale temporary-server database can stay locked
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="loopline-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

SMALL_UNTIL = date(2026, 2, 14)  # 45 days from the default start


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Each test leaves the process environment as it found it. The CLI run in process sets
    Prefect's defaults in `os.environ` (`loopline.cli._prefect_home`), and every process a
    later test starts would inherit them: a Prefect worker logging at WARNING hid the lines
    `tests/flows/test_workers.py` reads, whenever `tests/test_services.py` ran first. (A
    wider-scoped fixture set up for this test is set up before this snapshot, so it stays.)"""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


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


# -- what the reliability tests tried, for docs/reliability.md ---------------------------------
RELIABILITY_REPORT_ENV = "LOOPLINE_RELIABILITY_REPORT"


class ReliabilityRecord:
    """What the reliability tests tried and how it ended, by kind (`faults_fast`, `api_fuzz`,
    `bad_input` ...), written at the end of the session as `<kind>.json` into the session's
    temporary folder, and into the data folder's `reports/reliability/` when
    LOOPLINE_RELIABILITY_REPORT is set (`1`, or the folder to write to). docs/reliability.md
    is generated from those files: `python -m loopline.reliability`."""

    def __init__(self) -> None:
        self.entries: dict[str, list[dict[str, Any]]] = {}

    def add(self, kind: str, entry: dict[str, Any]) -> None:
        self.entries.setdefault(kind, []).append(entry)

    def write(self, folder: Path) -> list[Path]:
        """One file per kind recorded in this session (replacing an earlier session's)."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        for kind, entries in sorted(self.entries.items()):
            path = folder / f"{kind}.json"
            document = {"kind": kind, "written_at": stamp, "entries": entries}
            path.write_text(json.dumps(document, indent=1, default=str) + "\n")
            written.append(path)
        return written


RELIABILITY = ReliabilityRecord()


@pytest.fixture(scope="session")
def reliability_record() -> ReliabilityRecord:
    return RELIABILITY


def reliability_report_folder() -> Path | None:
    """Where LOOPLINE_RELIABILITY_REPORT says the session's records go (None: unset)."""
    value = os.environ.get(RELIABILITY_REPORT_ENV, "").strip()
    if value.lower() in ("", "0", "false", "no"):
        return None
    if value.lower() in ("1", "true", "yes"):
        return Settings().reports_dir / "reliability"
    return Path(value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Record the outcome of each test marked `reliability(kind)` (a bad input tried)."""
    outcome = yield
    marker = item.get_closest_marker("reliability")
    report = outcome.get_result()
    if marker is None or not (report.when == "call" or (report.when == "setup" and report.failed)):
        return
    function = getattr(item, "function", None)
    doc = (function.__doc__ or "").strip().split("\n\n")[0] if function else ""
    RELIABILITY.add(
        str(marker.args[0]),
        {
            "test": item.nodeid,
            "module": item.nodeid.split("::")[0],
            "case": item.name,
            "doc": " ".join(doc.split()),
            "outcome": "error" if report.when == "setup" else report.outcome,
        },
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not RELIABILITY.entries:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        RELIABILITY.write(factory.getbasetemp() / "reliability")
    folder = reliability_report_folder()
    if folder is not None:
        for path in RELIABILITY.write(folder):
            print(f"\nreliability record: {path}")
