"""The warehouse lock across processes: writers and readers queue, and say who they wait for."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from loopline import progress
from loopline.dbt import run_dbt
from loopline.settings import Settings
from loopline.warehouse import lock_holder, reading, writer_lock_path, writing

HOLD = """
import sys, time
from loopline.settings import Settings
from loopline.warehouse import writing
with writing(Settings(warehouse_path=sys.argv[1])) as con:
    con.execute("create or replace table t as select 42 as x")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _open_elsewhere(path: Path) -> subprocess.CompletedProcess[str]:
    """Open the warehouse from another process, as a concurrent run would."""
    code = textwrap.dedent(
        """
        import sys, duckdb
        con = duckdb.connect(sys.argv[1])
        print(con.execute("select count(*) from core.dim_shows").fetchone()[0])
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )


def test_after_dbt_ran_in_process_another_process_can_open_the_warehouse(
    built_warehouse, tmp_path
) -> None:
    source, _ = built_warehouse
    shutil.copytree(source.data_dir, tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", dbt_project_dir=source.dbt_project_dir)
    run_dbt(settings, ["run", "--select", "dim_shows"])
    # dbt-duckdb keeps its DuckDB instance open between invocations: once the lock is
    # released the file must be closed too, or the other process fails on DuckDB's lock
    opened = _open_elsewhere(settings.resolved_warehouse_path)
    assert opened.returncode == 0, opened.stderr[-400:]
    assert int(opened.stdout.strip()) > 0


class _Notes(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_reader_queues_behind_a_writer_and_says_who_holds_the_lock(tmp_path) -> None:
    settings = Settings(warehouse_path=tmp_path / "w.duckdb")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(settings.resolved_warehouse_path), "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert f"pid {holder.pid}" in lock_holder(settings.resolved_warehouse_path)
        # DuckDB alone would refuse this open at once ("Conflicting lock is held")
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(settings.resolved_warehouse_path), read_only=True)
        started = time.monotonic()
        notes = _Notes()
        progress.logger.addHandler(notes)
        level = progress.logger.level
        progress.logger.setLevel(logging.INFO)
        try:
            with reading(settings) as con:
                assert con.execute("select x from t").fetchall() == [(42,)]
        finally:
            progress.logger.removeHandler(notes)
            progress.logger.setLevel(level)
        assert holder.wait(timeout=30) == 0
        waited = time.monotonic() - started
    finally:
        holder.kill()
    assert waited > 0.5  # it queued until the holder let go
    waiting = [line for line in notes.lines if "waiting for the warehouse" in line]
    assert waiting and f"pid {holder.pid}" in waiting[0] and "since" in waiting[0]


def test_the_lock_is_reentrant_within_a_process(tmp_path) -> None:
    settings = Settings(warehouse_path=tmp_path / "w.duckdb")
    with writing(settings) as con:
        con.execute("create table t as select 1 as x")
        con.close()
        with reading(settings) as again:  # would deadlock on a second flock of the file
            assert again.execute("select x from t").fetchall() == [(1,)]
    assert writer_lock_path(settings.resolved_warehouse_path).exists()
