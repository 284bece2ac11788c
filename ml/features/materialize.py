"""The one materialisation step: every online feature set, every version, to the online store.

For each feature set declared ``online`` in `ml.features.definitions`, the latest row per
entity *and version* (newest ``feature_timestamp``, then ``created_at``) is written to the
online store, which keys vectors by version: a new version computed over the same data lands
beside the old one, and a serving process reads the version its model was trained on. Writes
are newer-wins per (feature set, version, entity), so a rerun with no new rows writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from ml.features.definitions import ONLINE_FEATURE_SETS, FeatureSet, feature_columns, versions
from ml.features.online import open_online_store
from ml.features.online.base import OnlineStore, WriteReport

if TYPE_CHECKING:
    from loopline.settings import Settings


def latest_vectors(
    con: duckdb.DuckDBPyConnection, feature_set: FeatureSet, version: str
) -> pd.DataFrame:
    """The latest row per entity of one version, with that version's own columns only.

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
        where feature_set_version = ?
        qualify row_number() over (
            partition by {keys}
            order by {feature_set.timestamp_column} desc, created_at desc nulls last
        ) = 1
        """,
        [version],
    ).df()


def materialize_online(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    feature_sets: Sequence[FeatureSet] = ONLINE_FEATURE_SETS,
) -> dict[str, WriteReport]:
    """Write the latest vector per entity of every built version of each feature set."""
    reports: dict[str, WriteReport] = {}
    for feature_set in feature_sets:
        written = skipped = 0
        for version in versions(con, feature_set):
            frame = latest_vectors(con, feature_set, version)
            report = store.write(feature_set.name, frame, list(feature_set.keys))
            written, skipped = written + report.written, skipped + report.skipped
        reports[feature_set.name] = WriteReport(written=written, skipped=skipped)
    return reports


def refresh_online_store(settings: Settings) -> dict[str, WriteReport]:
    """Open the warehouse (read-only) and the online store, and run `materialize_online`."""
    from loopline.warehouse import reading

    with open_online_store(settings) as store, reading(settings) as con:
        return materialize_online(con, store)
