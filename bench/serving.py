"""Online benchmark: our FastAPI churn endpoint against `mlflow models serve`, same model.

Both servers run as subprocesses on free loopback ports, one worker each, with the same
environment (``OMP_NUM_THREADS=1``: the thread setting one-row scikit-learn needs, so the
baseline is not handicapped by OpenMP start-up per call). Both are sent the same users in the
same order: ours by ``user_id`` (features from the online store), mlflow's as that user's
stored feature values in ``dataframe_split`` form. Before anything is timed, every user's
answer is checked: status 200, a probability, the same model version, and the same number
from both servers.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from loopline.settings import Settings

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
CHURN_PATH = "/v1/churn/score"
MLFLOW_PATH = "/invocations"


@dataclass(frozen=True)
class ServingConfig:
    users: int = 200  # distinct users cycled through
    warmup: int = 2000
    requests: int = 2000
    seconds: float = 8.0
    connections: int = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    """The environment both servers get: this one without LOOPLINE_*, pointed at the bench."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "MLFLOW_"))}
    env.update(
        {
            "LOOPLINE_DATA_DIR": str(settings.data_dir),
            "LOOPLINE_DBT_PROJECT_DIR": str(settings.dbt_project_dir or ""),
            "MLFLOW_TRACKING_URI": settings.resolved_mlflow_uri,
            "MLFLOW_REGISTRY_URI": settings.resolved_mlflow_uri,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            # mlflow serve execs `uvicorn` by name: the venv must come first on PATH
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
        }
    )
    return env


@contextmanager
def running(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log_path: Path,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group; wait for `ready_path`; always stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=str(log_path.parent),  # no stray .env file gets read
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} before it was ready; "
                    f"see {log_path}:\n{_tail(log_path)}"
                )
            try:
                status, _ = loadgen.get(HOST, port, ready_path)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.25)
        yield proc
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (mlflow serve runs uvicorn as a child), then KILL."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with suppress(ProcessLookupError, PermissionError):  # children left behind in the group
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# the requests


@dataclass(frozen=True)
class Workload:
    """The same users for both servers, and the answers they should give."""

    model_version: str
    estimator: str
    feature_columns: list[str]
    user_ids: list[int]
    ours: list[bytes]
    mlflow: list[bytes]
    mlflow_bodies: list[dict[str, Any]]


def _json_value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def build_workload(settings: Settings, n_users: int, ours_port: int, mlflow_port: int) -> Workload:
    """Pick `n_users` users present in the online store and encode both kinds of request."""
    from ml.churn.score import load_churn_model
    from ml.features.definitions import CHURN
    from ml.features.online import open_online_store
    from ml.registry import configure, version_tags

    champion = load_churn_model(settings)
    tags = version_tags(configure(settings), champion.name, champion.version)
    columns = champion.feature_columns
    import duckdb

    con = duckdb.connect(str(settings.resolved_warehouse_path), read_only=True)
    try:
        candidates = [
            int(uid)
            for (uid,) in con.execute(
                f"select distinct user_id from {CHURN.relation} "
                "where feature_set_version = ? order by user_id",
                [champion.feature_set_version],
            ).fetchall()
        ]
    finally:
        con.close()
    users: list[int] = []
    mlflow_bodies: list[dict[str, Any]] = []
    with open_online_store(settings) as store:
        for uid in candidates:
            vector = store.get_one(CHURN.name, uid, champion.feature_set_version)
            if vector is None:
                continue
            row = [_json_value(vector.values.get(c)) for c in columns]
            users.append(uid)
            mlflow_bodies.append({"dataframe_split": {"columns": columns, "data": [row]}})
            if len(users) == n_users:
                break
    if not users:
        raise RuntimeError("no user of the champion's feature set is in the online store")
    ours = [loadgen.encode_post(HOST, ours_port, CHURN_PATH, {"user_id": u}) for u in users]
    theirs = [loadgen.encode_post(HOST, mlflow_port, MLFLOW_PATH, b) for b in mlflow_bodies]
    return Workload(
        champion.version, tags.get("estimator", "?"), columns, users, ours, theirs, mlflow_bodies
    )


def _probability_ours(body: bytes) -> tuple[float, str]:
    answer = json.loads(body)
    return float(answer["churn_probability"]), str(answer["model"]["version"])


def _probability_mlflow(body: bytes) -> float:
    answer = json.loads(body)
    predictions = answer["predictions"]
    first = predictions[0]
    if isinstance(first, dict):  # a DataFrame-shaped answer: {"0": p0, "1": p1}
        return float(list(first.values())[-1])
    if isinstance(first, list):
        return float(first[-1])
    raise loadgen.HttpError(f"mlflow answered no probability pair: {body[:300]!r}")


def verify(workload: Workload, ours_port: int, mlflow_port: int) -> dict[str, Any]:
    """Every user once on both servers: 200, probabilities, same version, same numbers."""
    a = loadgen.Connection(HOST, ours_port)
    b = loadgen.Connection(HOST, mlflow_port)
    worst = 0.0
    try:
        for uid, ours, theirs in zip(
            workload.user_ids, workload.ours, workload.mlflow, strict=True
        ):
            status, body = a.request(ours)
            if status != 200:
                raise loadgen.HttpError(f"ours: user {uid} answered {status}: {body[:300]!r}")
            p_ours, version = _probability_ours(body)
            if version != workload.model_version:
                raise loadgen.HttpError(
                    f"ours serves v{version}, expected v{workload.model_version}"
                )
            status, body = b.request(theirs)
            if status != 200:
                raise loadgen.HttpError(f"mlflow: user {uid} answered {status}: {body[:300]!r}")
            p_mlflow = _probability_mlflow(body)
            for p in (p_ours, p_mlflow):
                if not 0.0 <= p <= 1.0:
                    raise loadgen.HttpError(f"user {uid}: {p} is not a probability")
            worst = max(worst, abs(p_ours - p_mlflow))
    finally:
        a.close()
        b.close()
    if worst > 1e-6:
        raise loadgen.HttpError(
            f"the two servers disagree by up to {worst:.3g} on the same users: not the same model "
            "or not the same features, so a speed comparison would be meaningless"
        )
    return {"users_checked": len(workload.user_ids), "max_abs_probability_difference": worst}


# --------------------------------------------------------------------------------------------
# the run


def run_serving(
    settings: Settings, config: ServingConfig, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Latency and throughput of both servers; the raw numbers, no verdicts."""
    env = server_env(settings)
    logs = settings.data_dir / "bench-logs"
    ours_port, mlflow_port = free_port(), free_port()
    workload = build_workload(settings, config.users, ours_port, mlflow_port)
    say(
        f"serving: churn v{workload.model_version} ({workload.estimator}), "
        f"{len(workload.user_ids)} users, {len(workload.feature_columns)} features"
    )
    ours_argv = [str(VENV_BIN / "loopline"), "serve", "--host", HOST, "--port", str(ours_port)]
    mlflow_argv = [
        str(VENV_BIN / "mlflow"), "models", "serve",
        "-m", "models:/loopline-churn@champion",
        "--env-manager", "local", "--workers", "1",
        "--host", HOST, "--port", str(mlflow_port),
    ]  # fmt: skip
    results: dict[str, Any] = {
        "model_version": workload.model_version,
        "estimator": workload.estimator,
        "users": len(workload.user_ids),
        "config": config.__dict__,
        "server_env": {"OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "workers": 1},
    }
    say("serving: starting both servers")
    with (
        running("loopline serve", ours_argv, env, ours_port, "/readyz", logs / "ours.log"),
        running("mlflow models serve", mlflow_argv, env, mlflow_port, "/ping", logs / "mlflow.log"),
    ):
        results["verification"] = verify(workload, ours_port, mlflow_port)
        say(f"serving: answers verified ({results['verification']})")
        for name, port, requests in (
            ("ours", ours_port, workload.ours),
            ("mlflow", mlflow_port, workload.mlflow),
        ):
            say(f"serving: latency of {name} ({config.warmup} warm-up + {config.requests})")
            latency = loadgen.measure_latency(HOST, port, requests, config.warmup, config.requests)
            results[f"{name}_latency"] = latency.summary()
        for name, port, requests in (
            ("ours", ours_port, workload.ours),
            ("mlflow", mlflow_port, workload.mlflow),
        ):
            say(
                f"serving: throughput of {name} ({config.connections} connections, "
                f"{config.seconds:.0f} s)"
            )
            tp = loadgen.measure_throughput(
                HOST, port, requests, config.connections, config.seconds
            )
            if tp["errors"] or tp["failures"]:
                raise loadgen.HttpError(f"{name} throughput run had errors: {tp}")
            results[f"{name}_throughput"] = tp
    return results
