"""The warehouse: the one module that opens DuckDB connections to it, holds its writer lock and
owns the DDL of the tables Python (not dbt) writes.

- `connect` opens a DuckDB file (the warehouse, a bench copy, `:memory:`) with the configured
  threads and memory limit: for processes that own the file (ingest, the GX runner).
- `warehouse_writer` holds the writer lock file; under `guarded_by(guard)` it enters the
  guard first (the flows: the Prefect slot, flows/slots.py).
- `open_warehouse` opens the warehouse as in-process dbt does (DuckDB refuses a second
  connection to one file with another configuration in the same process); `reading` and
  `writing` wrap it in a context, `writing` under the writer lock.
- `ensure` creates the Python-written tables (`ml.*`, `monitoring.validation_results`, the
  monitor's `monitoring.*`) from `TABLES`, so each is declared once here and nowhere else.
- Source databases (SQLite, Postgres) are attached with `attach_source`, their scanners loaded
  from pip packages (no download at run time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from loopline import locks
from loopline.settings import Settings

_EXTENSIONS = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}


def connect(
    path: Path | str, settings: Settings, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the configured threads and memory limit."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    # spills go to DuckDB's default for a file database, <file>.tmp/ beside it; it cannot be
    # switched once used, and dbt (in-process) shares the same database instance
    return con


def load_extension(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Load a scanner extension from its pip package (no download at run time)."""
    import duckdb_extensions

    name = _EXTENSIONS[kind]
    duckdb_extensions.import_extension(name, con=con)
    con.execute(f"load {name}")


def source_kind(url: str) -> str:
    """'sqlite' or 'postgres' for a source database URL, with a clear error otherwise."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    raise ValueError(
        f"LOOPLINE_SOURCE_DB_URL={url!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///path/to/file.sqlite or postgresql://user@host:port/dbname"
    )


def attach_source(
    con: duckdb.DuckDBPyConnection, url: str, alias: str = "src", read_only: bool = False
) -> None:
    """Attach the OLTP source database (SQLite file or Postgres) under `alias`."""
    kind = source_kind(url)
    load_extension(con, kind)
    mode = ", READ_ONLY" if read_only else ""
    if kind == "sqlite":
        target = url.removeprefix("sqlite:///")
        if not target.startswith("/"):
            target = str(Path(target).resolve())
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    else:
        target = url
    con.execute(f"attach '{target}' as {alias} (type {kind}{mode})")


class WarehouseBusyError(RuntimeError):
    """Another process holds the warehouse writer lock for too long."""


def writer_lock_path(warehouse: Path) -> Path:
    """The lock file beside the warehouse file that every writer takes."""
    return warehouse.with_name(warehouse.name + ".writer.lock")


def holds_warehouse_writer(warehouse: Path | str) -> bool:
    """True when this process holds the writer lock of the warehouse file `warehouse`."""
    return locks.holds(writer_lock_path(Path(warehouse)))


def lock_holder(warehouse: Path | str) -> str:
    """Who holds (or last held) the writer lock: "pid 123 (loopline build) since 21:30:05"."""
    return locks.holder(writer_lock_path(Path(warehouse)))


# what a writer takes before the lock file, when a caller set one (`guarded_by`): the flows'
# Prefect slot (flows/slots.py), so a flow run waiting for the warehouse shows as waiting
_guard: ContextVar[Callable[[], AbstractContextManager[object]] | None] = ContextVar(
    "loopline_warehouse_guard", default=None
)


@contextmanager
def guarded_by(guard: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Within the block, every outermost take of the writer lock first enters `guard()`.

    The guard is always the outer of the two (guard, then lock file), so two holders can
    never wait for each other: a writer without a guard (the command line, plain dbt) only
    ever holds the lock file, which a guarded writer waits for while holding its guard.
    """
    token = _guard.set(guard)
    try:
        yield
    finally:
        _guard.reset(token)


@contextmanager
def warehouse_writer(
    settings: Settings, timeout_s: float = 1800.0, waiting_note_s: float = 2.0
) -> Iterator[Path]:
    """Hold the single-writer lock of the warehouse (see docs/architecture.md).

    Every process that opens the warehouse file takes it (DuckDB lets one process at a time
    open a file for writing, and none read beside it), so concurrent runs queue here instead
    of failing on DuckDB's own file lock. A waiter says who holds the lock and since when
    (after `waiting_note_s`, then every minute). Re-entrant within a process. Under
    `guarded_by`, the outermost take enters the guard first.
    """
    path = settings.resolved_warehouse_path
    guard = _guard.get()
    with contextlib.ExitStack() as held:
        if guard is not None and not holds_warehouse_writer(path):
            held.enter_context(guard())
        held.enter_context(
            locks.exclusive_file(
                writer_lock_path(path),
                "the warehouse",
                timeout_s=timeout_s,
                waiting_note_s=waiting_note_s,
                busy=WarehouseBusyError,
            )
        )
        yield path


class NoWarehouseError(ValueError):
    """The warehouse file does not exist yet (nothing has been ingested and built)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no warehouse at {path}: run `loopline ingest` and `loopline build` "
            "(or `loopline demo`) first"
        )


def open_warehouse(settings: Settings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse configured as in-process dbt opens it (DuckDB's defaults).

    One process shares one DuckDB instance per file, and DuckDB refuses a second connection
    with another configuration, so everything that runs beside dbt in a process opens the
    warehouse this way. Raises a clear error when no warehouse has been built yet.
    """
    path = settings.resolved_warehouse_path
    if read_only and not path.exists():
        raise NoWarehouseError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


@contextmanager
def reading(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse connection for reads, under the writer lock like any other opener.

    DuckDB refuses to open a file that another process has open for writing, even
    read-only, so a reader queues behind a writer rather than failing at once.
    """
    if not settings.resolved_warehouse_path.exists():
        raise NoWarehouseError(settings.resolved_warehouse_path)
    with warehouse_writer(settings):
        con = open_warehouse(settings)
        try:
            yield con
        finally:
            con.close()


@contextmanager
def writing(settings: Settings, timeout_s: float = 1800.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse connection held under the writer lock for the length of the block."""
    with warehouse_writer(settings, timeout_s):
        con = open_warehouse(settings)
        try:
            yield con
        finally:
            con.close()


# --------------------------------------------------------------------------------------------
# tables Python writes (dbt declares them as sources; models/sources/ml.yml, monitoring.yml)

PREDICTIONS_TABLE = "ml.churn_predictions"
RECOMMENDATIONS_TABLE = "ml.recommendations"
DECISIONS_TABLE = "ml.model_decisions"
VALIDATION_RESULTS_TABLE = "monitoring.validation_results"
PUBLICATIONS_TABLE = "monitoring.publications"
PUBLICATION_DAYS_TABLE = "monitoring.publication_days"
MONITOR_RUNS_TABLE = "monitoring.monitor_runs"
FEATURE_DRIFT_TABLE = "monitoring.feature_drift"
MODEL_PERFORMANCE_TABLE = "monitoring.model_performance"
RETRAIN_TRIGGERS_TABLE = "monitoring.retrain_triggers"

TABLES: dict[str, str] = {
    PREDICTIONS_TABLE: """(
        user_id bigint, as_of_date date, churn_probability double, is_high_risk boolean,
        threshold double, model_name varchar, model_version varchar,
        feature_set_version varchar, scored_at timestamp
    )""",
    RECOMMENDATIONS_TABLE: """(
        user_id bigint, as_of_date date, rank integer, show_id varchar, score double,
        model_name varchar, model_version varchar, scored_at timestamp
    )""",
    DECISIONS_TABLE: """(
        model_name varchar, version varchar, action varchar, promoted boolean,
        reason varchar, metric varchar, challenger_value double,
        champion_version varchar, champion_value double, margin double,
        gate_passed boolean, gate_failures varchar, run_id varchar,
        decided_at timestamp
    )""",
    VALIDATION_RESULTS_TABLE: """(
        run_id varchar not null,
        validated_at timestamp not null,
        asset varchar not null,          -- schema.table as published
        relation varchar not null,       -- schema.table validated (a staged copy, or the asset)
        suite varchar not null,
        expectation varchar not null,    -- type(arguments), readable
        expectation_type varchar not null,
        column_name varchar,
        critical boolean not null,
        success boolean not null,
        observed_value varchar,          -- JSON
        unexpected_count bigint,
        element_count bigint,
        exception varchar
    )""",
    PUBLICATIONS_TABLE: """(
        publication_id varchar not null,
        colour varchar not null,           -- the colour the plain schemas point at from now
        previous_colour varchar,
        relations integer not null,        -- views repointed
        dropped integer not null,          -- views of deleted models dropped
        validation_run_id varchar,         -- the audit that allowed it (validation_results)
        published_at timestamp not null
    )""",
    # per publication, the first as-of day each feature mart's builds wrote since its colour
    # was last published (what publication settles); the online refresh reads from there on
    PUBLICATION_DAYS_TABLE: """(
        publication_id varchar not null,
        relation varchar not null,         -- the published name: features.fs_churn__user_daily
        unsettled_from date                -- null: no day written since that publication
    )""",
    # written by `loopline monitor` (ml/monitoring/), one run at a time under the writer lock
    MONITOR_RUNS_TABLE: """(
        run_id varchar not null,
        started_at timestamp not null,
        finished_at timestamp not null,
        model_name varchar,
        champion_version varchar,
        recommender_version varchar,
        reference_rows bigint,
        reference_reproduced boolean,    -- rebuilt training set has the logged content hash
        current_window_start date,
        current_window_end date,
        current_rows bigint,
        dataset_drifted boolean,         -- confirmed on a feature that is not ignored
        drifted_features varchar,        -- JSON list
        prediction_drifted boolean,
        rules_failed bigint,
        rules_passed bigint,
        rules_no_data bigint,
        validation_run_id varchar,       -- the latest monitoring.validation_results run
        validation_critical_failed bigint,
        validation_warnings bigint,
        retrain_triggered boolean,
        report_path varchar,
        mlflow_run_id varchar
    )""",
    FEATURE_DRIFT_TABLE: """(
        run_id varchar not null,
        measured_at timestamp not null,
        model_name varchar not null,
        model_version varchar not null,
        scope varchar not null,          -- features | predictions
        feature varchar not null,
        aspect varchar not null,         -- values | null_rate
        kind varchar,
        test varchar,
        statistic double,
        p_value double,
        p_adjusted double,
        effect_name varchar,
        effect double,
        min_effect double,
        drifted boolean,
        is_ignored boolean,
        psi double,
        n_reference bigint,
        n_current bigint,
        reference_mean double,
        current_mean double,
        note varchar
    )""",
    MODEL_PERFORMANCE_TABLE: """(
        run_id varchar not null,
        measured_at timestamp not null,
        model varchar not null,          -- churn | recommender
        version varchar not null,
        window_start date not null,
        window_end date not null,
        metric varchar not null,
        value double,
        comparison varchar,              -- >= | <= (null: no rule, status info)
        threshold double,
        baseline_metric varchar,         -- the metric a rule compares with (at_least)
        n_rows bigint,
        status varchar not null,         -- pass | fail | no_data | info
        rule varchar
    )""",
    RETRAIN_TRIGGERS_TABLE: """(
        run_id varchar not null,
        triggered_at timestamp not null,
        model_name varchar not null,
        champion_version varchar,
        reasons varchar not null,        -- JSON list of one-line reasons
        evidence varchar not null,       -- JSON: failed rules and drifted features, with numbers
        action varchar not null,         -- retrained | disabled | failed
        new_version varchar,
        decision varchar,                -- promoted | kept (the registry's, ml.model_decisions)
        decision_reason varchar,
        promoted boolean,
        training_run_id varchar
    )""",
}


def ensure(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Create `tables` (names from `TABLES`) and their schemas when they do not exist yet."""
    for table in tables:
        schema = table.split(".")[0]
        con.execute(f"create schema if not exists {schema}")
        con.execute(f"create table if not exists {table} {TABLES[table]}")
