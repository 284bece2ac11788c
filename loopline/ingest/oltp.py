"""Copy the OLTP database's tables into the raw layer through DuckDB's own scanners.

The source is read, never written. A table is copied again only when its content
changed (a row-hash checksum), so re-running ingest with no new data changes nothing;
its history (plan changes, pauses, cancellations) is kept by the dbt snapshot.
"""

from __future__ import annotations

import duckdb

from loopline.warehouse import attach_source

TABLES = ("users", "plans", "plan_prices", "subscriptions")


def load_oltp(con: duckdb.DuckDBPyConnection, url: str, batch_id: str) -> dict[str, int]:
    """Copy changed source tables to raw.oltp_<table>; return rows copied per table."""
    con.execute("create schema if not exists raw")
    con.execute(
        """create table if not exists raw.oltp_loads (
            table_name varchar primary key, checksum hugeint, row_count bigint,
            batch_id varchar, loaded_at timestamp)"""
    )
    attach_source(con, url, alias="oltp_src", read_only=True)
    copied: dict[str, int] = {}
    try:
        for table in TABLES:
            rows, checksum = con.execute(
                f"select count(*), coalesce(sum(hash(t)::hugeint), 0) from oltp_src.{table} t"
            ).fetchone() or (0, 0)
            previous = con.execute(
                "select checksum from raw.oltp_loads where table_name = ?", [table]
            ).fetchone()
            if previous is not None and previous[0] == checksum:
                continue
            con.execute("begin")
            con.execute(
                f"""create or replace table raw.oltp_{table} as
                select *, ?::varchar as _batch_id, now()::timestamp as _loaded_at
                from oltp_src.{table}""",
                [batch_id],
            )
            con.execute(
                "insert or replace into raw.oltp_loads values (?, ?, ?, ?, now()::timestamp)",
                [table, checksum, rows, batch_id],
            )
            con.execute("commit")
            copied[table] = int(rows)
    finally:
        con.execute("detach oltp_src")
    return copied
