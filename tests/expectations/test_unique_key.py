"""ExpectCompoundKeyToBeUnique: one GROUP BY in SQL, the same answer on pandas."""

from __future__ import annotations

import duckdb
import great_expectations as gx
import pandas as pd
import pytest

from expectations.gx_duckdb import add_duckdb_datasource
from expectations.unique_key import ExpectCompoundKeyToBeUnique

# (a, b): (1, x) three times, (2, None) twice, the rest once -> 2 duplicated keys, 5 rows
FRAME = pd.DataFrame(
    {
        "a": [1, 1, 1, 2, 2, 3, 4, 5],
        "b": ["x", "x", "x", None, None, "y", "z", "x"],
    }
)


def _sql_batch(tmp_path, frame):
    path = tmp_path / "k.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create schema s")
    con.register("frame", frame)
    con.execute("create table s.k as select * from frame")
    con.close()
    context = gx.get_context(mode="ephemeral")
    asset = add_duckdb_datasource(context, "wh", str(path)).add_table_asset(
        name="k", table_name="k", schema_name="s"
    )
    return asset.add_batch_definition_whole_table("all").get_batch()


def _pandas_batch(frame):
    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("p").add_dataframe_asset("k")
    return asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )


@pytest.mark.parametrize("engine", ["sql", "pandas"])
def test_duplicated_keys_and_rows_are_counted(tmp_path, engine):
    batch = _sql_batch(tmp_path, FRAME) if engine == "sql" else _pandas_batch(FRAME)
    result = batch.validate(ExpectCompoundKeyToBeUnique(column_list=["a", "b"]))
    assert not result.success
    assert result.result["observed_value"] == 2  # duplicated keys, a null key included
    assert result.result["unexpected_count"] == 5  # rows carrying them
    assert result.result["element_count"] == 8


@pytest.mark.parametrize("engine", ["sql", "pandas"])
def test_unique_keys_pass(tmp_path, engine):
    frame = FRAME.drop_duplicates()
    batch = _sql_batch(tmp_path, frame) if engine == "sql" else _pandas_batch(frame)
    result = batch.validate(ExpectCompoundKeyToBeUnique(column_list=["a", "b"]))
    assert result.success and result.result["unexpected_count"] == 0
