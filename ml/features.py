"""The feature store's Python side: versioned feature sets in, training sets and online vectors out.

Feature definitions live in dbt (`models/marts/features/`); this module only reads them.
It is the one place that knows which warehouse relations hold which feature set.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from ml.online_store import OnlineStore, WriteReport, materialize
from ml.pit import FeatureRequest, TrainingSet, build_training_set

BOOKKEEPING = ("as_of_date", "feature_timestamp", "created_at", "feature_set_version")


@dataclass(frozen=True)
class FeatureSet:
    """Where one feature set lives in the warehouse, and its entity key."""

    name: str
    relation: str
    keys: tuple[str, ...]


CHURN = FeatureSet("churn_user_daily", "features.fs_churn__user_daily", ("user_id",))
CHURN_LABELS = "features.label_churn__user_daily"


class FeatureStoreError(RuntimeError):
    """A feature set or version that is not in the warehouse, with what is."""


def versions(con: duckdb.DuckDBPyConnection, feature_set: FeatureSet) -> list[str]:
    """Registered versions of a feature set that have rows, oldest first."""
    rows = con.execute(
        f"""
        select registry.feature_set_version
        from features.feature_sets as registry
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
        "select columns_json from features.feature_sets where feature_set_name = ? and feature_set_version = ?",
        [feature_set.name, version],
    ).fetchone() or ("[]",)
    names = [column["name"] for column in json.loads(columns_json)]
    return [n for n in names if n not in BOOKKEEPING and n not in feature_set.keys]


def version_view(con: duckdb.DuckDBPyConnection, feature_set: FeatureSet, version: str) -> str:
    """A temporary view holding only the rows of one version; returns its name."""
    view = f"fs_{feature_set.name}_{version}_{uuid.uuid4().hex[:8]}"
    con.execute(
        f"create or replace temp view {view} as "
        f"select * from {feature_set.relation} where feature_set_version = '{version}'"
    )
    return view


def churn_training_set(
    con: duckdb.DuckDBPyConnection,
    start: date,
    end: date,
    version: str | None = None,
    as_known_at: bool = False,
    ttl: timedelta = timedelta(days=1),
) -> TrainingSet:
    """Labelled churn rows with as-of days in [start, end], features joined point in time."""
    version = resolve_version(con, CHURN, version)
    labels = con.execute(
        f"""
        select user_id, as_of_date, event_timestamp, churned_within_30d
        from {CHURN_LABELS}
        where as_of_date between ? and ?
        order by as_of_date, user_id
        """,
        [start, end],
    ).df()
    if labels.empty:
        raise FeatureStoreError(f"no churn labels with as-of days in {start}..{end}")
    view = version_view(con, CHURN, version)
    try:
        request = FeatureRequest(view, CHURN.keys, tuple(feature_columns(con, CHURN, version)), ttl)
        result = build_training_set(con, labels, [request], as_known_at=as_known_at)
    finally:
        con.execute(f"drop view if exists {view}")
    # name the feature set, not the temporary view, in the lineage
    return TrainingSet(
        frame=result.frame,
        content_hash=result.content_hash,
        feature_set_versions={CHURN.relation: result.feature_set_versions.get(view, [])},
        data_window=result.data_window,
        as_known_at=result.as_known_at,
        feature_columns={CHURN.relation: result.feature_columns.get(view, [])},
    )


def latest_vectors(
    con: duckdb.DuckDBPyConnection, feature_set: FeatureSet, version: str
) -> pd.DataFrame:
    """The latest row per entity of one version (newest feature_timestamp, then created_at)."""
    keys = ", ".join(feature_set.keys)
    return con.execute(
        f"""
        select * exclude (as_of_date)
        from {feature_set.relation}
        where feature_set_version = ?
        qualify row_number() over (
            partition by {keys} order by feature_timestamp desc, created_at desc nulls last
        ) = 1
        """,
        [version],
    ).df()


def materialize_online(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    feature_set: FeatureSet = CHURN,
    version: str | None = None,
) -> WriteReport:
    """Write the latest vector per entity to the online store (older values never win)."""
    version = resolve_version(con, feature_set, version)
    frame = latest_vectors(con, feature_set, version)
    return materialize(store, feature_set.name, frame, list(feature_set.keys))


def dbt_manifest_hash(target_dir: Path) -> str:
    """A hash of every model's definition in dbt's manifest (stable across runs)."""
    manifest = json.loads((target_dir / "manifest.json").read_text())
    checksums = sorted(
        f"{unique_id}:{node['checksum']['checksum']}"
        for unique_id, node in manifest["nodes"].items()
        if node.get("resource_type") in ("model", "seed", "snapshot")
    )
    return hashlib.sha256("\n".join(checksums).encode()).hexdigest()[:16]
