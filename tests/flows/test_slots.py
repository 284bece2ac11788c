"""Two flow runs writing the warehouse at once: the second waits for the Prefect slot.

Real processes against a real Prefect server, a real DuckDB file. Run A takes the
``warehouse-writer`` slot and holds it until run B's log says it waits for the slot; B then
writes after A. Without the slot B would write while A still holds it (the intervals the
runs record would overlap) and A would never see B wait.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from flows.slots import WAREHOUSE_WRITER
from loopline.settings import Settings
from loopline.warehouse import reading

WRITER = """
import sys, time
from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterLevel
from flows.slots import warehouse_slot
from loopline.settings import get_settings
from loopline.warehouse import writing

WAITS = "waiting for the 'warehouse-writer' slot"


def someone_waits() -> bool:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(level=LogFilterLevel(ge_=20)), limit=200, offset=0)
    return any(WAITS in log.message for log in logs)


@flow(name="cheap-writer")
def cheap_writer(role: str) -> str:
    with warehouse_slot():
        entered = time.time()
        if role == "first":  # hold the slot until the other run says it waits
            deadline = time.monotonic() + 240
            while not someone_waits() and time.monotonic() < deadline:
                time.sleep(0.5)
        with writing(get_settings()) as con:
            con.execute("create table if not exists main.writes (role varchar, entered double, left_at double)")
            con.execute("insert into main.writes values (?, ?, ?)", [role, entered, time.time()])
    return role


if __name__ == "__main__":
    cheap_writer(sys.argv[1])
"""


def _start(script: Path, role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(script), role],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )


def test_two_writing_runs_both_succeed_one_after_the_other(prefect_server, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**prefect_server.env, "LOOPLINE_DATA_DIR": str(tmp_path / "data")}
    logs = {role: tmp_path / f"{role}.log" for role in ("first", "second")}
    first = _start(script, "first", env, logs["first"])
    api = prefect_server.api_url
    with httpx.Client(base_url=api + "/", timeout=10) as client:
        # start the second once the first holds the slot
        while first.poll() is None:
            limit = client.get(f"v2/concurrency_limits/{WAREHOUSE_WRITER}")
            if limit.status_code == 200 and limit.json()["active_slots"] == 1:
                break
            time.sleep(0.3)
        second = _start(script, "second", env, logs["second"])
        codes = {"first": first.wait(timeout=300), "second": second.wait(timeout=300)}
        output = {role: path.read_text()[-2000:] for role, path in logs.items()}
        assert codes == {"first": 0, "second": 0}, output
        limit = client.get(f"v2/concurrency_limits/{WAREHOUSE_WRITER}").json()
        assert limit["limit"] == 1 and limit["active_slots"] == 0, limit
        runs = client.post(
            "flow_runs/filter", json={"flows": {"name": {"any_": ["cheap-writer"]}}}
        ).json()
    assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "COMPLETED"], runs
    with reading(Settings(data_dir=tmp_path / "data")) as con:
        writes = con.execute("select role, entered, left_at from main.writes order by entered")
        rows = writes.fetchall()
    assert [role for role, _, _ in rows] == ["first", "second"]
    (_, _, first_left), (_, second_entered, _) = rows
    assert second_entered >= first_left  # one after the other, not interleaved
