"""Write-audit-publish on a real warehouse: a colour's build reaches readers only if it passes."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from loopline.dbt import run_dbt
from loopline.publish import (
    PublicationBlockedError,
    audit_and_publish,
    build_colour,
    publish,
)
from loopline.settings import Settings
from tests.conftest import query
from tests.models.test_features import add_a_churn_feature, private_project


def _kind(settings: Settings, schema: str, name: str) -> str | None:
    rows = query(
        settings,
        "select table_type from information_schema.tables "
        f"where table_schema = '{schema}' and table_name = '{name}'",
    )
    return rows[0][0] if rows else None


@pytest.fixture(scope="module")
def published(built_warehouse, tmp_path_factory) -> Settings:
    """A private copy of the session warehouse with one audited publication (blue)."""
    source, _ = built_warehouse
    target = tmp_path_factory.mktemp("wap") / "data"
    shutil.copytree(source.data_dir, target)
    settings = Settings(data_dir=target, dbt_project_dir=source.dbt_project_dir)
    assert build_colour(settings) == "blue"
    run_dbt(settings, ["build"], colour="blue")
    publication, report = audit_and_publish(settings, "blue")
    assert publication.colour == "blue" and publication.previous_colour is None
    assert not report.critical_failed
    return settings


def test_a_publication_points_the_plain_schemas_at_the_audited_colour(published) -> None:
    settings = published
    # readers name the plain schemas; they now read views onto the blue build
    for schema, name in [("core", "dim_users"), ("features", "fs_churn__user_daily"),
                         ("staging", "stg_events__viewing_events"), ("features", "feature_sets")]:  # fmt: skip
        assert _kind(settings, f"{schema}__blue", name) is not None, (schema, name)
        assert _kind(settings, schema, name) == "VIEW", (schema, name)
        (plain,) = query(settings, f"select count(*) from {schema}.{name}")
        (blue,) = query(settings, f"select count(*) from {schema}__blue.{name}")
        assert plain == blue and plain[0] > 0
    # landing, seeds and snapshots are built in place, never coloured
    schemas = {s for (s,) in query(settings, "select schema_name from information_schema.schemata")}
    assert not {"raw__blue", "reference__blue", "snapshots__blue"} & schemas
    # the audit that allowed it is on record
    rows = query(
        settings,
        "select p.colour, count(v.run_id) from monitoring.publications p "
        "join monitoring.validation_results v on v.run_id = p.validation_run_id group by 1",
    )
    assert rows and rows[0][0] == "blue" and rows[0][1] > 0
    assert build_colour(settings) == "green"


def test_a_critical_failure_blocks_publication_and_the_last_good_build_stays_served(
    published,
) -> None:
    settings = published
    relation = "features.fs_churn__user_daily"
    (before,) = query(settings, f"select count(*) from {relation}")
    run_dbt(settings, ["build"], colour="green")
    # a defect only the audit sees: duplicated feature rows in the green build
    query(
        settings,
        "insert into features__green.fs_churn__user_daily "
        "select * from features__green.fs_churn__user_daily limit 3",
    )
    with pytest.raises(PublicationBlockedError) as blocked:
        audit_and_publish(settings, "green")
    assert relation in blocked.value.suites
    assert "stays served" in str(blocked.value)
    # readers still see blue: same rows, the views untouched, no publication recorded
    assert query(settings, f"select count(*) from {relation}") == [before]
    (green,) = query(settings, "select count(*) from features__green.fs_churn__user_daily")
    assert green[0] == before[0] + 3
    assert query(settings, "select colour from monitoring.publications") == [("blue",)]
    assert build_colour(settings) == "green"  # the next run rebuilds the same colour

    # repaired (the defect is in an incremental table: a full refresh of the colour), the
    # same colour passes and goes live
    run_dbt(settings, ["build", "--full-refresh"], colour="green")
    publication, _ = audit_and_publish(settings, "green")
    assert publication.previous_colour == "blue"
    assert query(settings, f"select count(*) from {relation}") == [before]
    assert build_colour(settings) == "blue"


def test_a_new_feature_set_version_passes_its_audit_and_is_published(published, tmp_path) -> None:
    """A changed feature definition (a new version) is checked against the registry of the
    colour it was built in: the published colour's registry does not list it yet."""
    settings, project = private_project(published, tmp_path)
    relation = "features.fs_churn__user_daily"
    (old,) = query(settings, f"select distinct feature_set_version from {relation}")
    add_a_churn_feature(project)
    colour = build_colour(settings)
    run_dbt(settings, ["build"], colour=colour)
    publication, report = audit_and_publish(settings, colour)
    assert not report.critical_failed and publication.colour == colour
    # the published table serves the new version beside the old one, both registered
    served = query(settings, f"select distinct feature_set_version from {relation} order by 1")
    registered = query(
        settings,
        "select feature_set_version from features.feature_sets "
        "where feature_set_name = 'churn_user_daily' order by 1",
    )
    assert len(served) == 2 and old in served and served == registered


def test_publish_replaces_a_plain_dbt_build_and_drops_views_of_deleted_models(
    built_warehouse, tmp_path_factory
) -> None:
    source, _ = built_warehouse
    target = tmp_path_factory.mktemp("wap_plain") / "data"
    shutil.copytree(source.data_dir, target)
    settings = Settings(data_dir=target, dbt_project_dir=source.dbt_project_dir)
    assert _kind(settings, "core", "dim_users") == "BASE TABLE"  # a plain `dbt build`
    query(settings, "create schema core__blue")
    query(settings, "create table core__blue.dim_users as select * from core.dim_users")
    query(settings, "create table core__blue.dim_gone as select 1 as x")
    # feature marts' builds on record from before `unsettled_from` existed: nothing to settle
    query(settings, "create schema features__blue")
    builds = "features__blue.feature_builds"
    query(settings, f"create table {builds} (relation_name varchar, rebuilt_from date)")
    publish(settings, "blue")
    assert _kind(settings, "core", "dim_users") == "VIEW"
    assert _kind(settings, "core", "dim_gone") == "VIEW"
    query(settings, "drop table core__blue.dim_gone")
    query(settings, f"alter table {builds} add column unsettled_from date")
    query(settings, f"insert into {builds} values ('fs_x', date '2026-01-02', date '2026-01-01')")
    publication = publish(settings, "blue")
    assert publication.dropped == 1
    # publication vouches for the days written since the last one
    assert query(settings, f"select rebuilt_from, unsettled_from from {builds}") == [
        (date(2026, 1, 2), None)
    ]
    assert _kind(settings, "core", "dim_gone") is None
    assert _kind(settings, "core", "dim_users") == "VIEW"
