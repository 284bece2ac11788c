"""The online refresh reads only the days a publication vouched for, and writes what reading
every day would (ml/features/materialize.py; real DuckDB, real publications, SQLite stores).

Each case runs a random history of builds on a small warehouse laid out as the project's
builds lay it out: each build writes the colour that is not live, rewrites its last days
(the lookback) and adds new ones, with late data changing values and `created_at` within
the lookback, a new feature-set version now and then, and some builds blocked (never
published). After each publication, pairs of online stores are refreshed: one the default
way, one reading every day; each pair must hold the same vectors. One pair misses some
publications (a refresh that did not run), another starts late (a new store).
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from loopline.publish import build_colour, publish
from loopline.settings import Settings
from loopline.warehouse import writing
from ml.features.definitions import FeatureSet
from ml.features.materialize import EVERY_DAY, materialize_online
from ml.features.online.sqlite import SqliteOnlineStore

DAILY = FeatureSet(
    "daily_days_test", "features.fs_test__days", ("user_id",), timedelta(days=1), online=True
)
START = date(2026, 3, 1)
LOOKBACK = 3
_COLUMNS = ("user_id", "as_of_date", "feature_timestamp", "created_at", "feature_set_version",
            "value")  # fmt: skip


@dataclass
class Company:
    """The sources: per (user, day, version) a value and when its last record landed."""

    rng: random.Random
    today: int = 10
    versions: list[str] = field(default_factory=lambda: ["v1"])
    truth: dict[tuple[int, int], tuple[float, datetime]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for day in range(self.today + 1):
            self._new_day(day)

    def _new_day(self, day: int) -> None:
        for user in range(1, 25):
            # users come and go: some stop for good, some skip days
            if (user % 7 == 0 and day > 6) or self.rng.random() < (0.6 if user % 3 else 0.2):
                continue
            landed = datetime.combine(START + timedelta(days=day + 1), datetime.min.time())
            self.truth[user, day] = (round(self.rng.uniform(0, 100), 3), landed)

    def next_day(self) -> None:
        self.today += 1
        self._new_day(self.today)
        # late data: a few rows of the last days change, landing now; some further back than
        # a build's lookback reaches, some on the first day it rewrites
        late = datetime.combine(START + timedelta(days=self.today + 1), datetime.min.time())
        recent = [key for key in self.truth if key[1] >= self.today - LOOKBACK - 2]
        for key in self.rng.sample(recent, k=min(6, len(recent))):
            self.truth[key] = (round(self.rng.uniform(0, 100), 3), late + timedelta(hours=1))
        if self.rng.random() < 0.1:
            self.versions.append(f"v{len(self.versions) + 1}")


def _ensure_colour(con: duckdb.DuckDBPyConnection, colour: str) -> None:
    schema = f"features__{colour}"
    con.execute(f"create schema if not exists {schema}")
    con.execute(
        f"create table if not exists {schema}.fs_test__days (user_id bigint, as_of_date date, "
        "feature_timestamp timestamp, created_at timestamp, feature_set_version varchar, "
        "value double)"
    )
    con.execute(
        f"create table if not exists {schema}.feature_builds (relation_name varchar primary "
        "key, feature_set_version varchar, rebuilt_from date, rebuilt_through date, "
        "built_at timestamp, unsettled_from date)"
    )
    con.execute(
        f"create table if not exists {schema}.feature_sets (feature_set_name varchar, "
        "feature_set_version varchar, definition_hash varchar, relation_name varchar, "
        "columns_json varchar, created_at timestamp)"
    )


def _build(settings: Settings, company: Company) -> str:
    """What an incremental feature build does to the colour that is not live."""
    colour = build_colour(settings)
    table = f"features__{colour}.fs_test__days"
    with writing(settings) as con:
        _ensure_colour(con, colour)
        first_written: int | None = None
        for number, version in enumerate(company.versions):
            (latest,) = con.execute(
                f"select max(as_of_date) from {table} where feature_set_version = ?", [version]
            ).fetchone()  # type: ignore[misc]
            start = 0 if latest is None else (latest - START).days - LOOKBACK
            start = max(start, 0)
            con.execute(
                f"delete from {table} where feature_set_version = ? and as_of_date >= ?",
                [version, START + timedelta(days=start)],
            )
            rows = [
                (user, START + timedelta(days=day), datetime.combine(
                    START + timedelta(days=day + 1), datetime.min.time()),
                 landed, version, value + number)
                for (user, day), (value, landed) in company.truth.items()
                if day >= start
            ]  # fmt: skip
            if rows:  # one insert (DuckDB's executemany runs a statement per row)
                frame = pd.DataFrame(rows, columns=list(_COLUMNS))  # noqa: F841 (read by name)
                con.execute(f"insert into {table} select * from frame")
            con.execute(
                f"insert into features__{colour}.feature_sets select ?, ?, 'hash', ?, ?, ? "
                f"where not exists (select 1 from features__{colour}.feature_sets "
                "where feature_set_version = ?)",
                [DAILY.name, version, DAILY.relation,
                 json.dumps([{"name": "value", "type": "DOUBLE"}]),
                 datetime(2026, 1, 1) + timedelta(days=number), version],
            )  # fmt: skip
            first_written = start if first_written is None else min(first_written, start)
        written = START + timedelta(days=first_written or 0)
        con.execute(
            f"insert into features__{colour}.feature_builds values "
            "('fs_test__days', ?, ?, ?, now()::timestamp, ?) on conflict (relation_name) do "
            "update set unsettled_from = least(coalesce(feature_builds.unsettled_from, "
            "excluded.unsettled_from), excluded.unsettled_from)",
            [company.versions[-1], written, START + timedelta(days=company.today), written],
        )
    return colour


def _vectors(store: SqliteOnlineStore) -> list[tuple]:
    with sqlite3.connect(store.path) as con:
        return sorted(
            con.execute(
                "select feature_set, feature_set_version, entity_key, feature_timestamp_us, "
                "created_at_us, vector_json from online_vectors"
            ).fetchall()
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reading_the_vouched_days_writes_what_reading_every_day_would(tmp_path, seed) -> None:
    rng = random.Random(seed)
    settings = Settings(data_dir=tmp_path / "data")
    company = Company(rng)
    pairs = {
        name: (
            SqliteOnlineStore(tmp_path / f"{name}-days.sqlite"),
            SqliteOnlineStore(tmp_path / f"{name}-every.sqlite"),
        )
        for name in ("each", "misses", "late")
    }
    narrowed = 0
    try:
        for step in range(14):
            if step:
                for _ in range(rng.choice([0, 1, 1, 2])):  # a build may add no day, or two
                    company.next_day()
            colour = _build(settings, company)
            if rng.random() < 0.2:
                continue  # the audit blocked it: not published, read again next time
            publish(settings, colour)
            with duckdb.connect(str(settings.resolved_warehouse_path), read_only=True) as con:
                for name, (days_store, every_store) in pairs.items():
                    if name == "misses" and rng.random() < 0.3:
                        continue  # this refresh did not run
                    if name == "late" and step < 6:
                        continue  # a store that did not exist yet
                    read = materialize_online(con, days_store, [DAILY])[DAILY.name]
                    every = materialize_online(con, every_store, [DAILY], every_day=True)
                    assert _vectors(days_store) == _vectors(every_store), (seed, step, name)
                    assert (read.written, read.rows <= every[DAILY.name].rows) == (
                        every[DAILY.name].written,
                        True,
                    )
                    narrowed += read.days.first is not None or not read.days.read
        assert narrowed >= 5  # the narrowing was exercised, not only the fallback
    finally:
        for pair in pairs.values():
            for store in pair:
                store.close()


def test_what_falls_back_to_reading_every_day(tmp_path) -> None:
    """A new store, a store that missed the colour's last publication and a mart built in
    place read every day; a rerun over the same publication reads nothing."""
    settings = Settings(data_dir=tmp_path / "data")
    company = Company(random.Random(7))
    store = SqliteOnlineStore(tmp_path / "store.sqlite")
    other = SqliteOnlineStore(tmp_path / "other.sqlite")
    path = str(settings.resolved_warehouse_path)
    try:
        for step in range(3):  # blue, green, blue
            company.next_day()
            publish(settings, _build(settings, company))
            with duckdb.connect(path, read_only=True) as con:
                first = materialize_online(con, store, [DAILY])[DAILY.name]
                again = materialize_online(con, store, [DAILY])[DAILY.name]
            # the first publication of each colour has no earlier one to read on from
            assert (first.days == EVERY_DAY) == (step < 2), step
            assert not again.days.read and again.written == again.skipped == 0, step
        with duckdb.connect(path, read_only=True) as con:  # never refreshed before
            assert materialize_online(con, other, [DAILY])[DAILY.name].days == EVERY_DAY
        company.next_day()
        publish(settings, _build(settings, company))  # green: `other` missed green's last
        with duckdb.connect(path, read_only=True) as con:
            assert materialize_online(con, other, [DAILY])[DAILY.name].days == EVERY_DAY
            assert materialize_online(con, store, [DAILY])[DAILY.name].days.first is not None
        with writing(settings) as con:  # a developer's build in place: a table, no colour
            con.execute(f"drop view {DAILY.relation}")
            con.execute(
                f"create table {DAILY.relation} as select * from features__green.fs_test__days"
            )
        with duckdb.connect(path, read_only=True) as con:
            assert materialize_online(con, store, [DAILY])[DAILY.name].days == EVERY_DAY
    finally:
        store.close()
        other.close()
