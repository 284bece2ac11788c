"""One path per step: `loopline ingest` + `loopline build` leave what the line flow leaves."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from flows.line import LineParams, line
from loopline.cli import app
from loopline.settings import Settings, get_settings
from loopline.simulate.run import catalogue_dir
from loopline.simulate.vendor_api import ApiBehaviour, CatalogueServer
from loopline.warehouse import reading
from tests.conftest import copy_company

CALM = ApiBehaviour(rate_limit_per_s=1e6, burst=1_000_000, failure_rate=0.0)


def state(settings: Settings) -> dict[str, int]:
    """Every warehouse table and online-store table, with its row count."""
    out = {}
    with reading(settings) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = current_database() order by 1, 2"
        ).fetchall()
        for schema, table in tables:
            (n,) = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
            out[f"{schema}.{table}"] = n
    for path in sorted((settings.data_dir / "online").glob("*.sqlite")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as online:
            names = online.execute("select name from sqlite_master where type = 'table'")
            for (table,) in names.fetchall():
                (n,) = online.execute(f'select count(*) from "{table}"').fetchone()
                out[f"online:{path.name}:{table}"] = n
    return out


@pytest.fixture
def use(monkeypatch):
    """Point the process-wide settings at one data folder and catalogue API."""

    def point(settings: Settings, catalogue_url: str) -> None:
        monkeypatch.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("LOOPLINE_CATALOGUE_URL", catalogue_url)
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()


def test_the_cli_and_the_line_flow_leave_the_same_tables(prefect_harness, small_sim, tmp_path, use):
    by_flow = copy_company(small_sim[0], tmp_path / "flow" / "data")
    by_cli = copy_company(small_sim[0], tmp_path / "cli" / "data")
    with CatalogueServer(catalogue_dir(small_sim[0]), CALM) as vendor:
        use(by_flow, vendor.url)
        line(LineParams())  # what the deployment runs
        use(by_cli, vendor.url)
        runner = CliRunner()
        for command in (["ingest", "--quiet"], ["build"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, result.output
    expected = state(by_flow)
    assert any(name.startswith("online:") for name in expected), expected  # refreshed
    assert any(name.startswith("core.") for name in expected), expected
    assert state(by_cli) == expected
