"""One path per step: `loopline ingest` + `loopline build` leave what the line flow leaves.

The line's run also shows its dbt build node by node (flows/dbt_nodes.py, and
tests/flows/test_dbt_nodes.py for failures): checked here on the real project, for free.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest
from typer.testing import CliRunner

from flows.line import LineParams, line
from loopline.cli import app
from loopline.settings import Settings, get_settings
from loopline.simulate.run import catalogue_dir
from loopline.simulate.vendor_api import ApiBehaviour, CatalogueServer
from loopline.warehouse import reading
from tests.conftest import copy_company
from tests.flows.test_dbt_nodes import task_runs

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


# two whole lines on the small company (about 50 s): under `make test-slow`, to keep `make
# test` near 15 minutes on 2 cores; tests/ingest/test_line.py and tests/flows/test_demo.py
# run the line in the default suite
@pytest.mark.slow
def test_the_cli_and_the_line_flow_leave_the_same_tables(prefect_harness, small_sim, tmp_path, use):
    by_flow = copy_company(small_sim[0], tmp_path / "flow" / "data")
    by_cli = copy_company(small_sim[0], tmp_path / "cli" / "data")
    with CatalogueServer(catalogue_dir(small_sim[0]), CALM) as vendor:
        use(by_flow, vendor.url)
        run = line(LineParams(), return_state=True)  # what the deployment runs
        assert run.is_completed(), run
        use(by_cli, vendor.url)
        runner = CliRunner()
        for command in (["ingest", "--quiet"], ["build"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, result.output
    expected = state(by_flow)
    assert any(name.startswith("online:") for name in expected), expected  # refreshed
    assert any(name.startswith("core.") for name in expected), expected
    assert state(by_cli) == expected
    # the build showed in Prefect node by node: one completed task run per node dbt ran
    ran = json.loads((by_flow.data_dir / "dbt" / "target" / "run_results.json").read_text())
    kinds = Counter(result["unique_id"].split(".")[0] for result in ran["results"])
    runs = task_runs(run.state_details.flow_run_id, expected=sum(kinds.values()))
    nodes = [r for r in runs if r.name.split(" ")[0] in kinds]
    assert Counter(r.name.split(" ")[0] for r in nodes) == kinds
    assert {r.state.type.value for r in nodes if r.state} == {"COMPLETED"}
