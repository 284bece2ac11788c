"""The line's dbt build in Prefect: a task run per dbt node as it runs, failures named.

A small dbt project of its own (models that build, one that breaks, a passing and a failing
data test, one model skipped behind the failure) run by the line's real `dbt build` task in
a flow under the Prefect test harness, with the real dbt and DuckDB. What the server
recorded is read back through its API. A clean build of the real project, node by node, is
checked on the line run of test_line_paths.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect.client.schemas.sorting import TaskRunSort

from flows.dbt_nodes import ARTIFACT_KEY
from flows.line import dbt_build
from loopline.dbt import DbtError, run_dbt
from loopline.publish import build_colour
from loopline.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
PROJECT = """
name: nodes
version: "0.1.0"
config-version: 2
profile: loopline
model-paths: ["models"]
test-paths: ["data-tests"]
"""
MODELS = {
    "users.sql": "select 1 as user_id union all select 2",
    "active_users.sql": "select user_id from {{ ref('users') }}",
    "broken.sql": "select no_such_column from {{ ref('users') }}",
    "shows.sql": "select 'a' as show_id",
    "show_count.sql": "select count(*) as n from {{ ref('shows') }}",
}
# a unit test that fails (users 1 and 2 in, only 2 expected out): the audited build leaves
# unit tests out, so it must not run there; `dbt test` runs it
UNIT_TESTS = """
unit_tests:
  - name: active_users_drops_user_one
    model: active_users
    given:
      - input: ref('users')
        rows:
          - {user_id: 1}
          - {user_id: 2}
    expect:
      rows:
        - {user_id: 2}
"""
# fails on `shows` (one row, not zero): `show_count` downstream is skipped
FAILING_TEST = "select * from {{ ref('shows') }} where show_id = 'a'"
PASSING_TEST = "select * from {{ ref('users') }} where user_id is null"


def write_project(folder: Path, models: dict[str, str], tests: dict[str, str]) -> Path:
    (folder / "models").mkdir(parents=True)
    (folder / "data-tests").mkdir()
    (folder / "dbt_project.yml").write_text(PROJECT)
    shutil.copy(ROOT / "profiles.yml", folder / "profiles.yml")
    for name, sql in models.items():
        (folder / "models" / name).write_text(sql)
    (folder / "models" / "_unit_tests.yml").write_text(UNIT_TESTS)
    for name, sql in tests.items():
        (folder / "data-tests" / name).write_text(sql)
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch):
    def use(models: dict[str, str], tests: dict[str, str]) -> None:
        folder = write_project(tmp_path / f"project{len(list(tmp_path.iterdir()))}", models, tests)
        monkeypatch.setenv("LOOPLINE_DBT_PROJECT_DIR", str(folder))
        monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


@flow(name="dbt-nodes-test")
def build_only() -> object:
    return dbt_build(False)


def task_runs(run_id, expected: int) -> list[TaskRun]:
    """The flow run's task runs in a final state, once there are `expected` of them.

    Task runs reach the server as events: poll until they are all there and final.
    """
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs: list[TaskRun] = []
            while not runs or len(runs) % 200 == 0:  # pages of the API's most: 200
                page = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                    sort=TaskRunSort.EXPECTED_START_TIME_DESC,  # None: a 422 from this server
                    limit=200,
                    offset=len(runs),
                )
                runs.extend(page)
                if not page:
                    break
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                return final
            time.sleep(0.5)


def recorded(run_id, expected: int) -> dict[str, tuple[str, str | None, str]]:
    """Task run name -> (state type, state name, message) of the flow run's task runs."""
    return {
        ("dbt build" if r.name.startswith("dbt build-") else r.name): (
            r.state.type.value,
            r.state.name,
            r.state.message or "",
        )
        for r in task_runs(run_id, expected)
        if r.state is not None
    }


def test_each_node_is_a_task_run_and_the_failures_are_named(prefect_harness, project):
    project(MODELS, {"no_shows.sql": FAILING_TEST, "users_have_ids.sql": PASSING_TEST})
    state = build_only(return_state=True)
    assert state.is_failed()
    with pytest.raises(DbtError) as raised:
        state.result()
    error = raised.value
    # the run's error names the first failure; it carries every one
    assert "model broken" in str(error) or "test no_shows" in str(error), str(error)
    assert [line.split(":")[1].strip() for line in error.failures] in (
        ["model broken", "test no_shows"],
        ["test no_shows", "model broken"],
    ), error.failures

    runs = recorded(state.state_details.flow_run_id, expected=len(MODELS) + 2 + 1)
    assert runs.pop("dbt build")[0] == "FAILED"
    assert runs == {
        "model users": ("COMPLETED", "Completed", runs["model users"][2]),
        "model active_users": ("COMPLETED", "Completed", runs["model active_users"][2]),
        "model shows": ("COMPLETED", "Completed", runs["model shows"][2]),
        "test users_have_ids": ("COMPLETED", "Completed", runs["test users_have_ids"][2]),
        "model broken": ("FAILED", "Failed", runs["model broken"][2]),
        "test no_shows": ("FAILED", "Failed", runs["test no_shows"][2]),
        "model show_count": ("COMPLETED", "Skipped", runs["model show_count"][2]),
    }
    assert "no_such_column" in runs["model broken"][2]  # dbt's own message, on the task run
    assert "fail" in runs["test no_shows"][2]

    with get_client(sync_client=True) as client:  # (the client's reader sends nulls: a 422)
        answer = client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"key": {"any_": [ARTIFACT_KEY]}},
                "flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}},
            },
        )
    (artifact,) = answer.json()
    assert "2 failed" in artifact["description"]
    rows = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    assert [r["node"] for r in rows[:2]] in (
        ["model broken", "test no_shows"],
        ["test no_shows", "model broken"],
    )
    assert len(rows) == len(MODELS) + 2

    # the unit test the build left out (no task run above) is there, and fails when run
    unit = run_dbt(
        get_settings(),
        ["test", "--select", "test_type:unit"],
        raise_on_failure=False,
        colour=build_colour(get_settings()),
    )
    assert [(node, status) for node, status in unit.results] == [
        ("unit_test.nodes.active_users.active_users_drops_user_one", "fail")
    ], unit.results
