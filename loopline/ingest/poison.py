"""Set a poisoned ingest batch aside, or load it again (`loopline ingest --quarantine-batch`,
`--replay-batch`; docs/reliability.md, "Ingest").

A batch is poisoned when its records break every later build (a record dbt cannot parse in
the memory it has, say) in a way the loader's own checks did not catch.

- `quarantine_batch` turns each of the batch's landed records into a stub: payload removed,
  position and size kept, reason `quarantined_batch`. The next build quarantines them (the
  base models' first rule), so it goes through and the accounting still balances; the landed
  files are untouched, so nothing is lost.
- `release_batch` forgets the batch's landed files (their raw rows and manifest rows; files it
  rejected as unreadable are moved back from `landing/_rejected/`), so the next ingest loads
  them again, under the bound and rules in force then. Files rejected because they changed
  after load or lead out of the landing folder stay rejected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from loopline.ingest.files import PAYMENT_COLUMNS, REJECTED_DIR, ensure_raw
from loopline.settings import Settings
from loopline.warehouse import connect, warehouse_writer

QUARANTINED_BATCH = "quarantined_batch"
# raw table of each file source, and its payload columns
_PAYLOADS = {
    "events_lines": ("line",),
    "tickets_lines": ("line",),
    "payments_rows": PAYMENT_COLUMNS,
}
_TABLES = {"events": "events_lines", "tickets": "tickets_lines", "payments": "payments_rows"}


class BatchError(ValueError):
    """A batch id the warehouse does not know."""


@dataclass(frozen=True)
class Released:
    """What `release_batch` did."""

    files: int  # manifest rows forgotten: the next ingest loads these files again
    records: int  # raw rows deleted
    moved_back: int  # rejected files moved back into the landing folder


def _check(con: duckdb.DuckDBPyConnection, batch_id: str) -> None:
    ensure_raw(con)
    (known,) = con.execute(
        "select count(*) from raw.file_manifest where batch_id = ?", [batch_id]
    ).fetchone() or (0,)
    if not known:
        raise BatchError(
            f"no landed file was loaded in batch {batch_id!r}: see the batch ids in "
            "monitoring.fct_load_accounting or raw.file_manifest"
        )


def quarantine_batch(con: duckdb.DuckDBPyConnection, batch_id: str) -> dict[str, int]:
    """Stub every landed record of `batch_id` (stamped now, so the next build re-reads them);
    returns the records stubbed per raw table."""
    _check(con, batch_id)
    stubbed: dict[str, int] = {}
    con.execute("begin")
    try:
        for table, payload in _PAYLOADS.items():
            size = f"strlen(concat_ws(',', {', '.join(payload)}))"
            cleared = ", ".join(f"{column} = null" for column in payload)
            (n,) = con.execute(
                f"""
                update raw.{table}
                set _stub_reason = ?, _record_bytes = {size}, {cleared},
                    _loaded_at = now()::timestamp
                where _batch_id = ? and _stub_reason is null
                """,
                [QUARANTINED_BATCH, batch_id],
            ).fetchone() or (0,)
            stubbed[table] = int(n)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return stubbed


def release_batch(con: duckdb.DuckDBPyConnection, landing: Path, batch_id: str) -> Released:
    """Forget the landed files of `batch_id` so the next ingest loads them again."""
    _check(con, batch_id)
    rows = con.execute(
        "select file_path, source, status from raw.file_manifest "
        "where batch_id = ? and source in ('events', 'tickets', 'payments')",
        [batch_id],
    ).fetchall()
    back: list[tuple[Path, Path]] = []
    forget: list[str] = []
    for rel, _, status in rows:
        if status == "loaded":
            forget.append(rel)
            continue
        moved = landing / REJECTED_DIR / rel
        if moved.is_file() and not moved.is_symlink() and not os.path.lexists(landing / rel):
            back.append((moved, landing / rel))
            forget.append(rel)
    # the files go back first: a crash after that leaves them in place with their manifest
    # rows (ignored, as before the replay); after the commit, the next ingest loads them
    for moved, home in back:
        home.parent.mkdir(parents=True, exist_ok=True)
        os.rename(moved, home)
    con.execute("begin")
    try:
        records = 0
        for table in _TABLES.values():
            (n,) = con.execute(
                f"delete from raw.{table} where _batch_id = ? and _file in "
                "(select unnest(?::varchar[]))",
                [batch_id, forget],
            ).fetchone() or (0,)
            records += int(n)
        con.execute(
            "delete from raw.file_manifest where batch_id = ? and file_path in "
            "(select unnest(?::varchar[]))",
            [batch_id, forget],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        for moved, home in back:
            os.rename(home, moved)
        raise
    return Released(files=len(forget), records=records, moved_back=len(back))


def quarantine_batch_in(settings: Settings, batch_id: str) -> dict[str, int]:
    """`quarantine_batch` on the warehouse, under its writer lock."""
    with warehouse_writer(settings) as path:
        con = connect(path, settings)
        try:
            return quarantine_batch(con, batch_id)
        finally:
            con.close()


def release_batch_in(settings: Settings, batch_id: str) -> Released:
    """`release_batch` on the warehouse and landing folder, under the writer lock."""
    with warehouse_writer(settings) as path:
        con = connect(path, settings)
        try:
            return release_batch(con, settings.landing_dir, batch_id)
        finally:
            con.close()
