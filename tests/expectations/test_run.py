"""The runner: what it records, renders, selects and refuses."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from expectations.results import TABLE
from expectations.run import ValidationError, validate, validate_frame
from loopline.settings import Settings
from tests.conftest import query
from tests.expectations.conftest import execute, stage


def test_results_land_in_monitoring_validation_results(warehouse):
    staged = stage(
        warehouse,
        "core.dim_users",
        "select * from {src}",
        "update {t} set user_id = null where user_id = (select min(user_id) from {t})",
    )
    report = validate(
        warehouse, ["core.dim_users", "core.dim_shows"], relations={"core.dim_users": staged}
    )
    assert report.recorded == len(report.rows) == sum(s.evaluated for s in report.suites)
    rows = query(
        warehouse,
        f"select asset, relation, suite, expectation_type, column_name, critical, success, "
        f"observed_value, unexpected_count from {TABLE} where run_id = '{report.run_id}'",
    )
    assert len(rows) == report.recorded
    assert {r[0] for r in rows} == {"core.dim_users", "core.dim_shows"}
    failed = [r for r in rows if not r[6]]
    assert failed, "the null key was not caught"
    null_key = [
        r for r in failed if r[3] == "expect_column_values_to_not_be_null" and r[4] == "user_id"
    ]
    assert null_key and null_key[0][1] == staged and null_key[0][5] is True
    assert null_key[0][8] == 1
    assert any(r[7] is not None and json.loads(r[7]) is not None for r in rows)
    # a second run appends, it does not replace
    again = validate(warehouse, ["core.dim_shows"])
    (total,) = query(warehouse, f"select count(*) from {TABLE}")[0]
    assert total == report.recorded + again.recorded


def test_data_docs_html_is_written(warehouse):
    report = validate(warehouse, ["features.fs_recs__co_watch"], record=False)
    assert report.data_docs is not None and report.data_docs.name == "index.html"
    index = report.data_docs.read_text()
    assert "features.fs_recs__co_watch" in index
    pages = list(report.data_docs.parent.glob("validations/**/*.html"))
    assert pages and any("No two rows may share the key" in p.read_text() for p in pages)


def test_failed_map_checks_get_samples_and_failed_table_checks_run_once(warehouse):
    """The second pass (sample values for Data Docs) reruns failed value-by-value checks only:
    a failed uniqueness check has no samples, and computing it again costs a GROUP BY."""
    import sqlalchemy as sa

    asset = "features.fs_churn__user_daily"
    staged = stage(
        warehouse,
        asset,
        "select * from {src} union all (select * from {src} limit 1)",
        "update {t} set sessions_7d = -5 where user_id = (select min(user_id) from {t})",
    )
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        report = validate(warehouse, [asset], relations={asset: staged}, record=False)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    failed = [r for r in report.rows if not r.success]
    assert sum(r.expectation_type == "expect_compound_key_to_be_unique" for r in failed) == 2
    assert any(r.column_name == "sessions_7d" for r in failed)
    group_bys = [s for s in statements if "HAVING" in s.upper()]
    assert len(group_bys) == 2, "each key checked once, not again for samples"
    stored = [
        json.loads(path.read_text())
        for path in (warehouse.data_dir / "gx" / "validations").rglob("*.json")
    ]
    samples = [
        r["result"].get("partial_unexpected_list")
        for v in stored
        for r in v["results"]
        if r["expectation_config"]["kwargs"].get("column") == "sessions_7d" and not r["success"]
    ]
    assert samples and set(samples[0]) == {-5}


def test_record_false_leaves_the_warehouse_untouched(warehouse):
    validate(warehouse, ["core.dim_shows"], record=False, data_docs=False)
    tables = query(
        warehouse,
        "select table_name from information_schema.tables where table_schema = 'monitoring'",
    )
    assert ("validation_results",) not in tables


def test_one_line_per_suite_and_critical_flag(warehouse):
    staged = stage(warehouse, "core.dim_shows", "select * from {src}", "delete from {t}")
    report = validate(
        warehouse, ["core"], relations={"core.dim_shows": staged}, record=False, data_docs=False
    )
    lines = report.lines()
    assert len(lines) == len(report.suites) == len({s.asset for s in report.suites})
    assert all(s.asset.startswith("core.") for s in report.suites)
    assert report.critical_failed and report.failed_suites() == ["core.dim_shows"]
    [line] = [line for line in lines if line.startswith("core.dim_shows")]
    assert "CRITICAL" in line and staged in line


def test_schemas_maps_a_whole_layer_to_its_staged_copy(warehouse):
    execute(
        warehouse,
        "create schema core__green",
        "create table core__green.dim_shows as select * from core.dim_shows",
        "create table core__green.dim_users as select * from core.dim_users where false",
    )
    report = validate(
        warehouse,
        ["core.dim_shows", "core.dim_users"],
        schemas={"core": "core__green"},
        record=False,
        data_docs=False,
    )
    by_asset = {s.asset: s for s in report.suites}
    assert by_asset["core.dim_shows"].relation == "core__green.dim_shows"
    assert by_asset["core.dim_shows"].success
    assert by_asset["core.dim_users"].critical_failed  # the green copy is empty


def test_a_missing_model_is_critical_and_missing_predictions_are_skipped(warehouse):
    execute(warehouse, "drop table core.fct_payments", "drop table ml.churn_predictions")
    report = validate(
        warehouse, ["core.fct_payments", "ml.churn_predictions"], record=False, data_docs=False
    )
    by_asset = {s.asset: s for s in report.suites}
    assert by_asset["core.fct_payments"].critical_failed
    assert (
        by_asset["ml.churn_predictions"].skipped
        and not by_asset["ml.churn_predictions"].critical_failed
    )
    assert report.critical_failed


def test_assets_by_bare_name_and_by_layer(warehouse):
    report = validate(warehouse, ["dim_shows", "ml"], record=False, data_docs=False)
    assert {s.asset for s in report.suites} == {
        "core.dim_shows",
        "ml.churn_predictions",
        "ml.recommendations",
    }


def test_unknown_asset_is_one_clear_line(warehouse):
    with pytest.raises(ValidationError, match=r"unknown asset 'core\.nope'.*layer"):
        validate(warehouse, ["core.nope"], record=False)


def test_missing_warehouse_says_what_to_run(tmp_path):
    from loopline.settings import Settings

    with pytest.raises(ValidationError, match="loopline build"):
        validate(Settings(data_dir=tmp_path), record=False)


def test_quantile_results_are_stored_and_rendered(warehouse, monkeypatch):
    """GX returns numpy booleans for quantile expectations; storing them must not fail."""
    import great_expectations.expectations as gxe

    import expectations.suites as suites
    from expectations.suites import core

    def with_quantiles(relation, ctx):
        return [
            *core.core_mart(relation, ctx),
            suites.warning(
                gxe.ExpectColumnQuantileValuesToBeBetween(
                    column="watched_seconds",
                    quantile_ranges={"quantiles": [0.5], "value_ranges": [[0, None]]},
                )
            ),
        ]

    suites._load_builtin_builders()
    monkeypatch.setitem(suites._BUILDERS, "core.fct_viewing_sessions", ("core", with_quantiles))
    report = validate(warehouse, ["core.fct_viewing_sessions"])
    [row] = [r for r in report.rows if r.expectation_type.startswith("expect_column_quantile")]
    assert row.success is True and report.data_docs is not None and report.data_docs.exists()


def test_no_connection_outlives_the_run(warehouse):
    """Another process can write the warehouse as soon as validate returns."""
    import subprocess
    import sys

    validate(warehouse, ["core.dim_shows"])
    code = f"import duckdb; duckdb.connect({str(warehouse.resolved_warehouse_path)!r}).close()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_validate_exits_0_when_clean_and_1_on_a_critical_failure(warehouse, monkeypatch):
    """`loopline validate --asset`: one line per suite, a summary, exit 1 on a critical failure."""
    from typer.testing import CliRunner

    from loopline.cli import app
    from loopline.settings import get_settings

    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(warehouse.data_dir))
    monkeypatch.setenv("LOOPLINE_PROGRESS", "quiet")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        clean = runner.invoke(app, ["validate", "--asset", "core.dim_shows"])
        assert clean.exit_code == 0, clean.output
        assert "1 suites: 1 passed" in clean.output
        execute(warehouse, "update core.dim_shows set show_id = null")
        broken = runner.invoke(app, ["validate", "--asset", "core.dim_shows"])
        assert broken.exit_code == 1, broken.output
        assert "critical expectations failed: core.dim_shows" in broken.output
        unknown = runner.invoke(app, ["validate", "--asset", "core.nope"])
        assert unknown.exit_code == 2 and "unknown asset" in unknown.output
    finally:
        get_settings.cache_clear()


def _validate_a_frame(settings: Settings, run_id: str | None = None):
    """One small suite on a data frame, with Data Docs: what the store and site tests need."""
    import great_expectations as gx

    return validate_frame(
        settings,
        "frames.x",
        pd.DataFrame({"x": [1, 2, 3]}),
        [gx.expectations.ExpectColumnValuesToNotBeNull(column="x")],
        relation="frames.x",
        record=False,
        run_id=run_id,
    )


def test_data_docs_keep_the_newest_results_and_archive_the_rest(tmp_path, monkeypatch):
    """GX lists every stored key and reads back every result its index lists on each build:
    the store keeps the newest results only, so an audit does not slow down as the history
    grows, and the older results move to the archive, none lost."""
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )

    from expectations import run as run_mod

    monkeypatch.setattr(run_mod, "DATA_DOCS_RESULTS", 2)
    reads: list[str] = []
    real_get = AbstractDataContext.get_validation_result

    def counting_get(self, *args, **kwargs):
        reads.append(str(kwargs.get("run_id")))
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(AbstractDataContext, "get_validation_result", counting_get)
    settings = Settings(data_dir=tmp_path / "data")
    runs = [f"docs-run-{n}" for n in range(5)]
    for run_id in runs:
        reads.clear()
        report = _validate_a_frame(settings, run_id)
        assert len(reads) <= 2  # never the whole history
    index = report.data_docs.read_text()
    assert all(run_id in index for run_id in runs[-2:])
    assert not any(run_id in index for run_id in runs[:-2])
    gx_dir = tmp_path / "data" / "gx"
    stored = {p.parts[-3] for p in (gx_dir / "validations").rglob("*.json")}
    archived = {p.parts[-3] for p in (gx_dir / "archive" / "validations").rglob("*.json")}
    assert stored == set(runs[-2:]) and archived == set(runs[:-2])  # nothing lost


def test_a_data_docs_build_waits_for_another_process_building_the_site(tmp_path):
    """Archiving moves and GX's clean-up deletes files of the shared site: a second process
    (the line's audit beside a monitor run) builds after the first, never at the same time."""
    import subprocess
    import sys

    settings = Settings(data_dir=tmp_path / "data")
    lock = tmp_path / "data" / "gx" / ".data_docs.lock"
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from loopline.locks import exclusive_file\n"
            f"with exclusive_file(Path({str(lock)!r}), 'the Data Docs site'):\n"
            "    print('held', flush=True); time.sleep(3)\n"
            f"    Path({str(released)!r}).write_text('done')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        report = _validate_a_frame(settings)
        assert released.exists()  # it built the site only once the other process was done
        assert report.data_docs is not None and report.data_docs.exists()
    finally:
        holder.wait(timeout=60)
