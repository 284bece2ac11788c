"""Batch recommendations' table: user ids are bigint, and an older warehouse is migrated."""

from __future__ import annotations

import duckdb

from loopline.warehouse import RECOMMENDATIONS_TABLE, ensure
from ml.recommender.score import bigint_user_ids


def user_id_type(con: duckdb.DuckDBPyConnection) -> str:
    ((kind,),) = con.execute(
        "select data_type from information_schema.columns "
        "where table_schema = 'ml' and table_name = 'recommendations' and column_name = 'user_id'"
    ).fetchall()
    return str(kind)


def test_a_new_table_holdsbigint_user_ids() -> None:
    con = duckdb.connect()
    ensure(con, RECOMMENDATIONS_TABLE)
    assert user_id_type(con) == "BIGINT"


def test_a_table_with_varchar_user_ids_is_migrated_with_its_rows() -> None:
    con = duckdb.connect()
    con.execute("create schema ml")
    con.execute(
        f"create table {RECOMMENDATIONS_TABLE} (user_id varchar, as_of_date date, rank integer, "
        "show_id varchar, score double, model_name varchar, model_version varchar, "
        "scored_at timestamp)"
    )
    con.execute(
        f"insert into {RECOMMENDATIONS_TABLE} values "
        "('42', '2026-02-01', 1, 'sh_1', 0.5, 'loopline-recommender', '1', '2026-02-01')"
    )
    ensure(con, RECOMMENDATIONS_TABLE)  # an existing table is left as it is
    bigint_user_ids(con)
    assert user_id_type(con) == "BIGINT"
    assert con.execute(f"select user_id from {RECOMMENDATIONS_TABLE}").fetchall() == [(42,)]
    bigint_user_ids(con)  # a second call has nothing to do
    assert user_id_type(con) == "BIGINT"
