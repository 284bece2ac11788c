"""The point-in-time training-set builder, against a real DuckDB and a brute-force oracle."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.features.pit import FeatureRequest, TrainingSet, build_training_set, content_hash

# US daylight saving starts at 07:00 UTC on this day, inside the minute grid used below
T0 = datetime(2024, 3, 10, 6, 55)
ZONES = (None, "UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
FUTURE = -999  # sentinel: feature_timestamp after every entity row's time for that key
BACKFILLED = -998  # sentinel: on time, but created after every entity row's time for that key
UNKNOWN = -997  # sentinel: on time, but with a NULL created_at


def minute(k: int) -> datetime:
    """Return the naive UTC time k minutes after T0."""
    return T0 + timedelta(minutes=k)


# --------------------------------------------------------------------------------------------
# fixtures and helpers

A_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("feature_timestamp", pa.timestamp("us")),
        ("created_at", pa.timestamp("us")),
        ("feature_set_version", pa.string()),
        ("spend", pa.int64()),
        ("visits", pa.int64()),
    ]
)
B_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("region", pa.string()),
        ("feature_timestamp", pa.timestamp("us")),
        ("created_at", pa.timestamp("us")),
        ("feature_set_version", pa.string()),
        ("spend", pa.int64()),
        ("score", pa.int64()),
    ]
)
A_FEATURES = ("spend", "visits")
B_FEATURES = ("spend", "score")
B_PREFIX = "b_"


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with an empty `features` schema."""
    connection = duckdb.connect()
    connection.execute("create schema features")
    yield connection
    connection.close()


def create_table(
    con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, rows: Sequence[dict[str, Any]]
) -> None:
    """Create a DuckDB table from dict rows with an explicit Arrow schema."""
    table = pa.Table.from_pylist(list(rows), schema=schema)
    con.register("staged_rows", table)
    con.execute(f"create table {name} as select * from staged_rows")
    con.unregister("staged_rows")


def a_row(
    user_id: int | None,
    ft: datetime | None,
    created_at: datetime | None,
    spend: int | None,
    version: str = "v1",
    visits: int | None = 0,
) -> dict[str, Any]:
    """Return one row of the `features.a` set (keyed by user_id)."""
    return {
        "user_id": user_id,
        "feature_timestamp": ft,
        "created_at": created_at,
        "feature_set_version": version,
        "spend": spend,
        "visits": visits,
    }


def entities(
    user_ids: Sequence[int], times: Sequence[datetime], tz: str | None = None
) -> pd.DataFrame:
    """Return entity rows with a label, naive UTC or converted to `tz`."""
    stamps = pd.Series(pd.to_datetime(list(times)))
    if tz is not None:
        stamps = stamps.dt.tz_localize("UTC").dt.tz_convert(tz)
    return pd.DataFrame(
        {"user_id": list(user_ids), "event_timestamp": stamps, "label": range(len(user_ids))}
    )


def a_request(**kwargs: Any) -> FeatureRequest:
    """Return a request for `features.a` on user_id."""
    return FeatureRequest("features.a", ("user_id",), **kwargs)


def spend(training: TrainingSet, column: str = "spend") -> list[int | None]:
    """Return a feature column as Python ints with None for NULL."""
    return [None if pd.isna(v) else int(v) for v in training.frame[column]]


# --------------------------------------------------------------------------------------------
# brute-force oracle: a loop over rows that states the rules as plainly as possible


@functools.total_ordering
@dataclass(frozen=True)
class Desc:
    """Wraps a value so that larger values sort first."""

    value: Any

    def __lt__(self, other: Desc) -> bool:
        return bool(other.value < self.value)


def desc_nulls_last(value: Any) -> tuple[int, Any]:
    return (1, 0) if value is None else (0, Desc(value))


def asc_nulls_last(value: Any) -> tuple[int, Any]:
    return (1, 0) if value is None else (0, value)


def oracle_match(
    feature_rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    features: Sequence[str],
    entity: dict[str, Any],
    t: datetime,
    ttl: timedelta | None,
    as_known_at: bool,
) -> dict[str, Any] | None:
    """Return the feature row the rules pick for one entity row, or None."""
    candidates = []
    for row in feature_rows:
        if any(entity[k] is None or row[k] is None or row[k] != entity[k] for k in keys):
            continue
        ft = row["feature_timestamp"]
        if ft is None or ft > t:
            continue
        if ttl is not None and ft < t - ttl:
            continue
        if as_known_at and (row["created_at"] is None or row["created_at"] > t):
            continue
        candidates.append(row)
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda row: (
            Desc(row["feature_timestamp"]),
            desc_nulls_last(row["created_at"]),
            desc_nulls_last(row["feature_set_version"]),
            *(asc_nulls_last(row[f]) for f in features),
        ),
    )


# --------------------------------------------------------------------------------------------
# hypothesis strategies: a tiny grid of times and keys so that ties and boundaries are common

minutes = st.integers(0, 12)
small_values = st.sampled_from([None, *range(-5, 6)])  # NULL one time in twelve
versions = st.sampled_from(["v1", "v2"])
user_ids = st.sampled_from([0, 1, 2, None])  # NULL keys never match
regions = st.sampled_from(["eu", "us"])
TIE_FIELDS = frozenset({"spend", "visits", "score"})
ttls = st.one_of(st.none(), st.integers(0, 4).map(lambda k: timedelta(minutes=k)))


@st.composite
def feature_row(draw: st.DrawFn, values: tuple[str, ...], region: bool) -> dict[str, Any]:
    """Return one feature row; created_at is usually a small lag after feature_timestamp."""
    ft = minute(draw(minutes))
    lag = draw(st.sampled_from([0, -1, 1, None, 0, 2, 3]))  # on time, early, NULL, backfilled
    row: dict[str, Any] = {"user_id": draw(user_ids)}
    if region:
        row["region"] = draw(regions)
    row |= {
        "feature_timestamp": ft,
        "created_at": None if lag is None else ft + timedelta(minutes=lag),
        "feature_set_version": draw(versions),
    }
    return row | {value: draw(small_values) for value in values}


@st.composite
def with_ties(
    draw: st.DrawFn, rows: st.SearchStrategy[dict[str, Any]], min_size: int, max_size: int
) -> list[dict[str, Any]]:
    """Return feature rows plus copies tying on keys and feature_timestamp (some on created_at)."""
    base = draw(st.lists(rows, min_size=min_size, max_size=max_size))
    copies = []
    for i in draw(st.lists(st.integers(0, len(base) - 1), max_size=5)):
        copy = dict(base[i], feature_set_version=draw(versions))
        if draw(st.booleans()):  # a later or earlier restatement of the same observation
            lag = draw(st.sampled_from([None, -1, 0, 1, 2, 3]))
            copy["created_at"] = (
                None if lag is None else copy["feature_timestamp"] + timedelta(minutes=lag)
            )
        copies.append({k: draw(small_values) if k in TIE_FIELDS else v for k, v in copy.items()})
    return draw(st.permutations(base + copies))


@st.composite
def entity_rows(draw: st.DrawFn, anchors: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Return entity rows (naive UTC times), some on `anchors`, some deliberately repeated."""
    anywhere = st.fixed_dictionaries(
        {"user_id": user_ids, "region": regions, "t": minutes.map(minute)}
    )
    # two rows in three sit on an anchor, where the rules are most likely to go wrong
    row = st.one_of(anywhere, *[st.sampled_from(anchors)] * 2) if anchors else anywhere
    base = draw(st.lists(row, min_size=2, max_size=10))
    repeats = draw(st.lists(st.integers(0, len(base) - 1), max_size=4))
    rows = draw(st.permutations(base + [base[i] for i in repeats]))
    return [{**row, "tag": f"row{i}"} for i, row in enumerate(rows)]


@dataclass(frozen=True)
class Scenario:
    """Two feature tables, their TTLs and entity rows whose times often sit on a rule's edge."""

    a: list[dict[str, Any]]
    b: list[dict[str, Any]]
    ttl_a: timedelta | None
    ttl_b: timedelta | None
    rows: list[dict[str, Any]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    a = draw(with_ties(feature_row(A_FEATURES, region=False), min_size=2, max_size=12))
    b = draw(with_ties(feature_row(B_FEATURES, region=True), min_size=1, max_size=8))
    ttl_a, ttl_b = draw(ttls), draw(ttls)
    # entity rows with a feature row's keys, at a time where a rule flips for that row: at its
    # feature_timestamp or created_at, or where it leaves the TTL window
    anchors = []
    for table, ttl in ((a, ttl_a), (b, ttl_b)):
        for row in table:
            edges = [row["feature_timestamp"], row["created_at"]]
            if ttl is not None:
                edges.append(row["feature_timestamp"] + ttl)
            region = row.get("region", "eu")
            anchors += [
                {"user_id": row["user_id"], "region": region, "t": t}
                for t in edges
                if t is not None
            ]
    return Scenario(a, b, ttl_a, ttl_b, draw(entity_rows(anchors)))


def entity_frame(rows: Sequence[dict[str, Any]], tz: str | None) -> pd.DataFrame:
    """Return the entity rows as a frame; times are expressed in `tz` when given."""
    stamps = pd.Series(pd.to_datetime([row["t"] for row in rows]))
    if tz is not None:
        stamps = stamps.dt.tz_localize("UTC").dt.tz_convert(tz)
    return pd.DataFrame(
        {
            "user_id": pd.array([row["user_id"] for row in rows], dtype="Int64"),
            "region": [row["region"] for row in rows],
            "event_timestamp": stamps,
            "tag": [row["tag"] for row in rows],
        }
    )


def normalise(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


# --------------------------------------------------------------------------------------------
# 1. property test against the oracle


@pytest.mark.parametrize("as_known_at", [False, True], ids=["as-of", "as-known-at"])
@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), tz=st.sampled_from(ZONES))
def test_builder_matches_brute_force_oracle(
    scenario: Scenario, as_known_at: bool, tz: str | None
) -> None:
    """Every feature value, NULL or not, equals what the row-by-row rules pick."""
    a, b, ttl_a, ttl_b, rows = scenario.a, scenario.b, scenario.ttl_a, scenario.ttl_b, scenario.rows
    with duckdb.connect() as con:
        con.execute("create schema features")
        create_table(con, "features.a", A_SCHEMA, a)
        create_table(con, "features.b", B_SCHEMA, b)
        frame = entity_frame(rows, tz)
        requests = [
            FeatureRequest("features.a", ("user_id",), ttl=ttl_a),  # features=None: all of them
            FeatureRequest(
                "features.b", ("user_id", "region"), B_FEATURES, ttl=ttl_b, prefix=B_PREFIX
            ),
        ]
        training = build_training_set(con, frame, requests, as_known_at=as_known_at)

    out = training.frame
    assert len(out) == len(rows)
    assert list(out.columns) == [*frame.columns, *A_FEATURES, *(B_PREFIX + f for f in B_FEATURES)]
    pd.testing.assert_frame_equal(out[list(frame.columns)], frame)  # pass-through unchanged

    mismatches = []
    used: dict[str, set[str]] = {"features.a": set(), "features.b": set()}
    for i, row in enumerate(rows):
        for relation, table, keys, features, ttl, prefix in (
            ("features.a", a, ("user_id",), A_FEATURES, ttl_a, ""),
            ("features.b", b, ("user_id", "region"), B_FEATURES, ttl_b, B_PREFIX),
        ):
            match = oracle_match(table, keys, features, row, row["t"], ttl, as_known_at)
            if match is not None:
                used[relation].add(match["feature_set_version"])
            for feature in features:
                expected = None if match is None else match[feature]
                actual = normalise(out[prefix + feature].iloc[i])
                if actual != expected:
                    mismatches.append((i, prefix + feature, expected, actual))
    assert mismatches == []
    assert training.feature_set_versions == {rel: sorted(vs) for rel, vs in used.items()}
    times = [row["t"] for row in rows]
    assert training.data_window == (min(times), max(times))


# --------------------------------------------------------------------------------------------
# 2. leakage: sentinels planted in the future or backfilled after t never reach the output


@st.composite
def leaky_scenario(
    draw: st.DrawFn,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return entity rows and feature rows with sentinels that would leak for every row."""
    rows = draw(entity_rows())
    features = draw(st.lists(feature_row(A_FEATURES, region=False), max_size=10))
    for user_id in {row["user_id"] for row in rows if row["user_id"] is not None}:
        latest = max(row["t"] for row in rows if row["user_id"] == user_id)
        after = st.sampled_from([timedelta(microseconds=1), timedelta(minutes=1)])
        for _ in range(draw(st.integers(1, 3))):
            created = draw(st.one_of(st.none(), minutes.map(minute)))
            features.append(a_row(user_id, latest + draw(after), created, FUTURE, "future"))
        for _ in range(draw(st.integers(1, 3))):
            ft = min(draw(minutes.map(minute)), latest)
            features.append(a_row(user_id, ft, latest + draw(after), BACKFILLED, "backfill"))
        for _ in range(draw(st.integers(0, 2))):
            ft = min(draw(minutes.map(minute)), latest)
            features.append(a_row(user_id, ft, None, UNKNOWN, "unknown"))
    return rows, features


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=leaky_scenario(), ttl=ttls, tz=st.sampled_from(ZONES))
def test_no_sentinel_from_the_future_or_a_backfill_reaches_the_output(
    scenario: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    ttl: timedelta | None,
    tz: str | None,
) -> None:
    """Rows after t never leak; with as_known_at, rows created after t or of unknown age neither."""
    rows, features = scenario
    with duckdb.connect() as con:
        con.execute("create schema features")
        create_table(con, "features.a", A_SCHEMA, features)
        frame = entity_frame(rows, tz)
        plain = build_training_set(con, frame, [a_request(ttl=ttl)])
        known = build_training_set(con, frame, [a_request(ttl=ttl)], as_known_at=True)
    assert len(plain.frame) == len(known.frame) == len(rows)
    assert FUTURE not in spend(plain)
    assert "future" not in plain.feature_set_versions["features.a"]
    assert not {FUTURE, BACKFILLED, UNKNOWN} & set(spend(known))
    assert set(known.feature_set_versions["features.a"]) <= {"v1", "v2"}


def test_without_as_known_at_a_backfilled_row_is_used(con: duckdb.DuckDBPyConnection) -> None:
    """The sentinel check above can fail: a backfilled row wins unless as_known_at is on."""
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [
            a_row(1, minute(0), minute(0), 1),
            a_row(1, minute(5), minute(9), BACKFILLED),
        ],
    )
    frame = entities([1], [minute(5)])
    assert spend(build_training_set(con, frame, [a_request()])) == [BACKFILLED]
    assert spend(build_training_set(con, frame, [a_request()], as_known_at=True)) == [1]


# --------------------------------------------------------------------------------------------
# 3. one hand-written example per rule


def test_latest_feature_timestamp_at_or_before_t_wins(con: duckdb.DuckDBPyConnection) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [
            a_row(1, minute(1), minute(1), 1),
            a_row(1, minute(3), minute(3), 3),
            a_row(1, minute(4), minute(4), 4),
        ],
    )
    training = build_training_set(
        con, entities([1, 1, 1], [minute(0), minute(3), minute(9)]), [a_request()]
    )
    assert spend(training) == [None, 3, 4]


def test_feature_one_microsecond_after_t_is_not_used(con: duckdb.DuckDBPyConnection) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [
            a_row(1, minute(0), minute(0), 1),
            a_row(1, minute(2) + timedelta(microseconds=1), minute(0), 2),
        ],
    )
    assert spend(build_training_set(con, entities([1], [minute(2)]), [a_request()])) == [1]


def test_nanosecond_entity_times_compare_as_their_microsecond_floor(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """DuckDB TIMESTAMP holds microseconds; flooring keeps `feature_timestamp <= t` exact."""
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(2), minute(0), 2)])
    at = pd.Timestamp(minute(2)).as_unit("ns")
    frame = entities([1, 1], [minute(0), minute(0)]).assign(
        event_timestamp=pd.Series([at + pd.Timedelta(500, "ns"), at - pd.Timedelta(500, "ns")])
    )
    assert spend(build_training_set(con, frame, [a_request()])) == [2, None]


def test_tie_on_feature_timestamp_goes_to_latest_created_at(
    con: duckdb.DuckDBPyConnection,
) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [
            a_row(1, minute(2), minute(3), 3),
            a_row(1, minute(2), minute(5), 5),
            a_row(1, minute(2), minute(4), 4),
        ],
    )
    assert spend(build_training_set(con, entities([1], [minute(9)]), [a_request()])) == [5]


def test_null_created_at_loses_a_tie(con: duckdb.DuckDBPyConnection) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(2), None, 99), a_row(1, minute(2), minute(0), 7)],
    )
    assert spend(build_training_set(con, entities([1], [minute(9)]), [a_request()])) == [7]


def test_null_created_at_still_matches_without_as_known_at(
    con: duckdb.DuckDBPyConnection,
) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(2), None, 7)])
    assert spend(build_training_set(con, entities([1], [minute(9)]), [a_request()])) == [7]


def test_ttl_lower_bound_is_inclusive(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(2), minute(2), 2)])
    frame = entities([1, 1, 1], [minute(5), minute(5) + timedelta(microseconds=1), minute(2)])
    training = build_training_set(con, frame, [a_request(ttl=timedelta(minutes=3))])
    assert spend(training) == [2, None, 2]


def test_ttl_zero_matches_only_a_feature_at_exactly_t(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(2), minute(2), 2)])
    training = build_training_set(
        con, entities([1, 1], [minute(2), minute(3)]), [a_request(ttl=timedelta(0))]
    )
    assert spend(training) == [2, None]


def test_ttl_does_not_fall_back_to_an_older_row(con: duckdb.DuckDBPyConnection) -> None:
    """Only rows inside the window count; an expired latest row means no match, not an older one."""
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(0), minute(0), 0), a_row(1, minute(1), minute(1), 1)],
    )
    training = build_training_set(
        con, entities([1], [minute(9)]), [a_request(ttl=timedelta(minutes=2))]
    )
    assert spend(training) == [None]


def test_as_known_at_excludes_null_created_at(con: duckdb.DuckDBPyConnection) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(1), minute(1), 1), a_row(1, minute(2), None, 2)],
    )
    frame = entities([1], [minute(9)])
    assert spend(build_training_set(con, frame, [a_request()], as_known_at=True)) == [1]


def test_as_known_at_accepts_a_row_stamped_and_created_exactly_at_t(
    con: duckdb.DuckDBPyConnection,
) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(1), minute(1), 1), a_row(1, minute(5), minute(5), 2)],
    )
    frame = entities([1, 1], [minute(5), minute(5) - timedelta(microseconds=1)])
    assert spend(build_training_set(con, frame, [a_request()], as_known_at=True)) == [2, 1]


def test_as_known_at_falls_back_to_the_latest_row_known_at_t(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """A tie lost to a backfill is won by the version that was known at t."""
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(2), minute(2), 20, "v1"), a_row(1, minute(2), minute(8), 21, "v2")],
    )
    frame = entities([1], [minute(5)])
    known = build_training_set(con, frame, [a_request()], as_known_at=True)
    assert spend(known) == [20]
    assert known.feature_set_versions == {"features.a": ["v1"]}


@pytest.mark.parametrize(
    "origin", [datetime(1970, 1, 1), datetime(1969, 12, 31, 23, 58), datetime(2024, 3, 10)]
)
@pytest.mark.parametrize("ttl_us", [1, 7, 60_000_000])
def test_as_known_at_with_a_ttl_is_exact_at_the_time_bucket_edges(
    con: duckdb.DuckDBPyConnection, origin: datetime, ttl_us: int
) -> None:
    """With a TTL the candidates are also matched on a time bucket as wide as the TTL: rows on
    each side of a bucket edge, before and after 1970 (negative epoch), at t - ttl and at t,
    give what the row-by-row rules give."""
    ttl = timedelta(microseconds=ttl_us)
    offsets = sorted({k * ttl_us + d for k in range(-2, 3) for d in (-1, 0, 1)})
    rows = [
        a_row(1, origin + timedelta(microseconds=o), origin + timedelta(microseconds=o + lag), i)
        for i, o in enumerate(offsets)
        for lag in (0, ttl_us // 2)
    ]
    create_table(con, "features.a", A_SCHEMA, rows)
    times = [origin + timedelta(microseconds=o + d) for o in offsets for d in (0, ttl_us)]
    # before every row, and past the last one's TTL: no match
    times += [
        origin + timedelta(microseconds=o) for o in (offsets[0] - 1, offsets[-1] + ttl_us + 1)
    ]
    training = build_training_set(
        con, entities([1] * len(times), times), [a_request(ttl=ttl)], as_known_at=True
    )
    expected = [
        None if m is None else m["spend"]
        for m in (oracle_match(rows, ("user_id",), A_FEATURES, {"user_id": 1}, t, ttl, True)
                  for t in times)
    ]  # fmt: skip
    assert spend(training) == expected
    assert any(v is not None for v in expected) and None in expected


def test_no_match_gives_null_features(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(5), minute(5), 5, visits=1)])
    training = build_training_set(
        con, entities([1, 2, 1], [minute(0), minute(9), minute(9)]), [a_request()]
    )
    assert spend(training) == [None, None, 5]
    assert spend(training, "visits") == [None, None, 1]
    assert training.feature_set_versions == {"features.a": ["v1"]}


def test_null_entity_key_never_matches(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(None, minute(0), minute(0), 5)])
    frame = entities([1], [minute(9)]).assign(user_id=pd.array([None], dtype="Int64"))
    assert spend(build_training_set(con, frame, [a_request()])) == [None]


def test_duplicate_entity_rows_are_kept_in_input_order(con: duckdb.DuckDBPyConnection) -> None:
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [a_row(1, minute(0), minute(0), 10), a_row(2, minute(0), minute(0), 20)],
    )
    frame = entities([2, 1, 2, 2, 1], [minute(1)] * 5)
    frame.index = [50, 40, 30, 20, 10]
    training = build_training_set(con, frame, [a_request()])
    assert spend(training) == [20, 10, 20, 20, 10]
    assert training.frame["label"].tolist() == [0, 1, 2, 3, 4]
    assert training.frame.index.tolist() == [0, 1, 2, 3, 4]


def test_input_frame_is_not_modified(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    frame = entities([1], [minute(1)], tz="Asia/Kolkata")
    before = frame.copy(deep=True)
    build_training_set(con, frame, [a_request()])
    pd.testing.assert_frame_equal(frame, before)


def test_tz_aware_entity_times_are_compared_in_utc(con: duckdb.DuckDBPyConnection) -> None:
    """09:00 in Tokyo is 00:00 UTC: a feature at 00:00 UTC is visible, one at 00:30 UTC is not."""
    create_table(
        con,
        "features.a",
        A_SCHEMA,
        [
            a_row(1, datetime(2024, 1, 1, 0, 0), datetime(2024, 1, 1), 0),
            a_row(1, datetime(2024, 1, 1, 0, 30), datetime(2024, 1, 1), 30),
        ],
    )
    frame = pd.DataFrame(
        {"user_id": [1], "event_timestamp": [pd.Timestamp("2024-01-01 09:00", tz="Asia/Tokyo")]}
    )
    training = build_training_set(con, frame, [a_request()])
    assert spend(training) == [0]
    assert training.data_window == (datetime(2024, 1, 1), datetime(2024, 1, 1))
    assert training.frame["event_timestamp"].dt.tz is not None  # passed through as given


def test_arrow_entity_rows_and_custom_timestamp_column(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    table = pa.table(
        {"user_id": [1, 1], "as_of": pa.array([minute(1), T0 - timedelta(1)], pa.timestamp("us"))}
    )
    training = build_training_set(con, table, [a_request()], timestamp_column="as_of")
    assert spend(training) == [10, None]


def test_two_feature_sets_combine_as_columns(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10, visits=3)])
    create_table(
        con,
        "features.b",
        B_SCHEMA,
        [
            {
                "user_id": 1,
                "region": "eu",
                "feature_timestamp": minute(0),
                "created_at": minute(0),
                "feature_set_version": "b1",
                "spend": 7,
                "score": 8,
            }
        ],
    )
    frame = entities([1, 1], [minute(1), minute(1)]).assign(region=["eu", "us"])
    requests = [
        a_request(features=("spend",)),
        FeatureRequest("features.b", ("user_id", "region"), ("spend", "score"), prefix="b_"),
    ]
    training = build_training_set(con, frame, requests)
    assert list(training.frame.columns) == [*frame.columns, "spend", "b_spend", "b_score"]
    assert spend(training) == [10, 10]
    assert spend(training, "b_spend") == [7, None]
    assert training.feature_set_versions == {"features.a": ["v1"], "features.b": ["b1"]}
    assert training.feature_columns == {
        "features.a": ["spend"],
        "features.b": ["b_spend", "b_score"],
    }


def test_one_relation_can_be_requested_twice_with_prefixes(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """A fresh-only and an any-age view of the same set sit side by side."""
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    requests = [
        a_request(features=("spend",), ttl=timedelta(minutes=2), prefix="fresh_"),
        a_request(features=("spend",), prefix="any_"),
    ]
    training = build_training_set(con, entities([1, 1], [minute(2), minute(3)]), requests)
    assert spend(training, "fresh_spend") == [10, None]
    assert spend(training, "any_spend") == [10, 10]
    assert training.feature_columns == {"features.a": ["fresh_spend", "any_spend"]}


def test_name_clash_between_sets_raises_and_suggests_prefix(
    con: duckdb.DuckDBPyConnection,
) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    create_table(con, "features.b", B_SCHEMA, [])
    frame = entities([1], [minute(0)]).assign(region=["eu"])
    requests = [a_request(), FeatureRequest("features.b", ("user_id", "region"))]
    with pytest.raises(ValueError, match=r"'spend'.*prefix"):
        build_training_set(con, frame, requests)


def test_name_clash_with_an_entity_column_raises(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    frame = entities([1], [minute(0)]).assign(Visits=[3])
    with pytest.raises(ValueError, match=r"'visits'.*entity rows.*prefix"):
        build_training_set(con, frame, [a_request()])


def test_prefix_resolves_a_clash(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    frame = entities([1], [minute(1)]).assign(spend=[-1])
    training = build_training_set(con, frame, [a_request(prefix="a__")])
    assert training.frame["spend"].tolist() == [-1]
    assert spend(training, "a__spend") == [10]


def test_missing_entity_key_column_is_named(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    frame = entities([1], [minute(0)]).drop(columns=["user_id"])
    with pytest.raises(ValueError, match=r"entity rows lack column\(s\) \['user_id'\]"):
        build_training_set(con, frame, [a_request()])


def test_missing_timestamp_column_is_named(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    with pytest.raises(ValueError, match=r"\['snapshot_at'\]"):
        build_training_set(
            con, entities([1], [minute(0)]), [a_request()], timestamp_column="snapshot_at"
        )


def test_non_datetime_timestamp_column_raises(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    frame = entities([1], [minute(0)]).assign(event_timestamp=["2024-01-01"])
    with pytest.raises(ValueError, match=r"pd\.to_datetime"):
        build_training_set(con, frame, [a_request()])


def test_null_entity_timestamp_raises(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [])
    frame = entities([1, 1], [minute(0), minute(0)])
    frame = frame.assign(event_timestamp=frame["event_timestamp"].where([True, False]))
    with pytest.raises(ValueError, match="1 NULL"):
        build_training_set(con, frame, [a_request()])


def test_missing_relation_columns_are_named(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table features.thin as select 1 as user_id, timestamp '2024-01-01' as created_at"
    )
    request = FeatureRequest("features.thin", ("user_id",), ("spend",))
    with pytest.raises(
        ValueError, match=r"\['feature_timestamp', 'feature_set_version', 'spend'\]"
    ):
        build_training_set(con, entities([1], [minute(0)]), [request])


def test_relation_not_found_raises(con: duckdb.DuckDBPyConnection) -> None:
    request = FeatureRequest("features.nope", ("user_id",))
    with pytest.raises(ValueError, match=r"'features.nope' not found"):
        build_training_set(con, entities([1], [minute(0)]), [request])


def test_tz_aware_feature_timestamp_is_rejected(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table features.tz as select 1 as user_id, 'v1' as feature_set_version, 1 as x, "
        "timestamptz '2024-01-01 00:00:00+00' as feature_timestamp, "
        "timestamp '2024-01-01' as created_at"
    )
    with pytest.raises(ValueError, match="naive UTC TIMESTAMP"):
        build_training_set(
            con, entities([1], [minute(0)]), [FeatureRequest("features.tz", ("user_id",))]
        )


def catalogue(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """Return every table and view the connection can see, temporary ones included."""
    return sorted(
        con.sql(
            "select database_name, table_name from duckdb_tables() union all "
            "select database_name, view_name from duckdb_views() where not internal"
        ).fetchall()
    )


def test_connection_is_left_as_found_even_after_an_error(con: duckdb.DuckDBPyConnection) -> None:
    create_table(con, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    before = catalogue(con)
    build_training_set(con, entities([1], [minute(1)]), [a_request()])
    assert catalogue(con) == before
    frame = entities([1], [minute(1)]).assign(user_id=["not-a-number"])
    with pytest.raises(ValueError, match=r"'features.a'.*key types"):
        build_training_set(con, frame, [a_request()])
    assert catalogue(con) == before


def test_works_on_a_read_only_warehouse(tmp_path: Path) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(path) as writer:
        writer.execute("create schema features")
        create_table(writer, "features.a", A_SCHEMA, [a_row(1, minute(0), minute(0), 10)])
    with duckdb.connect(path, read_only=True) as reader:
        training = build_training_set(reader, entities([1], [minute(1)]), [a_request()])
    assert spend(training) == [10]


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError, match="not a plain"):
        FeatureRequest("features.a; drop table x", ("user_id",))
    with pytest.raises(ValueError, match="negative"):
        FeatureRequest("features.a", ("user_id",), ttl=timedelta(minutes=-1))
    with pytest.raises(ValueError, match="entity keys"):
        FeatureRequest("features.a", ("user_id",), ("user_id", "spend"))
    bare_key: Any = "user_id"  # a str, not a tuple: must not be split into characters
    assert FeatureRequest("features.a", bare_key).entity_keys == ("user_id",)


# --------------------------------------------------------------------------------------------
# 4. content hash and lineage


def hashed_training_set(spend_value: int, labels: Sequence[int] = (0, 1)) -> TrainingSet:
    """Build a small training set in a fresh connection."""
    with duckdb.connect() as con:
        con.execute("create schema features")
        create_table(
            con,
            "features.a",
            A_SCHEMA,
            [a_row(1, minute(0), minute(0), spend_value), a_row(2, minute(0), None, 4)],
        )
        frame = entities([1, 2], [minute(1), minute(2)], tz="America/New_York")
        return build_training_set(con, frame.assign(label=list(labels)), [a_request()])


def test_content_hash_is_stable_across_calls() -> None:
    first, second = hashed_training_set(10), hashed_training_set(10)
    assert first.content_hash == second.content_hash
    assert len(first.content_hash) == 64


def test_content_hash_changes_when_one_value_changes() -> None:
    base = hashed_training_set(10).content_hash
    assert hashed_training_set(11).content_hash != base
    assert hashed_training_set(10, labels=(0, 0)).content_hash != base


def test_content_hash_ignores_column_order_but_not_row_order() -> None:
    frame = hashed_training_set(10).frame
    assert content_hash(frame[frame.columns[::-1]]) == content_hash(frame)
    assert content_hash(frame.iloc[::-1].reset_index(drop=True)) != content_hash(frame)


def test_lineage_is_flat_strings_with_extra_tags() -> None:
    training = hashed_training_set(10)
    tags = training.lineage({"dbt.manifest_sha256": "abc123"})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    assert tags["training_set.content_hash"] == training.content_hash
    assert tags["training_set.rows"] == "2"
    assert tags["training_set.as_known_at"] == "false"
    assert tags["training_set.data_window_start"] == "2024-03-10T06:56:00Z"
    assert tags["feature_set_version.features.a"] == "v1"
    assert tags["dbt.manifest_sha256"] == "abc123"
    with pytest.raises(ValueError, match="overwrite"):
        training.lineage({"training_set.rows": "3"})
