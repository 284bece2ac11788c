"""Two workers on the `loopline` pool, two warehouse-writing runs at once: one after the other.

A real `prefect server start` (tests/flows/conftest.py), two real `prefect worker start
--pool loopline --limit 1` processes (each takes one run at a time, so the two runs go to
the two workers), deployments of the flows on that pool.
Both runs are created at the same moment; each takes the ``warehouse-writer`` slot before
it writes. Without the slot both would write at once (their intervals would overlap) and
neither would log that it waits.

- `slot-writer` (tests/flows/slot_writer.py): cheap, in `make test`;
- the line itself, twice, then `dbt test` on what they left: slow.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.slots import WAREHOUSE_WRITER
from loopline import services
from loopline.settings import Settings
from loopline.warehouse import reading, warehouse_writer
from tests.flows.slot_writer import NAME, WAITS

ROOT = Path(__file__).resolve().parents[2]
HOLDING = f"holding the {WAREHOUSE_WRITER!r} slot"
RELEASING = f"releasing the {WAREHOUSE_WRITER!r} slot"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class Pair:
    api: str
    env: dict[str, str]
    logs: list[Path]  # one per worker


@pytest.fixture(scope="module")
def pair(prefect_server, tmp_path_factory) -> Iterator[Pair]:
    """The `loopline` process pool and two workers on it, each running one run at a time."""
    from prefect.workers.process import ProcessWorker

    folder = tmp_path_factory.mktemp("workers")
    api = prefect_server.api_url
    env = {
        **prefect_server.env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "loopline",  # lock-file waits reach the run's logs
        "LOOPLINE_PROGRESS": "log",
    }
    # what `prefect work-pool create loopline --type process` makes (that command is tested
    # in test_prefect_yaml.py), without the cost of one more process
    template = ProcessWorker.get_default_base_job_template()
    pool = {"name": "loopline", "type": "process", "base_job_template": template}
    try:
        with services.PrefectHttp(api) as prefect:
            prefect.post("work_pools/", json=pool)
    except httpx.HTTPStatusError as exc:  # 409: another module made it
        assert exc.response.status_code == 409, exc
    logs = [folder / f"worker-{n}.log" for n in (1, 2)]
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "loopline"]
    started = [
        services.launch(f"worker {n}", [*command, "--name", f"pair-{n}", "--limit", "1"], log, env)
        for n, log in enumerate(logs, 1)
    ]
    try:
        yield Pair(api, env, logs)
    finally:  # both at once: a worker may take its full TERM grace to go
        with ThreadPoolExecutor(len(started)) as stopping:
            list(stopping.map(services.stop, started))


def deploy(pair: Pair, entrypoint: str, flow_name: str) -> str:
    """A deployment `<flow>/pair` of `entrypoint` on the pool, as prefect.yaml's would be
    (its pull step: run from the repo root), without a schedule; its id.

    Made through the API: `prefect deploy` itself is tested in test_prefect_yaml.py.
    """
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    with services.PrefectHttp(pair.api) as prefect:
        flow = prefect.post("flows/", json={"name": flow_name}).json()
        made = prefect.post(
            "deployments/",
            json={
                "name": "pair",
                "flow_id": flow["id"],
                "entrypoint": entrypoint,
                "work_pool_name": "loopline",
                "pull_steps": pull,
            },
        )
    return str(made.json()["id"])


def create_runs(pair: Pair, deployment: str, data_dir: Path, parameters: list[dict]) -> list[str]:
    """Create one run per parameter set back to back, each writing the warehouse in `data_dir`."""
    env = {"LOOPLINE_DATA_DIR": str(data_dir), "LOOPLINE_PROGRESS": "log"}
    ids = []
    with services.PrefectHttp(pair.api) as prefect:
        for params in parameters:
            made = prefect.post(
                f"deployments/{deployment}/create_flow_run",
                json={"parameters": params, "job_variables": {"env": env}},
            )
            ids.append(made.json()["id"])
    return ids


def until(check: Callable[[], Any], seconds: float, pair: Pair) -> Any:
    """`check()` once it is truthy; fails with the workers' logs after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.TimeoutException:  # a busy server answers late: ask again
            found = None
        if found:
            return found
        time.sleep(1)
    tails = "\n".join(p.read_text()[-3000:] for p in pair.logs)
    raise AssertionError(f"not within {seconds:.0f} s:\n{tails}")


def wait_for_runs(pair: Pair, ids: list[str], seconds: float) -> list[dict]:
    """The runs once all have ended; each must have completed."""

    def ended() -> list[dict] | None:
        with services.PrefectHttp(pair.api) as prefect:
            runs = [prefect.get(f"flow_runs/{i}").json() for i in ids]
        return runs if all(r["state"]["type"] in FINAL for r in runs) else None

    runs = until(ended, seconds, pair)
    tails = "\n".join(p.read_text()[-3000:] for p in pair.logs)
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"] * len(ids), (runs, tails)
    return runs


def logs_of(api: str, run_id: str) -> list[dict]:
    """The run's log records, oldest first (all of them: pages of 200)."""
    out: list[dict] = []
    with services.PrefectHttp(api) as prefect:
        while True:
            page = prefect.post(
                "logs/filter",
                json={
                    "logs": {"flow_run_id": {"any_": [run_id]}},
                    "sort": "TIMESTAMP_ASC",
                    "limit": 200,
                    "offset": len(out),
                },
            ).json()
            out.extend(page)
            if len(page) < 200:
                return out


def said(api: str, run_id: str, text: str) -> bool:
    """Whether one of the run's log lines contains `text`."""
    return any(text in log["message"] for log in logs_of(api, run_id))


def ran(text: str, run_id: str) -> bool:
    """Whether the worker whose log is `text` ran the run: it submitted it, and the server did
    not abort that submission (both workers may poll the same scheduled run; the one whose
    Pending proposal loses logs "Aborted submission" and releases its slot)."""
    submitted = f"submitting flow run '{run_id}'" in text
    return submitted and f"Aborted submission of flow run '{run_id}'" not in text


def each_worker_ran_one(pair: Pair, runs: list[dict]) -> None:
    texts = [log.read_text() for log in pair.logs]
    ran_by = [[n for n, text in enumerate(texts) if ran(text, run["id"])] for run in runs]
    assert sorted(ran_by) == [[0], [1]], ran_by


def test_two_workers_and_a_writer_outside_prefect_take_turns(pair, tmp_path) -> None:
    """Run a holds the slot around its write (as the line), run b on opening the warehouse
    (as training and scoring); this test holds the lock file as `loopline build` would, so
    the run that gets the slot first waits for the lock file while holding it: no deadlock,
    the slot is outer and the lock file inner for every writer."""
    deployment = deploy(pair, "tests/flows/slot_writer.py:slot_writer", NAME)
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    parameters = [{"role": "a"}, {"role": "b", "per_write": True}]
    with warehouse_writer(settings):  # a writer outside Prefect: the lock file only
        ids = create_runs(pair, deployment, data, parameters)
        lock_waits = f"waiting for the warehouse: pid {os.getpid()}"
        waiting = until(lambda: [i for i in ids if said(pair.api, i, lock_waits)], 240, pair)
        released = time.time()
    (blocked,) = waiting
    runs = wait_for_runs(pair, ids, 240)
    each_worker_ran_one(pair, runs)
    with reading(settings) as con:
        rows = con.execute(
            "select flow_run_id, entered, left_at from main.writes order by entered"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    (first, _, first_left), (second, second_entered, _) = rows
    assert second_entered >= first_left  # one after the other, not interleaved
    assert first == blocked and first_left > released  # it wrote once the lock was free
    # held the slot while it waited for the lock file (slot outer, lock inner)
    assert said(pair.api, blocked, HOLDING)
    # the two runs did meet: the second found the slot held and said so
    assert said(pair.api, second, WAITS)


@pytest.mark.slow
def test_two_workers_run_two_line_runs_and_the_warehouse_passes_its_tests(
    pair, small_sim, tmp_path
) -> None:
    """The real line, twice at once, on a simulated company; then `dbt test` passes."""
    from loopline.dbt import run_dbt
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer
    from tests.flows.test_line_paths import CALM

    data = tmp_path / "data"
    shutil.copytree(small_sim[0].data_dir, data)
    deployment = deploy(pair, "flows/line.py:line", "loopline-line")
    with CatalogueServer(catalogue_dir(small_sim[0]), CALM) as vendor:
        params = {"params": {"catalogue_url": vendor.url}}
        runs = wait_for_runs(pair, create_runs(pair, deployment, data, [params, params]), 1500)
    each_worker_ran_one(pair, runs)
    held = []
    for run in runs:
        messages = [(log["timestamp"], log["message"]) for log in logs_of(pair.api, run["id"])]
        took = [at for at, message in messages if HOLDING in message]
        let_go = [at for at, message in messages if RELEASING in message]
        assert len(took) == len(let_go) == 1, messages
        held.append((took[0], let_go[0]))
    (_, first_released), (second_took, _) = sorted(held)
    assert second_took >= first_released  # the slot-holding intervals do not overlap
    settings = Settings(data_dir=data)
    tested = run_dbt(settings, ["test"], raise_on_failure=False)
    assert tested.success, tested.failures()
    assert tested.counts()["tests"] > 100, tested.counts()
