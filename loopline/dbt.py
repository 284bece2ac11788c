"""Run dbt in-process from the repo root, with the project's settings as its environment."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loopline.duck import warehouse_writer
from loopline.settings import Settings


class DbtError(RuntimeError):
    """dbt ran and reported failures (the message names them)."""


@dataclass(frozen=True)
class DbtResult:
    command: list[str]
    success: bool
    results: list[tuple[str, str]]  # (node unique id, status)
    output: list[dict[str, str]] = field(default_factory=list)  # `dbt ls` rows
    processed: dict[str, int] = field(default_factory=dict)  # incremental model -> rows written


def project_dir(settings: Settings | None = None) -> Path:
    """The folder holding dbt_project.yml (the repo root unless settings say otherwise)."""
    if settings is not None and settings.dbt_project_dir is not None:
        return settings.dbt_project_dir
    here = Path(__file__).resolve().parent.parent
    for candidate in (here, Path.cwd()):
        if (candidate / "dbt_project.yml").exists():
            return candidate
    raise FileNotFoundError("dbt_project.yml not found: run loopline from the repository root")


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment variables profiles.yml reads, from the settings."""
    return {
        "LOOPLINE_DATA_DIR": str(settings.data_dir),
        "LOOPLINE_WAREHOUSE_PATH": str(settings.resolved_warehouse_path),
        "LOOPLINE_DUCKDB_THREADS": str(settings.duckdb_threads),
        "LOOPLINE_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit,
    }


def run_dbt(settings: Settings, args: Sequence[str], raise_on_failure: bool = True) -> DbtResult:
    """Run one dbt command (e.g. ["build"]) holding the warehouse writer lock.

    Before the first build of a warehouse, the incremental models are created empty:
    dbt's unit tests of the incremental path (`input: this`) need the relation to exist.
    """
    building = bool(args) and args[0] in ("build", "run") and "--empty" not in args
    incremental = ensure_incremental_relations(settings) if building else []
    result = _invoke(settings, args, raise_on_failure)
    if building and result.success:
        result.processed.update(_rows_written(settings, incremental))
    return result


def _rows_written(settings: Settings, relations: list[str]) -> dict[str, int]:
    """Rows each incremental model wrote in the last dbt run (from `_dbt_invocation_id`)."""
    import duckdb

    results = settings.data_dir / "dbt" / "target" / "run_results.json"
    invocation = json.loads(results.read_text())["metadata"]["invocation_id"]
    out: dict[str, int] = {}
    con = duckdb.connect(str(settings.resolved_warehouse_path))  # same config as dbt in-process
    try:
        for relation in relations:
            schema, table = relation.split(".")
            columns = {
                c for (c,) in con.execute(
                    "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                    [schema, table],
                ).fetchall()
            }  # fmt: skip
            if "_dbt_invocation_id" in columns:
                (count,) = con.execute(
                    f"select count(*) from {relation} where _dbt_invocation_id = ?", [invocation]
                ).fetchone() or (0,)
                out[relation] = int(count)
    finally:
        con.close()
    return out


def incremental_relations(settings: Settings) -> list[str]:
    """`schema.table` of every incremental model, as dbt lists them."""
    listed = _invoke(
        settings,
        ["ls", "--resource-type", "model", "--select", "config.materialized:incremental",
         "--output", "json", "--output-keys", "schema alias", "--quiet"],
        raise_on_failure=True,
    )  # fmt: skip
    return sorted(f"{node['schema']}.{node['alias']}" for node in listed.output)


def ensure_incremental_relations(settings: Settings) -> list[str]:
    """Create missing incremental models empty (`dbt run --empty`); return all of them.

    dbt's unit tests of the incremental path (`input: this`) need the relation to exist.
    """
    import duckdb

    wanted = {tuple(name.split(".", 1)) for name in incremental_relations(settings)}
    existing: set[tuple[str, str]] = set()
    if settings.resolved_warehouse_path.exists():
        with warehouse_writer(settings):
            # not read_only: dbt-duckdb keeps its in-process instance open, and DuckDB refuses
            # a second connection to one file with a different configuration
            con = duckdb.connect(str(settings.resolved_warehouse_path))
            try:
                existing = set(
                    con.execute(
                        "select table_schema, table_name from information_schema.tables"
                    ).fetchall()
                )
            finally:
                con.close()
    missing = sorted(f"{schema}.{alias}" for schema, alias in wanted - existing)
    if missing:
        # seeds and snapshots upstream of them must exist too, hence `build` without tests
        _invoke(
            settings,
            ["build", "--empty", "--select", "+config.materialized:incremental",
             "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"],
            True,
        )  # fmt: skip
    return sorted(f"{schema}.{alias}" for schema, alias in wanted)


def _invoke(settings: Settings, args: Sequence[str], raise_on_failure: bool) -> DbtResult:
    from dbt.cli.main import dbtRunner

    root = project_dir(settings)
    env = dbt_env(settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # artifacts and logs per warehouse, under its data folder: two runs against two
    # warehouses (a test and the demo, say) never overwrite each other's target/
    artifacts = settings.data_dir / "dbt"
    command = [
        *args,
        "--project-dir", str(root),
        "--profiles-dir", str(root),
        "--target-path", str(artifacts / "target"),
        "--log-path", str(artifacts / "logs"),
    ]  # fmt: skip
    try:
        with warehouse_writer(settings):
            result = dbtRunner().invoke(command)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nodes: list[tuple[str, str]] = []
    output: list[dict[str, str]] = []
    res = result.result
    if res is not None and hasattr(res, "results"):
        nodes = [(r.node.unique_id, str(r.status)) for r in res.results]
    elif isinstance(res, list):  # `dbt ls --output json`
        output = [json.loads(line) for line in res]
    if raise_on_failure and not result.success:
        failed = [n for n, status in nodes if status in ("error", "fail", "runtime error")]
        detail = f": {', '.join(failed[:10])}" if failed else f" ({result.exception})"
        raise DbtError(f"dbt {' '.join(args)} failed{detail}")
    return DbtResult(command=command, success=result.success, results=nodes, output=output)
