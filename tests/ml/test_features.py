"""Training sets and online vectors from the warehouse's feature sets (real DuckDB, SQLite, Redis)."""

from __future__ import annotations

import uuid
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml.features import (
    CHURN,
    FeatureStoreError,
    churn_training_set,
    dbt_manifest_hash,
    latest_vectors,
    materialize_online,
    resolve_version,
)
from ml.online_store import RedisOnlineStore, SqliteOnlineStore
from ml.pit import FeatureRequest, build_training_set
from tests.conftest import require_service


@pytest.fixture
def con(built_warehouse):
    settings, _ = built_warehouse
    connection = duckdb.connect(str(settings.resolved_warehouse_path))  # same config as dbt
    yield connection
    connection.close()


def test_training_set_has_one_row_per_label_and_its_lineage(built_warehouse, con):
    settings, _ = built_warehouse
    result = churn_training_set(con, date(2026, 1, 1), date(2026, 1, 14))
    (labels,) = con.execute(
        "select count(*) from features.label_churn__user_daily where as_of_date between '2026-01-01' and '2026-01-14'"
    ).fetchone()
    assert len(result.frame) == labels > 1_000
    assert result.frame["watch_minutes_30d"].notna().all()  # every labelled day has its features
    version = resolve_version(con, CHURN, None)
    assert result.feature_set_versions == {CHURN.relation: [version]}
    tags = result.lineage(
        {"dbt_manifest_hash": dbt_manifest_hash(settings.data_dir / "dbt" / "target")}
    )
    assert tags["training_set.content_hash"] == result.content_hash
    assert tags[f"feature_set_version.{CHURN.relation}"] == version
    assert len(tags["dbt_manifest_hash"]) == 16
    assert (
        churn_training_set(con, date(2026, 1, 1), date(2026, 1, 14)).content_hash
        == result.content_hash
    )


def test_features_come_from_the_as_of_day_never_later(con):
    """Each label row gets the feature row of its own as-of day, not a later one."""
    result = churn_training_set(con, date(2026, 1, 1), date(2026, 1, 14)).frame
    truth = con.execute(
        "select user_id, as_of_date, watch_minutes_7d from features.fs_churn__user_daily "
        "where feature_set_version = ?",
        [resolve_version(con, CHURN, None)],
    ).df()
    merged = result.merge(truth, on=["user_id", "as_of_date"], suffixes=("", "_expected"))
    assert len(merged) == len(result)
    assert np.allclose(merged["watch_minutes_7d"], merged["watch_minutes_7d_expected"])


def test_as_known_at_drops_values_that_landed_after_the_lookup_time(con):
    """With late data, a value computed for day d is not known at the end of day d."""
    plain = churn_training_set(con, date(2026, 1, 5), date(2026, 1, 15)).frame
    known = churn_training_set(con, date(2026, 1, 5), date(2026, 1, 15), as_known_at=True).frame
    late = con.execute(
        "select user_id, as_of_date from features.fs_churn__user_daily "
        "where created_at > feature_timestamp and as_of_date between '2026-01-05' and '2026-01-15'"
    ).df()
    assert len(late) > 0
    keyed = known.merge(late, on=["user_id", "as_of_date"])
    assert len(keyed) == len(late)
    # a day whose own value landed late falls back to the day before (ttl: one day),
    # and only when that one was known in time
    previous = con.execute(
        "select user_id, as_of_date + 1 as as_of_date, watch_minutes_7d as previous_value, "
        "created_at <= feature_timestamp + interval 1 day as previous_known "
        "from features.fs_churn__user_daily"
    ).df()
    checked = keyed.merge(previous, on=["user_id", "as_of_date"], how="left")
    known_in_time = checked["previous_known"].fillna(False).astype(bool)
    assert checked.loc[~known_in_time, "watch_minutes_7d"].isna().all()
    assert np.allclose(
        checked.loc[known_in_time, "watch_minutes_7d"], checked.loc[known_in_time, "previous_value"]
    )
    assert known_in_time.any() and (~known_in_time).any()
    assert plain["watch_minutes_7d"].notna().sum() > known["watch_minutes_7d"].notna().sum()


def test_an_unknown_version_is_a_clear_error(con):
    with pytest.raises(FeatureStoreError, match="not found"):
        churn_training_set(con, date(2026, 1, 1), date(2026, 1, 2), version="nope")


def _parity(con, store) -> None:
    """Online vector of every user == historical retrieval at that user's latest time."""
    report = materialize_online(con, store)
    latest = latest_vectors(con, CHURN, resolve_version(con, CHURN, None))
    assert report.written == len(latest) > 300
    entities = latest[["user_id", "feature_timestamp"]].rename(
        columns={"feature_timestamp": "event_timestamp"}
    )
    version = resolve_version(con, CHURN, None)
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
    online = store.get(CHURN.name, offline["user_id"].tolist())
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
        store.get_one(CHURN.name, int(latest["user_id"].iloc[0])).values["watch_minutes_7d"] != -1.0
    )


def test_online_equals_offline_on_the_embedded_store(con, tmp_path):
    store = SqliteOnlineStore(tmp_path / "online.sqlite")
    try:
        _parity(con, store)
    finally:
        store.close()


def test_online_equals_offline_on_redis(con):
    require_service("Redis", "127.0.0.1", 6379)
    namespace = f"loopline:test:{uuid.uuid4().hex}:"
    store = RedisOnlineStore("redis://127.0.0.1:6379/0", namespace=namespace)
    try:
        _parity(con, store)
    finally:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        store.close()
