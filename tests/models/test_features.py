"""The churn feature set and its labels, built by dbt on the session's warehouse."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from loopline.dbt import project_dir, run_dbt
from loopline.settings import Settings
from tests.conftest import copy_company, query

FEATURES = "features.fs_churn__user_daily"
LABELS = "features.label_churn__user_daily"


def frame(settings: Settings, sql: str) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(str(settings.resolved_warehouse_path))
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def test_every_row_carries_key_timestamps_and_a_registered_version(built_warehouse):
    settings, _ = built_warehouse
    rows = frame(settings, f"select * from {FEATURES}")
    assert len(rows) > 5_000
    assert (
        rows[["user_id", "feature_timestamp", "created_at", "feature_set_version"]]
        .notna()
        .all()
        .all()
    )
    assert (
        rows["feature_timestamp"] == pd.to_datetime(rows["as_of_date"]) + timedelta(days=1)
    ).all()
    assert (rows["created_at"] >= rows["feature_timestamp"]).all()
    registry = frame(settings, "select * from features.feature_sets")
    assert set(rows["feature_set_version"]) <= set(registry["feature_set_version"])
    columns = {c["name"] for c in json.loads(registry["columns_json"].iloc[-1])}
    assert {"watch_minutes_30d", "failed_payments_30d", "plan_price_usd"} <= columns


def test_late_data_makes_a_value_known_later(built_warehouse):
    settings, _ = built_warehouse
    ((late, total),) = query(
        settings,
        f"select count(*) filter (where created_at > feature_timestamp), count(*) from {FEATURES}",
    )
    assert 0 < late < total


def test_features_summarise_the_sessions_they_come_from(built_warehouse):
    settings, _ = built_warehouse
    check = frame(
        settings,
        f"""
        with sample as (
            select
                user_id, as_of_date, watch_minutes_7d, sessions_30d, log_session_rate_to_date,
                failed_payments_30d, has_failed_payment_30d, tickets_30d, has_ticket_30d
            from {FEATURES}
            using sample 300 rows (reservoir, 7)
        ),
        bounds as (select min(event_date) as data_from from staging.stg_events__viewing_events)
        select
            sample.*,
            coalesce(sum(s.watched_seconds) filter (where s.session_date > sample.as_of_date - 7), 0) / 60.0
                as expected_minutes_7d,
            count(s.viewing_session_id) filter (where s.session_date > sample.as_of_date - 30)
                as expected_sessions_30d,
            -- since first seen: signup, or the data's first day
            count(s.viewing_session_id) as sessions_to_date,
            any_value(sample.as_of_date - greatest(u.signup_at::date, bounds.data_from) + 1)
                as days_to_date
        from sample
        cross join bounds
        inner join core.dim_users u on u.user_id = sample.user_id
        left join core.fct_viewing_sessions s
            on s.user_id = sample.user_id and s.session_date <= sample.as_of_date
        group by all
        """,
    )
    assert (check["watch_minutes_7d"] - check["expected_minutes_7d"]).abs().max() < 1e-6
    assert (check["sessions_30d"] == check["expected_sessions_30d"]).all()
    rate = ((check["sessions_to_date"] + 0.5) / check["days_to_date"]).map(math.log)
    assert (check["log_session_rate_to_date"] - rate).abs().max() < 1e-9
    assert (check["has_failed_payment_30d"] == (check["failed_payments_30d"] > 0)).all()
    assert (check["has_ticket_30d"] == (check["tickets_30d"] > 0)).all()
    assert set(check["has_ticket_30d"]) == {0, 1}


@pytest.mark.slow  # two builds of the mart
def test_a_rebuild_keeps_the_sessions_before_the_days_it_reads(built_warehouse, tmp_path):
    """A rebuild reads the days before its first that its windows need (90): the rate since
    first seen adds the sessions before those. Here the reach is cut to 10 days, less than
    the company's history, so the rebuilt rows must carry the older sessions to match."""
    source, _ = built_warehouse
    settings, project = private_project(source, tmp_path)
    model = project / "models" / "marts" / "features" / "churn" / "fs_churn__user_daily.sql"
    sql = model.read_text()
    assert sql.count("first_day - interval 90 day") == 2  # the spine's and the carried sum's
    model.write_text(sql.replace("first_day - interval 90 day", "first_day - interval 10 day"))
    build = ["build", "--select", "fs_churn__user_daily", "--exclude-resource-type", "test"]
    ((old_version,),) = query(settings, f"select distinct feature_set_version from {FEATURES}")
    run_dbt(settings, build)  # the changed definition: a new version, built in full
    digest = (
        "select count(*), sum(hash(user_id, as_of_date, log_session_rate_to_date)::hugeint) "
        f"from {FEATURES} where feature_set_version <> '{old_version}'"
    )
    full = query(settings, digest)
    run_dbt(settings, build)  # its last days again, from 10 days of history
    assert query(settings, digest) == full


def test_labels_start_where_the_features_end(built_warehouse):
    settings, _ = built_warehouse
    joined = frame(
        settings,
        f"""
        select l.*, f.feature_timestamp, u.cancelled_at
        from {LABELS} l
        inner join {FEATURES} f using (user_id, as_of_date)
        inner join core.dim_users u using (user_id)
        """,
    )
    assert len(joined) > 1_000
    assert (joined["event_timestamp"] == joined["feature_timestamp"]).all()
    assert ((joined["label_window_end"] - joined["event_timestamp"]) == timedelta(days=30)).all()
    in_window = (joined["cancelled_at"] >= joined["event_timestamp"]) & (
        joined["cancelled_at"] < joined["label_window_end"]
    )
    assert (joined["churned_within_30d"] == in_window.fillna(False)).all()
    assert 0.02 < joined["churned_within_30d"].mean() < 0.4


def test_churn_is_predictable_from_the_features(built_warehouse):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    settings, _ = built_warehouse
    data = frame(
        settings,
        f"select f.*, l.churned_within_30d from {FEATURES} f join {LABELS} l using (user_id, as_of_date)",
    )
    numeric = [
        "watch_minutes_30d",
        "active_days_30d",
        "days_since_last_view",
        "failed_payments_30d",
        "tickets_30d",
        "tenure_days",
    ]
    x = data[numeric].fillna(0)
    model = LogisticRegression(max_iter=1_000).fit(x, data["churned_within_30d"])
    assert roc_auc_score(data["churned_within_30d"], model.predict_proba(x)[:, 1]) > 0.6


def private_project(source: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    """A copy of the built warehouse and of the dbt project, to change a definition in."""
    project = tmp_path / "project"
    project.mkdir()
    root = project_dir()
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(root / name, project / name)
    for folder in ("models", "macros", "seeds", "snapshots", "data-tests"):
        shutil.copytree(root / folder, project / folder)
    settings = copy_company(source, tmp_path / "data").model_copy(
        update={"dbt_project_dir": project}
    )
    return settings, project


def add_a_churn_feature(project: Path) -> None:
    """Change the churn feature set's definition in `project`: one more, declared column
    (`watch_minutes_per_day_7d`), so its next build is a new version."""
    model = project / "models" / "marts" / "features" / "churn" / "fs_churn__user_daily.sql"
    sql = model.read_text()
    marker = "        windowed.watch_minutes_7d::double as watch_minutes_7d,\n"
    assert marker in sql
    model.write_text(
        sql.replace(
            marker,
            marker
            + "        (windowed.watch_minutes_7d / 7)::double as watch_minutes_per_day_7d,\n",
        )
    )
    yml = project / "models" / "marts" / "features" / "_features__models.yml"
    yml.write_text(
        yml.read_text().replace(
            "      - name: watch_minutes_14d\n",
            "      - {name: watch_minutes_per_day_7d, data_type: double, description: per day}\n"
            "      - name: watch_minutes_14d\n",
        )
    )


def registered_columns(settings: Settings, version: str) -> list[str]:
    (columns_json,) = query(
        settings,
        "select columns_json from features.feature_sets "
        f"where feature_set_name = 'churn_user_daily' and feature_set_version = '{version}'",
    )[0]
    return [column["name"] for column in json.loads(columns_json)]


def test_changing_a_definition_adds_a_version_and_keeps_the_old_one(built_warehouse, tmp_path):
    source, _ = built_warehouse
    settings, project = private_project(source, tmp_path)
    before = frame(
        settings, f"select feature_set_version, count(*) as n from {FEATURES} group by 1"
    )
    assert len(before) == 1
    add_a_churn_feature(project)
    run_dbt(
        settings, ["build", "--select", "fs_churn__user_daily", "--exclude-resource-type", "test"]
    )
    after = frame(
        settings,
        f"select feature_set_version, count(*) as n, count(watch_minutes_per_day_7d) as new_values from {FEATURES} group by 1",
    )
    assert len(after) == 2
    old = after[after["feature_set_version"] == before["feature_set_version"].iloc[0]]
    new = after[after["feature_set_version"] != before["feature_set_version"].iloc[0]]
    assert old["n"].iloc[0] == before["n"].iloc[0]  # the old version is still readable, whole
    assert old["new_values"].iloc[0] == 0 and new["new_values"].iloc[0] == new["n"].iloc[0] > 0
    registry = frame(settings, "select feature_set_version from features.feature_sets")
    assert set(after["feature_set_version"]) <= set(registry["feature_set_version"])


def test_a_version_that_drops_a_column_is_registered_without_it(built_warehouse, tmp_path):
    """The table keeps the old column for the old rows; the new version's entry lacks it."""
    source, _ = built_warehouse
    settings, project = private_project(source, tmp_path)
    ((old_version,),) = query(settings, f"select distinct feature_set_version from {FEATURES}")
    assert "watch_minutes_14d" in registered_columns(settings, old_version)
    model = project / "models" / "marts" / "features" / "churn" / "fs_churn__user_daily.sql"
    dropped = "        windowed.watch_minutes_14d::double as watch_minutes_14d,\n"
    assert dropped in model.read_text()
    model.write_text(model.read_text().replace(dropped, ""))
    yml = project / "models" / "marts" / "features" / "_features__models.yml"
    lines = yml.read_text().splitlines(keepends=True)
    at = lines.index("      - name: watch_minutes_14d\n")
    yml.write_text("".join(lines[:at] + lines[at + 3 :]))  # name, data_type, description
    run_dbt(
        settings, ["build", "--select", "fs_churn__user_daily", "--exclude-resource-type", "test"]
    )
    ((new_version,),) = query(
        settings,
        f"select distinct feature_set_version from {FEATURES} "
        f"where feature_set_version <> '{old_version}'",
    )
    new_columns = registered_columns(settings, new_version)
    assert "watch_minutes_14d" not in new_columns
    assert {"watch_minutes_7d", "watch_minutes_30d", "feature_set_version"} <= set(new_columns)
    assert "watch_minutes_14d" in registered_columns(settings, old_version)
    ((kept,),) = query(
        settings,
        f"select count(watch_minutes_14d) from {FEATURES} where feature_set_version = '{old_version}'",
    )
    assert kept > 0  # the old version's rows still carry it


@pytest.mark.parametrize("relation", [FEATURES, LABELS])
def test_feature_marts_do_not_change_on_a_rebuild(built_warehouse, relation):
    settings, _ = built_warehouse
    digest = f"select count(*), sum(hash(t)::hugeint) from {relation} as t"
    before = query(settings, digest)
    run_dbt(settings, ["build", "--select", "fs_churn__user_daily label_churn__user_daily"])
    assert query(settings, digest) == before


def test_recommendation_features_describe_the_sessions(built_warehouse):
    settings, _ = built_warehouse
    ((bad_shares,),) = query(
        settings,
        "select count(*) from (select user_id, as_of_date, sum(share_of_watch_90d) as total "
        "from features.fs_recs__user_genre_affinity group by all having abs(total - 1) > 1e-9)",
    )
    assert bad_shares == 0
    check = frame(
        settings,
        """
        with sample as (
            select show_id, as_of_date, viewers_7d from features.fs_recs__show_popularity
            using sample 200 rows (reservoir, 3)
        )
        select sample.*, count(distinct s.user_id) as expected
        from sample
        left join core.fct_viewing_sessions s
            on s.first_show_id = sample.show_id
            and s.session_date > sample.as_of_date - 7 and s.session_date <= sample.as_of_date
        group by all
        """,
    )
    assert (check["viewers_7d"] == check["expected"]).all()
    pairs = frame(
        settings,
        "select show_id, other_show_id, as_of_date, co_viewers from features.fs_recs__co_watch",
    )
    assert len(pairs) > 100
    mirrored = pairs.merge(
        pairs.rename(columns={"show_id": "other_show_id", "other_show_id": "show_id"}),
        on=["show_id", "other_show_id", "as_of_date"],
    )
    assert len(mirrored) == len(pairs)  # co-watching is symmetric
    assert (mirrored["co_viewers_x"] == mirrored["co_viewers_y"]).all()


# each user's shows of the 90 days up to the as-of day, most recently watched first (ties by
# show id), at most 100: written here independently of the dbt model (an ordered aggregate
# over the raw pairs, where the model sorts a list of structs) to check it
EXPECTED_HISTORIES = """
    with pairs as (
        select user_id, show_id, max(occurred_at) as last_watched_at, max(_landed_at) as known_at
        from staging.stg_events__viewing_events
        where event_date between $as_of - 89 and $as_of
            and user_id is not null and show_id is not null
        group by all
    )
    select
        user_id,
        to_json(list(show_id order by last_watched_at desc, show_id)[1:100])::varchar
            as recent_shows,
        ($as_of + 1)::timestamp as feature_timestamp,
        greatest(($as_of + 1)::timestamp, max(known_at))::timestamp as created_at
    from pairs
    group by user_id
"""


@pytest.mark.parametrize("days_back", [0, 30])
def test_user_histories_hold_each_viewers_recent_shows_newest_first(built_warehouse, days_back):
    """The dbt feature set holds, for each day, what an independent query derives."""
    import json

    import duckdb

    settings, _ = built_warehouse
    con = duckdb.connect(str(settings.resolved_warehouse_path))
    try:
        ((last_day,),) = con.execute(
            "select max(event_date) from staging.stg_events__viewing_events"
        ).fetchall()
        as_of = last_day - timedelta(days=days_back)
        expected = con.execute(EXPECTED_HISTORIES, {"as_of": as_of}).df()
        built = con.execute(
            "select user_id, recent_shows, last_show_id, feature_timestamp, "
            "created_at from features.fs_recs__user_history where as_of_date = ?",
            [as_of],
        ).df()
    finally:
        con.close()
    assert len(expected) > 100
    # the same lists (JSON spacing aside) and the same most recent show
    expected["recent_shows"] = expected["recent_shows"].map(json.loads)
    built["recent_shows"] = built["recent_shows"].map(json.loads)
    expected["last_show_id"] = expected["recent_shows"].str[0]  # the most recent show
    columns = ["user_id", "recent_shows", "last_show_id", "feature_timestamp", "created_at"]
    pd.testing.assert_frame_equal(
        built[columns].sort_values("user_id").reset_index(drop=True),
        expected[columns].sort_values("user_id").reset_index(drop=True),
        check_dtype=False,
    )
    assert expected["recent_shows"].map(len).max() > 3  # histories of several shows


def change_prices_at_source(settings: Settings, changed_at: datetime, extra_minor: int) -> None:
    """The OLTP source raises every list price in place, as the simulator's price rise does."""
    import duckdb

    from loopline.warehouse import attach_source

    con = duckdb.connect()
    try:
        attach_source(con, settings.resolved_source_db_url)
        con.execute(
            "update src.plan_prices set monthly_price_minor = monthly_price_minor + ?, "
            "updated_at = ?",
            [extra_minor, changed_at],
        )
    finally:
        con.close()


def test_a_price_change_keeps_the_old_price_on_earlier_days_through_a_full_refresh(
    built_warehouse, tmp_path
):
    """plan_price_usd is point in time: the price valid when each as-of day closed, from the
    SCD2 snapshot of the prices, so a full refresh after a change does not rewrite history."""
    from loopline.ingest.oltp import load_oltp
    from loopline.warehouse import writing

    source, _ = built_warehouse
    settings = copy_company(source, tmp_path / "data")
    ((first_day, last_day),) = query(
        settings, f"select min(as_of_date), max(as_of_date) from {FEATURES}"
    )
    old_prices = dict(
        query(
            settings,
            "select plan_id, monthly_price_usd from staging.stg_oltp__plan_prices "
            "where currency = 'USD'",
        )
    )
    change_day = first_day + (last_day - first_day) // 2
    change_prices_at_source(
        settings, datetime.combine(change_day, datetime.min.time()) + timedelta(hours=6), 100
    )
    with writing(settings) as con:  # the next ingest sees the table changed and copies it
        assert load_oltp(con, settings.resolved_source_db_url, "price-change")["plan_prices"]
    run_dbt(
        settings,
        ["build", "--full-refresh", "--select", "snap_oltp__plan_prices fs_churn__user_daily",
         "--exclude-resource-type", "test"],
    )  # fmt: skip
    prices = frame(
        settings,
        f"""
        select
            features.as_of_date >= '{change_day}'::date as after_change,
            plans.plan_id,
            min(features.plan_price_usd) as low,
            max(features.plan_price_usd) as high,
            count(*) as n
        from {FEATURES} as features
        inner join staging.stg_oltp__plans as plans using (plan_name)
        group by all
        """,
    )
    assert set(prices["after_change"]) == {True, False}
    assert (prices["n"] > 0).all() and (prices["low"] == prices["high"]).all()
    for row in prices.itertuples():
        expected = float(old_prices[row.plan_id]) + (1.0 if row.after_change else 0.0)
        assert row.low == pytest.approx(expected), (row.plan_id, row.after_change)
    ((unpriced,),) = query(settings, f"select count(*) - count(plan_price_usd) from {FEATURES}")
    assert unpriced == 0
