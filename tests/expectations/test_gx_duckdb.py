"""The DuckDB adapter for GX's SQL datasource, on a small purpose-built DuckDB file."""

from __future__ import annotations

import duckdb
import great_expectations as gx
import great_expectations.expectations as gxe
import pytest
import sqlalchemy as sa

from expectations.gx_duckdb import add_duckdb_datasource, sqlalchemy_type


@pytest.fixture
def warehouse(tmp_path):
    """features.t: 1,000 rows, x in [0, 1), 7 rows with x above 1, a text column."""
    path = tmp_path / "small.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create schema features")
    con.execute(
        "create table features.t as select range::bigint as id, "
        "case when range < 7 then 2.0 else (range % 100) / 100.0 end as x, "
        "'v' || (range % 3) as label from range(1000)"
    )
    con.close()
    return path


def _batch(context, datasource):
    asset = datasource.add_table_asset(name="t", table_name="t", schema_name="features")
    return asset.add_batch_definition_whole_table("all").get_batch()


SUITE = [
    gxe.ExpectTableColumnsToMatchSet(column_set=["id", "x", "label"], exact_match=True),
    gxe.ExpectColumnValuesToBeOfType(column="id", type_="BIGINT"),
    gxe.ExpectColumnValuesToNotBeNull(column="x"),
    gxe.ExpectColumnValuesToBeInSet(column="label", value_set=["v0", "v1", "v2"]),
    gxe.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=1),
]


def test_adapter_validates_a_table_outside_main_and_counts_exactly(warehouse):
    context = gx.get_context(mode="ephemeral")
    datasource = add_duckdb_datasource(context, "wh", str(warehouse))
    batch = _batch(context, datasource)
    suite = context.suites.add(gx.ExpectationSuite(name="s", expectations=SUITE))
    result = batch.validate(suite)
    outcomes = {r.expectation_config.type: r for r in result.results}
    assert not any(r.exception_info.get("raised_exception") for r in result.results)
    failed = [t for t, r in outcomes.items() if not r.success]
    assert failed == ["expect_column_values_to_be_between"]
    assert outcomes["expect_column_values_to_be_between"].result["unexpected_count"] == 7
    assert outcomes["expect_column_values_to_be_of_type"].result["observed_value"] == "BIGINT"


def test_adapter_shares_the_file_with_an_open_connection(warehouse):
    """In-process dbt keeps the database open; GX's connections must share that instance."""
    holder = duckdb.connect(str(warehouse))
    try:
        context = gx.get_context(mode="ephemeral")
        datasource = add_duckdb_datasource(context, "wh", str(warehouse))
        result = _batch(context, datasource).validate(
            gxe.ExpectTableRowCountToBeBetween(min_value=1000, max_value=1000)
        )
        assert result.success
    finally:
        holder.close()


def test_stock_sql_datasource_still_needs_the_adapter(warehouse):
    """Canary: when this fails, GX/duckdb-engine fixed the bugs: delete gx_duckdb.py.

    GX's generic SQL datasource on DuckDB cannot resolve a bundled metric (the rows are
    read after the connection was reset) nor reflect a table outside ``main``.
    """
    context = gx.get_context(mode="ephemeral")
    datasource = context.data_sources.add_sql(
        name="stock", connection_string=f"duckdb:///{warehouse}"
    )
    result = _batch(context, datasource).validate(
        gxe.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=3)
    )
    raised = [info for info in result.exception_info.values() if info.get("raised_exception")]
    assert not result.success and raised, (
        "GX's own SQL datasource now validates DuckDB: expectations/gx_duckdb.py can go"
    )


@pytest.mark.parametrize(
    ("duckdb_type", "expected"),
    [
        ("BIGINT", sa.types.BIGINT),
        ("VARCHAR", sa.types.VARCHAR),
        ("DOUBLE", sa.types.DOUBLE),
        ("DECIMAL(18,2)", sa.types.DECIMAL),
        ("TIMESTAMP WITH TIME ZONE", sa.types.TIMESTAMP),
        ("DATE", sa.types.DATE),
        ("BOOLEAN", sa.types.BOOLEAN),
        ("VARCHAR[]", sa.types.NullType),
        ("STRUCT(a INTEGER)", sa.types.NullType),
    ],
)
def test_duckdb_types_map_to_sqlalchemy_types(duckdb_type, expected):
    assert type(sqlalchemy_type(duckdb_type)) is expected
    if duckdb_type.startswith("DECIMAL"):
        assert (sqlalchemy_type(duckdb_type).precision, sqlalchemy_type(duckdb_type).scale) == (
            18,
            2,
        )
