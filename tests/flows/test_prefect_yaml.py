"""prefect.yaml: every deployment loads and validates; `prefect deploy` and a worker run them.

The deploy, worker and push tests use a real `prefect server start` (tests/flows/conftest.py)
and the real CLI, from the repo root, as a person would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from flows.deployments import deployments
from flows.slots import WAREHOUSE_WRITER
from loopline import services
from loopline.push.watcher import EVENT, LINE_TRIGGER

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DECLARED = {d["name"]: d for d in SPEC["deployments"]}
# entry points whose file is in the repo now (flows/monitor.py comes with monitoring)
PRESENT = {
    name: d for name, d in DECLARED.items() if (ROOT / d["entrypoint"].split(":")[0]).exists()
}


def test_the_jobs_users_expect_are_declared_on_the_loopline_pool() -> None:
    assert {"line", "score", "monitor", "train"} <= set(DECLARED)
    assert {"line", "score", "train"} <= set(PRESENT)
    for d in DECLARED.values():
        assert d["work_pool"]["name"] == "loopline", d["name"]
        assert d["schedules"] and all(s["timezone"] == "UTC" for s in d["schedules"])
    assert [s["cron"] for s in DECLARED["line"]["schedules"]] == ["15,45 * * * *"]
    assert DECLARED["train"]["schedules"][0]["cron"].endswith("* * 1")  # weekly


@pytest.mark.parametrize("name", sorted(PRESENT))
def test_each_deployment_loads_its_flow_and_validates_its_parameters(name, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    declared = PRESENT[name]
    flow = load_flow_from_entrypoint(declared["entrypoint"])
    flow.validate_parameters(declared.get("parameters") or {})
    with pytest.raises(Exception, match="params"):  # a bad parameter is refused, not ignored
        flow.validate_parameters({"params": {"no_such_parameter": 1}})


def test_served_and_declared_deployments_agree_on_schedules_and_the_push_trigger() -> None:
    """`make deployments` and prefect.yaml are two ways to run the same jobs, not two plans."""
    served = {d.name: d for d in deployments()}
    for name in set(served) & set(DECLARED):
        crons = [s.schedule.cron for s in served[name].schedules]  # type: ignore[union-attr]
        assert crons == [s["cron"] for s in DECLARED[name]["schedules"]], name
        assert served[name].entrypoint == DECLARED[name]["entrypoint"], name
    assert DECLARED["line"]["triggers"] == [LINE_TRIGGER]
    (trigger,) = served["line"].triggers
    served_trigger = trigger.model_dump(mode="json")
    for key in ("posture", "threshold", "within", "enabled"):
        assert served_trigger[key] == LINE_TRIGGER[key], key
    assert served_trigger["expect"] == LINE_TRIGGER["expect"]
    assert served_trigger["match"] == LINE_TRIGGER["match"]


# -- against a real server ---------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def pool(prefect_server, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The `loopline` process pool on the test server, for runs in a throwaway data folder."""
    data = tmp_path_factory.mktemp("yaml_data")
    env = {**prefect_server.env, "LOOPLINE_DATA_DIR": str(data), "LOOPLINE_PUSH_QUIET_SECONDS": "2"}
    made = _cli(env, "work-pool", "create", "loopline", "--type", "process", "--overwrite")
    assert made.returncode == 0, made.stdout + made.stderr
    yield env


def _get(api: str, path: str) -> httpx.Response:
    return _call(api, "GET", path)


def _call(api: str, method: str, path: str, **kwargs) -> httpx.Response:
    """One call to the test server's API (a busy server's 503 is asked again)."""
    with services.PrefectHttp(api) as prefect:
        return prefect.request(method, path, **kwargs)


def test_deploy_all_registers_every_deployment_with_its_schedule(prefect_server, pool) -> None:
    api = prefect_server.api_url
    names = [f"-n={name}" for name in PRESENT]
    args = ["--all"] if PRESENT == DECLARED else names  # monitor's flow may not be merged yet
    done = _cli(pool, "deploy", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    try:
        # the build step created the warehouse slot the line takes
        limit = _get(api, f"v2/concurrency_limits/{WAREHOUSE_WRITER}")
        assert limit.status_code == 200 and limit.json()["limit"] == 1, limit.text
        for name, declared in PRESENT.items():
            flow = load_flow_from_entrypoint(str(ROOT / declared["entrypoint"]))
            answer = _get(api, f"deployments/name/{flow.name}/{name}")
            assert answer.status_code == 200, (name, answer.text)
            deployment = answer.json()
            assert deployment["work_pool_name"] == "loopline"
            crons = [s["schedule"]["cron"] for s in deployment["schedules"]]
            assert crons == [s["cron"] for s in declared["schedules"]], name
            (pull,) = deployment["pull_steps"]
            directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
            assert Path(directory) == ROOT
        line = _get(api, "deployments/name/loopline-line/line").json()
        owned = _get(api, f"automations/related-to/prefect.deployment.{line['id']}")
        assert [a["trigger"]["expect"] for a in owned.json()] == [[EVENT]]
    finally:  # none of the real flows may run on this shared test server
        for deployment in _call(api, "POST", "deployments/filter", json={}).json():
            if deployment["name"] in PRESENT:
                _call(api, "DELETE", f"deployments/{deployment['id']}")


@pytest.fixture(scope="module")
def worker(prefect_server, pool, tmp_path_factory) -> Iterator[Path]:
    """`prefect worker start --pool loopline`, and the cheap flow deployed to the pool twice:
    `cheap/manual`, and `cheap/pushed` with the line's push trigger."""
    for name, extra in (("manual", []), ("pushed", ["--trigger", json.dumps(LINE_TRIGGER)])):
        done = _cli(
            pool, "deploy", "tests/flows/cheap_flow.py:tick", "-n", name, "-p", "loopline", *extra
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "loopline"]
    running = services.launch("worker", command, log, {**pool, "PREFECT_WORKER_QUERY_SECONDS": "2"})
    try:
        yield log
    finally:
        services.stop(running)


def _runs(api: str, deployment: str, state: str | None = None) -> list[dict]:
    found = _get(api, f"deployments/name/cheap/{deployment}").json()
    query: dict = {"deployments": {"id": {"any_": [found["id"]]}}, "limit": 100}
    if state:
        query["flow_runs"] = {"state": {"type": {"any_": [state]}}}
    return _call(api, "POST", "flow_runs/filter", json=query).json()


def _wait_for(check, seconds: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    tails = "\n".join(p.read_text()[-2500:] for p in logs if p.exists())
    raise AssertionError(f"{what} within {seconds:.0f} s:\n{tails}")


def test_a_worker_on_the_pool_runs_a_deployment_run_to_completion(prefect_server, worker) -> None:
    api = prefect_server.api_url
    deployment = _get(api, "deployments/name/cheap/manual").json()
    created = _call(
        api,
        "POST",
        f"deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"note": "from the pool"}},
    )
    run_id = created.json()["id"]

    def completed() -> dict | None:
        run = _get(api, f"flow_runs/{run_id}").json()
        return run if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

    run = _wait_for(completed, 240, "the worker did not finish the run", [worker])
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == "loopline"


def test_a_burst_of_dropped_files_starts_one_run_without_anyone_asking(
    prefect_server, pool, worker, tmp_path
) -> None:
    api = prefect_server.api_url
    log = tmp_path / "push.log"
    watcher = services.launch(
        "push",
        [sys.executable, "-m", "loopline.push.watcher"],
        log,
        {**pool, "LOOPLINE_PROGRESS": "log"},
    )
    try:
        _wait_for(
            lambda: "push: watching" in log.read_text(), 120, "the watcher did not start", [log]
        )
        assert _runs(api, "pushed") == []
        folder = Path(pool["LOOPLINE_DATA_DIR"]) / "landing" / "events" / "date=2026-11-25"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(30):  # thirty drops in a burst
            (folder / f"events_20261125T10{i:02d}.ndjson").write_text('{"event_id": "e"}\n')
        # a temporary name is no drop
        (folder / ".events_20261125T1099.ndjson.tmp").write_text("")
        done = _wait_for(
            lambda: _runs(api, "pushed", "COMPLETED"), 240, "no pushed run completed", [log, worker]
        )
        announced = [line for line in log.read_text().splitlines() if "new landed file" in line]
        assert len(announced) == 1 and "30 new landed file(s)" in announced[0], announced
    finally:
        services.stop(watcher)
    runs = _runs(api, "pushed")
    assert len(runs) == len(done) == 1, runs  # the burst gave one run, not thirty
    assert runs[0]["created_by"]["type"] == "AUTOMATION", runs[0]["created_by"]
