"""The materialisation step: warehouse feature sets to the online store (real DuckDB, SQLite,
Redis), every version beside the others."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from ml.features.definitions import CHURN, FeatureSet, resolve_version
from ml.features.materialize import latest_vectors, materialize_online
from ml.features.online.sqlite import SqliteOnlineStore
from ml.features.pit import FeatureRequest, build_training_set


def _parity(con, store) -> None:
    """Online vector of every user == historical retrieval at that user's latest time."""
    version = resolve_version(con, CHURN, None)
    report = materialize_online(con, store, [CHURN])[CHURN.name]
    latest = latest_vectors(con, CHURN, version)
    assert report.written == len(latest) > 300
    entities = latest[["user_id", "feature_timestamp"]].rename(
        columns={"feature_timestamp": "event_timestamp"}
    )
    con.execute(
        f"create or replace temp view churn_now as select * from {CHURN.relation} where feature_set_version = '{version}'"
    )
    features = [
        c
        for c in latest.columns
        if c not in ("user_id", "feature_timestamp", "created_at", "feature_set_version")
    ]
    offline = build_training_set(
        con, entities, [FeatureRequest("churn_now", ("user_id",), tuple(features))]
    ).frame
    online = store.get(CHURN.name, offline["user_id"].tolist(), version)
    mismatches = 0
    for (_, row), vector in zip(offline.iterrows(), online, strict=True):
        assert vector is not None
        for name in features:
            a, b = row[name], vector.values[name]
            same = (
                (pd.isna(a) and b is None) or (isinstance(b, float) and np.isclose(a, b)) or a == b
            )
            mismatches += not same
    assert mismatches == 0
    # an older write (yesterday's vectors) does not replace today's
    older = latest.assign(
        feature_timestamp=latest["feature_timestamp"] - pd.Timedelta(days=1), watch_minutes_7d=-1.0
    )
    assert store.write(CHURN.name, older, ["user_id"]).written == 0
    assert (
        store.get_one(CHURN.name, int(latest["user_id"].iloc[0]), version).values[
            "watch_minutes_7d"
        ]
        != -1.0
    )


def test_online_equals_offline_on_the_embedded_store(con, tmp_path):
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    try:
        _parity(con, store)
    finally:
        store.close()


def test_online_equals_offline_on_redis(con, redis_store):
    _parity(con, redis_store)


# --------------------------------------------------------------------------------------------
# a new version of a feature set reaches the online store

DAILY = FeatureSet("daily_test", "features.fs_test__daily", ("user_id",), timedelta(days=1), True)
DAY = datetime(2026, 2, 1)


def _build_version(con: duckdb.DuckDBPyConnection, version: str, columns: list[str]) -> None:
    """Add one version of the test feature set, as a dbt build would: rows and registry entry.

    Every version is computed over the same data: same users, same feature_timestamp and
    created_at, so only the version tells the rows apart.
    """
    con.execute("create schema if not exists features")
    con.execute(
        "create table if not exists features.feature_sets (feature_set_name varchar, "
        "feature_set_version varchar, definition_hash varchar, relation_name varchar, "
        "columns_json varchar, created_at timestamp)"
    )
    con.execute(
        f"create table if not exists {DAILY.relation} (user_id bigint, as_of_date date, "
        "feature_timestamp timestamp, created_at timestamp, feature_set_version varchar, "
        "watch_minutes double)"
    )
    for column in columns:  # on_schema_change='append_new_columns'
        con.execute(f"alter table {DAILY.relation} add column if not exists {column} double")
    for user in (1, 2):
        for day in (0, 1):  # two days: only the later one is the online vector
            values = {"watch_minutes": 10.0 * user + day, "tickets_30d": 100.0 * user + day}
            con.execute(
                f"insert into {DAILY.relation} (user_id, as_of_date, feature_timestamp, "
                f"created_at, feature_set_version, {', '.join(columns)}) "
                f"values (?, ?, ?, ?, ?, {', '.join('?' * len(columns))})",
                [user, (DAY + timedelta(days=day - 1)).date(), DAY + timedelta(days=day),
                 DAY + timedelta(days=day, hours=2), version,
                 *[values[c] for c in columns]],
            )  # fmt: skip
    registry_columns = [{"name": c, "type": "DOUBLE"} for c in columns]
    con.execute(
        "insert into features.feature_sets values (?, ?, 'hash', ?, ?, ?)",
        [DAILY.name, version, DAILY.relation, json.dumps(registry_columns),
         DAY + timedelta(days=len(columns))],
    )  # fmt: skip


def test_a_new_version_over_the_same_data_lands_beside_the_old_one(store, tmp_path) -> None:
    """Version B, computed over the same rows as A plus one column, is written in full; a
    reader asking for B gets B's vector with the new column, one asking for A gets A's."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _build_version(con, "va", ["watch_minutes"])
        first = materialize_online(con, store, [DAILY])[DAILY.name]
        assert (first.written, first.skipped) == (2, 0)
        _build_version(con, "vb", ["watch_minutes", "tickets_30d"])
        second = materialize_online(con, store, [DAILY])[DAILY.name]
        again = materialize_online(con, store, [DAILY])[DAILY.name]
    finally:
        con.close()
    assert (second.written, second.skipped) == (2, 2)  # B's two users new, A's unchanged
    assert (again.written, again.skipped) == (0, 4)  # a rerun writes nothing
    new = store.get_one(DAILY.name, 2, "vb")
    old = store.get_one(DAILY.name, 2, "va")
    assert new is not None and old is not None
    assert new.values == {"watch_minutes": 21.0, "tickets_30d": 201.0}
    assert new.feature_set_version == "vb" and new.feature_timestamp == DAY + timedelta(days=1)
    assert old.values == {"watch_minutes": 21.0}  # A never gains B's column
    assert old.feature_set_version == "va"
    assert [v.values["tickets_30d"] for v in store.get(DAILY.name, [1, 2], "vb") if v] == [
        101.0,
        201.0,
    ]
    assert store.get_one(DAILY.name, 2) is None  # no unversioned rows were written
