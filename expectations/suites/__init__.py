"""Suite builders: one per asset, derived from what dbt and the warehouse declare.

An *asset* is a warehouse relation a suite checks, named ``schema.table`` (the name
``loopline validate --asset`` takes). Every relation dbt declares in the ``raw`` (sources),
``staging``, ``core`` and ``features`` schemas is an asset with its layer's builder; the
prediction tables of ``ml`` are assets once scoring has written them. An asset whose data
means more than its YAML can say (ranges, null rates, cross-column rules) registers its own
builder with :func:`builder`, which usually starts from its layer's checks:

    @builder("features.fs_acme__account_daily")
    def fs_acme__account_daily(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
        return feature_set(relation, ctx) + [
            critical(gxe.ExpectColumnValuesToBeBetween(column="seats", min_value=0)),
        ]

Each expectation is marked **critical** (a failure stops publication) or **warning** (it is
reported and the run goes on) with GX's own ``severity`` field, and its ``meta`` says which
declaration or rule it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity

from expectations.declared import DeclaredRelation
from expectations.unique_key import ExpectCompoundKeyToBeUnique

Builder = Callable[[DeclaredRelation, "BuildContext"], list[Expectation]]

# schema -> layer; a relation in another schema is not validated unless a builder names it
LAYERS: dict[str, str] = {
    "raw": "raw",
    "staging": "staging",
    "core": "core",
    "features": "features",
}


@dataclass(frozen=True)
class Policy:
    """Thresholds that are choices, not facts about the data (overridable per column in dbt
    YAML: ``meta: {max_null_fraction: 0.5, min_value: 0, max_value: 1}``)."""

    max_null_fraction: float = 0.25  # share of nulls in a feature column above which we warn


@dataclass
class BuildContext:
    """What a builder may look at besides the relation's declaration."""

    con: duckdb.DuckDBPyConnection  # the warehouse being validated (read reference values)
    physical: str  # schema.table actually validated (a staged copy or the published one)
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class Asset:
    name: str  # schema.table, as published
    layer: str
    build: Builder
    required: bool  # a declared dbt model must exist; sources and outputs may not yet


_BUILDERS: dict[str, tuple[str, Builder]] = {}


def builder(name: str, layer: str | None = None) -> Callable[[Builder], Builder]:
    """Register the suite builder of one asset (``schema.table``)."""

    def register(fn: Builder) -> Builder:
        _BUILDERS[name] = (layer or LAYERS.get(name.split(".", 1)[0], "other"), fn)
        return fn

    return register


# -- marking ------------------------------------------------------------------------------


def critical(expectation: Expectation, rule: str = "") -> Expectation:
    """Mark `expectation` critical: its failure stops publication."""
    return _mark(expectation, FailureSeverity.CRITICAL, rule)


def warning(expectation: Expectation, rule: str = "") -> Expectation:
    """Mark `expectation` as a warning: reported, the run goes on."""
    return _mark(expectation, FailureSeverity.WARNING, rule)


def _mark(expectation: Expectation, severity: FailureSeverity, rule: str) -> Expectation:
    expectation.severity = severity
    meta = dict(expectation.meta or {})
    meta["critical"] = severity == FailureSeverity.CRITICAL
    if rule:
        meta["rule"] = rule
    expectation.meta = meta
    return expectation


def is_critical(expectation_meta: Mapping[str, Any] | None, severity: Any) -> bool:
    """Whether a stored expectation is critical (meta wins; GX's severity otherwise)."""
    if expectation_meta and "critical" in expectation_meta:
        return bool(expectation_meta["critical"])
    return str(getattr(severity, "value", severity)) == FailureSeverity.CRITICAL.value


# -- types --------------------------------------------------------------------------------

_TYPE_ALIASES = {
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT8": "BIGINT",
    "LONG": "BIGINT",
    "TEXT": "VARCHAR",
    "STRING": "VARCHAR",
    "FLOAT8": "DOUBLE",
    "DOUBLE PRECISION": "DOUBLE",
    "BOOL": "BOOLEAN",
    "NUMERIC": "DECIMAL",
    "TIMESTAMPTZ": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "DATETIME": "TIMESTAMP",
}


def gx_type(declared: str) -> str:
    """The type name GX compares with (a SQLAlchemy type class) for a dbt/DuckDB type."""
    base = declared.strip().upper().split("(", 1)[0].strip()
    return _TYPE_ALIASES.get(base, base)


def _nested(declared: str) -> bool:
    text = declared.strip().upper()
    return text.endswith("]") or text.startswith(("STRUCT", "MAP", "LIST", "UNION"))


def convention_type(column: str) -> str | None:
    """The type a column's name promises by the repo's naming rules (STYLE.md), if any."""
    if column.startswith(("is_", "has_")):
        return "BOOLEAN"
    if column.endswith("_at") and not column.startswith("_"):
        return "TIMESTAMP"
    if column.endswith("_date"):
        return "DATE"
    return None


# -- checks derived from declarations -------------------------------------------------------


def row_count(relation: DeclaredRelation, *, must_have_rows: bool) -> list[Expectation]:
    exp = gxe.ExpectTableRowCountToBeBetween(min_value=1)
    rule = f"{relation.relation} has rows"
    return [critical(exp, rule) if must_have_rows else warning(exp, rule)]


def schema(relation: DeclaredRelation, *, exact: bool) -> list[Expectation]:
    """The declared columns are there (and nothing else, when `exact`)."""
    if not relation.declared_columns:
        return []
    return [
        critical(
            gxe.ExpectTableColumnsToMatchSet(
                column_set=list(relation.declared_columns), exact_match=exact
            ),
            "declared columns" + (" (contract)" if exact else ""),
        )
    ]


def types(relation: DeclaredRelation, *, conventions: bool) -> list[Expectation]:
    """Contract data types; with `conventions`, the types column names promise."""
    out: list[Expectation] = []
    for column in relation.columns():
        declared = relation.declared_types.get(column)
        if declared and _nested(declared):
            continue  # lists, structs, maps: no SQLAlchemy type to compare with
        if declared:
            out.append(
                critical(
                    gxe.ExpectColumnValuesToBeOfType(column=column, type_=gx_type(declared)),
                    "contract data_type",
                )
            )
        elif conventions and (expected := convention_type(column)):
            out.append(
                critical(
                    gxe.ExpectColumnValuesToBeOfType(column=column, type_=expected),
                    "naming convention (is_/has_ boolean, _at timestamp, _date date)",
                )
            )
    return out


def declared_tests(relation: DeclaredRelation) -> list[Expectation]:
    """dbt's generic tests as expectations; ``severity: warn`` gives a warning.

    Tests across relations (relationships, custom macros) stay with dbt: a suite checks
    one relation.
    """
    out: list[Expectation] = []
    for test in relation.tests:
        mark = warning if test.severity == "warn" else critical
        rule = f"dbt test {test.name}"
        if test.name == "not_null" and test.column:
            out.append(mark(gxe.ExpectColumnValuesToNotBeNull(column=test.column), rule))
        elif test.name == "unique" and test.column and _is_column(relation, test.column):
            out.append(mark(ExpectCompoundKeyToBeUnique(column_list=[test.column]), rule))
        elif test.name == "unique_combination" and test.kwargs.get("columns"):
            columns = [str(c) for c in test.kwargs["columns"]]
            out.append(mark(ExpectCompoundKeyToBeUnique(column_list=columns), rule))
        elif test.name == "accepted_values" and test.column and test.kwargs.get("values"):
            values = list(test.kwargs["values"])
            out.append(
                mark(gxe.ExpectColumnValuesToBeInSet(column=test.column, value_set=values), rule)
            )
    return out


def declared_meta(relation: DeclaredRelation) -> list[Expectation]:
    """Ranges and null rates declared in a column's dbt ``meta``."""
    out: list[Expectation] = []
    for column, meta in relation.column_meta.items():
        mark = warning if str(meta.get("severity", "")).lower() == "warn" else critical
        low, high = meta.get("min_value"), meta.get("max_value")
        if low is not None or high is not None:
            out.append(
                mark(
                    gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high),
                    "column meta range",
                )
            )
        if meta.get("max_null_fraction") is not None:
            out.append(
                warning(
                    gxe.ExpectColumnValuesToNotBeNull(
                        column=column, mostly=1.0 - float(meta["max_null_fraction"])
                    ),
                    "column meta null rate",
                )
            )
    return out


def _is_column(relation: DeclaredRelation, name: str) -> bool:
    return name in relation.columns() or name in relation.warehouse_columns


def not_null(columns: Iterable[str], rule: str) -> list[Expectation]:
    return [critical(gxe.ExpectColumnValuesToNotBeNull(column=c), rule) for c in columns]


def non_negative(
    columns: Iterable[str], rule: str = "counts, amounts and durations"
) -> list[Expectation]:
    return [
        critical(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0), rule) for c in columns
    ]


def between(column: str, low: float | None, high: float | None, rule: str) -> Expectation:
    return critical(
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high), rule
    )


def unique_key(columns: list[str], rule: str) -> Expectation:
    return critical(ExpectCompoundKeyToBeUnique(column_list=columns), rule)


def dedupe(expectations: list[Expectation]) -> list[Expectation]:
    """The list without repeats (same type and arguments); the first marking wins."""
    seen: set[str] = set()
    out: list[Expectation] = []
    for exp in expectations:
        key = exp.expectation_type + repr(sorted(exp.configuration.kwargs.items()))
        if key not in seen:
            seen.add(key)
            out.append(exp)
    return out


# -- discovery ------------------------------------------------------------------------------


def layer_builder(layer: str) -> Builder:
    from expectations.suites import core, features, raw, staging

    return {
        "raw": raw.raw_table,
        "staging": staging.staging_model,
        "core": core.core_mart,
        "features": features.feature_relation,
    }[layer]


def discover(declared: Mapping[str, DeclaredRelation]) -> dict[str, Asset]:
    """Every asset: declared relations of the validated layers, plus registered builders."""
    _load_builtin_builders()
    assets: dict[str, Asset] = {}
    for name, relation in sorted(declared.items()):
        layer = LAYERS.get(relation.schema)
        if layer is None or relation.kind not in ("model", "source"):
            continue
        registered = _BUILDERS.get(name)
        build = registered[1] if registered else layer_builder(layer)
        assets[name] = Asset(name, layer, build, required=relation.kind == "model")
    for name, (layer, build) in sorted(_BUILDERS.items()):
        if name not in assets:
            # outputs written by the loop (ml.*): validated once they exist
            assets[name] = Asset(name, layer, build, required=False)
    return assets


def _load_builtin_builders() -> None:
    # importing the modules registers their @builder functions
    from expectations.suites import core, features, predictions, raw, staging  # noqa: F401
