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

Three more rules (docs/reliability.md, "Ingest"): a record over `max_record_bytes` is
loaded as a stub (position and size, no payload) that staging quarantines; only regular
files whose real path lies inside the landing folder are read (a link out of it is
rejected, the link itself moved aside); a loaded file whose size or hash changed since is
rejected under `<path>.changed-<sha12>`, its loaded rows kept.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
        loaded_at timestamp not null,
        mtime_ns bigint)                 -- when the file was last modified, as loaded""",
    """create table if not exists raw.events_lines (
        _file varchar not null, _line_no integer not null, line varchar,
        _batch_id varchar not null, _loaded_at timestamp not null,
        _stub_reason varchar, _record_bytes bigint)""",
    """create table if not exists raw.tickets_lines (
        _file varchar not null, _line_no integer not null, line varchar,
        _batch_id varchar not null, _loaded_at timestamp not null,
        _stub_reason varchar, _record_bytes bigint)""",
    """create table if not exists raw.payments_rows (
        _file varchar not null, _line_no integer not null,
        payment_id varchar, customer_ref varchar, customer_email varchar, type varchar,
        status varchar, amount_minor varchar, currency varchar, created varchar,
        failure_reason varchar,
        _batch_id varchar not null, _loaded_at timestamp not null,
        _stub_reason varchar, _record_bytes bigint)""",
    """create table if not exists raw.catalogue_items (
        entity varchar not null, _file varchar not null, _item_no integer not null,
        item varchar not null, _extract_batch_id varchar not null, _extracted_at timestamp not null,
        _batch_id varchar not null, _loaded_at timestamp not null)""",
)

# columns added after the first release: `ensure_raw` adds them to an older warehouse. A stub
# row (`_stub_reason` set) keeps the position and size of a record whose payload was not
# loaded (`oversized_record`: over `max_record_bytes`); the base models quarantine it
_ADDED_COLUMNS = (
    ("file_manifest", "mtime_ns", "bigint"),
    *(
        (table, column, kind)
        for table in ("events_lines", "tickets_lines", "payments_rows")
        for column, kind in (("_stub_reason", "varchar"), ("_record_bytes", "bigint"))
    ),
)
OVERSIZED = "oversized_record"
MAX_RECORD_BYTES = 4 << 20  # the default of LOOPLINE_MAX_RECORD_BYTES

PAYMENT_COLUMNS = (
    "payment_id", "customer_ref", "customer_email", "type", "status",
    "amount_minor", "currency", "created", "failure_reason",
)  # fmt: skip


@dataclass
class LoadReport:
    """What one load of landed files did, per source."""

    files: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)  # stubs included
    rejected: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # loaded files whose content changed since
    oversized: dict[str, int] = field(default_factory=dict)  # records loaded as stubs

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
    mtime_ns: int | None = None


class Loaded(NamedTuple):
    """What a loader inserted: records per file (stubs included), and how many were stubs."""

    records: dict[str, int]
    stubs: int = 0


# a loader inserts the records of some files (inside the caller's transaction), each record
# over `max_record_bytes` as a stub, and says how many records each file held
Loader = Callable[[duckdb.DuckDBPyConnection, Sequence[LandedFile], str, int], Loaded]


@dataclass(frozen=True)
class FileSource:
    """A kind of landed file: where it lies and how a set of its files becomes raw rows."""

    name: str
    pattern: str  # glob under the landing folder
    load: Loader
    check: Callable[[bytes], str | None] = lambda head: None  # first line -> problem


def ensure_raw(con: duckdb.DuckDBPyConnection) -> None:
    """The raw tables and the manifest, with every column this version writes."""
    for ddl in _DDL:
        con.execute(ddl)
    for table, column, kind in _ADDED_COLUMNS:
        con.execute(f"alter table raw.{table} add column if not exists {column} {kind}")


def _staged(con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], select: str) -> None:
    """`_landed`: one row per file (its `rel` and what `select` makes of `content`, the
    bytes `inspect` read and hashed: the landed path is not read again)."""
    contents = pa.table(
        {
            "rel": pa.array([f.rel for f in files], pa.string()),
            "content": pa.array([f.data.decode("utf-8") for f in files], pa.large_string()),
        }
    )
    con.register("_landed_contents", contents)
    try:
        con.execute(
            f"create or replace temp table _landed as select rel, {select} from _landed_contents"
        )
    finally:
        con.unregister("_landed_contents")


def _counts(con: duckdb.DuckDBPyConnection, column: str) -> dict[str, int]:
    rows = con.execute(f"select rel, len({column}) from _landed").fetchall()
    con.execute("drop table _landed")
    return {rel: int(n) for rel, n in rows}


def oversized_lines(data: bytes, max_bytes: int) -> dict[int, tuple[int, int]]:
    """The lines of `data` longer than `max_bytes` (newline excluded): line number -> (start,
    end) offsets. Cheap for a small file: only a file larger than the bound can hold one."""
    if len(data) <= max_bytes:
        return {}
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(data)]])
    big = np.flatnonzero(stops - starts > max_bytes)
    return {int(i) + 1: (int(starts[i]), int(stops[i])) for i in big}


def blank_lines(data: bytes, lines: dict[int, tuple[int, int]], filler: bytes = b"") -> bytes:
    """`data` with the given lines' content replaced by `filler` (line numbers unchanged)."""
    pieces, previous = [], 0
    for start, stop in sorted(lines.values()):
        pieces += [data[previous:start], filler]
        previous = stop
    pieces.append(data[previous:])
    return b"".join(pieces)


def split_lines(
    files: Sequence[LandedFile], max_record_bytes: int = MAX_RECORD_BYTES
) -> tuple[pa.Table, list[int]]:
    """The files' lines as one Arrow table (file index, line number, line, record_bytes) and
    lines per file.

    A file's records are its lines, trailing newlines ignored (an empty file has none).
    The lines are cut out of one buffer by their offsets, without a Python object per line;
    each keeps its newline, which the insert trims. A line over `max_record_bytes` is never
    copied: its `line` is null and `record_bytes` its size (null for every other line).
    """
    parts, counts = [], []
    big: list[tuple[int, int, int]] = []  # file index, line number, size
    for index, f in enumerate(files):
        part = f.data.rstrip(b"\n")
        counts.append(part.count(b"\n") + 1 if part else 0)
        over = oversized_lines(part, max_record_bytes)
        if over:  # emptied, not removed: the line numbers stay (a part may become b"")
            part = blank_lines(part, over)
            big += [(index, n, stop - start) for n, (start, stop) in over.items()]
        parts.append(part)
    buffer = b"\n".join(part for part, n in zip(parts, counts, strict=True) if n) + b"\n"
    ends = np.flatnonzero(np.frombuffer(buffer, np.uint8) == 10) + 1
    total = sum(counts)
    if total == 0:
        ends = ends[:0]
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(total, pa.py_buffer(offsets), pa.py_buffer(buffer))
    file_index = np.repeat(np.arange(len(files), dtype=np.int32), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    line_no = (np.arange(total) - first + 1).astype(np.int32)
    sizes = np.zeros(total, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    for index, n, size in big:
        sizes[starts[index] + n - 1] = size
    stubbed = sizes > 0
    record_bytes = pa.array(sizes, mask=~stubbed)
    if stubbed.any():  # the stubs' emptied lines become nulls
        lines = pc.if_else(pa.array(stubbed), pa.scalar(None, pa.large_string()), lines)
    table = pa.table(
        {"file_index": file_index, "line_no": line_no, "line": lines, "record_bytes": record_bytes}
    )
    # several record batches: DuckDB scans them on all its threads
    return pa.Table.from_batches(table.to_batches(1 << 16), schema=table.schema), counts


def _lines_loader(table: str) -> Loader:
    def load(
        con: duckdb.DuckDBPyConnection,
        files: Sequence[LandedFile],
        batch_id: str,
        max_record_bytes: int,
    ) -> Loaded:
        lines, counts = split_lines(files, max_record_bytes)
        con.register("_landed_lines", lines)
        try:
            con.execute(
                f"""
                insert into raw.{table}
                    (_file, _line_no, line, _batch_id, _loaded_at, _stub_reason, _record_bytes)
                select $rels[file_index + 1], line_no, rtrim(line, chr(10)), $batch,
                       now()::timestamp,
                       case when record_bytes is not null then $oversized end, record_bytes
                from _landed_lines
                """,
                {"rels": [f.rel for f in files], "batch": batch_id, "oversized": OVERSIZED},
            )
        finally:
            con.unregister("_landed_lines")
        stubs = lines.num_rows - lines.column("record_bytes").null_count
        return Loaded({f.rel: n for f, n in zip(files, counts, strict=True)}, stubs)

    return load


def _payments_header(head: bytes) -> str | None:
    header = head.decode("utf-8", errors="replace").strip()
    if tuple(header.split(",")) != PAYMENT_COLUMNS:
        return f"not the billing export: unexpected CSV header {header[:120]!r}"
    return None


def _load_payments(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[LandedFile],
    batch_id: str,
    max_record_bytes: int,
) -> Loaded:
    # one statement per file: a CSV row's line number is its position in its own file
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in PAYMENT_COLUMNS)
    out: dict[str, int] = {}
    stubs = 0
    for f in files:
        over = oversized_lines(f.data, max_record_bytes)
        stubs += len(over)
        with tempfile.TemporaryDirectory(prefix="loopline-payments-") as tmp:
            # DuckDB reads a copy of the bytes `inspect` read and hashed, never the landed
            # path again (it may have changed or become a link since); oversized rows are
            # empty rows in the copy, never the payload
            path = Path(tmp) / f.path.name
            path.write_bytes(
                blank_lines(f.data, over, b"," * (len(PAYMENT_COLUMNS) - 1)) if over else f.data
            )
            (n,) = con.execute(
                f"""
                insert into raw.payments_rows
                select ?, (row_number() over ())::integer + 1, {", ".join(PAYMENT_COLUMNS)}, ?,
                       now()::timestamp, null, null
                from read_csv(?, header = true, columns = {{{columns}}}, quote = '"',
                              escape = '"', strict_mode = true, null_padding = false,
                              auto_detect = false, max_line_size = ?)
                """,
                [f.rel, batch_id, str(path), max(2 << 20, max_record_bytes + 2)],
            ).fetchone() or (0,)
        if over:
            con.execute(
                """
                update raw.payments_rows set _stub_reason = $reason, _record_bytes = sizes.size
                from (select unnest($lines) as line_no, unnest($sizes) as size) as sizes
                where _file = $file and _line_no = sizes.line_no
                """,
                {
                    "reason": OVERSIZED,
                    "file": f.rel,
                    "lines": list(over),
                    "sizes": [stop - start for start, stop in over.values()],
                },
            )
        out[f.rel] = int(n)
    return Loaded(out, stubs)


def _load_catalogue_pages(
    con: duckdb.DuckDBPyConnection, files: Sequence[LandedFile], batch_id: str, _: int
) -> Loaded:
    # a page is one API answer of a bounded page size, not a record: not bounded here
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
    return Loaded(_counts(con, "items"))


SOURCES = (
    FileSource("catalogue", "catalogue/*/batch=*/page_*.json", _load_catalogue_pages),
    FileSource("events", "events/date=*/events_*.ndjson", _lines_loader("events_lines")),
    FileSource("payments", "payments/payments_*.csv", _load_payments, _payments_header),
    FileSource("tickets", "tickets/tickets_*.ndjson", _lines_loader("tickets_lines")),
)


#: `inspect`'s problem for a file that was found by `scan` and gone when it was to be read
#: (moved away by its producer): neither loaded nor rejected, a later scan finds it again.
VANISHED = "vanished after the scan"


def _read_inside(path: Path, landing: Path) -> tuple[bytes, int] | str:
    """(the bytes, the modification time) of `path` read through one descriptor that is a
    regular file inside the landing folder, or why it is not. `scan` checked the path, but
    it may have become a link since: its real location (links inside the folder are
    followed, as by `scan`) is opened without following a link in its last part
    (O_NOFOLLOW), and once open the path must still resolve to that location and name the
    same file (device and inode), so a file or a folder swapped for a link out is refused.
    Every later reader (DuckDB included) reads these bytes, never the path again."""
    real = path.resolve()
    if not real.is_relative_to(landing.resolve()):
        return f"outside the landing folder: a link to {real}"
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        if os.path.lexists(path):
            return "not a regular file (a folder, a device, a broken link)"
        return VANISHED
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"outside the landing folder: {path.name} became a link after the scan"
        return f"unreadable: {exc.strerror}"
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            return "not a regular file (a folder, a device, a broken link)"
        try:
            again = path.resolve()
            named = again.stat()
        except OSError:
            return VANISHED
        if again != real or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            return f"outside the landing folder: a link to {again}"
        return handle.read(), opened.st_mtime_ns


def inspect(path: Path, landing: Path, check: Callable[[bytes], str | None]) -> LandedFile:
    """The file read once: size, SHA-256, and why it cannot load (not UTF-8 text, or not
    what its source expects, or no longer a regular file inside the landing folder: nothing
    of it is read then). Landed files are small; a chunk holds few megabytes of them."""
    rel = str(path.relative_to(landing))
    read = _read_inside(path, landing)
    if isinstance(read, str):
        return LandedFile(path, rel, 0, "", read)
    data, mtime_ns = read
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem: str | None = (
            f"unreadable: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        )
    else:
        problem = check(data[:4096].split(b"\n", 1)[0])
    sha256 = hashlib.sha256(data).hexdigest()
    return LandedFile(path, rel, len(data), sha256, problem, data, mtime_ns)


@dataclass
class Scan:
    """What one source's landed files hold that this ingest must act on."""

    new: list[Path] = field(default_factory=list)  # not in the manifest yet: to load
    changed: list[tuple[Path, str]] = field(default_factory=list)  # (file, why): to reject
    outside: list[tuple[Path, Path, str]] = field(default_factory=list)  # (file, link, why)
    unmoved: list[Path] = field(default_factory=list)  # rejected, then a crash before the move


def _escape(path: Path, landing: Path, root: Path) -> tuple[Path, str] | None:
    """(the entry to move aside, why) when `path` is not a regular file inside the landing
    folder (`root`, resolved): a symlink, or a linked folder, that leads out of it, a broken
    link, or anything but a regular file. None for a file that may be loaded."""
    real = path.resolve()
    entry, current = path, landing
    for part in path.relative_to(landing).parts:
        current = current / part
        if current.is_symlink():
            entry = current
            break
    if not real.is_relative_to(root):
        return entry, f"outside the landing folder: a link to {real}"
    try:
        regular = stat.S_ISREG(real.stat().st_mode)
    except OSError:
        regular = False
    if not regular:
        return entry, "not a regular file (a folder, a device, a broken link)"
    return None


def scan(con: duckdb.DuckDBPyConnection, landing: Path, source: FileSource) -> Scan:
    """The landed files of `source` to load (not in the manifest), to reject because they
    changed since they were loaded (size, then SHA-256 when the size is the same but the
    modification time is not), to reject because they lead out of the landing folder, and
    to move aside because they were recorded as rejected by a run that died before it
    moved them."""
    rows = con.execute(
        "select file_path, size_bytes, sha256, mtime_ns, status from raw.file_manifest "
        "where source = ?",
        [source.name],
    ).fetchall()
    known = {rel: (size, sha256, mtime_ns) for rel, size, sha256, mtime_ns, _ in rows}
    rejected = {rel for rel, *_, status in rows if status == "rejected"}
    root = landing.resolve()
    found = Scan()
    unchanged: list[tuple[str, int]] = []  # same content, new modification time
    for path in sorted(landing.glob(source.pattern)):
        if path.name.startswith("."):
            continue
        escape = _escape(path, landing, root)
        if escape is not None:
            found.outside.append((path, *escape))
            continue
        rel = str(path.relative_to(landing))
        if rel not in known:
            found.new.append(path)
            continue
        size, sha256, mtime_ns = known[rel]
        st = path.stat()
        same = st.st_size == size and st.st_mtime_ns == mtime_ns
        if not same and st.st_size == size:
            same = hashlib.sha256(path.read_bytes()).hexdigest() == sha256
            if same and rel not in rejected:
                unchanged.append((rel, st.st_mtime_ns))
        if same and rel in rejected:  # recorded as rejected, then a crash before the move
            found.unmoved.append(path)
        if same:
            continue
        found.changed.append(
            (path, f"changed after load: was {size:,} bytes (sha256 {sha256[:12]}), now "
                   f"{st.st_size:,} bytes; the loaded version is kept")
        )  # fmt: skip
    if unchanged:  # remember the new time, so the file is not hashed again next time
        con.execute(
            """
            update raw.file_manifest set mtime_ns = seen.mtime_ns
            from (select unnest($rels) as rel, unnest($times) as mtime_ns) as seen
            where file_path = seen.rel
            """,
            {"rels": [rel for rel, _ in unchanged], "times": [t for _, t in unchanged]},
        )
    return found


def new_files(con: duckdb.DuckDBPyConnection, landing: Path, source: FileSource) -> list[Path]:
    """Files of `source` not yet in the manifest, in name order (oldest first)."""
    return scan(con, landing, source).new


def _chunks(paths: Sequence[Path], max_bytes: int, max_files: int) -> list[list[Path]]:
    """`paths` in order, cut into runs of at most `max_bytes` bytes and `max_files` files."""
    out: list[list[Path]] = []
    chunk: list[Path] = []
    size = 0
    for path in paths:
        chunk.append(path)
        with suppress(FileNotFoundError):  # gone since the scan: `inspect` says so
            size += path.lstat().st_size
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
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> LoadReport:
    """Load every new landed file once; move unreadable ones, changed ones and links out of
    the landing folder aside. Returns counts."""
    ensure_raw(con)
    found = [(source, scan(con, landing, source)) for source in sources]
    return _load_found(con, landing, batch_id, found, show_progress, max_record_bytes)


def _load_found(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    batch_id: str,
    found: Sequence[tuple[FileSource, Scan]],
    show_progress: bool = True,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> LoadReport:
    """Set aside what each scan found must not load, then load what it found new."""
    report = LoadReport()
    for source, scanned in found:
        _set_aside(con, landing, source.name, scanned, batch_id, report)
    total = sum(len(scanned.new) for _, scanned in found)
    with _bar(show_progress, total) as advance:
        for source, scanned in found:
            for group in _chunks(scanned.new, TXN_BYTES, TXN_FILES):
                _load_group(
                    con, landing, source, group, batch_id, report, advance, max_record_bytes
                )
    return report


class Follower:
    """Loads files as they land, pass after pass, on one connection held under the writer lock
    (as `warehouse.writing` holds it) for the follower's whole life: a continuous loader.

    Each `load` is what `load_files` does, without its fixed cost per call: the raw tables
    are ensured once, and the manifest is read once, then kept in memory (this process is
    the only writer while it holds the lock), so a pass looks only at the names it has not
    seen and checks (`_escape`), reads and loads just those. The checks that need every
    loaded file (changed since they were loaded; a rejection a crash left unmoved) are the
    full pass, `load_files` itself: at the first `load` and then every `full_every_s`.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        landing: Path,
        sources: Iterable[FileSource] = SOURCES,
        max_record_bytes: int = MAX_RECORD_BYTES,
        full_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.con, self.landing = con, landing
        self.sources = tuple(sources)
        self.max_record_bytes = max_record_bytes
        self.full_every_s = full_every_s
        self.clock = clock
        self._known: set[str] = set()  # landing-relative paths in the manifest
        self._next_full: float | None = None  # None: the next pass is a full one

    def load(self, batch_id: str) -> LoadReport:
        """Load what landed since the last pass (everything new, on a full pass)."""
        if self._next_full is None or self.clock() >= self._next_full:
            report = load_files(
                self.con, self.landing, batch_id, self.sources, False, self.max_record_bytes
            )
            self._known = {
                rel
                for (rel,) in self.con.execute("select file_path from raw.file_manifest").fetchall()
            }
            self._next_full = self.clock() + self.full_every_s
            return report
        try:
            found = [(source, self._unseen(source)) for source in self.sources]
            report = _load_found(
                self.con, self.landing, batch_id, found, False, self.max_record_bytes
            )
        except BaseException:
            self._next_full = None  # what this pass did is in the manifest: read it again
            raise
        rejected = set(report.rejected)
        for _, scanned in found:  # loaded or rejected: seen; vanished: looked for again
            for path in [*scanned.new, *(path for path, *_ in scanned.outside)]:
                rel = str(path.relative_to(self.landing))
                if rel in rejected or os.path.lexists(path):
                    self._known.add(rel)
        return report

    def _unseen(self, source: FileSource) -> Scan:
        """`scan` of the files of `source` this follower has not seen (only new ones)."""
        found = Scan()
        root = self.landing.resolve()
        prefix = len(str(self.landing)) + 1
        for name in sorted(glob.glob(str(self.landing / source.pattern))):
            if name[prefix:] in self._known or os.path.basename(name).startswith("."):
                continue
            path = Path(name)
            escape = _escape(path, self.landing, root)
            if escape is not None:
                found.outside.append((path, *escape))
            else:
                found.new.append(path)
        return found


def _set_aside(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    source: str,
    found: Scan,
    batch_id: str,
    report: LoadReport,
) -> None:
    """Reject what `scan` found must not load: links out of the landing folder (never read:
    the link itself is moved aside) and files changed since they were loaded (moved aside
    under a name with their new hash, so each version is kept; the loaded rows stay)."""
    for path, entry, reason in found.outside:
        rel = str(path.relative_to(landing))
        f = LandedFile(path, rel, 0, "", reason)  # size and hash of what was never read
        _reject(con, landing, f, source, batch_id, reason, report, entry)
    for path, reason in found.changed:
        f = inspect(path, landing, lambda head: None)
        if f.problem == VANISHED:
            continue
        f = LandedFile(path, f"{f.rel}.changed-{f.sha256[:12]}", f.size, f.sha256, reason)
        _reject(con, landing, f, source, batch_id, reason, report)
        report.changed.append(f.rel)
    for path in found.unmoved:  # finish a rejection a crash interrupted: move, keep the record
        rel = str(path.relative_to(landing))
        _move_aside(landing, path, landing / REJECTED_DIR / rel)
        report.rejected.append(rel)


def _load_group(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    source: FileSource,
    paths: Sequence[Path],
    batch_id: str,
    report: LoadReport,
    advance: Callable[[int], None],
    max_record_bytes: int = MAX_RECORD_BYTES,
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
            for f in files:
                if f.problem == VANISHED:
                    log.info("%s: %s; a later ingest loads it if it comes back", f.rel, VANISHED)
            unreadable += [f for f in files if f.problem not in (None, VANISHED)]
            good = [f for f in files if f.problem is None]
            if good:
                records, stubs = source.load(con, good, batch_id, max_record_bytes)
                _record_loaded(con, source.name, good, records, batch_id)
                loaded.add(source.name, len(good), sum(records.values()))
                if stubs:
                    loaded.oversized[source.name] = loaded.oversized.get(source.name, 0) + stubs
            advance(len(chunk))
            shown += len(chunk)
        con.execute("commit")
    except (duckdb.Error, ValueError) as exc:
        con.execute("rollback")
        advance(-shown)
        if len(paths) == 1:
            f = inspect(paths[0], landing, lambda head: None)
            if f.problem != VANISHED:
                _reject(con, landing, f, source.name, batch_id, _reason(exc), report)
            advance(1)
            return
        smaller = chunks if len(chunks) > 1 else [[path] for path in paths]
        for part in smaller:
            _load_group(con, landing, source, part, batch_id, report, advance, max_record_bytes)
        return
    for name, n in loaded.files.items():
        report.add(name, n, loaded.records[name])
    for name, n in loaded.oversized.items():
        report.oversized[name] = report.oversized.get(name, 0) + n
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
            (file_path, source, size_bytes, sha256, status, records, reason, batch_id,
             loaded_at, mtime_ns)
        select rel, $source, size, sha256, 'loaded', records, null, $batch, now()::timestamp,
               mtime_ns
        from (select unnest($rels) as rel, unnest($sizes) as size, unnest($shas) as sha256,
                     unnest($records) as records, unnest($times) as mtime_ns)
        """,
        {
            "source": source,
            "batch": batch_id,
            "rels": [f.rel for f in files],
            "sizes": [f.size for f in files],
            "shas": [f.sha256 for f in files],
            "records": [records.get(f.rel, 0) for f in files],
            "times": [f.mtime_ns for f in files],
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
    entry: Path | None = None,
) -> None:
    """Record the file as rejected, then move it (or `entry`, the link that leads to it)
    to `landing/_rejected/`: kept, never deleted, never followed out of the landing folder.

    Expected (the simulator writes unreadable files on purpose): logged at info level and
    counted in the report, never a warning or an exception. Idempotent: a crash between the
    record and the move is finished by the next run.
    """
    con.execute(
        """
        insert into raw.file_manifest
            (file_path, source, size_bytes, sha256, status, records, reason, batch_id,
             loaded_at, mtime_ns)
        values (?, ?, ?, ?, 'rejected', 0, ?, ?, now()::timestamp, ?)
        on conflict (file_path) do nothing
        """,
        [f.rel, source, f.size, f.sha256, reason, batch_id, f.mtime_ns],
    )
    moved = entry if entry is not None else f.path
    target = (
        landing / REJECTED_DIR / (moved.relative_to(landing) if entry is not None else Path(f.rel))
    )
    _move_aside(landing, moved, target)
    report.rejected.append(f.rel)
    log.info("rejected %s: %s", f.rel, reason)


def _move_aside(landing: Path, moved: Path, target: Path) -> None:
    """Move `moved` (a file, or the link itself) to `target` under `landing/_rejected/`."""
    if os.path.lexists(moved):  # a linked folder is moved once, for its first file
        while os.path.lexists(target):
            target = target.with_name(target.name + "~")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(moved, target)  # the entry itself, within the landing folder's file system
