"""Plain `dbt` from the repository root: artifacts under data/, and the warehouse writer lock."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from loopline.dbt import project_dir
from loopline.settings import Settings
from loopline.warehouse import holds_warehouse_writer, warehouse_writer

PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
PROJECT_FOLDERS = ("models", "macros", "seeds", "snapshots", "data-tests", "analyses")


def copy_project(target: Path) -> Path:
    """The dbt project alone, as a fresh clone has it (no data/, target/ or logs/)."""
    root = project_dir()
    target.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(root / name, target / name)
    for folder in PROJECT_FOLDERS:
        if (root / folder).exists():
            shutil.copytree(root / folder, target / folder)
    return target


def _lines(stream, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)
    into.put("")  # end of stream


def test_plain_dbt_queues_behind_a_writer_and_keeps_its_artifacts_under_data(tmp_path):
    """`dbt show` started by hand waits for the flows' writer lock, then runs normally."""
    project = copy_project(tmp_path / "repo")
    warehouse = tmp_path / "warehouse" / "loopline.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "DBT_"))} | {
        "LOOPLINE_WAREHOUSE_PATH": str(warehouse),
        "LOOPLINE_PROGRESS": "quiet",
    }
    dbt = str(Path(sys.executable).with_name("dbt"))
    with warehouse_writer(Settings(warehouse_path=warehouse)):
        assert holds_warehouse_writer(warehouse)
        proc = subprocess.Popen(
            [dbt, "show", "--inline", "select 42 as answer"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errors: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stderr, errors), daemon=True).start()
        while True:  # until dbt says it waits (or ends: then the lock did not stop it)
            line = errors.get(timeout=600)
            if "waiting for the warehouse" in line or not line:
                break
        assert line, "dbt ended without waiting for the lock"
        assert proc.poll() is None  # still waiting: it has not opened the warehouse
    assert not holds_warehouse_writer(warehouse)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:]
    assert "42" in out
    assert (project / "data" / "dbt" / "target" / "manifest.json").exists()
    assert (project / "data" / "dbt" / "logs" / "dbt.log").exists()
    assert not (project / "target").exists() and not (project / "logs").exists()
