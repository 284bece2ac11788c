"""The embedded online store: one SQLite file in WAL mode (the default backend).

A serving process reads while a materialisation writes (DuckDB allows no reader while another
process writes). One table keyed by (feature_set, feature_set_version, entity_key) holds the
vector as JSON text: new feature sets, versions and feature columns need no DDL or migration, a
lookup is one primary-key seek returning one value, and a vector is a single column, so a reader
can never see half of an update. The unversioned slot is stored as version ``''``. Table
``online_marks`` holds the store's marks (`OnlineStore.mark`).

A file written before versions were part of the key (table ``online_features``) is dropped
when the store opens: the online store is derived data that the next materialisation rewrites.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ml.features.online.base import (
    FeatureVector,
    OnlineStore,
    WriteReport,
    check_feature_set,
    chunks,
    decode_vector,
    encode_rows,
    entity_key,
    from_micros,
    normalize_rows,
)

_SCHEMA = """
create table if not exists online_vectors (
    feature_set text not null,
    feature_set_version text not null,      -- '' is the unversioned slot
    entity_key text not null,
    feature_timestamp_us integer not null,  -- UTC microseconds since the epoch
    created_at_us integer,                  -- NULL: unknown, loses every tie
    vector_json text not null,
    primary key (feature_set, feature_set_version, entity_key)
) without rowid
"""
_MARKS_SCHEMA = """
create table if not exists online_marks (
    name text primary key,
    value text not null
) without rowid
"""

# newer wins within one version: the update runs only when the incoming (feature_timestamp, created_at) is
# strictly greater, created_at NULL lowest; otherwise the row counts no change
_UPSERT = """
insert into online_vectors as stored (
    feature_set, entity_key, feature_timestamp_us, created_at_us, feature_set_version, vector_json
)
values (?, ?, ?, ?, ?, ?)
on conflict (feature_set, feature_set_version, entity_key) do update set
    feature_timestamp_us = excluded.feature_timestamp_us,
    created_at_us = excluded.created_at_us,
    vector_json = excluded.vector_json
where excluded.feature_timestamp_us > stored.feature_timestamp_us
    or (
        excluded.feature_timestamp_us = stored.feature_timestamp_us
        and excluded.created_at_us is not null
        and (stored.created_at_us is null or excluded.created_at_us > stored.created_at_us)
    )
"""

_SELECT_ONE = """
select feature_timestamp_us, created_at_us, feature_set_version, vector_json
from online_vectors
where feature_set = ? and feature_set_version = ? and entity_key = ?
"""

_UNVERSIONED_TABLE = "online_features"  # the layout before versions were part of the key
# vectors `get_one` keeps per reader between commits to the file: a few hundred bytes each,
# so about 50 MB at most; past that it starts over (the serving hot path reads a few keys)
_CACHE_MAX = 100_000
_MISSING = object()
_READ_CHUNK = 500  # keys per `in (...)` query, well under SQLite's bound-parameter limit


class SqliteOnlineStore(OnlineStore):
    """The online store in one SQLite file (WAL): one writer connection, read-only readers.

    Each thread reads through its own ``mode=ro`` connection, so serving threads never block
    each other or a writer; a batch ``get`` reads all its chunks in one read transaction, so it
    sees one snapshot. Writes run in one transaction per call (``executemany`` of the upsert).
    """

    def __init__(self, path: Path | str, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path).expanduser().resolve()
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        self._writer_con: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        if not self.path.exists() or not self._has_schema():
            writer = self._writer()
            writer.execute(_SCHEMA)
            writer.execute(_MARKS_SCHEMA)
            writer.execute(f"drop table if exists {_UNVERSIONED_TABLE}")

    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Upsert every row newer-wins in one transaction; return written and skipped counts."""
        check_feature_set(feature_set)
        encoded = encode_rows(normalize_rows(rows, key_columns), key_columns)
        params = zip(
            [feature_set] * len(encoded.keys),
            encoded.keys,
            encoded.feature_timestamps,
            encoded.created_ats,
            [version or "" for version in encoded.versions],
            encoded.vectors,
            strict=True,
        )
        with self._write_lock:
            con = self._writer()
            before = con.total_changes
            con.execute("begin immediate")
            try:
                con.executemany(_UPSERT, params)
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            written = con.total_changes - before
        return WriteReport(written=written, skipped=len(encoded.keys) - written)

    def get(
        self, feature_set: str, keys: Sequence[object], version: str | None = None
    ) -> list[FeatureVector | None]:
        """Return each key's vector from one consistent snapshot (None where unknown)."""
        key_strings = [entity_key(key) for key in keys]
        unique = list(dict.fromkeys(key_strings))
        found: dict[str, FeatureVector] = {}
        con = self._reader()
        con.execute("begin")  # one read snapshot across every chunk
        try:
            for chunk in chunks(len(unique), _READ_CHUNK):
                part = unique[chunk]
                marks = ",".join("?" * len(part))
                sql = (
                    "select entity_key, feature_timestamp_us, created_at_us, "
                    "feature_set_version, vector_json from online_vectors "
                    "where feature_set = ? and feature_set_version = ? "
                    f"and entity_key in ({marks})"
                )
                for key, *row in con.execute(sql, [feature_set, version or "", *part]):
                    found[key] = _sqlite_vector(row)
        finally:
            con.execute("commit")
        return [found.get(key) for key in key_strings]

    def get_one(
        self, feature_set: str, key: object, version: str | None = None
    ) -> FeatureVector | None:
        """Return one key's vector or None: one primary-key seek on this thread's reader.

        The decoded vectors (and misses) are kept per reader until any connection, in any
        process, commits to the file: SQLite's ``data_version`` says so, checked on every
        call, so an answer is never staler than a query of the file. The returned vector
        is shared by later calls: treat its values as read-only.
        """
        con = self._reader()
        local = self._local
        ((data_version,),) = con.execute("pragma data_version").fetchall()
        if data_version != local.data_version or len(local.vectors) >= _CACHE_MAX:
            local.vectors = {}
            local.data_version = data_version
        params = (feature_set, version or "", entity_key(key))
        vector = local.vectors.get(params, _MISSING)
        if vector is _MISSING:
            row = con.execute(_SELECT_ONE, params).fetchone()
            vector = local.vectors[params] = None if row is None else _sqlite_vector(row)
        return vector

    def mark(self, name: str) -> str | None:
        """The value last stored under `name` (None when never set)."""
        row = (
            self._reader()
            .execute("select value from online_marks where name = ?", [name])
            .fetchone()
        )
        return None if row is None else str(row[0])

    def set_mark(self, name: str, value: str) -> None:
        """Store `value` under `name`, replacing what was there."""
        with self._write_lock:
            self._writer().execute(
                "insert into online_marks values (?, ?) "
                "on conflict (name) do update set value = excluded.value",
                [name, value],
            )

    def close(self) -> None:
        """Close the writer and every thread's reader connection."""
        self._closed = True
        with self._write_lock:
            if self._writer_con is not None:
                self._writer_con.close()
                self._writer_con = None
        with self._readers_lock:
            for con in self._readers:
                con.close()
            self._readers.clear()

    def _writer(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"online store {self.path} is closed")
        if self._writer_con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # guarded by _write_lock
            )
            con.execute("pragma journal_mode = wal")
            # WAL + NORMAL: a crash can lose the last commits but never corrupts the file;
            # the store is derived data that the next materialisation rewrites
            con.execute("pragma synchronous = normal")
            self._writer_con = con
        return self._writer_con

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"online store {self.path} is closed")
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                f"{self.path.as_uri()}?mode=ro",
                uri=True,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,  # used by one thread; closed by `close` from any
            )
            with self._readers_lock:
                self._readers.append(con)
            self._local.con = con
            self._local.vectors = {}  # get_one's vectors, valid while data_version holds
            self._local.data_version = None
        return con

    def _has_schema(self) -> bool:
        query = "select name from sqlite_master where type = 'table'"
        tables = {name for (name,) in self._reader().execute(query)}
        return {"online_vectors", "online_marks"} <= tables and _UNVERSIONED_TABLE not in tables


def _sqlite_vector(row: Sequence[Any]) -> FeatureVector:
    ts_us, created_us, version, vector_json = row
    return FeatureVector(
        values=decode_vector(vector_json),
        feature_timestamp=from_micros(ts_us),
        created_at=None if created_us is None else from_micros(created_us),
        feature_set_version=version or None,
    )
