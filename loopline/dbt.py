"""Run dbt in-process from the repo root, with the project's settings as its environment."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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


def project_dir() -> Path:
    """The folder holding dbt_project.yml (the repo root)."""
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
    """Run one dbt command (e.g. ["build"]) holding the warehouse writer lock."""
    from dbt.cli.main import dbtRunner

    root = project_dir()
    env = dbt_env(settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    (settings.data_dir / "tmp" / "duckdb").mkdir(parents=True, exist_ok=True)
    command = [*args, "--project-dir", str(root), "--profiles-dir", str(root)]
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
    res = result.result
    if res is not None and hasattr(res, "results"):
        nodes = [(r.node.unique_id, str(r.status)) for r in res.results]
    if raise_on_failure and not result.success:
        failed = [n for n, status in nodes if status in ("error", "fail", "runtime error")]
        detail = f": {', '.join(failed[:10])}" if failed else f" ({result.exception})"
        raise DbtError(f"dbt {' '.join(args)} failed{detail}")
    return DbtResult(command=command, success=result.success, results=nodes)
