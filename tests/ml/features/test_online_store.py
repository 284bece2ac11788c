"""The online store on a real SQLite file and a real Redis, checked against a brute-force oracle."""

from __future__ import annotations

import itertools
import re
import sqlite3
import threading
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.settings import Settings
from ml.features.online import open_online_store
from ml.features.online.base import (
    FeatureVector,
    OnlineStore,
    OnlineStoreUnavailableError,
    WriteReport,
)
from ml.features.online.redis import RedisOnlineStore
from ml.features.online.sqlite import SqliteOnlineStore
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2024, 3, 10, 6, 55)  # naive UTC; US daylight saving starts at 07:00 UTC


def minute(k: int) -> datetime:
    """Return the naive UTC time k minutes after T0."""
    return T0 + timedelta(minutes=k)


def frame(records: list[dict[str, object]], zone: str | None = None) -> pd.DataFrame:
    """Return feature rows; naive UTC times are shown in `zone` when one is given."""
    rows = pd.DataFrame(records)
    for column in ("feature_timestamp", "created_at"):
        if column in rows:
            times = pd.to_datetime(rows[column])
            rows[column] = (
                times if zone is None else times.dt.tz_localize("UTC").dt.tz_convert(zone)
            )
    return rows


def fresh_feature_set() -> str:
    return f"fs_{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# 1. values come back with their types


def test_write_then_get_returns_values_with_their_types(store: OnlineStore) -> None:
    rows = pd.DataFrame(
        {
            "user_id": [7],
            "feature_timestamp": [pd.Timestamp("2024-03-10 12:00", tz="Europe/Paris")],
            "created_at": [pd.Timestamp("2024-03-11 01:02:03.456789")],
            "feature_set_version": ["v3"],
            "sessions_7d": [12],
            "huge_count": [2**62 + 1],
            "watch_share": [0.25],
            "whole_float": [2.0],
            "plan": ["family|annual"],
            "is_active": [True],
            "unknown": [None],
            "last_seen_at": [pd.Timestamp("2024-03-10 08:30:00.123456", tz="Asia/Kolkata")],
            "first_seen_at": [pd.Timestamp("2024-01-01 00:00:00.000001")],
        }
    )
    report = store.write("churn_user_daily", rows, ["user_id"])
    vector = store.get_one("churn_user_daily", 7, "v3")

    assert report == WriteReport(written=1, skipped=0)
    assert vector == FeatureVector(
        values={
            "sessions_7d": 12,
            "huge_count": 2**62 + 1,
            "watch_share": 0.25,
            "whole_float": 2.0,
            "plan": "family|annual",
            "is_active": True,
            "unknown": None,
            "last_seen_at": datetime(2024, 3, 10, 3, 0, 0, 123456),
            "first_seen_at": datetime(2024, 1, 1, 0, 0, 0, 1),
        },
        feature_timestamp=datetime(2024, 3, 10, 11, 0),
        created_at=datetime(2024, 3, 11, 1, 2, 3, 456789),
        feature_set_version="v3",
    )
    types = {name: type(value) for name, value in vector.values.items()}
    assert types == {
        "sessions_7d": int,
        "huge_count": int,
        "watch_share": float,
        "whole_float": float,
        "plan": str,
        "is_active": bool,
        "unknown": type(None),
        "last_seen_at": datetime,
        "first_seen_at": datetime,
    }
    assert vector.feature_timestamp.tzinfo is None
    assert store.get("churn_user_daily", [7], "v3") == [vector]
    assert store.get_one("churn_user_daily", 7) is None  # another version: the unversioned slot


def test_tagged_values_and_lookalike_objects_round_trip(store: OnlineStore) -> None:
    """Dates, decimals, bytes, durations, lists and a struct that looks like a tag survive."""
    table = pa.table(
        {
            "user_id": pa.array(["u-1"]),
            "feature_timestamp": pa.array([T0], pa.timestamp("ns", tz="UTC")),
            "signup_date": pa.array([date(2023, 5, 17)], pa.date32()),
            "balance": pa.array([Decimal("1234.5600")], pa.decimal128(10, 4)),
            "blob": pa.array([b"\x00\xffraw"], pa.binary()),
            "tenure": pa.array([timedelta(days=3, microseconds=5)], pa.duration("us")),
            "recent": pa.array(
                [[minute(1), None]], pa.list_(pa.timestamp("us", tz="Asia/Kolkata"))
            ),
            "lookalike": pa.array([{"$ts": "not a tag"}]),
            "$ts": pa.array([1.5]),
        }
    )
    store.write("tagged", table, ["user_id"])
    vector = store.get_one("tagged", "u-1")

    assert vector is not None
    assert vector.values == {
        "signup_date": date(2023, 5, 17),
        "balance": Decimal("1234.5600"),
        "blob": b"\x00\xffraw",
        "tenure": timedelta(days=3, microseconds=5),
        "recent": [minute(1), None],
        "lookalike": {"$ts": "not a tag"},
        "$ts": 1.5,
    }


def test_composite_keys_with_separator_inside_parts_stay_distinct(store: OnlineStore) -> None:
    rows = frame(
        [
            {"region": "eu|west", "user_id": "1", "feature_timestamp": T0, "score": 1},
            {"region": "eu", "user_id": "west|1", "feature_timestamp": T0, "score": 2},
        ]
    )
    report = store.write("by_region", rows, ["region", "user_id"])
    found = store.get("by_region", [("eu|west", "1"), ("eu", "west|1"), ("eu", "west")])

    assert report.written == 2
    assert [vector.values["score"] if vector else None for vector in found] == [1, 2, None]


# --------------------------------------------------------------------------------------------
# 2. newer wins, whatever the order


def test_older_write_never_overwrites_newer(store: OnlineStore) -> None:
    store.write(
        "fs", frame([{"user_id": 1, "feature_timestamp": minute(10), "v": "new"}]), ["user_id"]
    )
    report = store.write(
        "fs", frame([{"user_id": 1, "feature_timestamp": minute(5), "v": "old"}]), ["user_id"]
    )
    vector = store.get_one("fs", 1)

    assert report == WriteReport(written=0, skipped=1)
    assert vector is not None
    assert (vector.values, vector.feature_timestamp) == ({"v": "new"}, minute(10))


def test_newer_created_at_wins_at_equal_feature_timestamp(store: OnlineStore) -> None:
    def row(created: int, value: str) -> pd.DataFrame:
        return frame(
            [{"user_id": 1, "feature_timestamp": T0, "created_at": minute(created), "v": value}],
            zone="America/New_York",
        )

    store.write("fs", row(1, "first"), ["user_id"])
    later = store.write("fs", row(2, "restated"), ["user_id"])
    earlier = store.write("fs", row(1, "late copy of first"), ["user_id"])
    vector = store.get_one("fs", 1)

    assert (later.written, earlier.skipped) == (1, 1)
    assert vector is not None
    assert (vector.values["v"], vector.created_at) == ("restated", minute(2))


def test_null_created_at_loses_to_a_known_one_at_the_same_feature_timestamp(
    store: OnlineStore,
) -> None:
    known = {"feature_timestamp": T0, "created_at": minute(1), "v": "known"}
    unknown = {"feature_timestamp": T0, "created_at": None, "v": "unknown"}
    newer_unknown = {"feature_timestamp": minute(1), "created_at": None, "v": "newer, unknown"}

    # key 1: known first, unknown second; key 2: the other way round
    first = store.write(
        "fs", frame([{"user_id": 1, **known}, {"user_id": 2, **unknown}]), ["user_id"]
    )
    second = store.write(
        "fs", frame([{"user_id": 1, **unknown}, {"user_id": 2, **known}]), ["user_id"]
    )
    # feature_timestamp is compared first: a newer event with NULL created_at still wins
    third = store.write("fs", frame([{"user_id": 1, **newer_unknown}]), ["user_id"])

    assert (first.written, second.written, second.skipped, third.written) == (2, 1, 1, 1)
    got = store.get("fs", [1, 2])
    assert [(vector.values["v"], vector.created_at) for vector in got if vector] == [
        ("newer, unknown", None),
        ("known", minute(1)),
    ]


def test_rewriting_identical_or_equally_timed_rows_is_a_noop(store: OnlineStore) -> None:
    rows = frame(
        [
            {"user_id": k, "feature_timestamp": minute(k), "created_at": minute(9), "v": k}
            for k in range(3)
        ]
    )
    same_times_other_values = rows.assign(v=[100, 101, 102])

    assert store.write("fs", rows, ["user_id"]) == WriteReport(written=3, skipped=0)
    assert store.write("fs", rows, ["user_id"]) == WriteReport(written=0, skipped=3)
    assert store.write("fs", same_times_other_values, ["user_id"]) == WriteReport(0, 3)
    assert [v.values["v"] for v in store.get("fs", [0, 1, 2]) if v] == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# 3. random write sequences end in the oracle's state

KEYS = range(4)
ZONES = (None, "UTC", "America/New_York", "Asia/Kolkata")
record_strategy = st.tuples(
    st.sampled_from(KEYS),
    st.integers(0, 3),  # feature_timestamp, minutes after T0: few values, many ties
    st.one_of(st.none(), st.integers(0, 2)),  # created_at, minutes after T0
)


def oracle(records: list[tuple[int, int, int | None]]) -> dict[int, int]:
    """Return, per key, the index of the winning row: max (ts, created NULL lowest), first on ties."""

    def rank(index: int) -> tuple[int, bool, int, int]:
        _, ts, created = records[index]
        return (ts, created is not None, created or 0, -index)

    winners: dict[int, int] = {}
    for key in {key for key, _, _ in records}:
        winners[key] = max((i for i, record in enumerate(records) if record[0] == key), key=rank)
    return winners


def expected_vector(records: list[tuple[int, int, int | None]], index: int) -> FeatureVector:
    _, ts, created = records[index]
    return FeatureVector(
        values={"row": index, "label": f"row {index}", "score": index / 4, "odd": index % 2 == 1},
        feature_timestamp=minute(ts),
        created_at=None if created is None else minute(created),
        feature_set_version="v1",
    )


def records_frame(
    records: list[tuple[int, int, int | None]], start: int, zone: str | None
) -> pd.DataFrame:
    return frame(
        [
            {
                "user_id": key,
                "feature_timestamp": minute(ts),
                "created_at": None if created is None else minute(created),
                "feature_set_version": "v1",
                "row": i,
                "label": f"row {i}",
                "score": i / 4,
                "odd": i % 2 == 1,
            }
            for i, (key, ts, created) in enumerate(records, start=start)
        ],
        zone=zone,
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    records=st.lists(record_strategy, min_size=1, max_size=25),
    data=st.data(),
)
def test_random_write_sequences_keep_the_newest_row_per_key(
    store: OnlineStore, records: list[tuple[int, int, int | None]], data: st.DataObject
) -> None:
    """Written in shuffled batches or all at once, each key ends at the oracle's row."""
    records = data.draw(st.permutations(records), label="write order")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=3), label="cuts"))
    bounds = [0, *cuts, len(records)]
    written_sets, materialized_set = fresh_feature_set(), fresh_feature_set()

    reports = []
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        zone = data.draw(st.sampled_from(ZONES), label="zone")
        batch = records_frame(records[start:end], start, zone)
        reports.append(store.write(written_sets, batch, ["user_id"]))
    whole = records_frame(records, 0, data.draw(st.sampled_from(ZONES), label="zone"))
    at_once = store.write(materialized_set, whole, ["user_id"])

    winners = oracle(records)
    expected = [
        expected_vector(records, winners[key]) if key in winners else None for key in [*KEYS, 99]
    ]
    assert store.get(written_sets, [*KEYS, 99], "v1") == expected
    assert [store.get_one(materialized_set, key, "v1") for key in [*KEYS, 99]] == expected

    # a row is written iff it is newer than every earlier row of its key
    def rank(index: int) -> tuple[int, bool, int]:
        _, ts, created = records[index]
        return (ts, created is not None, created or 0)

    newer_than_all_before = sum(
        all(rank(j) < rank(i) for j in range(i) if records[j][0] == records[i][0])
        for i in range(len(records))
    )
    assert sum(report.written for report in reports) == newer_than_all_before
    assert sum(report.skipped for report in reports) == len(records) - newer_than_all_before
    assert at_once == WriteReport(
        written=newer_than_all_before, skipped=len(records) - newer_than_all_before
    )


# --------------------------------------------------------------------------------------------
# 4. a reader sees whole vectors and whole batches while a writer commits


def test_sqlite_reader_sees_whole_snapshots_while_a_writer_commits(tmp_path: Path) -> None:
    """Every read is one batch's full vectors for every key, never a mix, never going back."""
    path = tmp_path / "online.sqlite"
    keys = list(range(1200))  # more than one `in (...)` chunk, so snapshots span chunks

    def batch(i: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": keys,
                "feature_timestamp": minute(i),
                "a": i,
                "b": -i,
                "c": f"batch {i}",
            }
        )

    writer = SqliteOnlineStore(path)
    writer.write("fs", batch(0), ["user_id"])
    reader = SqliteOnlineStore(path)
    errors: list[BaseException] = []

    def write_batches() -> None:
        try:
            for i in range(1, 41):
                writer.write("fs", batch(i), ["user_id"])
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    thread = threading.Thread(target=write_batches)
    thread.start()
    seen: list[int] = []
    try:
        while thread.is_alive() or not seen:
            vectors = reader.get("fs", keys)
            generations = set()
            for vector in vectors:
                assert vector is not None
                i = vector.values["a"]
                assert isinstance(i, int)
                assert vector.values == {"a": i, "b": -i, "c": f"batch {i}"}
                assert vector.feature_timestamp == minute(i)
                generations.add(i)
            assert len(generations) == 1, f"one read mixed batches {sorted(generations)}"
            (generation,) = generations
            one = reader.get_one("fs", keys[-1])
            assert one is not None and one.values["a"] >= generation
            assert not seen or generation >= seen[-1]
            seen.append(generation)
    finally:
        thread.join()
        writer.close()
        reader.close()

    assert not errors, errors
    assert len(set(seen)) >= 2, "the reader never overlapped the writer"
    final = SqliteOnlineStore(path)
    assert final.get_one("fs", 0) == FeatureVector(
        {"a": 40, "b": -40, "c": "batch 40"}, minute(40), None, None
    )
    final.close()


# --------------------------------------------------------------------------------------------
# 5. versions are part of the key


def test_each_version_keeps_its_own_vector_even_at_equal_times(store: OnlineStore) -> None:
    """A new version computed over the same data (same times) is stored, not skipped."""
    old = frame([{"user_id": 1, "feature_timestamp": T0, "created_at": T0,
                  "feature_set_version": "va", "a": 1}])  # fmt: skip
    new = old.assign(feature_set_version="vb", b=2)
    assert store.write("fs", old, ["user_id"]) == WriteReport(written=1, skipped=0)
    assert store.write("fs", new, ["user_id"]) == WriteReport(written=1, skipped=0)
    assert store.write("fs", new, ["user_id"]) == WriteReport(written=0, skipped=1)
    va, vb = store.get_one("fs", 1, "va"), store.get_one("fs", 1, "vb")
    assert va is not None and vb is not None
    assert (va.values, va.feature_set_version) == ({"a": 1}, "va")
    assert (vb.values, vb.feature_set_version) == ({"a": 1, "b": 2}, "vb")
    assert store.get("fs", [1, 2], "vb") == [vb, None]
    assert store.get_one("fs", 1, "vc") is None


def test_a_sqlite_file_from_before_versions_is_reset_on_open(tmp_path: Path) -> None:
    """The store is derived data: an old single-version table is dropped, not misread."""
    path = tmp_path / "online_store.sqlite"
    con = sqlite3.connect(path)
    con.execute("create table online_features (feature_set text, entity_key text)")
    con.execute("insert into online_features values ('fs', '1')")
    con.commit()
    con.close()
    with SqliteOnlineStore(path) as store:
        store.write("fs", frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]), ["user_id"])
        vector = store.get_one("fs", 1)
        assert vector is not None and vector.values == {"v": 1}
    tables = sqlite3.connect(path).execute("select name from sqlite_master where type = 'table'")
    assert sorted(name for (name,) in tables) == ["online_marks", "online_vectors"]


def test_a_sqlite_reader_never_answers_from_vectors_older_than_the_file(tmp_path: Path) -> None:
    """`get_one` keeps decoded vectors between calls, but any commit to the file, by this
    store's writer or by another process's connection, makes it read again (misses too)."""
    path = tmp_path / "online_store.sqlite"
    rows = [{"user_id": 1, "feature_timestamp": T0, "v": 1}]
    with SqliteOnlineStore(path) as serving, SqliteOnlineStore(path) as materializer:
        assert serving.get_one("fs", 2) is None
        materializer.write("fs", frame(rows), ["user_id"])
        first = serving.get_one("fs", 1)
        assert first is not None and first.values == {"v": 1}
        assert serving.get_one("fs", 1) is first  # kept while nothing was committed
        materializer.write("fs", frame([{**rows[0], "feature_timestamp": minute(1), "v": 2}]),
                           ["user_id"])  # fmt: skip
        assert serving.get_one("fs", 1).values == {"v": 2}  # type: ignore[union-attr]
        serving.write("fs", frame([{**rows[0], "user_id": 2}]), ["user_id"])  # its own writer
        assert serving.get_one("fs", 2) is not None
        other = sqlite3.connect(path)  # a plain connection elsewhere: deletes the vector
        other.execute("delete from online_vectors where entity_key = '1'")
        other.commit()
        other.close()
        assert serving.get_one("fs", 1) is None


# --------------------------------------------------------------------------------------------
# 6. unknown entities and clear errors


def test_unknown_entity_or_feature_set_is_none(store: OnlineStore) -> None:
    store.write("fs", frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]), ["user_id"])

    assert store.get_one("fs", 2) is None
    assert store.get_one("other_fs", 1) is None
    assert [v is None for v in store.get("fs", [2, 1, 2])] == [True, False, True]
    assert store.get("fs", []) == []


@pytest.mark.parametrize(
    ("drop", "key_columns", "message"),
    [
        ("user_id", ["user_id"], "user_id"),
        ("feature_timestamp", ["user_id"], "feature_timestamp"),
        (None, ["user_id", "region"], "region"),
    ],
)
def test_missing_key_or_timestamp_column_is_a_clear_error(
    store: OnlineStore, drop: str | None, key_columns: list[str], message: str
) -> None:
    rows = frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}])
    if drop:
        rows = rows.drop(columns=[drop])

    with pytest.raises(ValueError, match=rf"lack column\(s\) \['{message}'\]"):
        store.write("fs", rows, key_columns)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (pd.DataFrame({"user_id": [1, None], "feature_timestamp": [T0, T0]}), "NULLs"),
        (pd.DataFrame({"user_id": [1], "feature_timestamp": [pd.NaT]}), "event time"),
        (pd.DataFrame({"user_id": [1], "feature_timestamp": ["2024-03-10"]}), "must hold"),
    ],
)
def test_rows_without_key_or_event_time_are_rejected(
    sqlite_store: SqliteOnlineStore, rows: pd.DataFrame, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sqlite_store.write("fs", rows, ["user_id"])
    assert sqlite_store.get_one("fs", 1) is None


def test_empty_write_reports_nothing(store: OnlineStore) -> None:
    rows = frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]).iloc[:0]

    assert store.write("fs", rows, ["user_id"]) == WriteReport(written=0, skipped=0)


def test_feature_set_name_that_could_collide_is_rejected(store: OnlineStore) -> None:
    with pytest.raises(ValueError, match="feature set name"):
        store.write("a:b", frame([{"user_id": 1, "feature_timestamp": T0}]), ["user_id"])


def test_marks_are_kept_beside_the_vectors_and_leave_them_alone(store: OnlineStore) -> None:
    """A mark (what the store was materialised from) reads back the last value set; it is
    not a feature set's vector, and a vector write leaves it as it was."""
    assert store.mark("materialized:fs:blue") is None
    store.write("fs", frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]), ["user_id"])
    store.set_mark("materialized:fs:blue", "p1")
    store.set_mark("materialized:fs:blue", "p2")
    store.set_mark("materialized:fs:green", "p0")
    store.write(
        "fs",
        frame([{"user_id": 1, "feature_timestamp": T0 + timedelta(hours=1), "v": 2}]),
        ["user_id"],
    )
    assert (store.mark("materialized:fs:blue"), store.mark("materialized:fs:green")) == (
        "p2",
        "p0",
    )
    assert store.get_one("fs", 1).values == {"v": 2}  # type: ignore[union-attr]


def test_a_sqlite_file_from_before_marks_gains_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "online.sqlite"
    with SqliteOnlineStore(path) as store:
        store.write("fs", frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]), ["user_id"])
    with sqlite3.connect(path) as con:
        con.execute("drop table online_marks")
    with SqliteOnlineStore(path) as store:
        assert store.mark("m") is None
        store.set_mark("m", "p")
        assert store.mark("m") == "p"
        assert store.get_one("fs", 1).values == {"v": 1}  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# the factory


def test_default_store_is_a_wal_sqlite_file_under_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, online_store_url=None)
    with open_online_store(settings) as store:
        store.write("fs", frame([{"user_id": 1, "feature_timestamp": T0, "v": 1}]), ["user_id"])

    path = tmp_path / "online" / "online_store.sqlite"
    assert isinstance(store, SqliteOnlineStore) and store.path == path
    con = sqlite3.connect(path)
    try:
        assert con.execute("pragma journal_mode").fetchone() == ("wal",)
    finally:
        con.close()


@pytest.mark.redis
def test_redis_url_opens_the_redis_store(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    settings = Settings(data_dir=tmp_path, online_store_url=REDIS_URL)
    feature_set = fresh_feature_set()
    with open_online_store(settings) as store:
        assert isinstance(store, RedisOnlineStore)
        store.write(feature_set, frame([{"user_id": 1, "feature_timestamp": T0}]), ["user_id"])
        assert store.get_one(feature_set, 1) is not None
        store._client.delete(f"{store.namespace}{feature_set}:1")


def test_unknown_url_scheme_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, online_store_url="memcached://127.0.0.1:11211")
    with pytest.raises(ValueError, match="unknown scheme 'memcached'"):
        open_online_store(settings)


def test_unreachable_redis_names_the_url_without_its_password(tmp_path: Path) -> None:
    url = "redis://loopline:s3cret@127.0.0.1:1/0"  # port 1: nothing listens there
    settings = Settings(data_dir=tmp_path, online_store_url=url)
    with pytest.raises(OnlineStoreUnavailableError, match=re.escape("127.0.0.1:1/0")) as raised:
        open_online_store(settings)
    assert "s3cret" not in str(raised.value)
