"""Declarations read from a dbt manifest: columns, contract types, tests and severities."""

from __future__ import annotations

from expectations.declared import declared_relations
from expectations.suites import convention_type, declared_tests, gx_type

MANIFEST = {
    "nodes": {
        "model.p.dim_x": {
            "unique_id": "model.p.dim_x",
            "resource_type": "model",
            "schema": "core",
            "alias": "dim_x",
            "name": "dim_x",
            "config": {"contract": {"enforced": True}},
            "columns": {
                "x_id": {"data_type": "bigint", "meta": {}},
                "kind": {"data_type": "varchar", "meta": {"max_null_fraction": 0.5}},
                "amount": {"data_type": "decimal(18,2)", "meta": {}},
            },
        },
        "test.p.nn": {
            "resource_type": "test",
            "attached_node": "model.p.dim_x",
            "column_name": "x_id",
            "test_metadata": {"name": "not_null", "kwargs": {"column_name": "x_id"}},
            "config": {"severity": "ERROR"},
        },
        "test.p.av": {
            "resource_type": "test",
            "attached_node": "model.p.dim_x",
            "column_name": "kind",
            "test_metadata": {
                "name": "accepted_values",
                "kwargs": {"column_name": "kind", "arguments": {"values": ["a", "b"]}},
            },
            "config": {"severity": "warn"},
        },
        "test.p.src": {
            "resource_type": "test",
            "attached_node": None,
            "column_name": "line",
            "depends_on": {"nodes": ["source.p.events.lines"]},
            "test_metadata": {"name": "not_null", "kwargs": {"column_name": "line"}},
            "config": {"severity": "error"},
        },
        "test.p.rel": {
            "resource_type": "test",
            "attached_node": None,
            "depends_on": {"nodes": ["model.p.dim_x", "model.p.other"]},
            "test_metadata": {"name": "relationships", "kwargs": {}},
            "config": {"severity": "error"},
        },
    },
    "sources": {
        "source.p.events.lines": {
            "unique_id": "source.p.events.lines",
            "resource_type": "source",
            "schema": "raw",
            "identifier": "events_lines",
            "name": "lines",
            "config": {},
            "columns": {"line": {}, "_file": {}},
        }
    },
}


def test_models_and_sources_with_their_tests():
    relations = declared_relations(MANIFEST)
    assert set(relations) == {"core.dim_x", "raw.events_lines"}
    model = relations["core.dim_x"]
    assert model.contract and model.declared_columns == ("x_id", "kind", "amount")
    assert model.declared_types["amount"] == "decimal(18,2)"
    assert model.column_meta == {"kind": {"max_null_fraction": 0.5}}
    assert {(t.name, t.column, t.severity) for t in model.tests} == {
        ("not_null", "x_id", "error"),
        ("accepted_values", "kind", "warn"),
    }
    [accepted] = model.tests_named("accepted_values")
    assert accepted.kwargs["values"] == ["a", "b"]  # dbt 1.10+ `arguments:` unwrapped
    source = relations["raw.events_lines"]
    assert source.kind == "source" and [t.column for t in source.tests] == ["line"]


def test_declared_tests_keep_their_severity():
    model = declared_relations(MANIFEST)["core.dim_x"]
    marks = {e.expectation_type: e.meta["critical"] for e in declared_tests(model)}
    assert marks == {
        "expect_column_values_to_not_be_null": True,
        "expect_column_values_to_be_in_set": False,
    }


def test_type_names():
    assert gx_type("decimal(18,2)") == "DECIMAL"
    assert gx_type("double") == "DOUBLE"
    assert gx_type("text") == "VARCHAR"
    assert convention_type("is_current") == "BOOLEAN"
    assert convention_type("created_at") == "TIMESTAMP"
    assert convention_type("_loaded_at") is None
    assert convention_type("as_of_date") == "DATE"
    assert convention_type("user_id") is None
