"""Every feature set, declared once: where it lives, its entity, its time, its TTL, online or not.

The feature sets themselves are dbt models (`models/marts/features/`); each model's post-hook
records its versions in ``features.feature_sets`` (name, version, columns). This list is the
Python side's only description of them: training sets, materialisation and serving read it,
and the versions come from that registry table, never from Python.

The list holds the feature sets a model consumes. dbt also builds ``recs_show_popularity``,
``recs_user_genre_affinity`` and ``recs_co_watch``, which no model reads yet; each gets its
line here (and its exposure in ``models/marts/core/_core__models.yml``) with its first
consumer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import duckdb

REGISTRY = "features.feature_sets"
BOOKKEEPING = ("as_of_date", "feature_timestamp", "created_at", "feature_set_version")


@dataclass(frozen=True)
class FeatureSet:
    """One versioned feature set: its registry name, dbt relation, key, time and freshness.

    ``ttl`` is how old a row may be and still describe an entity (point-in-time joins use it);
    ``online`` sets are materialised to the online store for serving.
    """

    name: str
    relation: str
    keys: tuple[str, ...]
    ttl: timedelta
    online: bool = False
    timestamp_column: str = "feature_timestamp"


CHURN = FeatureSet(
    "churn_user_daily", "features.fs_churn__user_daily", ("user_id",), timedelta(days=1),
    online=True,
)  # fmt: skip
USER_HISTORY = FeatureSet(
    "recs_user_history", "features.fs_recs__user_history", ("user_id",), timedelta(days=1),
    online=True,
)  # fmt: skip
FEATURE_SETS = (CHURN, USER_HISTORY)
ONLINE_FEATURE_SETS = tuple(fs for fs in FEATURE_SETS if fs.online)


class FeatureStoreError(RuntimeError):
    """A feature set or version that is not in the warehouse, with what is."""


def versions(con: duckdb.DuckDBPyConnection, feature_set: FeatureSet) -> list[str]:
    """Registered versions of a feature set that have rows, oldest first."""
    rows = con.execute(
        f"""
        select registry.feature_set_version
        from {REGISTRY} as registry
        where registry.feature_set_name = ?
            and exists (
                select 1 from {feature_set.relation} as fs
                where fs.feature_set_version = registry.feature_set_version
            )
        order by registry.created_at
        """,
        [feature_set.name],
    ).fetchall()
    return [version for (version,) in rows]


def resolve_version(
    con: duckdb.DuckDBPyConnection, feature_set: FeatureSet, version: str | None
) -> str:
    """`version`, checked, or the newest version with rows."""
    known = versions(con, feature_set)
    if not known:
        raise FeatureStoreError(f"{feature_set.name}: no built version; run `loopline build` first")
    if version is None:
        return known[-1]
    if version not in known:
        raise FeatureStoreError(
            f"{feature_set.name}: version {version!r} not found; known: {known}"
        )
    return version


def feature_columns(
    con: duckdb.DuckDBPyConnection, feature_set: FeatureSet, version: str
) -> list[str]:
    """The feature columns of one version (from the registry; later columns are not in it)."""
    (columns_json,) = con.execute(
        f"select columns_json from {REGISTRY} "
        "where feature_set_name = ? and feature_set_version = ?",
        [feature_set.name, version],
    ).fetchone() or ("[]",)
    names = [column["name"] for column in json.loads(columns_json)]
    return [n for n in names if n not in BOOKKEEPING and n not in feature_set.keys]
