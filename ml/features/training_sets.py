"""Training sets from the feature store: labels joined point in time to one feature-set version.

Which relation holds which feature set is declared in `ml.features.definitions`; the
point-in-time join itself is `ml.features.pit`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, timedelta
from pathlib import Path

import duckdb

from ml.features.definitions import (
    CHURN,
    FeatureSet,
    FeatureStoreError,
    feature_columns,
    resolve_version,
)
from ml.features.pit import FeatureRequest, TrainingSet, build_training_set

CHURN_LABELS = "features.label_churn__user_daily"


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
    ttl: timedelta = CHURN.ttl,
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


def dbt_manifest_hash(target_dir: Path) -> str:
    """A hash of every model's definition in dbt's manifest (stable across runs)."""
    manifest = json.loads((target_dir / "manifest.json").read_text())
    checksums = sorted(
        f"{unique_id}:{node['checksum']['checksum']}"
        for unique_id, node in manifest["nodes"].items()
        if node.get("resource_type") in ("model", "seed", "snapshot")
    )
    return hashlib.sha256("\n".join(checksums).encode()).hexdigest()[:16]
