"""Great Expectations' SQL datasource on DuckDB: the one adapter that makes it work.

Why this module exists
----------------------
GX 1.24's generic SQL datasource over ``duckdb-engine`` (0.17) fails on DuckDB in three ways,
each fixed here by a subclass (no library code is patched in place):

1. **Results read after the connection went back to the pool.**
   ``SqlAlchemyExecutionEngine.execute_query`` returns a live cursor result from inside a
   ``with engine.connect()`` block; the pool's reset-on-return rolls back the DuckDB
   connection, and DuckDB drops the pending result, so every bundled metric query comes back
   empty (``IndexError: list index out of range`` in ``resolve_metric_bundle``). A pool
   setting does not help (``StaticPool``, ``NullPool``, ``pool_reset_on_return=None`` were
   tried). :class:`DuckDBExecutionEngine` buffers the rows while the connection is open
   (``result.freeze()``); GX's metric queries return aggregates or short lists, so the
   buffer is a few rows, never the table.
2. **Column reflection.** With SQLAlchemy 2.1.9 (the adapter's tests also pass on 2.0.58,
   should the lock move back for Prefect) the PostgreSQL reflection duckdb-engine inherits
   reads ``pg_catalog.pg_collation``, which DuckDB lacks; GX then falls back to
   ``select * from <table>`` *without the schema*, so any table outside ``main`` is "missing"
   and column/type expectations fail. :class:`DuckDBInspector` reads DuckDB's own
   ``information_schema.columns`` instead.
3. **One configuration per database file.** duckdb-engine opens DuckDB with a custom user
   agent; DuckDB refuses a second connection to a file already open in the process (dbt runs
   in-process) with a different configuration. The engine here opens plain connections.

When to drop it
---------------
Delete this module and use ``context.data_sources.add_sql(connection_string="duckdb:///...")``
once (1) GX fetches inside the connection block (or duckdb-engine keeps results across a
rollback), (2) duckdb-engine's reflection works with the SQLAlchemy in ``uv.lock`` and (3) its
connections can share a file with in-process dbt. ``tests/expectations/test_gx_duckdb.py``
checks each of the three with the stock classes and says which still fails.
"""

from __future__ import annotations

import builtins
import re
from typing import Any, ClassVar, Literal

import duckdb
import sqlalchemy as sa
from great_expectations.datasource.fluent import SQLDatasource
from great_expectations.execution_engine import SqlAlchemyExecutionEngine

DATASOURCE_TYPE = "loopline_duckdb"


def _duckdb_path(connection_string: str) -> str:
    prefix = "duckdb:///"
    if not connection_string.startswith(prefix):
        raise ValueError(
            f"{connection_string!r} is not a DuckDB file URL; use duckdb:///<absolute path>"
        )
    return connection_string[len(prefix) :]


def make_engine(connection_string: str) -> sa.Engine:
    """A SQLAlchemy engine on a DuckDB file, with connections configured like dbt's."""
    try:
        from duckdb_engine import ConnectionWrapper
    except ImportError as exc:  # pragma: no cover - a packaging error, not a user error
        raise RuntimeError(
            "great_expectations needs the duckdb-engine package to read the warehouse: "
            "add duckdb-engine to the environment (uv sync)"
        ) from exc
    path = _duckdb_path(connection_string)
    # plain duckdb.connect: the same configuration as in-process dbt and loopline.warehouse, so
    # all of them can share the one database instance DuckDB keeps per file and process
    return sa.create_engine(
        connection_string, creator=lambda: ConnectionWrapper(duckdb.connect(path))
    )


_PARAMETERISED = re.compile(r"^(DECIMAL|NUMERIC)\((\d+),\s*(\d+)\)$")


def sqlalchemy_type(duckdb_type: str) -> Any:
    """The SQLAlchemy type for a DuckDB type name (``NullType`` for nested/unsigned types)."""
    name = duckdb_type.strip().upper()
    decimal = _PARAMETERISED.match(name)
    if decimal:
        return sa.types.DECIMAL(int(decimal.group(2)), int(decimal.group(3)))
    if name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return sa.types.TIMESTAMP(timezone=True)
    cls = getattr(sa.types, name, None)
    if isinstance(cls, type) and issubclass(cls, sa.types.TypeEngine):
        return cls()
    return sa.types.NullType()


class DuckDBInspector:
    """Column reflection from DuckDB's information schema; everything else delegated."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._inner = sa.inspect(engine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_columns(
        self, table_name: str, schema: str | None = None, **_: Any
    ) -> list[dict[str, Any]]:
        query = sa.text(
            "select column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = :schema and table_name = :table order by ordinal_position"
        )
        with self._engine.connect() as connection:
            rows = connection.execute(
                query, {"schema": schema or "main", "table": str(table_name)}
            ).fetchall()
        if not rows:
            raise sa.exc.NoSuchTableError(f"{schema}.{table_name}")
        return [
            {
                "name": name,
                "type": sqlalchemy_type(str(data_type)),
                "nullable": nullable == "YES",
                "default": None,
            }
            for name, data_type, nullable in rows
        ]

    def get_pk_constraint(self, table_name: str, schema: str | None = None, **_: Any) -> dict:
        # warehouse tables built by dbt have no primary keys; uniqueness is an expectation
        return {"constrained_columns": [], "name": None}


class DuckDBExecutionEngine(SqlAlchemyExecutionEngine):
    """GX's SQL execution engine with results buffered before the connection is returned."""

    def __init__(self, connection_string: str | None = None, **kwargs: Any) -> None:
        if connection_string is not None and kwargs.get("engine") is None:
            kwargs["engine"] = make_engine(connection_string)
        super().__init__(connection_string=connection_string, **kwargs)

    def execute_query(self, query: Any) -> Any:
        """The query's rows, fetched while the connection is still checked out."""
        with self.get_connection() as connection:
            result = self._execute_query_with_recovery(connection, query)
            return result.freeze()()

    def get_inspector(self) -> Any:
        if self._inspector is None:
            self._inspector = DuckDBInspector(self.engine)  # type: ignore[assignment]
        return self._inspector


class DuckDBDatasource(SQLDatasource):
    """A GX datasource on a DuckDB file (``context.data_sources.add_loopline_duckdb``)."""

    type: Literal["loopline_duckdb"] = "loopline_duckdb"  # type: ignore[assignment]
    # GX's asset registry keys on the class; nothing else to declare
    asset_types: ClassVar = SQLDatasource.asset_types

    @property
    def execution_engine_type(self) -> builtins.type[SqlAlchemyExecutionEngine]:
        return DuckDBExecutionEngine

    def _create_engine(self) -> sa.Engine:
        return make_engine(str(self.connection_string))


def add_duckdb_datasource(context: Any, name: str, path: str) -> DuckDBDatasource:
    """Add (or replace) a datasource on the DuckDB file at `path` to a GX context."""
    connection_string = f"duckdb:///{path}"
    return context.data_sources.add_or_update_loopline_duckdb(
        name=name, connection_string=connection_string
    )
