"""The online store's contract and value encoding, shared by every backend.

Feature rows (an entity key, ``feature_timestamp``, ``created_at``, ``feature_set_version`` and
feature columns) are written incrementally; a serving process reads one vector per entity.

**Versions are part of the key.** A vector is stored per (feature set, feature-set version,
entity), so a new version of a feature set lands beside the old one even when it was computed
over the same data (same timestamps), and a reader asks for the version its model was trained
on. Rows without a ``feature_set_version`` go to the unversioned slot (version None).

**Newer wins** within one (feature set, version, entity): a write replaces the stored vector
only if its (``feature_timestamp``, ``created_at``) is strictly newer: ``feature_timestamp``
first, then ``created_at`` with NULL lowest. An equal pair keeps the stored vector, so
re-running a materialisation is a no-op, and the final state does not depend on the order
writes arrive in. The compare-and-set is atomic per entity (one SQL upsert; one Lua script in
Redis).

**Backends** (one module each, picked by `ml.features.online.open_online_store`):
`ml.features.online.sqlite` (the embedded default) and `ml.features.online.redis`.

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
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "MICROS",
    "EncodedRows",
    "FeatureVector",
    "OnlineStore",
    "OnlineStoreUnavailableError",
    "WriteReport",
    "check_feature_set",
    "chunks",
    "decode_vector",
    "encode_rows",
    "entity_key",
    "from_micros",
    "normalize_rows",
    "redact",
]

FEATURE_TIMESTAMP = "feature_timestamp"
CREATED_AT = "created_at"
FEATURE_SET_VERSION = "feature_set_version"
METADATA_COLUMNS = (FEATURE_TIMESTAMP, CREATED_AT, FEATURE_SET_VERSION)

_FEATURE_SET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_EPOCH = datetime(1970, 1, 1)
MICROS = 1_000_000


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

    @property
    def rows(self) -> int:
        """Return the number of input rows the report covers."""
        return self.written + self.skipped


class OnlineStoreUnavailableError(ConnectionError):
    """The online store's server cannot be reached."""


class OnlineStore(ABC):
    """The latest feature vector per (feature set, version, entity), newer-wins on write."""

    @abstractmethod
    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Store each row unless the stored vector for its key and version is as new or newer."""

    @abstractmethod
    def get(
        self, feature_set: str, keys: Sequence[object], version: str | None = None
    ) -> list[FeatureVector | None]:
        """Return the vector of each key in ``version`` (None where unknown), in the order asked."""

    @abstractmethod
    def get_one(
        self, feature_set: str, key: object, version: str | None = None
    ) -> FeatureVector | None:
        """Return one key's vector in ``version``, or None if unknown (the serving hot path)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    def mark(self, name: str) -> str | None:
        """The value `set_mark` last stored under `name`, or None (never set, or a backend that
        keeps no marks: the base class's).

        A mark says what the store was written from (the online refresh keeps, per feature
        set and colour, the warehouse publication it materialised: `ml.features.materialize`);
        it lives and goes with the vectors, so a new or emptied store has none.
        """
        return None

    def set_mark(self, name: str, value: str) -> None:
        """Store `value` under `name` (see `mark`); the base class keeps nothing."""
        del name, value

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def entity_key(key: object) -> str:
    """Return the stored key string of a scalar key or a tuple of composite key parts."""
    if isinstance(key, tuple):
        return "|".join(_escape_part(part) for part in key)
    return _escape_part(key)


# --------------------------------------------------------------------------------------------
# pure steps: validate and normalise rows, encode and decode vectors


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


def from_micros(micros: int) -> datetime:
    """Return the naive UTC time ``micros`` microseconds after the epoch."""
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


def check_feature_set(feature_set: str) -> None:
    """Raise unless ``feature_set`` is a name no key prefix can collide with."""
    if not isinstance(feature_set, str) or not _FEATURE_SET_NAME.match(feature_set):
        raise ValueError(
            f"feature set name {feature_set!r} must be letters, digits, '_', '.' or '-', "
            "e.g. 'churn_user_daily'"
        )


def chunks(count: int, size: int) -> Iterator[slice]:
    """Return slices of at most ``size`` over ``count`` items."""
    for start in range(0, count, size):
        yield slice(start, start + size)


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
