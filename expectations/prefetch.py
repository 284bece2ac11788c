"""Duplicate-key counts computed while Great Expectations is still being imported.

A suite's uniqueness checks (``expectations.unique_key``) are its most expensive metrics: one
``GROUP BY`` over the whole relation each (on a 5-million-row feature table, two of them took
4.2 s of the suite's 6.2 s in DuckDB). Importing Great Expectations takes about as long again
(4-5 s, pure Python on one core). Neither needs the other, so `validate` starts the queries
here, on a DuckDB cursor in a background thread (DuckDB releases the GIL), before it imports
GX; the ``loopline.duplicate_keys`` metric then takes the answer instead of asking again.

Nothing here imports GX. Which keys to count is read from the declaration alone
(:func:`declared_keys`: dbt's ``unique`` and ``unique_combination`` tests and the feature-set
key the builders add); once the suite is built, :meth:`DuplicateKeyPrefetch.keep` cancels the
keys it does not check, and a key the suite checks but nobody prefetched is counted by the
metric as before. The answers are the metric's own query, run under the same writer lock, so
a prefetched result and a computed one are the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import duckdb

from expectations.declared import DeclaredRelation

#: bookkeeping columns of a feature-set row (docs/architecture.md)
BOOKKEEPING = ("as_of_date", "feature_timestamp", "created_at", "feature_set_version")

Key = tuple[str, tuple[str, ...]]  # (schema.table validated, key columns)


def entity_key(relation: DeclaredRelation) -> list[str]:
    """The entity key: the declared unique combination without the as-of day and version."""
    for test in relation.tests_named("unique_combination"):
        columns = [str(c) for c in test.kwargs.get("columns", [])]
        if "feature_set_version" in columns or relation.name.startswith("label_"):
            return [c for c in columns if c not in BOOKKEEPING]
    return []


def feature_set_key(relation: DeclaredRelation, entity: Sequence[str] | None = None) -> list[str]:
    """One row per entity, ``feature_timestamp`` and version (empty without an entity key)."""
    entity = list(entity or entity_key(relation))
    return [*entity, "feature_timestamp", "feature_set_version"] if entity else []


def declared_keys(relation: DeclaredRelation) -> list[tuple[str, ...]]:
    """The column lists a default suite checks for uniqueness, from the declaration alone."""
    keys: list[tuple[str, ...]] = []
    columns = set(relation.columns()) | set(relation.warehouse_columns)
    for test in relation.tests:
        if test.name == "unique" and test.column and test.column in columns:
            keys.append((test.column,))
        elif test.name == "unique_combination" and test.kwargs.get("columns"):
            keys.append(tuple(str(c) for c in test.kwargs["columns"]))
    if "feature_set_version" in relation.columns() and not relation.name.startswith("label_"):
        key = feature_set_key(relation)
        if key:
            keys.append(tuple(key))
    return list(dict.fromkeys(keys))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duplicate_keys_sql(relation: str, columns: Sequence[str]) -> str:
    """Keys occurring more than once, and the rows carrying them (nulls compare equal)."""
    table = ".".join(_identifier(part) for part in relation.split(".", 1))
    group = ", ".join(_identifier(c) for c in columns)
    return (
        "select count(*), coalesce(sum(n), 0) from "
        f"(select count(*) as n from {table} group by {group} having count(*) > 1)"
    )


class DuplicateKeyPrefetch:
    """Duplicate-key counts of (relation, key) pairs, computed one after another (one thread,
    one cursor of `con`); ``take`` hands a suite the futures of its keys."""

    def __init__(self, con: duckdb.DuckDBPyConnection, keys: Iterable[Key]) -> None:
        self._cursor = con.cursor()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duplicate-keys")
        self._futures: dict[Key, Future[dict[str, int]]] = {}
        for key in dict.fromkeys(keys):
            self._futures[key] = self._pool.submit(self._count, *key)

    def _count(self, relation: str, columns: tuple[str, ...]) -> dict[str, int]:
        row = self._cursor.execute(duplicate_keys_sql(relation, columns)).fetchone()
        return {"keys": int(row[0]), "rows": int(row[1])} if row else {"keys": 0, "rows": 0}

    def keep(self, relations: Iterable[str]) -> None:
        """Cancel the queries (not started yet) on relations other than `relations`."""
        kept = set(relations)
        for (relation, _), future in self._futures.items():
            if relation not in kept:
                future.cancel()

    def take(
        self, relation: str, keys: Iterable[Sequence[str]]
    ) -> dict[tuple[str, ...], Future[dict[str, int]]]:
        """The futures of `relation`'s `keys` that were prefetched; the relation's other
        queries are cancelled (its suite does not check those keys)."""
        wanted = {tuple(key) for key in keys}
        out = {}
        for (where, key), future in self._futures.items():
            if where != relation:
                continue
            if key in wanted:
                out[key] = future
            else:
                future.cancel()
        return out

    def close(self) -> None:
        """Cancel what has not started, wait for what has, release the cursor."""
        for future in self._futures.values():
            future.cancel()
        if not all(f.done() for f in self._futures.values()):
            self._cursor.interrupt()  # a query no suite asked for: stop it
        self._pool.shutdown(wait=True)
        self._cursor.close()

    def __enter__(self) -> DuplicateKeyPrefetch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
