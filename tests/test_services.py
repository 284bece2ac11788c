"""`loopline up` / `status` / `down` against the real services, on free ports, in a temp folder."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from loopline import services
from loopline.cli import app
from loopline.settings import Settings, get_settings
from tests.conftest import require_service

runner = CliRunner()


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings of a fresh data folder with every service on a free port."""
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "data" / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for name in ("PREFECT", "CATALOGUE", "MLFLOW", "DOCS", "API"):
        monkeypatch.setenv(f"LOOPLINE_{name}_PORT", str(services.free_port()))
    get_settings.cache_clear()
    yield get_settings()
    services.down(get_settings())  # whatever a failed test left running
    get_settings.cache_clear()


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def redis_stream(monkeypatch) -> Iterator[str]:
    """The stream on a Redis database of its own (7), empty before and after."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    from loopline.stream.sources import DEFAULT_STREAM_KEY

    url = "redis://127.0.0.1:6379/7"
    client = redis.Redis.from_url(url)
    client.delete(DEFAULT_STREAM_KEY)
    monkeypatch.setenv("LOOPLINE_STREAM_URL", url)
    get_settings.cache_clear()
    yield url
    client.delete(DEFAULT_STREAM_KEY)
    client.close()


def _metrics_when(settings: Settings, done: Callable[[dict], bool], log: str) -> dict:
    from loopline.stream.consumer import read_metrics

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = read_metrics(settings)
        if metrics is not None and done(metrics):
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"{read_metrics(settings)}\n{services.log_tail(log, 10)}")


def test_up_starts_each_service_once_and_down_stops_them_and_frees_the_ports(
    settings, redis_stream
):
    from loopline.stream.sources import open_target

    settings = get_settings()  # with the stream configured: `up` starts its consumer too
    started = services.resolve(None, settings)
    assert started[-1] == "stream" and "worker" in started
    first = runner.invoke(app, ["up"])
    assert first.exit_code == 0, first.output
    recorded = {name: services.recorded(settings, name) for name in started}
    assert all(recorded.values()), recorded
    for name, running in recorded.items():
        assert running is not None
        # a service with a port answers on it; the landing watcher has none
        assert running.ready_url is not None or services.REGISTRY[name].port is None, name
        # it says where each one is and where its log goes, and each answers there
        assert name in first.output and running.log in one_line(first.output)
        if running.ready_url:
            assert httpx.get(running.ready_url, timeout=10).status_code == 200, name
        assert running.log.startswith(str(settings.data_dir / "logs"))
        if running.url:
            assert running.url.startswith("http://127.0.0.1:")
            assert running.url in first.output
    # the API's docs page and the dbt docs site are there, from local files
    api_docs = httpx.get(f"http://127.0.0.1:{settings.api_port}/docs", timeout=10).text
    assert "/docs-assets/swagger-ui-bundle.js" in api_docs
    assert "dbt" in httpx.get(f"http://127.0.0.1:{settings.docs_port}/", timeout=10).text
    assert (settings.data_dir / "dbt" / "target" / "manifest.json").exists()
    # every service listens on loopback only
    for port in (
        settings.prefect_port,
        settings.catalogue_port,
        settings.mlflow_port,
        settings.docs_port,
        settings.api_port,
    ):
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}, (port, listening)

    # the consumer takes what is published and reports its lag, which `status` shows
    open_target(settings).publish([json.dumps({"event_id": f"e{i}"}) for i in range(25)])
    consumer = recorded["stream"]
    assert consumer is not None
    _metrics_when(settings, lambda m: m["events_total"] >= 25 and m["lag_events"] == 0,
                  consumer.log)  # fmt: skip

    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    for name in started:
        assert re.search(rf"{name}\s+ready", status.output), status.output
    assert re.search(
        r"stream consumer \(redis.*\): lag 0 events, .* 25 landed", one_line(status.output)
    ), status.output
    assert str(settings.prefect_port) in status.output
    assert "loopline-line/line" in status.output and "last: no run yet" in status.output
    assert re.search(r"loopline-line/line\s+15,45 \* \* \* \*\s+served", status.output)
    # the worker created its pool and is online on it
    with services.PrefectHttp(services.prefect_api_url(settings)) as prefect:
        workers = prefect.post(
            f"work_pools/{services.WORK_POOL}/workers/filter", json={"limit": 10, "offset": 0}
        ).json()
        assert [w["status"] for w in workers] == ["ONLINE"], workers
        # a finished run of a deployment shows as its last run
        line = prefect.get("deployments/name/loopline-line/line").json()
        running = {"state": {"type": "RUNNING", "name": "Running"}}  # no process takes it
        run = prefect.post(f"deployments/{line['id']}/create_flow_run", json=running).json()
        done = {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True}
        prefect.post(f"flow_runs/{run['id']}/set_state", json=done)
    after_run = runner.invoke(app, ["status"])
    assert re.search(r"loopline-line/line .* last: Completed at", one_line(after_run.output))

    # a demo run would use this server rather than start its own
    with services.prefect_api(settings) as api:
        assert api.url == services.prefect_api_url(settings)

    again = runner.invoke(app, ["up"])
    assert again.exit_code == 0, again.output
    assert one_line(again.output).count("already running") == len(started)
    assert {n: services.recorded(settings, n) for n in started} == recorded

    groups = {name: r.pid for name, r in recorded.items() if r is not None}
    members = [p for pid in groups.values() for p in [psutil.Process(pid)]]
    members += [c for p in list(members) for c in p.children(recursive=True)]
    stopped = runner.invoke(app, ["down"])
    assert stopped.exit_code == 0, stopped.output
    assert one_line(stopped.output).count("stopped") == len(started)
    for port in (
        settings.prefect_port,
        settings.catalogue_port,
        settings.mlflow_port,
        settings.docs_port,
        settings.api_port,
    ):
        assert not services.port_in_use(port), port
    _, alive = psutil.wait_procs(members, timeout=10)
    assert alive == [], alive  # the whole process group, children included
    assert not list((settings.data_dir / "services").glob("*.json"))
    after = runner.invoke(app, ["status"])
    assert one_line(after.output).count("stopped") == len(services.REGISTRY)
    assert "the consumer is not running" in one_line(after.output)


def test_down_never_stops_a_process_that_only_reuses_a_recorded_pid(settings):
    """A state file whose pid now belongs to another program (other start time) is stale."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = settings.data_dir / "services" / "api.json"
        state.parent.mkdir(parents=True)
        started = psutil.Process(other.pid).create_time()
        record = services.Running(
            "api", other.pid, started - 3600, "log", ["loopline", "serve"], settings.api_port
        )
        state.write_text(json.dumps(record.__dict__))
        result = runner.invoke(app, ["down"])
        assert result.exit_code == 0
        assert re.search(r"api\s+was not running", result.output), result.output
        assert other.poll() is None  # still running
        assert not state.exists()
    finally:
        other.kill()
        other.wait()


def test_up_refuses_a_port_another_program_holds_and_names_the_setting(settings):
    with socket.socket() as held:
        held.bind(("127.0.0.1", settings.api_port))
        held.listen()
        result = runner.invoke(app, ["up", "api"])
    assert result.exit_code == 1
    assert f"port {settings.api_port} is in use" in one_line(result.output)
    assert "LOOPLINE_API_PORT" in result.output
    assert services.recorded(settings, "api") is None


def test_up_names_an_unknown_service_and_the_known_ones(settings):
    result = runner.invoke(app, ["up", "jupyter"])
    assert result.exit_code == 2
    assert "unknown service jupyter" in result.output and "prefect" in result.output


def test_up_starts_what_a_service_needs_and_down_stops_what_needs_it():
    """Served deployments without their server would only fail: they come and go together."""
    assert services.resolve(["deployments"]) == ["prefect", "deployments"]
    assert services.resolve(["worker"]) == ["prefect", "worker"]
    assert services.resolve(["push"]) == ["prefect", "push"]
    assert services.resolve_existing(["prefect"]) == ["prefect", "deployments", "worker", "push"]
    assert services.resolve_existing(["api"]) == ["api"]


def test_the_stream_consumer_starts_with_up_only_when_configured(settings):
    assert "stream" not in services.resolve(None, settings)
    configured = settings.model_copy(update={"stream_url": "redis://127.0.0.1:6379/0"})
    assert services.resolve(None, configured)[-1] == "stream"
    assert services.resolve(["stream"]) == ["stream"]  # asked for by name: always


def test_up_stream_runs_the_consumer_on_the_spool_and_down_stops_it(settings):
    from loopline.stream.consumer import read_metrics
    from loopline.stream.sources import SpoolTarget

    started = runner.invoke(app, ["up", "stream"])
    assert started.exit_code == 0, started.output
    running = services.recorded(settings, "stream")
    assert running is not None
    SpoolTarget(settings.resolved_stream_spool_path).publish(
        [json.dumps({"event_id": f"e{i}"}) for i in range(5)]
    )
    landed: list[str] = []
    deadline = time.monotonic() + 120
    while not landed and time.monotonic() < deadline:
        landed = [p.name for p in settings.landing_dir.glob("events/date=*/events_*.ndjson")]
        time.sleep(0.2)
    assert landed, services.log_tail(running.log, 5)
    assert read_metrics(settings) is not None
    status = runner.invoke(app, ["status"])
    assert re.search(r"stream\s+ready", status.output), status.output
    stopped = runner.invoke(app, ["down", "stream"])
    assert "stopped" in stopped.output
    assert services.recorded(settings, "stream") is None


def test_prefect_http_asks_again_while_the_server_is_busy_and_names_any_other_error() -> None:
    """A Prefect server answers 503 while its store is busy: the call is made again; any
    other error raises with the server's own message rather than handing back its body."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [503, 503, 200]
    seen: list[str] = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0) if answers else 404
            body = b'{"id": "run-1"}' if status == 200 else b'{"detail": "no such deployment"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with services.PrefectHttp(f"http://127.0.0.1:{server.server_address[1]}/api") as prefect:
            assert prefect.post("deployments/d/create_flow_run", json={}).json() == {"id": "run-1"}
            assert seen == ["/api/deployments/d/create_flow_run"] * 3
            with pytest.raises(httpx.HTTPStatusError, match=r"404.*no such deployment"):
                prefect.post("deployments/e/create_flow_run", json={})
            assert len(seen) == 4  # a 404 is not asked again
    finally:
        server.shutdown()
        server.server_close()


def test_stop_kills_a_group_that_ignores_term_once_its_grace_is_over(tmp_path):
    """A leader and a child that both ignore SIGTERM: `stop` kills the whole group after the
    grace, reaps the leader, and says it was running."""
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    child = f"{ignore}time.sleep(600)"
    leader = (
        f"{ignore}import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}]);"
        " print('up' * 2, flush=True); time.sleep(600)"
    )
    log = tmp_path / "stubborn.log"
    running = services.launch("stubborn", [sys.executable, "-c", leader], log, {})
    deadline = time.monotonic() + 60
    while "upup" not in log.read_text() and time.monotonic() < deadline:  # not in the command
        time.sleep(0.05)
    group = [psutil.Process(running.pid), *psutil.Process(running.pid).children(recursive=True)]
    assert len(group) == 2
    assert services.stop(running, timeout_s=0.5)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group)
    assert not psutil.pid_exists(running.pid) or psutil.Process(running.pid).status() != (
        psutil.STATUS_ZOMBIE
    )  # the leader was reaped
    assert not services.stop(running)  # stopping it again: it is not running
