"""What the project declares about a warehouse relation, read once for every suite builder.

Two sources, so a suite is derived rather than written by hand:

- **the warehouse** (``information_schema.columns``): the columns a relation has and their
  DuckDB types, for relations dbt does not describe (the ``ml`` outputs) and as the ground
  truth of what was built;
- **the dbt manifest** (``<data_dir>/dbt/target/manifest.json``, written by every dbt run):
  for models and sources, the declared columns, contract data types, and the generic tests
  (``not_null``, ``unique``, ``accepted_values``, ``unique_combination``) with their severity.

A team that adds a dbt model gets a suite for it from its YAML alone; the builders in
``expectations/suites/`` add what YAML cannot say (ranges, null rates, cross-column rules).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from loopline.settings import Settings


@dataclass(frozen=True)
class DeclaredTest:
    """One dbt generic test on a relation (``column`` is None for table-level tests)."""

    name: str  # not_null | unique | accepted_values | unique_combination | ...
    column: str | None
    kwargs: Mapping[str, Any]
    severity: str  # error | warn
    where: str | None = None  # the test's `where` config, placeholders unfilled


@dataclass(frozen=True)
class DeclaredRelation:
    """A relation as dbt declares it and the warehouse has it."""

    schema: str
    name: str
    kind: str  # model | source | seed | snapshot | table (not in dbt)
    declared_columns: tuple[str, ...] = ()
    declared_types: Mapping[str, str] = field(default_factory=dict)  # column -> contract type
    column_meta: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tests: tuple[DeclaredTest, ...] = ()
    contract: bool = False
    warehouse_columns: Mapping[str, str] = field(default_factory=dict)  # column -> DuckDB type

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def exists(self) -> bool:
        return bool(self.warehouse_columns)

    def columns(self) -> list[str]:
        """Declared columns when dbt declares any, else the warehouse's."""
        return list(self.declared_columns) or list(self.warehouse_columns)

    def tests_named(self, *names: str) -> list[DeclaredTest]:
        return [test for test in self.tests if test.name in names]


def manifest_path(settings: Settings) -> Path:
    """Where loopline's dbt runs leave their manifest (see loopline/dbt.py)."""
    return settings.data_dir / "dbt" / "target" / "manifest.json"


def load_manifest(settings: Settings) -> dict[str, Any] | None:
    """The dbt manifest of this data folder, or None when dbt has not run here yet."""
    path = manifest_path(settings)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _node_relation(node: Mapping[str, Any]) -> tuple[str, str]:
    if node["resource_type"] == "source":
        return node["schema"], node.get("identifier") or node["name"]
    # the published name: a write-audit-publish build's nodes live in `<schema>__<colour>`
    # (loopline/publish.py); validate(schemas=...) maps the name back to the colour judged
    schema = str(node["schema"])
    base = (node.get("config") or {}).get("schema")
    if base and schema.startswith(f"{base}__"):
        schema = str(base)
    return schema, node.get("alias") or node["name"]


def _test_target(node: Mapping[str, Any]) -> str | None:
    attached = node.get("attached_node")
    if attached:
        return str(attached)
    parents = node.get("depends_on", {}).get("nodes", [])
    return str(parents[0]) if len(parents) == 1 else None


def declared_relations(manifest: Mapping[str, Any]) -> dict[str, DeclaredRelation]:
    """Every model, seed, snapshot and source of the manifest, keyed by ``schema.name``."""
    tests: dict[str, list[DeclaredTest]] = {}
    for node in manifest.get("nodes", {}).values():
        meta = node.get("test_metadata")
        if node.get("resource_type") != "test" or not meta:
            continue
        target = _test_target(node)
        if target is None:
            continue
        kwargs = dict(meta.get("kwargs") or {})
        kwargs.update(kwargs.pop("arguments", None) or {})
        tests.setdefault(target, []).append(
            DeclaredTest(
                name=str(meta["name"]),
                column=node.get("column_name") or kwargs.get("column_name"),
                kwargs=kwargs,
                severity=str(node.get("config", {}).get("severity", "error")).lower(),
                where=(node.get("config") or {}).get("where") or None,
            )
        )
    nodes = [
        *(
            n
            for n in manifest.get("nodes", {}).values()
            if n.get("resource_type") in ("model", "seed", "snapshot")
        ),
        *manifest.get("sources", {}).values(),
    ]
    out: dict[str, DeclaredRelation] = {}
    for node in nodes:
        schema, name = _node_relation(node)
        columns = node.get("columns") or {}
        contract = bool((node.get("config", {}).get("contract") or {}).get("enforced"))
        out[f"{schema}.{name}"] = DeclaredRelation(
            schema=schema,
            name=name,
            kind=str(node["resource_type"]),
            declared_columns=tuple(columns),
            declared_types={c: v["data_type"] for c, v in columns.items() if v.get("data_type")},
            column_meta={c: v.get("meta") or {} for c, v in columns.items() if v.get("meta")},
            tests=tuple(tests.get(node["unique_id"], ())),
            contract=contract,
        )
    return out


def warehouse_columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> dict[str, str]:
    """Column -> DuckDB type of a relation, in table order ({} when it does not exist)."""
    rows = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    ).fetchall()
    return {str(column): str(data_type) for column, data_type in rows}


def warehouse_relations(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """Names of the tables and views in one schema of the warehouse."""
    rows = con.execute(
        "select table_name from information_schema.tables where table_schema = ? order by 1",
        [schema],
    ).fetchall()
    return [str(name) for (name,) in rows]


def describe(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    declared: Mapping[str, DeclaredRelation],
    physical: str | None = None,
) -> DeclaredRelation:
    """The declaration of `relation` with the columns of `physical` (default: itself).

    `physical` is where the data to check lives, e.g. a staged copy awaiting publication.
    """
    schema, name = relation.split(".", 1)
    base = declared.get(relation) or DeclaredRelation(schema=schema, name=name, kind="table")
    where_schema, where_name = (physical or relation).split(".", 1)
    return DeclaredRelation(
        schema=base.schema,
        name=base.name,
        kind=base.kind,
        declared_columns=base.declared_columns,
        declared_types=base.declared_types,
        column_meta=base.column_meta,
        tests=base.tests,
        contract=base.contract,
        warehouse_columns=warehouse_columns(con, where_schema, where_name),
    )
