"""DuckDB connections: the one place that knows about threads, memory and extensions."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import duckdb

from loopline.settings import Settings

_EXTENSIONS = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}


def connect(
    path: Path | str, settings: Settings, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the configured threads, memory limit and spill folder."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    spill = settings.data_dir / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute(f"set temp_directory = '{spill}'")
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
