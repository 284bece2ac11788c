"""Online benchmark: our FastAPI churn endpoint against its own stack's ceiling and against
`mlflow models serve`, same model.

Ours is the app of the project's factory (`ml.serving.app.create_app`) with one bench-only
route added, ``POST /bench/constant`` returning a constant JSON, run by the same
``uvicorn.run`` call as `loopline serve` (``python -m bench.serving``): the churn endpoint and
the trivial one share the server, worker, middleware and load generator, so their ratio is
what the feature lookup and the model cost against the HTTP stack itself. The production API
never gets the route.

Both servers run as subprocesses on free loopback ports, one worker each, with the same
environment (``OMP_NUM_THREADS=1``: the thread setting one-row scikit-learn needs, so the
baseline is not handicapped by OpenMP start-up per call). Both are sent the same users in the
same order: ours by ``user_id`` (features from the online store), mlflow's as that user's
stored feature values in ``dataframe_split`` form. The 100-row requests go to
``POST /v1/churn/score/batch`` (by user id) and to mlflow (one ``dataframe_split`` of the same
users). Before anything is timed, every user's answer is checked: status 200, a probability,
the same model version, and the same number from both servers, single and 100-row alike.
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
from bench.fixture import REPO
from loopline.settings import Settings

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
CHURN_PATH = "/v1/churn/score"
BATCH_PATH = "/v1/churn/score/batch"
TRIVIAL_PATH = "/bench/constant"
TRIVIAL_BODY = {"status": "ok", "bench": "constant"}
MLFLOW_PATH = "/invocations"


@dataclass(frozen=True)
class ServingConfig:
    users: int = 200  # distinct users cycled through
    warmup: int = 2000
    requests: int = 2000
    seconds: float = 5.0  # one throughput run
    connections: tuple[int, ...] = (1, 8)  # closed-loop clients of the throughput runs
    rounds: int = 5  # throughput runs of each side at each concurrency (interleaved)
    batch_users: int = 100  # the "100-row request"
    batch_repeats: int = 50


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
    trivial: list[bytes]  # the same bodies, to the constant route
    mlflow: list[bytes]
    mlflow_bodies: list[dict[str, Any]]
    mlflow_batch: bytes  # the first `batch_rows` users in one dataframe_split request
    batch_rows: int
    batch: bytes  # the same users in one request to our batch route


def _json_value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def build_workload(
    settings: Settings, n_users: int, ours_port: int, mlflow_port: int, batch_users: int = 100
) -> Workload:
    """Pick `n_users` users present in the online store and encode every kind of request."""
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
    trivial = [loadgen.encode_post(HOST, ours_port, TRIVIAL_PATH, {"user_id": u}) for u in users]
    theirs = [loadgen.encode_post(HOST, mlflow_port, MLFLOW_PATH, b) for b in mlflow_bodies]
    rows = [b["dataframe_split"]["data"][0] for b in mlflow_bodies[:batch_users]]
    batch = {"dataframe_split": {"columns": columns, "data": rows}}
    ours_batch = {"rows": [{"user_id": u} for u in users[: len(rows)]]}
    return Workload(
        champion.version, tags.get("estimator", "?"), columns, users, ours, trivial, theirs,
        mlflow_bodies, loadgen.encode_post(HOST, mlflow_port, MLFLOW_PATH, batch), len(rows),
        loadgen.encode_post(HOST, ours_port, BATCH_PATH, ours_batch),
    )  # fmt: skip


def _probability_ours(body: bytes) -> tuple[float, str]:
    answer = json.loads(body)
    return float(answer["churn_probability"]), str(answer["model"]["version"])


def _probabilities_mlflow(body: bytes) -> list[float]:
    """The churn probability of every row of an mlflow answer."""
    out: list[float] = []
    for row in json.loads(body)["predictions"]:
        if isinstance(row, dict):  # a DataFrame-shaped answer: {"0": p0, "1": p1}
            out.append(float(list(row.values())[-1]))
        elif isinstance(row, list):
            out.append(float(row[-1]))
        else:
            raise loadgen.HttpError(f"mlflow answered no probability pair: {body[:300]!r}")
    return out


def _probability_mlflow(body: bytes) -> float:
    return _probabilities_mlflow(body)[0]


def _probabilities_ours_batch(body: bytes, version: str) -> list[float]:
    """The churn probability of every row of our batch answer, every row scored."""
    answer = json.loads(body)
    if str(answer["model"]["version"]) != version:
        raise loadgen.HttpError(f"ours (batch) serves v{answer['model']['version']}")
    failed = [r for r in answer["results"] if r["status"] != 200]
    if failed:
        raise loadgen.HttpError(f"ours (batch): {len(failed)} rows not scored: {failed[:2]}")
    return [float(r["churn_probability"]) for r in answer["results"]]


def verify(workload: Workload, ours_port: int, mlflow_port: int) -> dict[str, Any]:
    """Every user once on both servers: 200, probabilities, same version, same numbers; the
    constant route's answer; both servers' 100-row answers equal to their users' single
    answers."""
    a = loadgen.Connection(HOST, ours_port)
    b = loadgen.Connection(HOST, mlflow_port)
    worst = 0.0
    singles: list[float] = []
    try:
        status, body = a.request(workload.trivial[0])
        if status != 200 or json.loads(body) != TRIVIAL_BODY:
            raise loadgen.HttpError(f"the constant route answered {status}: {body[:300]!r}")
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
            singles.append(p_ours)
            for p in (p_ours, p_mlflow):
                if not 0.0 <= p <= 1.0:
                    raise loadgen.HttpError(f"user {uid}: {p} is not a probability")
            worst = max(worst, abs(p_ours - p_mlflow))
        status, body = b.request(workload.mlflow_batch)
        if status != 200:
            raise loadgen.HttpError(f"mlflow: the batch request answered {status}: {body[:300]!r}")
        batch = _probabilities_mlflow(body)
        status, body = a.request(workload.batch)
        if status != 200:
            raise loadgen.HttpError(f"ours: the batch request answered {status}: {body[:300]!r}")
        ours_batch = _probabilities_ours_batch(body, workload.model_version)
        for name, rows in (("mlflow", batch), ("ours", ours_batch)):
            if len(rows) != workload.batch_rows:
                raise loadgen.HttpError(f"{name}: the batch request answered {len(rows)} rows")
            worst = max([worst, *(abs(p - q) for p, q in zip(rows, singles, strict=False))])
    finally:
        a.close()
        b.close()
    if worst > 1e-6:
        raise loadgen.HttpError(
            f"the two servers disagree by up to {worst:.3g} on the same users: not the same model "
            "or not the same features, so a speed comparison would be meaningless"
        )
    return {
        "users_checked": len(workload.user_ids),
        "batch_rows_checked": len(batch),
        "max_abs_probability_difference": worst,
    }


# --------------------------------------------------------------------------------------------
# the bench server: the production app plus the constant route


def bench_app(settings: Settings, **kwargs: Any) -> Any:
    """The app of `ml.serving.app.create_app` with ``POST /bench/constant`` added."""
    from ml.serving.app import create_app

    app = create_app(settings, **kwargs)

    @app.post(TRIVIAL_PATH, include_in_schema=False)
    async def constant() -> dict[str, str]:
        """The HTTP stack's ceiling: no body parsed, no lookup, no model."""
        return TRIVIAL_BODY

    return app


def serve_bench(host: str, port: int) -> None:
    """Run `bench_app` exactly as `ml.serving.app.serve` runs the production app."""
    import uvicorn

    from loopline.settings import get_settings

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    app = bench_app(get_settings())
    uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level="info")


# --------------------------------------------------------------------------------------------
# the run


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _hundred_users(
    workload: Workload, ours_port: int, mlflow_port: int, repeats: int
) -> dict[str, Any]:
    """Time to score `batch_rows` users in one request: ours to ``POST /v1/churn/score/batch``
    (by user id, features from the online store), mlflow as one `dataframe_split` request
    (the same users' stored features); sequential on one connection, after a warm-up."""
    n = workload.batch_rows
    out: dict[str, Any] = {"rows": n, "repeats": repeats}
    for side, port, request in (
        ("ours", ours_port, workload.batch),
        ("mlflow", mlflow_port, workload.mlflow_batch),
    ):
        out[side] = loadgen.measure_latency(HOST, port, [request], 2, repeats).summary()
        out[side]["rows_per_s"] = 1000.0 * n / out[side]["p50_ms"]
    return out


def run_serving(
    settings: Settings, config: ServingConfig, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Latency and throughput of the churn route, the constant route on the same server and
    mlflow serve; the raw numbers, no verdicts."""
    env = server_env(settings)
    logs = settings.data_dir / "bench-logs"
    ours_port, mlflow_port = free_port(), free_port()
    workload = build_workload(
        settings, config.users, ours_port, mlflow_port, min(config.batch_users, config.users)
    )
    say(
        f"serving: churn v{workload.model_version} ({workload.estimator}), "
        f"{len(workload.user_ids)} users, {len(workload.feature_columns)} features"
    )
    ours_argv = [
        sys.executable, "-m", "bench.serving", "--host", HOST, "--port", str(ours_port)
    ]  # fmt: skip
    mlflow_argv = [
        str(VENV_BIN / "mlflow"), "models", "serve",
        "-m", "models:/loopline-churn@champion",
        "--env-manager", "local", "--workers", "1",
        "--host", HOST, "--port", str(mlflow_port),
    ]  # fmt: skip
    ours_env = env | {"PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    results: dict[str, Any] = {
        "model_version": workload.model_version,
        "estimator": workload.estimator,
        "users": len(workload.user_ids),
        "config": config.__dict__,
        "server_env": {"OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "workers": 1},
    }
    sides = {
        "ours": (ours_port, workload.ours),
        "trivial": (ours_port, workload.trivial),
        "mlflow": (mlflow_port, workload.mlflow),
    }
    say("serving: starting both servers")
    with (
        running("bench server", ours_argv, ours_env, ours_port, "/readyz", logs / "ours.log"),
        running("mlflow models serve", mlflow_argv, env, mlflow_port, "/ping", logs / "mlflow.log"),
    ):
        results["verification"] = verify(workload, ours_port, mlflow_port)
        say(f"serving: answers verified ({results['verification']})")
        for name, (port, requests) in sides.items():
            say(f"serving: latency of {name} ({config.warmup} warm-up + {config.requests})")
            latency = loadgen.measure_latency(HOST, port, requests, config.warmup, config.requests)
            results[f"{name}_latency"] = latency.summary()
        say(f"serving: {workload.batch_rows} users a request, {config.batch_repeats} times")
        results["hundred"] = _hundred_users(workload, ours_port, mlflow_port, config.batch_repeats)
        runs: dict[str, dict[int, list[float]]] = {name: {} for name in sides}
        for connections in config.connections:
            for round_ in range(config.rounds):
                for name, (port, requests) in sides.items():
                    if name == "mlflow" and round_ >= max(1, config.rounds // 2):
                        continue  # ~40x slower: fewer runs say as much
                    say(
                        f"serving: throughput of {name}, {connections} connection(s), "
                        f"round {round_ + 1}/{config.rounds}"
                    )
                    tp = loadgen.measure_throughput(
                        HOST, port, requests, connections, config.seconds
                    )
                    if tp["errors"] or tp["failures"]:
                        raise loadgen.HttpError(f"{name} throughput run had errors: {tp}")
                    runs[name].setdefault(connections, []).append(tp["rps"])
        results["throughput_runs"] = {
            name: {str(c): rps for c, rps in by_c.items()} for name, by_c in runs.items()
        }
        results["throughput"] = {
            name: {str(c): _median(rps) for c, rps in by_c.items()} for name, by_c in runs.items()
        }
        top = str(max(config.connections))
        # the figures the scoring checks read: ours and mlflow at the highest concurrency
        for name in ("ours", "mlflow"):
            results[f"{name}_throughput"] = {
                "connections": int(top),
                "rps": results["throughput"][name][top],
            }
    return results


# --------------------------------------------------------------------------------------------
# the results section


def serving_lines(serving: dict[str, Any]) -> list[str]:
    """The online part of the scoring section of the results file."""
    cfg = serving["config"]
    hundred = serving["hundred"]
    tp = serving["throughput"]
    lines = [
        "",
        "### Online: `POST /v1/churn/score` vs a constant route on the same server, and vs "
        "`mlflow models serve` `POST /invocations`",
        "",
        "Ours: the app of the project's factory (`create_app`) plus one bench-only route, "
        f"`POST {TRIVIAL_PATH}` returning a constant JSON (no body parsed, no lookup, no model), "
        "run by the same `uvicorn.run` call as `loopline serve` (`python -m bench.serving`): "
        "the churn route and the constant one share server, worker, middleware and load "
        "generator, and get the same request bodies. "
        f"Both servers: one worker, loopback, OMP_NUM_THREADS="
        f"{serving['server_env']['OMP_NUM_THREADS']}; the same {serving['users']} users in "
        "the same order (ours by `user_id` from the online store, mlflow with that user's "
        "stored feature values as `dataframe_split`). Answers checked before timing: "
        f"{serving['verification']['users_checked']} users, 200s, same model version, the "
        "constant route's body, and mlflow's "
        f"{serving['verification'].get('batch_rows_checked', 0)}-row answer; probabilities "
        f"equal to within {serving['verification']['max_abs_probability_difference']:.1e}.",
        "",
        f"Latency: {cfg['warmup']} warm-up then {cfg['requests']} sequential requests on one "
        f"keep-alive connection. Throughput: closed-loop connections (one process each), "
        f"{cfg['seconds']:.0f} s a run, median of {cfg['rounds']} runs interleaved with the "
        "other routes (mlflow: fewer runs, it is ~40x slower).",
        "",
        "| route | p50 | p90 | p99 | max | sequential req/s | "
        + " | ".join(f"req/s at c={c}" for c in cfg["connections"])
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(cfg["connections"]),
    ]
    for name, label in (
        ("ours", "`POST /v1/churn/score` (lookup + model)"),
        ("trivial", f"`POST {TRIVIAL_PATH}` (same server)"),
        ("mlflow", "mlflow models serve"),
    ):
        lat = serving[f"{name}_latency"]
        lines.append(
            f"| {label} | {lat['p50_ms']:.3f} ms | {lat['p90_ms']:.3f} ms | "
            f"{lat['p99_ms']:.3f} ms | {lat['max_ms']:.3f} ms | {lat['rps_sequential']:,.0f} | "
            + " | ".join(f"{tp[name][str(c)]:,.0f}" for c in cfg["connections"])
            + " |"
        )
    runs = serving["throughput_runs"]
    lines += [
        "",
        "Every throughput run (req/s): "
        + "; ".join(
            f"{name} c={c}: " + ", ".join(f"{r:,.0f}" for r in rps)
            for name in ("ours", "trivial", "mlflow")
            for c, rps in runs[name].items()
        )
        + ".",
        "",
        f"**{hundred['rows']}-row requests.** `POST {BATCH_PATH}` with {hundred['rows']} "
        "`user_id`s (one online-store lookup and one model call for all of them) against "
        f"mlflow's one {hundred['rows']}-row `dataframe_split` request with the same users' "
        "stored features; sequential on one keep-alive connection, "
        f"{hundred['repeats']} requests after 2 warm-up ones. Both answers were checked "
        "before timing: every row scored, the same probabilities as the single-user answers.",
        "",
        f"| {hundred['rows']} rows in one request | p50 | p99 | rows/s (at p50) |",
        "|---|---|---|---|",
    ]
    for name, label in (
        ("ours", f"`POST {BATCH_PATH}`"),
        ("mlflow", "mlflow models serve `POST /invocations`"),
    ):
        h = hundred[name]
        lines.append(
            f"| {label} | {h['p50_ms']:.1f} ms | {h['p99_ms']:.1f} ms | {h['rows_per_s']:,.0f} |"
        )
    ratio = hundred["ours"]["rows_per_s"] / hundred["mlflow"]["rows_per_s"]
    lines += ["", f"Rows/s of {hundred['rows']}-row requests, ours / mlflow: {ratio:.1f}x."]
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=serve_bench.__doc__
    )
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_bench(args.host, args.port)


if __name__ == "__main__":
    main()
