"""The one materialisation step: every online feature set, every version, to the online store.

For each feature set declared ``online`` in `ml.features.definitions`, the latest row per
entity *and version* (newest ``feature_timestamp``, then ``created_at``) is written to the
online store, which keys vectors by version: a new version computed over the same data lands
beside the old one, and a serving process reads the version its model was trained on. Writes
are newer-wins per (feature set, version, entity), so a rerun with no new rows writes nothing.

**Only the days a publication vouched for are read again.** Builds never write the live
colour, so after publication `P` of colour `C` the mart's days before the first day `C`'s
builds wrote since its previous publication `P_C` (kept per publication in
`monitoring.publication_days`) are the rows `C` held at `P_C`. When the store materialised
`P_C` (its mark for the feature set and `C` names `P_C`), it already holds a vector at least
as new as each of those rows, so reading the days from there on writes exactly what reading
every day would. When its mark names `P` itself (a rerun: `loopline build --select ...`, a
refresh after a no-op), it holds every row `P` serves, and nothing is read. Anything else
(no publication, a mart built in place, a new or emptied store, a store that missed `P_C`)
reads every day, and every materialisation leaves its mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from loopline.publish import published_colour
from loopline.warehouse import PUBLICATION_DAYS_TABLE, PUBLICATIONS_TABLE
from ml.features.definitions import ONLINE_FEATURE_SETS, FeatureSet, feature_columns, versions
from ml.features.online import open_online_store
from ml.features.online.base import OnlineStore, WriteReport

if TYPE_CHECKING:
    from loopline.settings import Settings


# the mart's day column: the one its builds record their days in (macros/features_as_of_days.sql)
DAY_COLUMN = "as_of_date"


@dataclass(frozen=True)
class Publication:
    """The warehouse's latest publication, and the one before it of the same colour."""

    publication_id: str
    colour: str
    previous_of_colour: str | None


@dataclass(frozen=True)
class Days:
    """Which days of a feature set a materialisation reads: every day, the days from
    `first` on, or none (`read` False: its publication vouched for no new day)."""

    first: date | None = None
    read: bool = True

    def describe(self) -> str:
        if not self.read:
            return "no new day"
        return "every day" if self.first is None else f"from {self.first.isoformat()}"


EVERY_DAY = Days()


def latest_vectors(
    con: duckdb.DuckDBPyConnection,
    feature_set: FeatureSet,
    version: str,
    days: Days = EVERY_DAY,
) -> pd.DataFrame:
    """The latest row per entity of one version (among `days`), with that version's own
    columns only.

    The table keeps every column any version had; a version's vector holds the columns the
    registry lists for it, so an older version never gains a newer one's columns as NULLs.
    """
    keys = ", ".join(feature_set.keys)
    columns = [
        *feature_set.keys,
        feature_set.timestamp_column,
        "created_at",
        "feature_set_version",
        *feature_columns(con, feature_set, version),
    ]
    return con.execute(
        f"""
        select {", ".join(columns)}
        from {feature_set.relation}
        where feature_set_version = ?{"" if days.first is None else f" and {DAY_COLUMN} >= ?::date"}
        qualify row_number() over (
            partition by {keys}
            order by {feature_set.timestamp_column} desc, created_at desc nulls last
        ) = 1
        """,
        [version] if days.first is None else [version, days.first.isoformat()],
    ).df()


def latest_publication(con: duckdb.DuckDBPyConnection) -> Publication | None:
    """The latest publication (None before the first, or without the tables)."""
    found = {
        f"{schema}.{name}"
        for schema, name in con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema || '.' || table_name in (?, ?)",
            [PUBLICATIONS_TABLE, PUBLICATION_DAYS_TABLE],
        ).fetchall()
    }
    if found != {PUBLICATIONS_TABLE, PUBLICATION_DAYS_TABLE}:
        return None
    row = con.execute(
        f"""
        select latest.publication_id, latest.colour, (
            select earlier.publication_id from {PUBLICATIONS_TABLE} as earlier
            where earlier.colour = latest.colour and earlier.published_at < latest.published_at
            order by earlier.published_at desc
            limit 1
        )
        from {PUBLICATIONS_TABLE} as latest
        order by latest.published_at desc
        limit 1
        """
    ).fetchone()
    return None if row is None else Publication(row[0], row[1], row[2])


def mark_name(feature_set: FeatureSet, colour: str) -> str:
    """The store's mark naming the publication of `colour` it last materialised."""
    return f"materialized:{feature_set.name}:{colour}"


def days_to_read(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    feature_set: FeatureSet,
    publication: Publication | None,
) -> Days:
    """The days of `feature_set` a materialisation must read (see the module's docstring);
    `publication`: the latest, when the feature set's relation is a view of its colour."""
    if publication is None:
        return EVERY_DAY  # built in place, or never published
    mark = store.mark(mark_name(feature_set, publication.colour))
    if mark is None or mark not in (publication.previous_of_colour, publication.publication_id):
        return EVERY_DAY
    if mark == publication.publication_id:
        # a rerun: the mark is set once every version was written, so the store holds a
        # vector at least as new as each row this publication serves (and it serves the same
        # rows until the next one: builds never write the live colour)
        return Days(read=False)
    schema, name = feature_set.relation.split(".", 1)
    has_days = con.execute(
        "select count(*) from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, name, DAY_COLUMN],
    ).fetchone()
    record = con.execute(
        f"select unsettled_from from {PUBLICATION_DAYS_TABLE} "
        "where publication_id = ? and relation = ?",
        [publication.publication_id, feature_set.relation],
    ).fetchall()
    if not has_days or not has_days[0] or len(record) != 1:
        return EVERY_DAY  # no day column, or no record of what this publication vouched for
    first = record[0][0]
    return Days(read=False) if first is None else Days(first=first)


@dataclass(frozen=True)
class Materialized(WriteReport):
    """A feature set's `WriteReport`, and the days its materialisation read."""

    days: Days = EVERY_DAY


def materialize_online(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    feature_sets: Sequence[FeatureSet] = ONLINE_FEATURE_SETS,
    *,
    every_day: bool = False,
) -> dict[str, Materialized]:
    """Write the latest vector per entity of every built version of each feature set.

    Reads the days the latest publication vouched for when the store holds the rest
    (`days_to_read`), every day when not or with `every_day`; the result is the same.
    """
    publication = latest_publication(con)
    reports: dict[str, Materialized] = {}
    for feature_set in feature_sets:
        published = (  # None for a mart built in place: a table, not a view of the colour
            publication
            if publication is not None
            and published_colour(con, feature_set.relation) == publication.colour
            else None
        )
        days = EVERY_DAY if every_day else days_to_read(con, store, feature_set, published)
        written = skipped = 0
        for version in versions(con, feature_set) if days.read else ():
            frame = latest_vectors(con, feature_set, version, days)
            report = store.write(feature_set.name, frame, list(feature_set.keys))
            written, skipped = written + report.written, skipped + report.skipped
        if published is not None:
            store.set_mark(mark_name(feature_set, published.colour), published.publication_id)
        reports[feature_set.name] = Materialized(written=written, skipped=skipped, days=days)
    return reports


def refresh_online_store(settings: Settings, *, every_day: bool = False) -> dict[str, Materialized]:
    """Open the warehouse (read-only) and the online store, and run `materialize_online`."""
    from loopline.warehouse import reading

    with open_online_store(settings) as store, reading(settings) as con:
        return materialize_online(con, store, every_day=every_day)
