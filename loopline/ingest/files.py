"""Load landed files into the warehouse's raw layer, each file exactly once.

Raw tables keep every physical record as it arrived (a JSON line as text, a CSV row as
strings) with its file, line number, batch id and load time, so nothing is lost before
dbt's staging decides what is clean and what goes to quarantine. A file manifest
(`raw.file_manifest`) records every file seen.

Many files share one transaction (up to `TXN_FILES` files or `TXN_BYTES` bytes of one
source), read a chunk at a time: a chunk's lines are cut out in NumPy and inserted as one
Arrow table, and every file gets its manifest row in the same transaction. A crash
therefore leaves each file loaded wholly (with its manifest row) or not at all, and a rerun
loads what is missing.

A file that cannot be read at all (not UTF-8 text, not the CSV its source writes) is moved
to `landing/_rejected/` and recorded as rejected: such files are expected (the simulator
writes some on purpose), so they are reported, never raised. Should a transaction fail for
a reason the checks before it did not catch, it is rolled back and redone in smaller ones
(chunks, then single files), so one bad file never holds back the others.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from loopline import progress

log = logging.getLogger(__name__)

REJECTED_DIR = "_rejected"
# one transaction loads up to TXN_FILES files or TXN_BYTES bytes of one source: few large
# transactions let DuckDB write row groups straight to the file (many small commits each
# go through the write-ahead log and a checkpoint, which costs more than the load itself)
TXN_FILES = 20_000
TXN_BYTES = 64 << 20
# ... read and inserted a chunk at a time: bounds memory and keeps the bar moving
CHUNK_FILES = 250
CHUNK_BYTES = 16 << 20

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
class LandedFile:
    """One new landed file: where it is, what it holds, and why it cannot load (if so)."""

    path: Path
    rel: str  # relative to the landing folder: the manifest's key
    size: int
    sha256: str
    problem: str | None = None  # set when the file is unreadable as a whole
    data: bytes = field(default=b"", repr=False)  # the content, read once


# a loader inserts the records of some files (inside the caller's transaction) and
# returns how many records each file held
Loader = Callable[[duckdb.DuckDBPyConnection, Sequence[LandedFile], str], dict[str, int]]


@dataclass(frozen=True)
class FileSource:
    """A kind of landed file: where it lies and how a set of its files becomes raw rows."""

    name: str
    pattern: str  # glob under the landing folder
    load: Loader
    check: Callable[[bytes], str | None] = lambda head: None  # first line -> problem


def ensure_raw(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in _DDL:
        con.execute(ddl)


def _staged(con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], select: str) -> None:
    """`_landed`: one row per file (its `rel` and what `select` makes of `content`)."""
    con.execute(
        f"""
        create or replace temp table _landed as
        select files.rel, {select}
        from read_text($paths) as t
        join (select unnest($paths) as path, unnest($rels) as rel) as files
            on t.filename = files.path
        """,
        {"paths": [str(f.path) for f in files], "rels": [f.rel for f in files]},
    )


def _counts(con: duckdb.DuckDBPyConnection, column: str) -> dict[str, int]:
    rows = con.execute(f"select rel, len({column}) from _landed").fetchall()
    con.execute("drop table _landed")
    return {rel: int(n) for rel, n in rows}


def split_lines(files: Sequence[LandedFile]) -> tuple[pa.Table, list[int]]:
    """The files' lines as one Arrow table (file index, line number, line) and lines per file.

    A file's records are its lines, trailing newlines ignored (an empty file has none).
    The lines are cut out of one buffer by their offsets, without a Python object per line;
    each keeps its newline, which the insert trims.
    """
    parts = [f.data.rstrip(b"\n") for f in files]
    counts = [part.count(b"\n") + 1 if part else 0 for part in parts]
    buffer = b"\n".join(part for part in parts if part) + b"\n"
    ends = np.flatnonzero(np.frombuffer(buffer, np.uint8) == 10) + 1
    total = sum(counts)
    if total == 0:
        ends = ends[:0]
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(total, pa.py_buffer(offsets), pa.py_buffer(buffer))
    file_index = np.repeat(np.arange(len(files), dtype=np.int32), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    line_no = (np.arange(total) - first + 1).astype(np.int32)
    table = pa.table({"file_index": file_index, "line_no": line_no, "line": lines})
    # several record batches: DuckDB scans them on all its threads
    return pa.Table.from_batches(table.to_batches(1 << 16), schema=table.schema), counts


def _lines_loader(table: str) -> Loader:
    def load(
        con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], batch_id: str
    ) -> dict[str, int]:
        lines, counts = split_lines(files)
        con.register("_landed_lines", lines)
        try:
            con.execute(
                f"""
                insert into raw.{table}
                select $rels[file_index + 1], line_no, rtrim(line, chr(10)), $batch,
                       now()::timestamp
                from _landed_lines
                """,
                {"rels": [f.rel for f in files], "batch": batch_id},
            )
        finally:
            con.unregister("_landed_lines")
        return {f.rel: n for f, n in zip(files, counts, strict=True)}

    return load


def _payments_header(head: bytes) -> str | None:
    header = head.decode("utf-8", errors="replace").strip()
    if tuple(header.split(",")) != PAYMENT_COLUMNS:
        return f"not the billing export: unexpected CSV header {header[:120]!r}"
    return None


def _load_payments(
    con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], batch_id: str
) -> dict[str, int]:
    # one statement per file: a CSV row's line number is its position in its own file
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in PAYMENT_COLUMNS)
    out: dict[str, int] = {}
    for f in files:
        (n,) = con.execute(
            f"""
            insert into raw.payments_rows
            select ?, (row_number() over ())::integer + 1, {", ".join(PAYMENT_COLUMNS)}, ?,
                   now()::timestamp
            from read_csv(?, header = true, columns = {{{columns}}}, quote = '"', escape = '"',
                          strict_mode = true, null_padding = false, auto_detect = false)
            """,
            [f.rel, batch_id, str(f.path)],
        ).fetchone() or (0,)
        out[f.rel] = int(n)
    return out


def _load_catalogue_pages(
    con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], batch_id: str
) -> dict[str, int]:
    _staged(
        con,
        files,
        "content::json as doc, json_extract(content, '$.body.data[*]') as items",
    )
    con.execute(
        """
        insert into raw.catalogue_items
        select
            doc ->> '$.entity',
            rel,
            generate_subscripts(items, 1),
            unnest(items)::varchar,
            doc ->> '$.batch_id',
            (doc ->> '$.extracted_at')::timestamptz at time zone 'UTC',
            $batch,
            now()::timestamp
        from _landed
        """,
        {"batch": batch_id},
    )
    return _counts(con, "items")


SOURCES = (
    FileSource("catalogue", "catalogue/*/batch=*/page_*.json", _load_catalogue_pages),
    FileSource("events", "events/date=*/events_*.ndjson", _lines_loader("events_lines")),
    FileSource("payments", "payments/payments_*.csv", _load_payments, _payments_header),
    FileSource("tickets", "tickets/tickets_*.ndjson", _lines_loader("tickets_lines")),
)


def inspect(path: Path, landing: Path, check: Callable[[bytes], str | None]) -> LandedFile:
    """The file read once: size, SHA-256, and why it cannot load (not UTF-8 text, or not
    what its source expects). Landed files are small; a chunk holds few megabytes of them."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem: str | None = (
            f"unreadable: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        )
    else:
        problem = check(data[:4096].split(b"\n", 1)[0])
    rel = str(path.relative_to(landing))
    return LandedFile(path, rel, len(data), hashlib.sha256(data).hexdigest(), problem, data)


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


def _chunks(paths: Sequence[Path], max_bytes: int, max_files: int) -> list[list[Path]]:
    """`paths` in order, cut into runs of at most `max_bytes` bytes and `max_files` files."""
    out: list[list[Path]] = []
    chunk: list[Path] = []
    size = 0
    for path in paths:
        chunk.append(path)
        size += path.stat().st_size
        if len(chunk) >= max_files or size >= max_bytes:
            out.append(chunk)
            chunk, size = [], 0
    if chunk:
        out.append(chunk)
    return out


def load_files(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    batch_id: str,
    sources: Iterable[FileSource] = SOURCES,
    show_progress: bool = True,
) -> LoadReport:
    """Load every new landed file once; move unreadable ones aside. Returns counts."""
    ensure_raw(con)
    report = LoadReport()
    todo = [(source, new_files(con, landing, source)) for source in sources]
    total = sum(len(paths) for _, paths in todo)
    with _bar(show_progress, total) as advance:
        for source, paths in todo:
            for group in _chunks(paths, TXN_BYTES, TXN_FILES):
                _load_group(con, landing, source, group, batch_id, report, advance)
    return report


def _load_group(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    source: FileSource,
    paths: Sequence[Path],
    batch_id: str,
    report: LoadReport,
    advance: Callable[[int], None],
) -> None:
    """Load `paths` in one transaction, a chunk at a time, with their manifest rows.

    Files found unreadable beforehand are rejected once the transaction committed. If the
    transaction fails anyway, it is rolled back and its files loaded in smaller ones (chunks,
    then single files); a single file that fails is rejected with DuckDB's reason.
    """
    chunks = _chunks(paths, CHUNK_BYTES, CHUNK_FILES)
    loaded = LoadReport()
    unreadable: list[LandedFile] = []
    shown = 0
    con.execute("begin")
    try:
        for chunk, files in zip(chunks, _read_ahead(chunks, landing, source), strict=True):
            unreadable += [f for f in files if f.problem is not None]
            good = [f for f in files if f.problem is None]
            if good:
                records = source.load(con, good, batch_id)
                _record_loaded(con, source.name, good, records, batch_id)
                loaded.add(source.name, len(good), sum(records.values()))
            advance(len(chunk))
            shown += len(chunk)
        con.execute("commit")
    except (duckdb.Error, ValueError) as exc:
        con.execute("rollback")
        advance(-shown)
        if len(paths) == 1:
            f = inspect(paths[0], landing, lambda head: None)
            _reject(con, landing, f, source.name, batch_id, _reason(exc), report)
            advance(1)
            return
        smaller = chunks if len(chunks) > 1 else [[path] for path in paths]
        for part in smaller:
            _load_group(con, landing, source, part, batch_id, report, advance)
        return
    for name, n in loaded.files.items():
        report.add(name, n, loaded.records[name])
    for f in unreadable:
        _reject(con, landing, f, source.name, batch_id, f.problem or "unreadable", report)


def _read_ahead(
    chunks: Sequence[Sequence[Path]], landing: Path, source: FileSource
) -> Iterator[list[LandedFile]]:
    """Each chunk's files, inspected; the next chunk is read and hashed on a thread while
    DuckDB inserts this one (both release the GIL for most of their work)."""

    def read(chunk: Sequence[Path]) -> list[LandedFile]:
        return [inspect(path, landing, source.check) for path in chunk]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-read") as pool:
        ahead = pool.submit(read, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            assert ahead is not None
            files = ahead.result()
            ahead = pool.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None
            yield files


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"unreadable: {first[:300]}"


def _record_loaded(
    con: duckdb.DuckDBPyConnection,
    source: str,
    files: Sequence[LandedFile],
    records: dict[str, int],
    batch_id: str,
) -> None:
    """The manifest rows of loaded files (inside the transaction that loaded them)."""
    con.execute(
        """
        insert into raw.file_manifest
        select rel, $source, size, sha256, 'loaded', records, null, $batch, now()::timestamp
        from (select unnest($rels) as rel, unnest($sizes) as size,
                     unnest($shas) as sha256, unnest($records) as records)
        """,
        {
            "source": source,
            "batch": batch_id,
            "rels": [f.rel for f in files],
            "sizes": [f.size for f in files],
            "shas": [f.sha256 for f in files],
            "records": [records.get(f.rel, 0) for f in files],
        },
    )


@contextmanager
def _bar(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """`advance(n)` of a bar over the files (a no-op when not shown)."""
    if not (show and total):
        yield lambda n: None
        return
    with progress.track("loading files", total=total, unit="files") as bar:
        yield bar.advance


def _reject(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    f: LandedFile,
    source: str,
    batch_id: str,
    reason: str,
    report: LoadReport,
) -> None:
    """Record the file as rejected, then move it aside (kept, never deleted).

    Expected (the simulator writes unreadable files on purpose): logged at info level and
    counted in the report, never a warning or an exception.
    """
    con.execute(
        "insert into raw.file_manifest values (?, ?, ?, ?, 'rejected', 0, ?, ?, now()::timestamp)",
        [f.rel, source, f.size, f.sha256, reason, batch_id],
    )
    target = landing / REJECTED_DIR / f.rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(f.path), target)
    report.rejected.append(f.rel)
    log.info("rejected %s: %s", f.rel, reason)
