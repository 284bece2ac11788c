"""Training sets from the warehouse's feature sets, point in time (real DuckDB)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from ml.features.definitions import CHURN, FeatureStoreError, resolve_version
from ml.features.training_sets import churn_training_set, dbt_manifest_hash


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
