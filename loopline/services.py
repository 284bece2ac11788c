"""Local services: `loopline up` starts them on 127.0.0.1, `status` shows them, `down` stops them.

Each service is one entry in `REGISTRY`: a name, the command that runs it, its port, the
URL that answers once it is ready and the services it needs first. Another service (a
Prefect worker, the stream consumer) is one more entry.

`up` starts each service in a process group of its own, its output appended to
``<data_dir>/logs/<name>.log``, and records the group's leader (pid and start time) in
``<data_dir>/services/<name>.json``. `down` signals only a group whose leader still has the
recorded pid *and* start time, so it never stops a program that merely reused a pid or a
port; `up` leaves a service alone while its recorded process lives.

`prefect_api` gives the demo a Prefect API: the one `up` started, or a temporary server for
the length of the run, with a clear error (not a traceback) when none answers in time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loopline.settings import Settings

HOST = "127.0.0.1"
WORK_POOL = "loopline"  # the process pool prefect.yaml deploys to


class ServiceError(RuntimeError):
    """A service could not be started or reached (the message says which and what to do)."""


# -- the registry ------------------------------------------------------------------------------


def _python(*args: str) -> list[str]:
    """A command run by this virtualenv's Python (works without the venv on PATH)."""
    return [sys.executable, *args]


def _url(port: int, path: str = "") -> str:
    return f"http://{HOST}:{port}{path}"


def _mlflow_command(settings: Settings) -> list[str]:
    # one worker: the default four take minutes to answer on 2 cores
    options = ["--host", HOST, "--port", str(settings.mlflow_port), "--workers", "1"]
    store = ["--backend-store-uri", settings.resolved_mlflow_uri]
    return _python("-m", "mlflow", "server", *store, *options)


def _prefect_server_command(port: int, *options: str) -> list[str]:
    return _python(
        "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port), *options
    )


def prefect_api_url(settings: Settings) -> str:
    """The API URL of the Prefect server `loopline up` runs."""
    return _url(settings.prefect_port, "/api")


@dataclass(frozen=True)
class Service:
    """One long-running local process `loopline up` manages."""

    name: str
    what: str  # one line for people
    command: Callable[[Settings], list[str]]
    port: Callable[[Settings], int] | None = None  # None: a process without a port
    ready: Callable[[Settings], str] | None = None  # URL answering 200 once it is ready
    open: Callable[[Settings], str] | None = None  # what a person opens
    needs: tuple[str, ...] = ()
    # a plain `up` starts it only when this says it is configured (`up <name>` always does)
    configured: Callable[[Settings], bool] | None = None


REGISTRY: dict[str, Service] = {
    service.name: service
    for service in (
        Service(
            "prefect",
            "Prefect server and UI (flow runs, deployments, schedules)",
            lambda s: _prefect_server_command(s.prefect_port),
            port=lambda s: s.prefect_port,
            ready=lambda s: _url(s.prefect_port, "/api/health"),
            open=lambda s: _url(s.prefect_port),
        ),
        Service(
            "catalogue",
            "the simulated vendor's catalogue API (what the line's ingest extracts by default)",
            lambda s: _python(
                "-m", "loopline.cli", "catalogue-api", "--port", str(s.catalogue_port)
            ),
            port=lambda s: s.catalogue_port,
            ready=lambda s: _url(s.catalogue_port, "/healthz"),
            open=lambda s: _url(s.catalogue_port, "/docs"),
        ),
        Service(
            "deployments",
            "the flows' deployments, served (scheduled and on-demand runs execute here)",
            lambda s: _python("-m", "flows.deployments"),
            # ready once the server knows the deployments (the last one registered)
            ready=lambda s: _url(s.prefect_port, "/api/deployments/name/loopline-demo/demo"),
            open=lambda s: _url(s.prefect_port, "/deployments"),
            needs=("prefect",),
        ),
        Service(
            "worker",
            f"a Prefect worker on the `{WORK_POOL}` process pool (runs prefect.yaml's "
            "deployments once `prefect deploy --all` registered them)",
            # `worker start` creates the pool when it is missing
            lambda s: _python(
                "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"
            ),
            ready=lambda s: _url(s.prefect_port, f"/api/work_pools/{WORK_POOL}"),
            open=lambda s: _url(s.prefect_port, f"/work-pools/work-pool/{WORK_POOL}"),
            needs=("prefect",),
        ),
        Service(
            "push",
            "the landing watcher: each burst of new dropped files starts one line run",
            lambda s: _python("-m", "loopline.push.watcher"),
            needs=("prefect",),
        ),
        Service(
            "mlflow",
            "MLflow UI (experiments, runs, plots, model registry)",
            lambda s: _mlflow_command(s),
            port=lambda s: s.mlflow_port,
            ready=lambda s: _url(s.mlflow_port, "/health"),
            open=lambda s: _url(s.mlflow_port),
        ),
        Service(
            "docs",
            "dbt docs site (models, columns, lineage), generated first",
            lambda s: _python("-m", "loopline.cli", "docs", "--port", str(s.docs_port)),
            port=lambda s: s.docs_port,
            ready=lambda s: _url(s.docs_port, "/index.html"),
            open=lambda s: _url(s.docs_port),
        ),
        Service(
            "api",
            "the serving API (churn scores, recommendations)",
            lambda s: _python("-m", "loopline.cli", "serve", "--port", str(s.api_port)),
            port=lambda s: s.api_port,
            ready=lambda s: _url(s.api_port, "/healthz"),
            open=lambda s: _url(s.api_port, "/docs"),
        ),
        Service(
            "stream",
            "the stream consumer: viewing events land as micro-batch files (lag in "
            "data/stream/metrics.json)",
            lambda s: _python("-m", "loopline.cli", "stream"),
            configured=lambda s: bool(s.stream_url),
        ),
    )
}


# services that open the MLflow store: each would create and migrate a new SQLite store at
# start, and two migrating at once fail (alembic: "expected to match one row"), so `up`
# migrates it once before it starts them
_MLFLOW_USERS = ("mlflow", "api", "deployments", "worker")


def _migrate_mlflow_store(settings: Settings) -> None:
    """Create (or upgrade) the MLflow tracking store before the services share it."""
    from ml.registry import configure

    configure(settings).search_experiments(max_results=1)


def resolve(names: Sequence[str] | None, settings: Settings | None = None) -> list[str]:
    """The services to start for `names` (by default all, but those `settings` leave
    unconfigured), needs first, in registry order."""
    if not names:
        return [
            name
            for name, service in REGISTRY.items()
            if service.configured is None or (settings is not None and service.configured(settings))
        ]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ServiceError(
            f"unknown service {', '.join(unknown)}: choose from {', '.join(REGISTRY)}"
        )
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(REGISTRY[name].needs)
    return [n for n in REGISTRY if n in wanted]


# -- environment ------------------------------------------------------------------------------


def prefect_environment(settings: Settings) -> dict[str, str]:
    """Prefect settings every loopline process shares (a caller's own values win)."""
    return {
        # Prefect's database and profiles beside the rest of the data
        "PREFECT_HOME": str(settings.data_dir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no internet here
        # `loopline.progress` messages reach the flow-run logs (and the UI)
        "PREFECT_LOGGING_EXTRA_LOGGERS": "loopline",
        # ... and are not an error outside a flow run (the CLI's own commands)
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }


def _service_environment(settings: Settings) -> dict[str, str]:
    env = {**prefect_environment(settings), **os.environ}
    env.update(
        {
            "LOOPLINE_DATA_DIR": str(settings.data_dir),
            "PREFECT_API_URL": prefect_api_url(settings),
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no extra job-runner processes
            "MLFLOW_DISABLE_TELEMETRY": env.get("MLFLOW_DISABLE_TELEMETRY", "true"),  # offline
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        }
    )
    env.setdefault("LOOPLINE_PROGRESS", "log")  # progress as lines in the log files
    return env


# -- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    """A process group `up` started: its leader's pid and start time identify it."""

    name: str
    pid: int
    started: float  # the leader's start time (seconds since the epoch), as the OS reports it
    log: str
    command: list[str]
    port: int | None = None
    url: str | None = None
    ready_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_children: dict[int, subprocess.Popen[bytes]] = {}  # reaped when stopped from this process


def _process_started(pid: int) -> float | None:
    """The start time of process `pid`, or None if it is gone (or a zombie)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_alive(running: Running) -> bool:
    """Whether the recorded leader still runs (same pid *and* same start time)."""
    started = _process_started(running.pid)
    return started is not None and abs(started - running.started) < 0.05


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def launch(
    name: str,
    command: list[str],
    log: Path,
    env: dict[str, str],
    port: int | None = None,
    url: str | None = None,
    ready_url: str | None = None,
) -> Running:
    """Start `command` in a new process group, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"\n--- {stamp} loopline starts {name}: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=_repo_root(),
            start_new_session=True,  # its own process group: `down` stops all of it
        )
    _children[process.pid] = process
    started = _process_started(process.pid)
    if started is None:  # gone already: reap it and say why
        process.wait()
        raise ServiceError(f"{name} exited at once (status {process.returncode}); see {log}")
    return Running(name, process.pid, started, str(log), command, port, url, ready_url)


def stop(running: Running, timeout_s: float = 20.0) -> bool:
    """Stop the process group of `running`: TERM, then KILL whatever of it is still alive
    `timeout_s` later (one grace for the whole group); False if it was not running."""
    import psutil

    if not is_alive(running):
        _reap(running.pid)
        return False
    try:
        leader = psutil.Process(running.pid)
        members = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.pid, signal.SIGTERM)
    _reap(running.pid, timeout_s)
    # what is left of the same grace (a leader that never exits used it all: the group is
    # killed now, not after a second full grace)
    _, alive = psutil.wait_procs(members, timeout=max(deadline - time.monotonic(), 0.0))
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
    _reap(running.pid)
    return True


def _reap(pid: int, timeout_s: float = 0.0) -> None:
    """Collect the exit status of a child this process started (no zombie left behind)."""
    process = _children.get(pid)
    if process is None:
        return
    try:
        process.wait(timeout=timeout_s or None) if timeout_s else process.poll()
    except subprocess.TimeoutExpired:
        return
    if process.returncode is not None:
        _children.pop(pid, None)


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether `url` answers 200 right now."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def log_tail(log: str | Path, lines: int = 1) -> str:
    """The last non-empty lines of a log file (for one-line error messages)."""
    try:
        text = Path(log).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def wait_ready(running: Running, url: str, timeout_s: float) -> None:
    """Wait until `url` answers 200; ServiceError saying why not if it dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if answers(url):
            return
        if not is_alive(running):
            _reap(running.pid)
            last = log_tail(running.log)
            raise ServiceError("exited before it answered" + (f" ({last})" if last else ""))
        if time.monotonic() > deadline:
            raise ServiceError(f"did not answer within {timeout_s:g} s")
        time.sleep(0.3)


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# -- state files ---------------------------------------------------------------------------


def state_dir(settings: Settings) -> Path:
    return settings.data_dir / "services"


def log_dir(settings: Settings) -> Path:
    return settings.data_dir / "logs"


def _state_file(settings: Settings, name: str) -> Path:
    return state_dir(settings) / f"{name}.json"


def _save(settings: Settings, running: Running) -> None:
    path = _state_file(settings, running.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(running), indent=2))
    tmp.replace(path)


def recorded(settings: Settings, name: str) -> Running | None:
    """The live process `up` recorded for `name` (a stale record is removed)."""
    path = _state_file(settings, name)
    try:
        running = Running(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if is_alive(running):
        return running
    path.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One `up` or `down` at a time per data folder."""
    path = state_dir(settings) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- up, down, status --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What `up` did about one service."""

    name: str
    ok: bool
    action: str  # "started", "already running", "failed", "not started"
    running: Running | None = None
    detail: str = ""
    seconds: float | None = None


def up(
    settings: Settings,
    names: Sequence[str] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Start the services not running yet (and what they need); wait until each answers."""
    wanted = resolve(names, settings)
    timeout = settings.service_start_timeout
    env = _service_environment(settings)
    outcomes: dict[str, Outcome] = {}
    pending: dict[str, tuple[Running, float]] = {}  # name -> (process, start time)

    def settle(outcome: Outcome) -> None:
        outcomes[outcome.name] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    with _locked(settings):
        if any(recorded(settings, n) is None for n in wanted if n in _MLFLOW_USERS):
            _migrate_mlflow_store(settings)
        for name in wanted:
            existing = recorded(settings, name)
            if existing is not None:
                settle(Outcome(name, True, "already running", existing))
        waiting = [n for n in wanted if n not in outcomes]
        while waiting or pending:
            for name in list(waiting):
                service = REGISTRY[name]
                needs = [outcomes.get(n) for n in service.needs]
                if any(o is not None and not o.ok for o in needs):
                    waiting.remove(name)
                    failed = ", ".join(o.name for o in needs if o is not None and not o.ok)
                    settle(Outcome(name, False, "not started", detail=f"needs {failed}"))
                    continue
                if any(o is None for o in needs):
                    continue  # a need is still starting
                waiting.remove(name)
                port = service.port(settings) if service.port else None
                if port is not None and port_in_use(port):
                    settle(
                        Outcome(
                            name,
                            False,
                            "failed",
                            detail=f"port {port} is in use by another program; stop it or set "
                            f"LOOPLINE_{name.upper()}_PORT",
                        )
                    )
                    continue
                try:
                    running = launch(
                        name,
                        service.command(settings),
                        log_dir(settings) / f"{name}.log",
                        env,
                        port=port,
                        url=service.open(settings) if service.open else None,
                        ready_url=service.ready(settings) if service.ready else None,
                    )
                except (OSError, ServiceError) as exc:
                    settle(Outcome(name, False, "failed", detail=str(exc)))
                    continue
                _save(settings, running)
                pending[name] = (running, time.monotonic())
            for name, (running, began) in list(pending.items()):
                elapsed = time.monotonic() - began
                if running.ready_url is None or answers(running.ready_url, timeout_s=1.0):
                    del pending[name]
                    settle(Outcome(name, True, "started", running, seconds=elapsed))
                elif not is_alive(running):
                    del pending[name]
                    _reap(running.pid)
                    _state_file(settings, name).unlink(missing_ok=True)
                    last = log_tail(running.log)
                    detail = "exited before it answered" + (f" ({last})" if last else "")
                    settle(Outcome(name, False, "failed", running, detail=detail))
                elif elapsed > timeout:
                    del pending[name]
                    detail = (
                        f"started, but {running.ready_url} did not answer within {timeout:.0f} s "
                        "(still running: see its log, or `loopline down`)"
                    )
                    settle(Outcome(name, False, "failed", running, detail=detail))
            if waiting or pending:
                time.sleep(0.3)
    return [outcomes[n] for n in wanted]


def down(settings: Settings, names: Sequence[str] | None = None) -> list[tuple[str, bool]]:
    """Stop what `up` started (dependents first); (name, whether it was running) each."""
    wanted = list(REGISTRY) if not names else resolve_existing(names)
    stopped: list[tuple[str, bool]] = []
    with _locked(settings):
        for name in reversed(wanted):
            path = _state_file(settings, name)
            running = recorded(settings, name)
            was_running = running is not None and stop(running)
            path.unlink(missing_ok=True)
            stopped.append((name, was_running))
    return stopped


def resolve_existing(names: Sequence[str]) -> list[str]:
    """`names` and the services that need them (stopped first), in registry order."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ServiceError(
            f"unknown service {', '.join(unknown)}: choose from {', '.join(REGISTRY)}"
        )
    wanted = set(names)
    grew = True
    while grew:
        dependents = {n for n, s in REGISTRY.items() if wanted & set(s.needs)}
        grew = not dependents <= wanted
        wanted |= dependents
    return [n for n in REGISTRY if n in wanted]


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `loopline status`."""

    name: str
    running: Running | None
    ready: bool
    port: int | None


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs, on which port, and whether it answers."""
    rows = []
    for name, service in REGISTRY.items():
        running = recorded(settings, name)
        ready = bool(running and (running.ready_url is None or answers(running.ready_url, 1.0)))
        port = running.port if running else (service.port(settings) if service.port else None)
        rows.append(ServiceStatus(name, running, ready, port))
    return rows


@dataclass(frozen=True)
class DeploymentRuns:
    """The last and next run of one deployment, as the Prefect server reports them."""

    name: str
    schedule: str
    runs_on: str  # "served" (a `serve` process) or "pool <name>" (workers)
    last_state: str | None
    last_time: str | None
    next_time: str | None


class PrefectHttp:
    """Calls to a Prefect server's REST API that retry what the server calls transient (a 503
    while its SQLite store is busy, 429, 502, 504; as Prefect's own client does) and raise
    with the server's message on any other error, rather than hand back an error body."""

    RETRIED = frozenset({429, 502, 503, 504})

    def __init__(self, api_url: str, timeout_s: float = 30.0, tries: int = 5) -> None:
        self.client = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=timeout_s)
        self.tries = tries

    def __enter__(self) -> PrefectHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.tries):
            response = self.client.request(method, path, **kwargs)
            if response.status_code not in self.RETRIED or attempt == self.tries - 1:
                break
            time.sleep(0.25 * 2**attempt)
        if response.is_error:
            raise httpx.HTTPStatusError(
                f"{method} {response.url} answered {response.status_code}: {response.text[:500]}",
                request=response.request,
                response=response,
            )
        return response


def deployment_runs(api_url: str, timeout_s: float = 3.0) -> list[DeploymentRuns]:
    """Each deployment's last finished-or-running run and next scheduled run (REST API)."""
    with PrefectHttp(api_url, timeout_s) as client:
        deployments = client.post("deployments/filter", json={"limit": 50}).json()
        flows = {f["id"]: f["name"] for f in client.post("flows/filter", json={"limit": 50}).json()}
        out = []
        for deployment in sorted(deployments, key=lambda d: d["name"]):
            ids = {"deployments": {"id": {"any_": [deployment["id"]]}}}
            last = client.post(
                "flow_runs/filter",
                json={
                    **ids,
                    "flow_runs": {"start_time": {"is_null_": False}},
                    "sort": "START_TIME_DESC",
                    "limit": 1,
                },
            ).json()
            upcoming = client.post(
                "flow_runs/filter",
                json={
                    **ids,
                    "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": 1,
                },
            ).json()
            schedules = [
                s["schedule"].get("cron") or f"every {s['schedule'].get('interval')} s"
                for s in deployment.get("schedules", [])
                if s.get("schedule")
            ]
            out.append(
                DeploymentRuns(
                    name=f"{flows.get(deployment['flow_id'], '?')}/{deployment['name']}",
                    schedule=", ".join(schedules) or "on demand",
                    runs_on=(
                        f"pool {deployment['work_pool_name']}"
                        if deployment.get("work_pool_name")
                        else "served"
                    ),
                    last_state=last[0]["state"]["name"] if last else None,
                    last_time=(last[0]["start_time"] or "")[:19] if last else None,
                    next_time=(upcoming[0]["expected_start_time"] or "")[:19] if upcoming else None,
                )
            )
        return out


# -- a Prefect API for the demo ---------------------------------------------------------------


@dataclass(frozen=True)
class PrefectApi:
    """The Prefect API a run uses, and where it comes from (for people)."""

    url: str
    source: str
    log: str | None = None  # the temporary server's log


@contextlib.contextmanager
def prefect_api(
    settings: Settings, while_starting: Callable[[str], None] | None = None
) -> Iterator[PrefectApi]:
    """A Prefect API URL for the length of a run; ServiceError if none answers in time.

    In order: ``PREFECT_API_URL`` if set (it must answer); the server `loopline up`
    started; else a temporary server, started here and stopped afterwards (Prefect's own
    temporary server allows 20 s, which a first start on a busy machine exceeds).
    `while_starting(url)` runs once the URL is known, while the server boots (to import
    the flows meanwhile, say).
    """
    given = os.environ.get("PREFECT_API_URL")
    if given:
        deadline = time.monotonic() + 5
        while not answers(given.rstrip("/") + "/health"):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"PREFECT_API_URL={given} does not answer; start that server, "
                    "or unset PREFECT_API_URL to use a temporary one"
                )
            time.sleep(0.5)
        if while_starting is not None:
            while_starting(given)
        yield PrefectApi(given, f"PREFECT_API_URL {given}")
        return
    server = recorded(settings, "prefect")
    if server is not None and server.ready_url and answers(server.ready_url):
        if while_starting is not None:
            while_starting(prefect_api_url(settings))
        yield PrefectApi(
            prefect_api_url(settings), f"the `loopline up` server on port {settings.prefect_port}"
        )
        return
    port = free_port()
    env = _service_environment(settings)
    env["PREFECT_API_URL"] = _url(port, "/api")
    running = launch(
        "prefect (temporary)",
        # no UI and no scheduling; the services that record task runs and events stay, so
        # the UI `up` starts later shows the run whole
        _prefect_server_command(port, "--no-ui", "--no-scheduler", "--no-late-runs"),
        log_dir(settings) / "prefect-temporary.log",
        env,
        port=port,
    )
    # a SIGTERM (or a closed terminal) must stop the temporary server too, as Ctrl-C does
    previous = _exit_on_signals()
    try:
        if while_starting is not None:
            while_starting(_url(port, "/api"))
        try:
            wait_ready(running, _url(port, "/api/health"), settings.service_start_timeout)
        except ServiceError as exc:
            raise ServiceError(
                f"the Prefect server for this run {exc} (log {running.log}); start one with "
                "`make up` and run again, or raise LOOPLINE_SERVICE_START_TIMEOUT"
            ) from None
        yield PrefectApi(_url(port, "/api"), f"temporary server on port {port}", running.log)
    finally:
        stop(running)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_on_signals() -> dict[int, Any]:
    """Turn SIGTERM and SIGHUP into SystemExit (so `finally` blocks run); the old handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    return {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}
