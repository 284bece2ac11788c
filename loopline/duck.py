"""DuckDB connections: the one place that knows about threads, memory and extensions."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from loopline.settings import Settings

_EXTENSIONS = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}


def connect(
    path: Path | str, settings: Settings, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the configured threads and memory limit."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    # spills go to DuckDB's default for a file database, <file>.tmp/ beside it; it cannot be
    # switched once used, and dbt (in-process) shares the same database instance
    return con


def load_extension(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Load a scanner extension from its pip package (no download at run time)."""
    import duckdb_extensions

    name = _EXTENSIONS[kind]
    duckdb_extensions.import_extension(name, con=con)
    con.execute(f"load {name}")


def source_kind(url: str) -> str:
    """'sqlite' or 'postgres' for a source database URL, with a clear error otherwise."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    raise ValueError(
        f"LOOPLINE_SOURCE_DB_URL={url!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///path/to/file.sqlite or postgresql://user@host:port/dbname"
    )


def attach_source(
    con: duckdb.DuckDBPyConnection, url: str, alias: str = "src", read_only: bool = False
) -> None:
    """Attach the OLTP source database (SQLite file or Postgres) under `alias`."""
    kind = source_kind(url)
    load_extension(con, kind)
    mode = ", READ_ONLY" if read_only else ""
    if kind == "sqlite":
        target = url.removeprefix("sqlite:///")
        if not target.startswith("/"):
            target = str(Path(target).resolve())
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    else:
        target = url
    con.execute(f"attach '{target}' as {alias} (type {kind}{mode})")


class WarehouseBusyError(RuntimeError):
    """Another process holds the warehouse writer lock for too long."""


# lock files this process holds: dbt run in-process under the lock must not wait for it again
# (flock locks belong to an open file, so a second open in the same process would deadlock)
_HELD: set[Path] = set()


def writer_lock_path(warehouse: Path) -> Path:
    """The lock file beside the warehouse file that every writer takes."""
    return warehouse.with_name(warehouse.name + ".writer.lock")


def holds_warehouse_writer(warehouse: Path | str) -> bool:
    """True when this process holds the writer lock of the warehouse file `warehouse`."""
    return writer_lock_path(Path(warehouse)).resolve() in _HELD


@contextmanager
def warehouse_writer(settings: Settings, timeout_s: float = 1800.0) -> Iterator[Path]:
    """Hold the single-writer lock of the warehouse (see docs/architecture.md).

    Concurrent writers queue here instead of failing on DuckDB's own file lock.
    """
    path = settings.resolved_warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = writer_lock_path(path)
    with lock.open("a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseBusyError(
                        f"another process has been writing {path} for over {timeout_s:.0f} s "
                        f"(lock {lock}); wait for it or stop it"
                    ) from None
                time.sleep(0.2)
        held = lock.resolve()
        _HELD.add(held)
        try:
            yield path
        finally:
            _HELD.discard(held)
            fcntl.flock(handle, fcntl.LOCK_UN)
