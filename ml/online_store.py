"""The online feature store: the latest feature vector per entity, for low-latency serving.

Feature rows (an entity key, ``feature_timestamp``, ``created_at``, ``feature_set_version`` and
feature columns) are written incrementally; a serving process reads one vector per entity.

**Newer wins.** A write replaces an entity's stored vector only if its
(``feature_timestamp``, ``created_at``) is strictly newer: ``feature_timestamp`` first, then
``created_at`` with NULL lowest. An equal pair keeps the stored vector, so re-running a
materialisation is a no-op, and the final state does not depend on the order writes arrive in.
The compare-and-set is atomic per entity (one SQL upsert; one Lua script in Redis).

**Backends.** `open_online_store` picks one from ``settings.online_store_url``:

- unset: `SqliteOnlineStore`, a SQLite file at ``<data_dir>/online/online_store.sqlite`` in
  WAL mode, so a serving process reads while a materialisation writes (DuckDB allows no reader
  while another process writes). One table keyed by (feature_set, entity_key) holds the
  vector as JSON text: new feature sets and new feature columns need no DDL or migration, a
  lookup is one primary-key seek returning one value, and a vector is a single column, so a
  reader can never see half of an update.
- ``redis://`` or ``rediss://``: `RedisOnlineStore`, one hash per (feature_set, entity) with
  the timestamps as fields and the vector as JSON; a registered Lua script does the
  compare-and-set server-side, pipelined for batches.

**Values.** Feature values are stored as JSON with tagged objects for what JSON lacks
(timestamps, dates, times, durations, decimals, bytes), so ints, floats, strings, booleans,
NULLs and timestamps come back with their types. Timestamps may be naive (read as UTC) or
tz-aware; they are stored and returned as naive UTC ``datetime`` floored to the microsecond.
A pandas NaN in a float column is a missing value and comes back as None.

**Keys.** An entity key is the string of its value; a composite key joins its parts' strings
with ``|`` (a ``|`` or ``\\`` inside a part is backslash-escaped). `entity_key` builds the
string; ``get`` accepts a scalar or a tuple of key parts in key-column order.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from loopline.settings import Settings

__all__ = [
    "EncodedRows",
    "FeatureVector",
    "OnlineStore",
    "OnlineStoreUnavailableError",
    "RedisOnlineStore",
    "SqliteOnlineStore",
    "WriteReport",
    "decode_vector",
    "encode_rows",
    "entity_key",
    "latest_per_key",
    "materialize",
    "normalize_rows",
    "open_online_store",
]

FEATURE_TIMESTAMP = "feature_timestamp"
CREATED_AT = "created_at"
FEATURE_SET_VERSION = "feature_set_version"
METADATA_COLUMNS = (FEATURE_TIMESTAMP, CREATED_AT, FEATURE_SET_VERSION)
DEFAULT_REDIS_NAMESPACE = "loopline:online:"

_FEATURE_SET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_EPOCH = datetime(1970, 1, 1)
_MICROS = 1_000_000


# --------------------------------------------------------------------------------------------
# public values


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """One entity's latest feature values and the times and version they belong to."""

    values: dict[str, object]
    feature_timestamp: datetime
    created_at: datetime | None
    feature_set_version: str | None


@dataclass(frozen=True)
class WriteReport:
    """How many rows replaced or created a stored vector, and how many lost to a newer one."""

    written: int
    skipped: int
    superseded: int = 0  # rows `materialize` dropped before writing: a newer row had the same key

    @property
    def rows(self) -> int:
        """Return the number of input rows the report covers."""
        return self.written + self.skipped + self.superseded


class OnlineStoreUnavailableError(ConnectionError):
    """The online store's server cannot be reached."""


class OnlineStore(ABC):
    """The latest feature vector per (feature set, entity), newer-wins on write."""

    @abstractmethod
    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Store each row unless the stored vector for its key is as new or newer."""

    @abstractmethod
    def get(self, feature_set: str, keys: Sequence[object]) -> list[FeatureVector | None]:
        """Return the vector of each key (None where unknown), in the order asked."""

    @abstractmethod
    def get_one(self, feature_set: str, key: object) -> FeatureVector | None:
        """Return one key's vector, or None if the entity is unknown (the serving hot path)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_online_store(settings: Settings) -> OnlineStore:
    """Return the store ``settings.online_store_url`` names (unset: the embedded SQLite file)."""
    url = settings.online_store_url
    if not url:
        return SqliteOnlineStore(settings.data_dir / "online" / "online_store.sqlite")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        return RedisOnlineStore(url)
    raise ValueError(
        f"online_store_url {_redact(url)!r} has an unknown scheme {scheme!r}: use redis://host:port/db "
        "(or rediss://), or unset LOOPLINE_ONLINE_STORE_URL for the embedded SQLite store"
    )


def materialize(
    store: OnlineStore,
    feature_set: str,
    frame: pd.DataFrame | pa.Table,
    key_columns: Sequence[str],
) -> WriteReport:
    """Write the latest row per key of ``frame`` to ``store``; older rows count as superseded."""
    table = normalize_rows(frame, key_columns)
    latest = latest_per_key(table, key_columns)
    report = store.write(feature_set, latest, key_columns)
    return WriteReport(report.written, report.skipped, table.num_rows - latest.num_rows)


def entity_key(key: object) -> str:
    """Return the stored key string of a scalar key or a tuple of composite key parts."""
    if isinstance(key, tuple):
        return "|".join(_escape_part(part) for part in key)
    return _escape_part(key)


# --------------------------------------------------------------------------------------------
# pure steps: validate and normalise rows, pick the latest per key, encode and decode vectors


def normalize_rows(rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """Return ``rows`` as Arrow with every timestamp naive UTC microseconds, after checks."""
    if isinstance(rows, pd.DataFrame):
        table = pa.Table.from_pandas(rows, preserve_index=False)
    elif isinstance(rows, pa.Table):
        table = rows
    else:
        raise TypeError(f"rows must be a pandas DataFrame or a pyarrow Table, got {type(rows)}")
    keys = _key_tuple(key_columns)
    missing = [name for name in (*keys, FEATURE_TIMESTAMP) if name not in table.column_names]
    if missing:
        raise ValueError(
            f"feature rows lack column(s) {missing}; they have {table.column_names}"
            " (an entity key in a pandas index needs .reset_index() first)"
        )
    for name in keys:
        if table.column(name).null_count:
            raise ValueError(f"key column {name!r} has NULLs: every row needs an entity key")
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in (FEATURE_TIMESTAMP, CREATED_AT):
            column = _utc_micros_column(column, name)
        elif name not in keys:
            column = _normalize_feature_column(column, name)
        columns.append(column)
    table = pa.Table.from_arrays(columns, names=table.column_names)
    if table.column(FEATURE_TIMESTAMP).null_count:
        raise ValueError(f"column {FEATURE_TIMESTAMP!r} has NULLs: every row needs an event time")
    return table


def latest_per_key(table: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """Return one row per key: the newest (feature_timestamp, created_at), first row on ties."""
    if table.num_rows == 0:
        return table
    ts = _micros(table.column(FEATURE_TIMESTAMP))
    created = _created_column(table)
    # NULL created_at sorts lowest: below every real time, even one before the epoch
    created_filled = pc.fill_null(created.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy()
    keys_frame = table.select(list(_key_tuple(key_columns))).to_pandas()
    group = keys_frame.groupby(list(keys_frame.columns), sort=False, dropna=False).ngroup()
    position = np.arange(table.num_rows)
    # ascending sort: the last row of each key group is the newest, and among exact ties
    # the earliest in the frame, which is the row a sequential `write` would have kept
    order = np.lexsort((-position, created_filled, ts, group.to_numpy()))
    sorted_groups = group.to_numpy()[order]
    is_last = np.append(sorted_groups[1:] != sorted_groups[:-1], True)
    picked = np.sort(order[is_last])
    return table.take(pa.array(picked))


@dataclass(frozen=True)
class EncodedRows:
    """Rows ready to store: key strings, times in epoch microseconds, versions, JSON vectors."""

    keys: list[str]
    feature_timestamps: list[int]
    created_ats: list[int | None]
    versions: list[str | None]
    vectors: list[str]


def encode_rows(table: pa.Table, key_columns: Sequence[str]) -> EncodedRows:
    """Return the storable form of normalised rows (see `normalize_rows`)."""
    keys = _key_tuple(key_columns)
    part_lists = [table.column(name).to_pylist() for name in keys]
    if len(part_lists) == 1:
        key_strings = [_escape_part(part) for part in part_lists[0]]
    else:
        key_strings = [
            "|".join(map(_escape_part, parts)) for parts in zip(*part_lists, strict=True)
        ]
    feature_names = [n for n in table.column_names if n not in keys and n not in METADATA_COLUMNS]
    # column-wise: one to_pylist per column, then one JSON document per row
    value_lists = [_escape_nested(table.column(name)) for name in feature_names]
    vectors = [
        _ENCODER.encode(_escape_dict(dict(zip(feature_names, values, strict=True))))
        for values in zip(*value_lists, strict=True)
    ]
    if not feature_names:
        vectors = ["{}"] * table.num_rows
    versions: list[str | None]
    if FEATURE_SET_VERSION in table.column_names:
        raw = table.column(FEATURE_SET_VERSION).to_pylist()
        versions = [None if version is None else str(version) for version in raw]
    else:
        versions = [None] * table.num_rows
    return EncodedRows(
        keys=key_strings,
        feature_timestamps=_micros(table.column(FEATURE_TIMESTAMP)).tolist(),
        created_ats=_created_column(table).cast(pa.int64()).to_pylist(),
        versions=versions,
        vectors=vectors,
    )


def decode_vector(vector_json: str | bytes) -> dict[str, object]:
    """Return the feature values of one stored JSON vector, with their types restored."""
    values: dict[str, object] = _DECODER.decode(
        vector_json if isinstance(vector_json, str) else vector_json.decode()
    )
    return values


def _key_tuple(key_columns: Sequence[str]) -> tuple[str, ...]:
    keys = (key_columns,) if isinstance(key_columns, str) else tuple(key_columns)
    if not keys:
        raise ValueError("key_columns is empty: name the entity key column(s), e.g. ['user_id']")
    clash = sorted(set(keys) & set(METADATA_COLUMNS))
    if clash:
        raise ValueError(f"{clash} are metadata columns and cannot be entity keys")
    return keys


def _escape_part(part: object) -> str:
    text = str(part)
    if "|" in text or "\\" in text:
        return text.replace("\\", "\\\\").replace("|", "\\|")
    return text


def _utc_micros_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Return a time column as naive UTC ``timestamp[us]`` (floored), or raise naming it."""
    kind = column.type
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.nulls(len(column), pa.timestamp("us"))])
    if pa.types.is_date(kind):
        return column.cast(pa.timestamp("us"))
    if pa.types.is_timestamp(kind):
        if kind.unit == "ns":
            column = pc.floor_temporal(column, unit="microsecond")
        # casting away the zone keeps the UTC instant (Arrow stores timestamps as UTC)
        return column.cast(pa.timestamp("us"))
    raise ValueError(
        f"column {name!r} must hold timestamps, got {kind}; convert it first "
        "(pandas: pd.to_datetime(...); DuckDB: cast(... as timestamp))"
    )


def _normalize_feature_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return _utc_micros_column(column, name)
    if pa.types.is_duration(kind) and kind.unit == "ns":
        return column.cast(pa.duration("us"), safe=False)
    if pa.types.is_time(kind) and kind.unit == "ns":
        return column.cast(pa.time64("us"), safe=False)
    if pa.types.is_map(kind):
        raise ValueError(f"feature column {name!r} is a map ({kind}); store it as a struct or JSON")
    return column


def _created_column(table: pa.Table) -> pa.ChunkedArray:
    if CREATED_AT in table.column_names:
        return table.column(CREATED_AT)
    return pa.chunked_array([pa.nulls(table.num_rows, pa.timestamp("us"))])


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy()


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _escape_nested(column: pa.ChunkedArray) -> list[object]:
    values = column.to_pylist()
    if pa.types.is_nested(column.type):
        return [_escape_value(value) for value in values]
    return values


def _escape_value(value: object) -> object:
    if isinstance(value, dict):
        return _escape_dict({key: _escape_value(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_escape_value(item) for item in value]
    return value


# A tag is a one-key object whose key is one of these; a real one-key object whose key starts
# with "$" gets one more "$" on the way in and loses it on the way out, so nothing is ambiguous.
def _escape_dict(values: dict[str, Any]) -> dict[str, Any]:
    if len(values) == 1:
        ((key, value),) = values.items()
        if key.startswith("$"):
            return {"$" + key: value}
    return values


def _tag(value: object) -> dict[str, object]:
    """Return the tagged JSON form of a value JSON cannot hold (the encoder's ``default``)."""
    if isinstance(value, pd.Timestamp):
        value = value.floor("us").to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {"$ts": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": value // timedelta(microseconds=1)}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"feature value {value!r} of type {type(value).__name__} cannot be stored")


_UNTAG: dict[str, Any] = {
    "$ts": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$time": time.fromisoformat,
    "$td": lambda micros: timedelta(microseconds=micros),
    "$dec": Decimal,
    "$b64": base64.b64decode,
}


def _untag(obj: dict[str, Any]) -> object:
    """Return a decoded tag or an unescaped object (the decoder's ``object_hook``)."""
    if len(obj) != 1:
        return obj
    ((key, value),) = obj.items()
    if not key.startswith("$"):
        return obj
    untag = _UNTAG.get(key)
    return untag(value) if untag is not None else {key[1:]: value}


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_tag)
_DECODER = json.JSONDecoder(object_hook=_untag)


def _check_feature_set(feature_set: str) -> None:
    if not isinstance(feature_set, str) or not _FEATURE_SET_NAME.match(feature_set):
        raise ValueError(
            f"feature set name {feature_set!r} must be letters, digits, '_', '.' or '-', "
            "e.g. 'churn_user_daily'"
        )


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, start + size)


def _redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# --------------------------------------------------------------------------------------------
# SQLite: the embedded default

_SCHEMA = """
create table if not exists online_features (
    feature_set text not null,
    entity_key text not null,
    feature_timestamp_us integer not null,  -- UTC microseconds since the epoch
    created_at_us integer,                  -- NULL: unknown, loses every tie
    feature_set_version text,
    vector_json text not null,
    primary key (feature_set, entity_key)
) without rowid
"""

# newer wins: the update runs only when the incoming (feature_timestamp, created_at) is
# strictly greater, created_at NULL lowest; otherwise the row counts no change
_UPSERT = """
insert into online_features as stored (
    feature_set, entity_key, feature_timestamp_us, created_at_us, feature_set_version, vector_json
)
values (?, ?, ?, ?, ?, ?)
on conflict (feature_set, entity_key) do update set
    feature_timestamp_us = excluded.feature_timestamp_us,
    created_at_us = excluded.created_at_us,
    feature_set_version = excluded.feature_set_version,
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
from online_features
where feature_set = ? and entity_key = ?
"""

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
            self._writer().execute(_SCHEMA)

    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Upsert every row newer-wins in one transaction; return written and skipped counts."""
        _check_feature_set(feature_set)
        encoded = encode_rows(normalize_rows(rows, key_columns), key_columns)
        params = zip(
            [feature_set] * len(encoded.keys),
            encoded.keys,
            encoded.feature_timestamps,
            encoded.created_ats,
            encoded.versions,
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

    def get(self, feature_set: str, keys: Sequence[object]) -> list[FeatureVector | None]:
        """Return each key's vector from one consistent snapshot (None where unknown)."""
        key_strings = [entity_key(key) for key in keys]
        unique = list(dict.fromkeys(key_strings))
        found: dict[str, FeatureVector] = {}
        con = self._reader()
        con.execute("begin")  # one read snapshot across every chunk
        try:
            for chunk in _chunks(len(unique), _READ_CHUNK):
                part = unique[chunk]
                marks = ",".join("?" * len(part))
                sql = (
                    "select entity_key, feature_timestamp_us, created_at_us, "
                    "feature_set_version, vector_json from online_features "
                    f"where feature_set = ? and entity_key in ({marks})"
                )
                for key, *row in con.execute(sql, [feature_set, *part]):
                    found[key] = _sqlite_vector(row)
        finally:
            con.execute("commit")
        return [found.get(key) for key in key_strings]

    def get_one(self, feature_set: str, key: object) -> FeatureVector | None:
        """Return one key's vector or None: one primary-key seek on this thread's reader."""
        row = self._reader().execute(_SELECT_ONE, (feature_set, entity_key(key))).fetchone()
        return None if row is None else _sqlite_vector(row)

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
        return con

    def _has_schema(self) -> bool:
        query = "select 1 from sqlite_master where type = 'table' and name = 'online_features'"
        return self._reader().execute(query).fetchone() is not None


def _sqlite_vector(row: Sequence[Any]) -> FeatureVector:
    ts_us, created_us, version, vector_json = row
    return FeatureVector(
        values=_DECODER.decode(vector_json),
        feature_timestamp=_EPOCH + timedelta(microseconds=ts_us),
        created_at=None if created_us is None else _EPOCH + timedelta(microseconds=created_us),
        feature_set_version=version,
    )


# --------------------------------------------------------------------------------------------
# Redis

# KEYS[1]: the entity's hash. ARGV: feature_timestamp seconds, microseconds; created_at seconds,
# microseconds ('' when NULL); version ('' when NULL), has-version flag; vector JSON.
# Times travel as (seconds, microseconds) because Lua numbers are doubles: epoch microseconds
# beyond 2^53 (after year 2255) would compare wrongly, seconds never do.
_CAS_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'ts_s', 'ts_us', 'ca_s', 'ca_us')
if cur[1] then
  local has_new_ca = ARGV[3] ~= ''
  local new = {tonumber(ARGV[1]), tonumber(ARGV[2]), has_new_ca and 1 or 0,
               tonumber(ARGV[3]) or 0, tonumber(ARGV[4]) or 0}
  local old = {tonumber(cur[1]), tonumber(cur[2]), cur[3] and 1 or 0,
               tonumber(cur[3]) or 0, tonumber(cur[4]) or 0}
  local newer = false
  for i = 1, 5 do
    if new[i] ~= old[i] then
      newer = new[i] > old[i]
      break
    end
  end
  if not newer then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'ts_s', ARGV[1], 'ts_us', ARGV[2], 'val', ARGV[7])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'ca_s', 'ca_us')
else
  redis.call('HSET', KEYS[1], 'ca_s', ARGV[3], 'ca_us', ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'ver', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'ver')
end
return 1
"""

_FIELDS = ("ts_s", "ts_us", "ca_s", "ca_us", "ver", "val")
_PIPELINE_CHUNK = 1000  # commands per pipeline round trip


class RedisOnlineStore(OnlineStore):
    """The online store in Redis: hash ``<namespace><feature_set>:<entity_key>`` per entity.

    Fields: ``ts_s``/``ts_us`` and ``ca_s``/``ca_us`` (the times as epoch seconds and
    microseconds; ``ca_*`` absent when created_at is NULL), ``ver`` (absent when NULL) and
    ``val`` (the JSON vector). A hash per entity keeps each compare-and-set to one small key
    and leaves room for a per-entity TTL.
    """

    def __init__(
        self,
        url: str,
        namespace: str = DEFAULT_REDIS_NAMESPACE,
        socket_timeout_s: float = 5.0,
    ) -> None:
        import redis

        self.url = url
        self.namespace = namespace
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s
        )
        try:
            self._client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self._client.close()
            raise OnlineStoreUnavailableError(
                f"the Redis online store at {_redact(url)} is unreachable ({exc}); start Redis "
                "there, or unset LOOPLINE_ONLINE_STORE_URL to use the embedded SQLite store"
            ) from exc
        self._cas = self._client.register_script(_CAS_LUA)

    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Compare-and-set every row server-side (Lua), pipelined; return the counts."""
        _check_feature_set(feature_set)
        encoded = encode_rows(normalize_rows(rows, key_columns), key_columns)
        prefix = f"{self.namespace}{feature_set}:"
        written = 0
        for chunk in _chunks(len(encoded.keys), _PIPELINE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for key, ts, created, version, vector in zip(
                encoded.keys[chunk],
                encoded.feature_timestamps[chunk],
                encoded.created_ats[chunk],
                encoded.versions[chunk],
                encoded.vectors[chunk],
                strict=True,
            ):
                ts_s, ts_us = divmod(ts, _MICROS)
                ca_s, ca_us = ("", "") if created is None else divmod(created, _MICROS)
                args = [ts_s, ts_us, ca_s, ca_us, version or "", int(version is not None), vector]
                self._cas(keys=[prefix + key], args=args, client=pipe)
            written += sum(int(result) for result in pipe.execute())
        return WriteReport(written=written, skipped=len(encoded.keys) - written)

    def get(self, feature_set: str, keys: Sequence[object]) -> list[FeatureVector | None]:
        """Return each key's vector (None where unknown), pipelined HMGETs."""
        prefix = f"{self.namespace}{feature_set}:"
        names = [prefix + entity_key(key) for key in keys]
        vectors: list[FeatureVector | None] = []
        for chunk in _chunks(len(names), _PIPELINE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for name in names[chunk]:
                pipe.hmget(name, _FIELDS)
            vectors.extend(_redis_vector(fields) for fields in pipe.execute())
        return vectors

    def get_one(self, feature_set: str, key: object) -> FeatureVector | None:
        """Return one key's vector or None: one HMGET."""
        fields = self._client.hmget(f"{self.namespace}{feature_set}:{entity_key(key)}", _FIELDS)
        return _redis_vector(fields)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _redis_vector(fields: Sequence[bytes | None]) -> FeatureVector | None:
    ts_s, ts_us, ca_s, ca_us, version, vector = fields
    if ts_s is None or ts_us is None or vector is None:
        return None
    created = None
    if ca_s is not None and ca_us is not None:
        created = _from_micros(int(ca_s) * _MICROS + int(ca_us))
    return FeatureVector(
        values=decode_vector(vector),
        feature_timestamp=_from_micros(int(ts_s) * _MICROS + int(ts_us)),
        created_at=created,
        feature_set_version=None if version is None else version.decode(),
    )
