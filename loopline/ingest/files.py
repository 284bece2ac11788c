"""Load landed files into the warehouse's raw layer, each file exactly once.

Raw tables keep every physical record as it arrived (a JSON line as text, a CSV row as
strings) with its file, line number, batch id and load time, so nothing is lost before
dbt's staging decides what is clean and what goes to quarantine. A file manifest
(`raw.file_manifest`) records every file seen; a file is loaded together with its
manifest row in one transaction, so a crash mid-load reruns to the same result. A file
that cannot be read at all is moved to `landing/_rejected/` and recorded as rejected.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

REJECTED_DIR = "_rejected"

_DDL = (
    "create schema if not exists raw",
    """create table if not exists raw.file_manifest (
        file_path varchar primary key,   -- relative to the landing folder
        source varchar not null,
        size_bytes bigint not null,
        sha256 varchar not null,
        status varchar not null,         -- loaded | rejected
        records bigint not null,         -- physical records landed (lines, CSV rows, API items)
        reason varchar,
        batch_id varchar not null,
        loaded_at timestamp not null)""",
    """create table if not exists raw.events_lines (
        _file varchar not null, _line_no integer not null, line varchar,
        _batch_id varchar not null, _loaded_at timestamp not null)""",
    """create table if not exists raw.tickets_lines (
        _file varchar not null, _line_no integer not null, line varchar,
        _batch_id varchar not null, _loaded_at timestamp not null)""",
    """create table if not exists raw.payments_rows (
        _file varchar not null, _line_no integer not null,
        payment_id varchar, customer_ref varchar, customer_email varchar, type varchar,
        status varchar, amount_minor varchar, currency varchar, created varchar,
        failure_reason varchar,
        _batch_id varchar not null, _loaded_at timestamp not null)""",
    """create table if not exists raw.catalogue_items (
        entity varchar not null, _file varchar not null, _item_no integer not null,
        item varchar not null, _extract_batch_id varchar not null, _extracted_at timestamp not null,
        _batch_id varchar not null, _loaded_at timestamp not null)""",
)

PAYMENT_COLUMNS = (
    "payment_id", "customer_ref", "customer_email", "type", "status",
    "amount_minor", "currency", "created", "failure_reason",
)  # fmt: skip


@dataclass
class LoadReport:
    """What one load of landed files did, per source."""

    files: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)

    def add(self, source: str, files: int, records: int) -> None:
        self.files[source] = self.files.get(source, 0) + files
        self.records[source] = self.records.get(source, 0) + records


@dataclass(frozen=True)
class FileSource:
    """A kind of landed file: where it lies and how one file becomes raw rows."""

    name: str
    pattern: str  # glob under the landing folder
    load: Callable[[duckdb.DuckDBPyConnection, Path, str, str], int]  # -> records


def ensure_raw(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in _DDL:
        con.execute(ddl)


def _lines_loader(table: str) -> Callable[[duckdb.DuckDBPyConnection, Path, str, str], int]:
    def load(con: duckdb.DuckDBPyConnection, path: Path, rel: str, batch_id: str) -> int:
        # read_text fails on bytes that are not UTF-8: such a file is unreadable as a whole
        con.execute(
            f"""
            insert into raw.{table}
            select ?, generate_subscripts(lines, 1), unnest(lines), ?, now()::timestamp
            from (
                select case when content = '' then []::varchar[]
                            else string_split(rtrim(content, chr(10)), chr(10)) end as lines
                from read_text(?)
            )
            """,
            [rel, batch_id, str(path)],
        )
        return _count(con, f"select count(*) from raw.{table} where _file = ?", rel)

    return load


def _load_payments(con: duckdb.DuckDBPyConnection, path: Path, rel: str, batch_id: str) -> int:
    header = (
        path.read_bytes()[:4096].split(b"\n", 1)[0].decode("utf-8")
    )  # UnicodeDecodeError: unreadable
    if tuple(header.strip().split(",")) != PAYMENT_COLUMNS:
        raise ValueError(f"unexpected CSV header {header[:120]!r}")
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in PAYMENT_COLUMNS)
    con.execute(
        f"""
        insert into raw.payments_rows
        select ?, (row_number() over ())::integer + 1, {", ".join(PAYMENT_COLUMNS)}, ?, now()::timestamp
        from read_csv(?, header = true, columns = {{{columns}}}, quote = '"', escape = '"',
                      strict_mode = true, null_padding = false, auto_detect = false)
        """,
        [rel, batch_id, str(path)],
    )
    return _count(con, "select count(*) from raw.payments_rows where _file = ?", rel)


def _load_catalogue_page(
    con: duckdb.DuckDBPyConnection, path: Path, rel: str, batch_id: str
) -> int:
    con.execute(
        """
        insert into raw.catalogue_items
        select
            doc ->> '$.entity',
            ?,
            generate_subscripts(items, 1),
            unnest(items)::varchar,
            doc ->> '$.batch_id',
            (doc ->> '$.extracted_at')::timestamptz at time zone 'UTC',
            ?,
            now()::timestamp
        from (
            select content::json as doc, json_extract(content, '$.body.data[*]') as items
            from read_text(?)
        )
        """,
        [rel, batch_id, str(path)],
    )
    return _count(con, "select count(*) from raw.catalogue_items where _file = ?", rel)


def _count(con: duckdb.DuckDBPyConnection, sql: str, rel: str) -> int:
    row = con.execute(sql, [rel]).fetchone()
    return int(row[0]) if row else 0


SOURCES = (
    FileSource("catalogue", "catalogue/*/batch=*/page_*.json", _load_catalogue_page),
    FileSource("events", "events/date=*/events_*.ndjson", _lines_loader("events_lines")),
    FileSource("payments", "payments/payments_*.csv", _load_payments),
    FileSource("tickets", "tickets/tickets_*.ndjson", _lines_loader("tickets_lines")),
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_files(con: duckdb.DuckDBPyConnection, landing: Path, source: FileSource) -> list[Path]:
    """Files of `source` not yet in the manifest, in name order (oldest first)."""
    seen = {
        row[0]
        for row in con.execute(
            "select file_path from raw.file_manifest where source = ?", [source.name]
        ).fetchall()
    }
    files = sorted(
        p for p in landing.glob(source.pattern) if p.is_file() and not p.name.startswith(".")
    )
    return [p for p in files if str(p.relative_to(landing)) not in seen]


def load_files(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    batch_id: str,
    sources: Iterable[FileSource] = SOURCES,
    on_file: Callable[[str, int, int], None] | None = None,
) -> LoadReport:
    """Load every new landed file once; move unreadable ones aside. Returns counts."""
    ensure_raw(con)
    report = LoadReport()
    for source in sources:
        files = new_files(con, landing, source)
        for i, path in enumerate(files, start=1):
            rel = str(path.relative_to(landing))
            size, digest = path.stat().st_size, _sha256(path)
            con.execute("begin")
            try:
                records = source.load(con, path, rel, batch_id)
            except (duckdb.Error, UnicodeDecodeError, ValueError) as exc:
                con.execute("rollback")
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                _reject(con, landing, path, rel, source.name, size, digest, batch_id, reason)
                report.rejected.append(rel)
                log.warning("rejected %s: %s", rel, reason)
                continue
            con.execute(
                "insert into raw.file_manifest values (?, ?, ?, ?, 'loaded', ?, null, ?, now()::timestamp)",
                [rel, source.name, size, digest, records, batch_id],
            )
            con.execute("commit")
            report.add(source.name, 1, records)
            if on_file:
                on_file(source.name, i, len(files))
    return report


def _reject(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    path: Path,
    rel: str,
    source: str,
    size: int,
    digest: str,
    batch_id: str,
    reason: str,
) -> None:
    """Record the file as rejected, then move it aside (kept, never deleted)."""
    con.execute(
        "insert into raw.file_manifest values (?, ?, ?, ?, 'rejected', 0, ?, ?, now()::timestamp)",
        [rel, source, size, digest, reason, batch_id],
    )
    target = landing / REJECTED_DIR / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)
