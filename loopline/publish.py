"""Write-audit-publish: a build reaches its readers only after its critical suites pass.

The design (docs/validation.md): the warehouse holds two colours of every dbt model,
`<schema>__blue` and `<schema>__green`. The plain schemas (`staging`, `core`, `features`,
`monitoring`, ...) hold views onto the live colour; readers (training, scoring, the online
store's refresh, people with a SQL prompt) only ever name the plain schemas.

1. **write**: `build_colour` is the colour that is not live; dbt builds into it
   (`run_dbt(..., colour=...)`, the `wap_colour` var read by `generate_schema_name`).
2. **audit**: `expectations.run.validate(settings, schemas=audit_schemas(...))` judges the
   new colour's relations under their published names.
3. **publish**: `publish` repoints every plain-schema view at the new colour in one DuckDB
   transaction (readers see all old or all new), settles what the incremental models wrote
   since the colour's last publication (the feature marts' days,
   `feature_builds.unsettled_from`, kept per publication in `monitoring.publication_days`
   for the online store's refresh; the event lines, `load_builds.unsettled_after`) and
   appends a row to `monitoring.publications`. When a critical suite fails the caller raises
   `PublicationBlockedError` instead, and the views keep pointing at the last good colour.

Landing (`raw`), seeds (`reference`) and snapshots are built in place (`UNCOLOURED`, the
same list as the `uncoloured_schemas` dbt macro). A plain `dbt build` (no colour) writes the
plain schemas directly, as tables: a developer's shortcut that skips the audit; the next
publication replaces those tables with views again.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from loopline.settings import Settings
from loopline.warehouse import (
    PUBLICATION_DAYS_TABLE,
    PUBLICATIONS_TABLE,
    ensure,
    reading,
    writing,
)

if TYPE_CHECKING:
    from expectations.run import ValidationReport

COLOURS = ("blue", "green")
UNCOLOURED = ("raw", "reference", "snapshots")  # macros/generate_schema_name.sql
# the days each feature mart's builds wrote since its colour was last published
# (macros/features_versioning.sql): publication settles them, so the next build's data tests
# and audit read only what that build writes (macros/tests_rebuilt_days.sql)
FEATURE_BUILDS = "feature_builds"
# the lines each load-time incremental model appended since its colour was last published
# (macros/loads_unsettled.sql): its data tests read those only
LOAD_BUILDS = "load_builds"
UNSETTLED = ((FEATURE_BUILDS, "unsettled_from"), (LOAD_BUILDS, "unsettled_after"))


class PublicationBlockedError(RuntimeError):
    """A critical suite failed: the build stays unpublished, the live colour keeps serving."""

    def __init__(self, colour: str, suites: list[str], data_docs: Path | None) -> None:
        self.colour = colour
        self.suites = suites
        where = f"; see {data_docs}" if data_docs else ""
        super().__init__(
            f"publication of the {colour} build blocked: critical expectations failed in "
            f"{', '.join(suites) or 'the audit'}{where}; the last published data stays served"
        )


@dataclass(frozen=True)
class Publication:
    """What one publication switched."""

    publication_id: str
    colour: str
    previous_colour: str | None
    relations: int
    dropped: int
    validation_run_id: str | None


def live_colour(con: duckdb.DuckDBPyConnection) -> str | None:
    """The colour the plain schemas point at now (None before the first publication)."""
    (exists,) = con.execute(
        "select count(*) from information_schema.tables where table_schema || '.' || "
        "table_name = ?",
        [PUBLICATIONS_TABLE],
    ).fetchone() or (0,)
    if not exists:
        return None
    row = con.execute(
        f"select colour from {PUBLICATIONS_TABLE} order by published_at desc limit 1"
    ).fetchone()
    return str(row[0]) if row else None


def build_colour(settings: Settings) -> str:
    """The colour the next build writes: the one that is not live (blue first)."""
    if not settings.resolved_warehouse_path.exists():
        return COLOURS[0]
    with reading(settings) as con:
        live = live_colour(con)
    return COLOURS[1] if live == COLOURS[0] else COLOURS[0]


def coloured_schemas(con: duckdb.DuckDBPyConnection, colour: str) -> dict[str, str]:
    """Plain schema -> its `colour` schema, for every schema the colour's build wrote."""
    suffix = f"__{colour}"
    rows = con.execute(
        "select distinct schema_name from information_schema.schemata where schema_name like ?",
        [f"%{suffix}"],
    ).fetchall()
    return {name.removesuffix(suffix): name for (name,) in rows}


def audit_schemas(settings: Settings, colour: str) -> dict[str, str]:
    """The `schemas` mapping `expectations.run.validate` takes to judge a colour's build."""
    with reading(settings) as con:
        return coloured_schemas(con, colour)


def published_colour(con: duckdb.DuckDBPyConnection, relation: str) -> str | None:
    """The colour a plain-schema relation (``features.fs_x``) is a published view of; None
    for a table (a build in place) or a relation that is not there."""
    schema, name = relation.split(".", 1)
    row = con.execute(
        "select sql from duckdb_views() where not internal and schema_name = ? and view_name = ?",
        [schema, name],
    ).fetchone()
    return None if row is None else _colour_read(str(row[0]), schema)


def _colour_read(sql: str, schema: str) -> str | None:
    """The colour of `schema` a view's SQL (as DuckDB stores it) reads from, if any."""
    colours = "|".join(COLOURS)
    found = re.search(rf'(?i)\bfrom\s+"?{re.escape(schema)}__({colours})"?\.', sql)
    return found.group(1).lower() if found else None


def publish(settings: Settings, colour: str, validation_run_id: str | None = None) -> Publication:
    """Point every plain-schema view at `colour`, in one transaction, under the writer lock.

    A plain-schema *table* of the same name (from a plain `dbt build`) is dropped for its view;
    a view published earlier whose relation no longer exists in `colour` (a deleted model)
    is dropped. Call only after the audit passed.
    """
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r}: expected one of {', '.join(COLOURS)}")
    with writing(settings) as con:
        previous = live_colour(con)
        schemas = coloured_schemas(con, colour)
        if not schemas:
            raise ValueError(f"nothing built in the {colour} colour: run the build first")
        relations = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in (select unnest(?::varchar[])) order by 1, 2",
            [list(schemas.values())],
        ).fetchall()
        wanted = {(schema.removesuffix(f"__{colour}"), name) for schema, name in relations}
        existing = dict(
            ((schema, name), kind)
            for schema, name, kind in con.execute(
                "select table_schema, table_name, table_type from information_schema.tables "
                "where table_schema in (select unnest(?::varchar[]))",
                [list(schemas)],
            ).fetchall()
        )
        # the unpublished part of each colour's incremental models on record: the feature
        # marts' days (a colour built before the column has none) and the lines the
        # load-time models appended (macros/loads_unsettled.sql)
        unsettled = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema in (select unnest(?::varchar[])) "
            "and table_name || '.' || column_name in (select unnest(?::varchar[]))",
            [list(schemas.values()), [f"{table}.{column}" for table, column in UNSETTLED]],
        ).fetchall()
        stale = [
            (schema, name)
            for schema, name, sql in con.execute(
                "select schema_name, view_name, sql from duckdb_views() "
                "where not internal and schema_name in (select unnest(?::varchar[]))",
                [list(schemas)],
            ).fetchall()
            if (schema, name) not in wanted and _colour_read(sql, schema) is not None
        ]
        ensure(con, PUBLICATIONS_TABLE, PUBLICATION_DAYS_TABLE)
        publication_id = uuid.uuid4().hex
        con.execute("begin transaction")
        try:
            for base in schemas:
                con.execute(f'create schema if not exists "{base}"')
            for schema, name in relations:
                base = schema.removesuffix(f"__{colour}")
                if existing.get((base, name)) == "BASE TABLE":
                    con.execute(f'drop table "{base}"."{name}"')
                con.execute(
                    f'create or replace view "{base}"."{name}" as select * from "{schema}"."{name}"'
                )
            for schema, name in stale:
                con.execute(f'drop view "{schema}"."{name}"')
            for schema, table, column in unsettled:  # all written so far is vouched for now
                if table == FEATURE_BUILDS:  # what this publication vouched for, kept
                    con.execute(
                        f"insert into {PUBLICATION_DAYS_TABLE} "
                        f'select ?, ? || relation_name, {column} from "{schema}"."{table}"',
                        [publication_id, f"{schema.removesuffix(f'__{colour}')}."],
                    )
                con.execute(f'update "{schema}"."{table}" set "{column}" = null')
            con.execute(
                f"insert into {PUBLICATIONS_TABLE} values (?, ?, ?, ?, ?, ?, ?)",
                [
                    publication_id,
                    colour,
                    previous,
                    len(relations),
                    len(stale),
                    validation_run_id,
                    datetime.now(UTC).replace(tzinfo=None),
                ],
            )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return Publication(
        publication_id, colour, previous, len(relations), len(stale), validation_run_id
    )


def audit_and_publish(
    settings: Settings, colour: str, assets: list[str] | None = None
) -> tuple[Publication, ValidationReport]:
    """Run the suites on `colour`'s build, then publish it, or raise `PublicationBlockedError`.

    Warnings are reported and do not block; every result is recorded in
    `monitoring.validation_results` and Data Docs whatever the outcome.
    """
    from expectations.run import validate

    report = validate(settings, assets, schemas=audit_schemas(settings, colour), lines="problems")
    if report.critical_failed:
        raise PublicationBlockedError(colour, report.failed_suites(), report.data_docs)
    return publish(settings, colour, report.run_id), report
