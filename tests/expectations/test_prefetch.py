"""Duplicate-key counts started before GX is imported: the same numbers, used once, or not at all."""

from __future__ import annotations

import duckdb
import pytest

from expectations.declared import DeclaredRelation, DeclaredTest
from expectations.prefetch import DuplicateKeyPrefetch, declared_keys, duplicate_keys_sql
from expectations.run import validate
from tests.expectations.conftest import stage


def _feature_set() -> DeclaredRelation:
    columns = ("user_id", "as_of_date", "feature_timestamp", "feature_set_version", "x")
    return DeclaredRelation(
        schema="features",
        name="fs_a__user_daily",
        kind="model",
        declared_columns=columns,
        tests=(
            DeclaredTest(
                "unique_combination",
                None,
                {"columns": ["user_id", "as_of_date", "feature_set_version"]},
                "error",
            ),
            DeclaredTest("unique", "x", {}, "warn"),
            DeclaredTest("unique", "not_a_column", {}, "error"),
        ),
    )


def test_declared_keys_are_the_feature_set_builder_keys():
    assert declared_keys(_feature_set()) == [
        ("user_id", "as_of_date", "feature_set_version"),
        ("x",),
        ("user_id", "feature_timestamp", "feature_set_version"),
    ]


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("create schema s")
    con.execute(
        "create table s.t as select i % 5 as a, case when i < 3 then null else i end as b "
        "from range(20) r(i)"
    )
    yield con
    con.close()


def test_prefetched_counts_equal_the_query_and_unwanted_keys_are_cancelled(con):
    keys = [("s.t", ("a",)), ("s.t", ("b",)), ("s.t", ("a", "b"))]
    with DuplicateKeyPrefetch(con, keys) as prefetch:
        taken = prefetch.take("s.t", [["a"], ["b"]])
        assert set(taken) == {("a",), ("b",)}
        assert taken[("a",)].result() == {"keys": 5, "rows": 20}
        # nulls compare equal: three null b's are one duplicated key
        assert taken[("b",)].result() == {"keys": 1, "rows": 3}
        assert prefetch.take("s.u", [["a"]]) == {}
    assert con.execute(duplicate_keys_sql("s.t", ["a", "b"])).fetchone() == (0, 0)


def test_a_quoted_column_name_is_counted(con):
    con.execute('create table s."odd ""name""" as select 1 as "a b" from range(3)')
    with DuplicateKeyPrefetch(con, [('s.odd "name"', ("a b",))]) as prefetch:
        [future] = prefetch.take('s.odd "name"', [["a b"]]).values()
        assert future.result() == {"keys": 1, "rows": 3}


def test_validate_reports_the_same_with_and_without_the_prefetch(warehouse, monkeypatch):
    asset = "features.fs_churn__user_daily"
    staged = stage(warehouse, asset, "select * from {src} union all (select * from {src} limit 2)")

    def results(report):
        return {
            r.expectation: (r.success, r.observed_value, r.unexpected_count) for r in report.rows
        }

    with_prefetch = validate(
        warehouse, [asset], relations={asset: staged}, record=False, data_docs=False
    )
    monkeypatch.setattr("expectations.run.prefetch_keys", lambda *args, **kwargs: [])
    without = validate(warehouse, [asset], relations={asset: staged}, record=False, data_docs=False)
    assert results(with_prefetch) == results(without)
    unique = {k: v for k, v in results(without).items() if "compound_key" in k}
    assert unique and all(not success for success, *_ in unique.values())
