"""A private copy of the session's built warehouse per test, plus predictions to validate."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from loopline.settings import Settings

AS_OF = "2026-02-14"


def add_predictions(path: Path) -> None:
    """ml.churn_predictions and ml.recommendations as scoring writes them (same DDL)."""
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema if not exists ml")
        con.execute(
            f"""
            create or replace table ml.churn_predictions as
            select
                user_id::bigint as user_id,
                date '{AS_OF}' as as_of_date,
                ((user_id % 100) / 100.0)::double as churn_probability,
                ((user_id % 100) / 100.0) >= 0.5 as is_high_risk,
                0.5::double as threshold,
                'loopline-churn' as model_name,
                '1' as model_version,
                'fsv1' as feature_set_version,
                timestamp '{AS_OF} 06:00:00' as scored_at
            from core.dim_users
            """
        )
        con.execute(
            f"""
            create or replace table ml.recommendations as
            with shows as (
                select show_id, row_number() over (order by show_id) as rank
                from core.dim_shows
                qualify rank <= 10
            )
            select
                users.user_id::bigint as user_id,
                date '{AS_OF}' as as_of_date,
                shows.rank::integer as rank,
                shows.show_id,
                (1.0 / shows.rank)::double as score,
                'loopline-recommender' as model_name,
                '1' as model_version,
                timestamp '{AS_OF} 06:00:00' as scored_at
            from core.dim_users as users
            cross join shows
            """
        )
    finally:
        con.close()


def copy_warehouse(source: Settings, target: Path) -> Settings:
    """A data folder with a copy of `source`'s warehouse and dbt manifest, nothing else."""
    warehouse = target / "warehouse" / "loopline.duckdb"
    warehouse.parent.mkdir(parents=True)
    # recent writes may still sit in the write-ahead log (in-process dbt keeps the database
    # open): fold them into the file before copying it
    execute(source, "checkpoint")
    shutil.copyfile(source.resolved_warehouse_path, warehouse)
    manifest = target / "dbt" / "target" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    shutil.copyfile(source.data_dir / "dbt" / "target" / "manifest.json", manifest)
    return Settings(data_dir=target, dbt_project_dir=source.dbt_project_dir)


@pytest.fixture(scope="session")
def scored_warehouse(built_warehouse, tmp_path_factory) -> Settings:
    """The built test company with predictions written: the source of every copy."""
    settings = copy_warehouse(built_warehouse[0], tmp_path_factory.mktemp("scored") / "data")
    add_predictions(settings.resolved_warehouse_path)
    return settings


@pytest.fixture
def warehouse(scored_warehouse, tmp_path) -> Settings:
    """A private copy a test may corrupt."""
    return copy_warehouse(scored_warehouse, tmp_path / "data")


def execute(settings: Settings, *statements: str) -> None:
    con = duckdb.connect(str(settings.resolved_warehouse_path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def stage(settings: Settings, asset: str, select: str = "select * from {src}", *fixes: str) -> str:
    """A staged copy of `asset` in schema ``audit`` (`select` over ``{src}``), then `fixes`
    (SQL over ``{t}``, the staged table).

    Returns the staged relation's name, for ``validate(..., relations={asset: staged})``.
    """
    table = asset.split(".", 1)[1]
    staged = f"audit.{table}"
    execute(
        settings,
        "create schema if not exists audit",
        f"create or replace table {staged} as " + select.format(src=asset),
        *(fix.format(t=staged) for fix in fixes),
    )
    return staged
