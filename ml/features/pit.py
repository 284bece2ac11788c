"""Point-in-time-correct training sets: join feature sets to entity rows without leaking the future.

For each entity row (keys, timestamp ``t``) and each `FeatureRequest`, the builder takes the
feature row with the same keys and ``feature_timestamp <= t`` (and, with a TTL,
``feature_timestamp >= t - ttl``; both bounds inclusive). Among those candidates it keeps the
latest ``feature_timestamp``; ties go to the latest ``created_at`` (NULL lowest), then, so the
same inputs always give the same output, to the latest ``feature_set_version`` (NULL lowest) and
finally to the smallest feature values (NULLs last). With ``as_known_at=True`` only rows with
``created_at <= t`` qualify, so rows backfilled after ``t`` and rows with an unknown (NULL)
``created_at`` are never used. No candidate means NULL features.

Entity rows keep their order, their duplicates and every column (values and dtypes unchanged);
the output has one row per input row and a fresh ``RangeIndex``. Entity timestamps may be naive
(read as UTC) or tz-aware in any zone; they are converted to naive UTC and floored to the
microsecond (DuckDB TIMESTAMP precision) before the join. NULL keys never match (SQL equality).

All joining happens in DuckDB SQL: the entity keys are numbered, staged in a temp table (dropped
afterwards) and joined per request. Without ``as_known_at`` the winner per (keys,
feature_timestamp) does not depend on ``t``, so the feature rows are deduplicated once and
ASOF-joined; with ``as_known_at`` the ``created_at <= t`` rule depends on each row's ``t``, so
candidates are range-joined and the winner picked with ``qualify row_number()``. With a TTL
that range join also matches on a time bucket as wide as the TTL (an entity row looks in the
buckets from that of ``t - ttl`` to that of ``t``): the same candidates, without pairing every entity
row with every feature row of its key (1M entity rows against 5M feature rows of 50k keys:
about 100M pairs to filter without it, under 3M with it; bench/pit.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

FEATURE_TIMESTAMP = "feature_timestamp"
CREATED_AT = "created_at"
FEATURE_SET_VERSION = "feature_set_version"
METADATA_COLUMNS = (FEATURE_TIMESTAMP, CREATED_AT, FEATURE_SET_VERSION)

_NAIVE_TIME_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE"})
_RELATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")
_INTERNAL = "__pit_"
_ROW = f"{_INTERNAL}row"
_TS = f"{_INTERNAL}ts"
_VERSION = f"{_INTERNAL}version"
_BUCKET = f"{_INTERNAL}bucket"
# a TTL longer than this (about 146,000 years) is no window: join on the keys alone
_MAX_BUCKET_US = 2**62


@dataclass(frozen=True)
class FeatureRequest:
    """Which feature set to join, on which keys, which columns, how stale they may be."""

    relation: str
    entity_keys: tuple[str, ...]
    features: tuple[str, ...] | None = None
    ttl: timedelta | None = None
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not _RELATION_NAME.match(self.relation):
            raise ValueError(
                f"relation {self.relation!r} is not a plain [database.][schema.]name; "
                "pass a DuckDB table or view name such as 'features.churn_user_daily'"
            )
        # a bare string would otherwise be split into characters by tuple()
        keys = (self.entity_keys,) if isinstance(self.entity_keys, str) else self.entity_keys
        object.__setattr__(self, "entity_keys", tuple(keys))
        if not self.entity_keys:
            raise ValueError(f"{self.relation}: entity_keys must name at least one column")
        _require_unique(self.entity_keys, f"{self.relation}: entity_keys")
        if self.features is not None:
            feats = (self.features,) if isinstance(self.features, str) else tuple(self.features)
            object.__setattr__(self, "features", feats)
            if not feats:
                raise ValueError(
                    f"{self.relation}: features=() selects nothing; use None for all columns"
                )
            _require_unique(feats, f"{self.relation}: features")
            keys_asked = sorted(set(feats) & set(self.entity_keys))
            if keys_asked:
                raise ValueError(
                    f"{self.relation}: {keys_asked} are entity keys, already in the output; "
                    "remove them from features"
                )
        if self.ttl is not None and self.ttl < timedelta(0):
            raise ValueError(f"{self.relation}: ttl must not be negative, got {self.ttl}")

    def output_name(self, feature: str) -> str:
        """Return the output column name of one of this request's features."""
        return f"{self.prefix or ''}{feature}"


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame has no truth value to compare by
class TrainingSet:
    """A point-in-time-correct training frame and the lineage needed to reproduce it."""

    frame: pd.DataFrame
    content_hash: str
    feature_set_versions: dict[str, list[str]]
    data_window: tuple[datetime, datetime]
    as_known_at: bool
    feature_columns: dict[str, list[str]] = field(default_factory=dict)  # relation -> output names

    def lineage(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return flat string tags for MLflow; `extra` (e.g. the dbt manifest hash) is merged in."""
        start, end = self.data_window
        tags = {
            "training_set.content_hash": self.content_hash,
            "training_set.rows": str(len(self.frame)),
            "training_set.columns": str(len(self.frame.columns)),
            "training_set.data_window_start": start.isoformat() + "Z",
            "training_set.data_window_end": end.isoformat() + "Z",
            "training_set.as_known_at": str(self.as_known_at).lower(),
        }
        for relation, versions in sorted(self.feature_set_versions.items()):
            tags[f"feature_set_version.{relation}"] = ",".join(versions)
        for key, value in (extra or {}).items():
            if key in tags:
                raise ValueError(f"extra lineage tag {key!r} would overwrite a built-in tag")
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"extra lineage tags must be str to str, got {key!r}: {value!r}")
            tags[key] = value
        return tags


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    entity_rows: pd.DataFrame | pa.Table,
    requests: Sequence[FeatureRequest],
    timestamp_column: str = "event_timestamp",
    as_known_at: bool = False,
) -> TrainingSet:
    """Return entity rows joined point-in-time-correctly to each requested feature set."""
    if not requests:
        raise ValueError("requests is empty: pass at least one FeatureRequest")
    entities = entity_rows.to_pandas() if isinstance(entity_rows, pa.Table) else entity_rows
    _check_entity_rows(entities, requests, timestamp_column)
    join_ts = _naive_utc_microseconds(entities[timestamp_column], timestamp_column)

    plans = [_plan(con, request) for request in requests]
    _check_name_clashes(entities, plans)

    all_keys = list(dict.fromkeys(key for request in requests for key in request.entity_keys))
    keyed = pd.DataFrame({key: entities[key].reset_index(drop=True) for key in all_keys})
    keyed[_ROW] = range(len(entities))
    keyed[_TS] = join_ts.reset_index(drop=True)
    with _temp_entity_table(con, pa.Table.from_pandas(keyed, preserve_index=False)) as table:
        joined = [_join_one(con, table, plan, as_known_at, len(entities)) for plan in plans]

    feature_frames = [frame.drop(columns=[_VERSION]) for frame in joined]
    frame = pd.concat([entities.reset_index(drop=True), *feature_frames], axis=1)
    versions: dict[str, set[str]] = {}
    columns: dict[str, list[str]] = {}
    for plan, result in zip(plans, joined, strict=True):
        # unique() first: iterating a million Arrow-backed strings in Python takes about 1 s
        used = {str(v) for v in result[_VERSION].dropna().unique()}
        versions.setdefault(plan.request.relation, set()).update(used)
        outputs = [plan.request.output_name(f) for f in plan.features]
        columns.setdefault(plan.request.relation, []).extend(outputs)
    return TrainingSet(
        frame=frame,
        content_hash=content_hash(frame),
        feature_set_versions={rel: sorted(vs) for rel, vs in versions.items()},
        data_window=(join_ts.min().to_pydatetime(), join_ts.max().to_pydatetime()),
        as_known_at=as_known_at,
        feature_columns=columns,
    )


def content_hash(frame: pd.DataFrame) -> str:
    """Return the sha256 of a frame's Arrow IPC bytes, columns sorted, rows in order, no index."""
    names = [str(column) for column in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError("cannot hash a frame with duplicate column names")
    table = pa.Table.from_pandas(frame[sorted(frame.columns, key=str)], preserve_index=False)
    # pandas metadata carries the pandas version, which must not change the hash
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()  # no copy to bytes


@contextmanager
def _temp_entity_table(con: duckdb.DuckDBPyConnection, keyed: pa.Table) -> Iterator[str]:
    """Yield the name of a temp table holding `keyed`, dropped on exit.

    A temp table rather than a registered Arrow view: DuckDB cannot estimate an Arrow scan's
    size, takes it for tiny and plans the ASOF join as a nested loop (100x slower at 200k rows).
    Temp tables also work on read-only connections.
    """
    name = f"{_INTERNAL}entities_{uuid.uuid4().hex}"
    staged = f"{name}_arrow"
    con.register(staged, keyed)
    try:
        con.execute(f"create temp table {_ident(name)} as select * from {_ident(staged)}")
    finally:
        con.unregister(staged)
    try:
        yield name
    finally:
        con.execute(f"drop table if exists temp.{_ident(name)}")


@dataclass(frozen=True)
class _Plan:
    """A request resolved against its relation: the SQL name and the feature columns to take."""

    request: FeatureRequest
    relation_sql: str
    features: tuple[str, ...]


def _plan(con: duckdb.DuckDBPyConnection, request: FeatureRequest) -> _Plan:
    """Return the request checked against the relation's columns and types."""
    relation_sql = ".".join(_ident(part) for part in request.relation.split("."))
    try:
        probe = con.sql(f"select * from {relation_sql} limit 0")
    except duckdb.CatalogException as exc:
        raise ValueError(
            f"feature relation {request.relation!r} not found in the DuckDB connection; "
            "check the name and that dbt built it"
        ) from exc
    types = {name: str(kind) for name, kind in zip(probe.columns, probe.types, strict=True)}
    wanted = request.features if request.features is not None else ()
    missing = [c for c in (*request.entity_keys, *METADATA_COLUMNS, *wanted) if c not in types]
    if missing:
        raise ValueError(
            f"feature relation {request.relation!r} lacks column(s) {missing}; it has {list(types)}"
        )
    for column in (FEATURE_TIMESTAMP, CREATED_AT):
        if types[column] not in _NAIVE_TIME_TYPES:
            raise ValueError(
                f"{request.relation}.{column} is {types[column]}, expected a naive UTC TIMESTAMP; "
                "cast it in the model (e.g. `ts at time zone 'UTC'`)"
            )
    reserved = {*request.entity_keys, *METADATA_COLUMNS}
    features = request.features or tuple(c for c in types if c not in reserved)
    if not features:
        raise ValueError(f"feature relation {request.relation!r} has no feature columns")
    return _Plan(request=request, relation_sql=relation_sql, features=features)


def _join_one(
    con: duckdb.DuckDBPyConnection, entity_table: str, plan: _Plan, as_known_at: bool, rows: int
) -> pd.DataFrame:
    """Return one row per entity row (in order): the plan's features, output-named, and version."""
    sql = _as_known_at_sql(entity_table, plan) if as_known_at else _asof_sql(entity_table, plan)
    try:
        result = con.sql(sql).df()
    except (duckdb.BinderException, duckdb.ConversionException) as exc:
        raise ValueError(
            f"joining entity rows to {plan.request.relation!r} failed (do the key types match?): "
            f"{exc}"
        ) from exc
    if len(result) != rows or not np.array_equal(result[_ROW].to_numpy(), np.arange(rows)):
        raise RuntimeError(f"internal error: join with {plan.request.relation!r} lost rows")
    renamed = {f"{_INTERNAL}f{i}": plan.request.output_name(f) for i, f in enumerate(plan.features)}
    return result.drop(columns=[_ROW]).rename(columns=renamed)


def _asof_sql(entity_table: str, plan: _Plan) -> str:
    """Return SQL for the rules without as-known-at: dedupe per feature_timestamp, then ASOF."""
    keys = plan.request.entity_keys
    key_match = " and ".join(f"entities.{_ident(k)} = winners.{_ident(k)}" for k in keys)
    ttl_filter = ""
    if plan.request.ttl is not None:
        # the ASOF match is the latest row at or before t; if it is older than the TTL, so is
        # every other candidate, so filtering after the join is exact
        ttl_filter = f"where winners.{_ident(FEATURE_TIMESTAMP)} >= entities.{_TS} - {_ttl(plan)}"
    return f"""
        with
        winners as (
            select {_cols(keys)}, {_ident(FEATURE_TIMESTAMP)}, {_feature_select(plan)}
            from {plan.relation_sql}
            where {_ident(FEATURE_TIMESTAMP)} is not null
                and {" and ".join(f"{_ident(k)} is not null" for k in keys)}
            qualify row_number() over (
                partition by {_cols(keys)}, {_ident(FEATURE_TIMESTAMP)}
                order by {_tie_break(plan)}
            ) = 1
        ),
        matched as (
            select entities.{_ROW}, winners.*
            from {_ident(entity_table)} as entities
            asof inner join winners
                on {key_match}
                and entities.{_TS} >= winners.{_ident(FEATURE_TIMESTAMP)}
            {ttl_filter}
        )
        {_final_select(entity_table, plan)}
    """


def _as_known_at_sql(entity_table: str, plan: _Plan) -> str:
    """Return SQL for the rules with as-known-at: range-join candidates, keep the best per row."""
    keys = plan.request.entity_keys
    key_match = " and ".join(f"entities.{_ident(k)} = feature_rows.{_ident(k)}" for k in keys)
    ts = f"feature_rows.{_ident(FEATURE_TIMESTAMP)}"
    ttl_filter = ""
    entities_sql, features_sql = _ident(entity_table), plan.relation_sql
    if plan.request.ttl is not None:
        ttl_filter = f"and {ts} >= entities.{_TS} - {_ttl(plan)}"
        width = max(plan.request.ttl // timedelta(microseconds=1), 1)
        if width < _MAX_BUCKET_US:
            # every candidate's feature_timestamp lies in [t - ttl, t], so its bucket lies
            # from that of t - ttl to that of t (two buckets: one is as wide as the TTL)
            lowest = _bucket(f"epoch_us({_TS}) - {width}", width)
            highest = _bucket(f"epoch_us({_TS})", width)
            entities_sql = (
                f"(select *, unnest(range({lowest}, {highest} + 1)) as {_BUCKET} "
                f"from {_ident(entity_table)})"
            )
            features_sql = (
                f"(select *, {_bucket(f'epoch_us({_ident(FEATURE_TIMESTAMP)})', width)} "
                f"as {_BUCKET} from {plan.relation_sql})"
            )
            key_match += f" and entities.{_BUCKET} = feature_rows.{_BUCKET}"
    return f"""
        with
        matched as (
            select entities.{_ROW}, {_feature_select(plan, "feature_rows.")}
            from {entities_sql} as entities
            inner join {features_sql} as feature_rows on {key_match}
            where {ts} <= entities.{_TS}
                {ttl_filter}
                -- NULL created_at compares as NULL, so rows of unknown age drop out here
                and feature_rows.{_ident(CREATED_AT)} <= entities.{_TS}
            qualify row_number() over (
                partition by entities.{_ROW}
                order by {_tie_break(plan, "feature_rows.")}
            ) = 1
        )
        {_final_select(entity_table, plan)}
    """


def _final_select(entity_table: str, plan: _Plan) -> str:
    """Return the select that left-joins every entity row to its match, in input order."""
    outputs = [f"matched.{_INTERNAL}f{i}" for i in range(len(plan.features))]
    return f"""
        select entities.{_ROW}, {", ".join(outputs)}, matched.{_VERSION}
        from {_ident(entity_table)} as entities
        left join matched on entities.{_ROW} = matched.{_ROW}
        order by entities.{_ROW}
    """


def _feature_select(plan: _Plan, table: str = "") -> str:
    """Return the feature columns aliased to positional internal names, plus the version."""
    aliased = [f"{table}{_ident(f)} as {_INTERNAL}f{i}" for i, f in enumerate(plan.features)]
    return ", ".join([*aliased, f"{table}{_ident(FEATURE_SET_VERSION)} as {_VERSION}"])


def _tie_break(plan: _Plan, table: str = "") -> str:
    """Return the ORDER BY that ranks candidates: latest first, then a deterministic tie-break."""
    order = [
        f"{table}{_ident(FEATURE_TIMESTAMP)} desc",
        f"{table}{_ident(CREATED_AT)} desc nulls last",
        f"{table}{_ident(FEATURE_SET_VERSION)} desc nulls last",
        *(f"{table}{_ident(f)} asc nulls last" for f in plan.features),
    ]
    return ", ".join(order)


def _bucket(microseconds: str, width: int) -> str:
    """Return SQL numbering `width`-wide time buckets in time order.

    Any numbering that never decreases with time keeps every candidate: ``//`` truncates
    toward zero, so the bucket around 1970 is twice as wide, which only costs a few pairs.
    """
    return f"({microseconds}) // {width}"


def _ttl(plan: _Plan) -> str:
    """Return the request's TTL as a DuckDB interval literal (microsecond precision)."""
    assert plan.request.ttl is not None
    return f"to_microseconds({plan.request.ttl // timedelta(microseconds=1)})"


def _cols(columns: Sequence[str]) -> str:
    """Return quoted column names joined by commas."""
    return ", ".join(_ident(c) for c in columns)


def _ident(name: str) -> str:
    """Return a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _require_unique(names: Sequence[str], what: str) -> None:
    """Raise ValueError if a name repeats."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} repeats {repeated}")


def _check_entity_rows(
    entities: pd.DataFrame, requests: Sequence[FeatureRequest], timestamp_column: str
) -> None:
    """Raise ValueError naming what the entity rows lack for these requests."""
    if not isinstance(entities, pd.DataFrame):
        raise TypeError(
            "entity_rows must be a pandas DataFrame or pyarrow Table, "
            f"got {type(entities).__name__}"
        )
    columns = [str(c) for c in entities.columns]
    _require_unique(columns, "entity rows columns")
    needed = dict.fromkeys([timestamp_column, *(k for r in requests for k in r.entity_keys)])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"entity rows lack column(s) {missing}; they have {columns}")
    internal = [c for c in needed if c.startswith(_INTERNAL)]
    if internal:
        raise ValueError(f"column names starting with {_INTERNAL!r} are reserved: {internal}")
    if entities.empty:
        raise ValueError("entity rows are empty: a training set needs at least one row")


def _naive_utc_microseconds(timestamps: pd.Series, column: str) -> pd.Series:
    """Return timestamps as naive UTC datetime64[us]; naive input is read as UTC."""
    if not pd.api.types.is_datetime64_any_dtype(timestamps):
        raise ValueError(
            f"entity timestamp column {column!r} has dtype {timestamps.dtype}, expected datetime64 "
            "(naive UTC or tz-aware); convert it with pd.to_datetime"
        )
    if timestamps.isna().any():
        raise ValueError(
            f"entity timestamp column {column!r} has {int(timestamps.isna().sum())} NULL value(s); "
            "a point-in-time join needs a time for every row"
        )
    if isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        timestamps = timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return timestamps.dt.floor("us").astype("datetime64[us]")


def _check_name_clashes(entities: pd.DataFrame, plans: Sequence[_Plan]) -> None:
    """Raise ValueError if an output feature column repeats an entity column or another set's."""
    # DuckDB and most stores fold case, so "Spend" and "spend" count as the same column
    owners: dict[str, str] = {str(c).lower(): "the entity rows" for c in entities.columns}
    for plan in plans:
        for feature in plan.features:
            name = plan.request.output_name(feature)
            owner = owners.get(name.lower())
            if owner is not None:
                raise ValueError(
                    f"output column {name!r} from {plan.request.relation!r} clashes with a column "
                    f"from {owner}; set FeatureRequest(prefix=...) on one of them"
                )
            owners[name.lower()] = repr(plan.request.relation)
