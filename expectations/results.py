"""``monitoring.validation_results``: one row per expectation per validation run.

Written by the validation runner while it holds the warehouse writer lock, so the history
of every run (passed or not) can be queried beside the marts it judged. Like ``ml.*``, the
table is created by Python, not dbt; its DDL lives in `loopline.warehouse.TABLES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime

import duckdb

from loopline.warehouse import VALIDATION_RESULTS_TABLE, ensure

TABLE = VALIDATION_RESULTS_TABLE
#: The schema part of the monitor's own suites' asset names (``monitoring.fs_x``): rows of
#: the monitor's runs, not of `loopline validate` (which has no such schema).
MONITORING_ASSET_SCHEMA = "monitoring"


@dataclass(frozen=True)
class ResultRow:
    """One expectation's outcome in one run (the columns of the table, in order)."""

    run_id: str
    validated_at: datetime
    asset: str
    relation: str
    suite: str
    expectation: str
    expectation_type: str
    column_name: str | None
    critical: bool
    success: bool
    observed_value: str | None
    unexpected_count: int | None
    element_count: int | None
    exception: str | None


def append(con: duckdb.DuckDBPyConnection, rows: Sequence[ResultRow]) -> int:
    """Append `rows` in one transaction (the caller holds the writer lock); return how many."""
    ensure(con, TABLE)
    if not rows:
        return 0
    placeholders = ", ".join("?" * len(ResultRow.__dataclass_fields__))
    con.execute("begin")
    try:
        con.executemany(f"insert into {TABLE} values ({placeholders})", [astuple(r) for r in rows])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return len(rows)
