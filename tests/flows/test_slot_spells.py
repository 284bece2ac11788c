"""Training and scoring open the warehouse only inside the Prefect ``warehouse-writer`` slot.

The real training and scoring flows, each in a process of its own against a real Prefect
server, on a copy of the session's built warehouse (a fast churn configuration). While this
test holds the slot, the flow says it waits and writes nothing; once the slot is free it
runs to the end. Training holds the slot in short spells (reading its data, recording its
decision), not while it fits.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prefect.concurrency.sync import concurrency
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.slots import WAREHOUSE_WRITER, ensure_limits
from loopline import services
from loopline.settings import Settings
from tests.conftest import copy_company, query
from tests.flows.slot_writer import WAITS
from tests.flows.test_workers import HOLDING, RELEASING, logs_of

ROOT = Path(__file__).resolve().parents[2]
RUN = """
import sys
from flows.score import ScoreFlowParams, batch_score
from flows.train import TrainFlowParams, train_models

if sys.argv[1] == "train":
    train_models(TrainFlowParams(models=("churn",)))
else:
    batch_score(ScoreFlowParams())
"""


def fast_ml_config(path: Path) -> Path:
    """conf/ml.yaml with one logistic regression and a gate any real signal passes."""
    config = yaml.safe_load((ROOT / "conf" / "ml.yaml").read_text())
    churn = config["churn"]
    churn["train"].update(candidates=["logreg"], logreg_grid={"C": [1.0]})
    churn["importance_rows"] = 200
    churn["policy"]["gate"] = {"roc_auc": 0.5}
    path.write_text(yaml.safe_dump(config))
    return path


def flow_run_of(api: str, flow_name: str) -> str | None:
    """The id of the newest run of `flow_name` (None before it exists)."""
    with services.PrefectHttp(api) as prefect:
        runs = prefect.post(
            "flow_runs/filter",
            json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
        ).json()
    return runs[0]["id"] if runs else None


def waits_then_runs(api: str, env: dict, which: str, flow_name: str, table: str) -> list[dict]:
    """Hold the slot until the flow says it waits (having written nothing); let go; the
    flow completes. Returns its log records; the slot was free from `released` on."""
    with temporary_settings({PREFECT_API_URL: api}):
        ensure_limits()
        with concurrency(WAREHOUSE_WRITER, occupy=1, strict=True):
            started = subprocess.Popen(
                [sys.executable, "-c", RUN, which],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            deadline = time.monotonic() + 300
            run_id = None
            while time.monotonic() < deadline and started.poll() is None:
                run_id = run_id or flow_run_of(api, flow_name)
                if run_id and any(WAITS in log["message"] for log in logs_of(api, run_id)):
                    break
                time.sleep(1)
            assert started.poll() is None, started.communicate()[0][-3000:]
            assert run_id is not None
            assert rows_in(env, table) == 0  # nothing written while the slot is held
            released = datetime.now(UTC)
    output, _ = started.communicate(timeout=600)
    assert started.returncode == 0, output[-3000:]
    assert rows_in(env, table) > 0
    logs = logs_of(api, run_id)
    took = [log for log in logs if HOLDING in log["message"]]
    assert took and all(datetime.fromisoformat(t["timestamp"]) >= released for t in took), took
    return logs


def rows_in(env: dict, table: str) -> int:
    """Rows of `table` in the run's warehouse (0 while the table does not exist)."""
    settings = Settings(data_dir=Path(env["LOOPLINE_DATA_DIR"]))
    schema, name = table.split(".")
    sql = "select count(*) from information_schema.tables where table_schema = ? and table_name = ?"
    (found,) = query(settings, sql.replace("?", f"'{schema}'", 1).replace("?", f"'{name}'", 1))
    if not found[0]:
        return 0
    (rows,) = query(settings, f"select count(*) from {table}")
    return int(rows[0])


@pytest.mark.slow
def test_training_and_scoring_write_only_inside_the_slot(
    prefect_server, built_warehouse, tmp_path
) -> None:
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    env = {
        **prefect_server.env,
        "LOOPLINE_DATA_DIR": str(settings.data_dir),
        "LOOPLINE_ML_CONFIG": str(fast_ml_config(tmp_path / "ml.yaml")),
        "LOOPLINE_PROGRESS": "log",
    }
    api = prefect_server.api_url
    logs = waits_then_runs(api, env, "train", "loopline-train", "ml.model_decisions")
    messages = [log["message"] for log in logs]
    spells = [HOLDING in m for m in messages if HOLDING in m or RELEASING in m]
    # taken and let go at least twice: to read the training set, then (after fitting, with
    # the slot free) to record the decision
    assert len(spells) >= 4 and spells == [True, False] * (len(spells) // 2), messages

    waits_then_runs(api, env, "score", "loopline-score", "ml.churn_predictions")


def test_a_nested_take_of_the_slot_goes_through(prefect_harness, tmp_path) -> None:
    """A flow holding the slot that opens the warehouse under `each_write_takes_the_slot`
    does not wait for itself (the slot is re-entrant within a process, as the lock file)."""
    import threading

    from prefect import flow

    from flows.slots import each_write_takes_the_slot, warehouse_slot
    from loopline.warehouse import writing

    @flow(name="nested-slot")
    def nested() -> int:
        with (
            each_write_takes_the_slot(),
            warehouse_slot(),
            writing(Settings(data_dir=tmp_path / "data")) as con,
        ):
            (one,) = con.execute("select 1").fetchone() or (0,)
        return int(one)

    result: list[int] = []
    running = threading.Thread(target=lambda: result.append(nested()), daemon=True)
    running.start()
    running.join(120)  # a slot waiting for itself never ends: the join would time out
    assert result == [1]
