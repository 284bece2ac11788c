"""The loop's batch-inference flow: churn scores and top-N recommendations for every user.

Each step reports one phase line; churn scoring shows a bar over the rows it scored.

Churn scoring runs in this process by default. With more than one partition, or a Dask
scheduler address, it runs partitioned on Dask through prefect-dask (`score_churn_on_dask`):
the day's features are staged as one parquet part per partition of users, each part is a
task run on a Dask worker (which never opens the warehouse: DuckDB allows one writer
process), and the predictions are written once, inside the warehouse-writer slot, with the
same replace as a single-process run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.logs import run_logger
from flows.slots import each_write_takes_the_slot
from loopline import progress
from loopline.settings import get_settings

if TYPE_CHECKING:
    from ml.churn.score import ChampionModel, ScoreReport, StagedDay


class ScoreFlowParams(BaseModel):
    """The day to score as of (default: the newest), how many shows to recommend, and
    whether churn scoring runs partitioned on Dask."""

    model_config = ConfigDict(extra="forbid")

    as_of: date | None = None
    k: int = Field(10, ge=1, le=100)
    # 1 and no address: in this process. More: on Dask, a LocalCluster unless an address
    # (here or LOOPLINE_DASK_ADDRESS) names a running scheduler
    partitions: int = Field(1, ge=1, le=1024)
    dask_address: str | None = Field(None, min_length=1)


_NO_CHAMPION: dict[str, object] = {"as_of": None, "rows": 0, "version": None}


def _no_champion_yet() -> bool:
    """True (and said once, as a warning and a phase line) when churn has no @champion."""
    from ml.registry import CHAMPION, CHURN_MODEL, alias_version, configure

    if alias_version(configure(get_settings()), CHURN_MODEL, CHAMPION) is not None:
        return False
    # like the recommender below: nothing to score with is news, not a crash
    run_logger().warning("no churn @champion yet (no version passed the gate); skipped")
    progress.phase("score", "no churn @champion yet (none passed the gate): skipped", ok=False)
    return True


def _scored(report: ScoreReport, started: float, how: str = "") -> dict[str, object]:
    """Say what a churn scoring run wrote (a phase line, the run's log); the step's result."""
    summary = f"churn v{report.model_version}: {report.rows:,} users as of {report.as_of}{how}"
    progress.phase("score", summary, time.perf_counter() - started)
    run_logger().info("%s -> %s", summary, report.table)
    return {"as_of": report.as_of, "rows": report.rows, "version": report.model_version}


@task(name="score churn", retries=1, retry_delay_seconds=5)
def score_churn_task(as_of: date | None) -> dict[str, object]:
    """Score every active user with @champion (idempotent per day and version)."""
    from ml.churn.score import score_churn

    started = time.perf_counter()
    if _no_champion_yet():
        return dict(_NO_CHAMPION)
    with progress.track("scoring users", unit="users") as bar:
        report = score_churn(get_settings(), as_of, progress=bar.advance)
    return _scored(report, started)


# -- churn scoring partitioned on Dask ---------------------------------------------------------


@task(name="stage churn features", retries=1, retry_delay_seconds=5, cache_policy=NONE)
def stage_features_task(
    champion: ChampionModel, as_of: date | None, partitions: int, folder: Path
) -> StagedDay:
    """The day's feature rows as one parquet part per partition of users (reads the warehouse)."""
    from ml.churn.score import stage_features

    return stage_features(get_settings(), champion, as_of, partitions, folder)


# a Dask worker runs this: no warehouse, no settings, only the staged part and the model the
# flow loaded (so every partition is scored by the same version, even if @champion moves)
@task(name="score churn partition", retries=1, retry_delay_seconds=5, cache_policy=NONE)
def score_partition_task(champion: ChampionModel, features: Path, out: Path) -> int:
    """Score one staged part into a parquet file of predictions; its rows."""
    from ml.churn.score import score_part

    return score_part(champion, features, out)


@task(name="write churn scores", retries=1, retry_delay_seconds=5, cache_policy=NONE)
def write_scores_task(champion: ChampionModel, as_of: date, parts: list[Path]) -> ScoreReport:
    """Replace the day's predictions of this model version with the scored parts."""
    from ml.churn.score import store_predictions

    return store_predictions(get_settings(), champion, as_of, parts)


@flow(name="loopline-score-churn-on-dask")
def score_churn_on_dask(as_of: date | None, partitions: int) -> dict[str, object]:
    """Churn scores for every active user, its partitions scored as task runs on Dask.

    Runs with a `DaskTaskRunner` (`dask_task_runner`); the staging and the write run in
    this process, the partitions on the workers. The staged files are removed at the end.
    """
    from ml.churn.score import load_churn_model

    settings = get_settings()
    started = time.perf_counter()
    if _no_champion_yet():
        return dict(_NO_CHAMPION)
    champion = load_churn_model(settings)
    folder = settings.resolved_score_stage_dir / f"churn-{uuid.uuid4().hex[:12]}"
    try:
        staged = stage_features_task(champion, as_of, partitions, folder / "features")
        outputs = [folder / "predictions" / f"{part.name}.parquet" for part in staged.parts]
        futures = [
            score_partition_task.submit(champion, part, out)
            for part, out in zip(staged.parts, outputs, strict=True)
        ]
        with progress.track("scoring users", total=staged.rows, unit="users") as bar:
            for future in as_completed(futures):
                bar.advance(future.result())
        report = write_scores_task(champion, staged.as_of, outputs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _scored(report, started, f" in {len(outputs)} partitions on Dask")


def dask_task_runner(partitions: int, address: str | None) -> TaskRunner[Any]:
    """The scheduler at `address`, or a temporary LocalCluster of one process per partition
    (at most one per core, one thread each: the model's own threads are the parallelism)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    workers = max(1, min(partitions, os.cpu_count() or 1))
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            # no dashboard (bokeh is not installed); the scheduler's status page takes
            # 127.0.0.1:8787, or a free port when that one is taken
            "dashboard_address": None,
        }
    )


@contextlib.contextmanager
def _an_api_the_workers_know() -> Iterator[None]:
    """Name this process's Prefect API in the settings prefect-dask sends to the workers.

    Without PREFECT_API_URL (`loopline score` with no `loopline up`), this process runs on a
    temporary Prefect server that only it knows of: each Dask worker process would start a
    temporary server of its own (about 20 s) and record its task runs there, out of sight.
    So the temporary server is started here, as `get_client` would start it (the same
    instance), and its URL set for the block. Workers on other hosts cannot reach it: with
    a remote scheduler, set PREFECT_API_URL to a server they can reach.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        temporary_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # one instance per process: the one get_client uses
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def score_churn_step(
    as_of: date | None, partitions: int = 1, dask_address: str | None = None
) -> dict[str, object]:
    """The churn step `batch_score` and `loopline score` both run: in this process, or
    partitioned on Dask when asked for more than one partition or given a scheduler
    (`dask_address`, else LOOPLINE_DASK_ADDRESS)."""
    address = dask_address or get_settings().dask_address
    if partitions > 1 or address:
        runner = dask_task_runner(partitions, address)
        with _an_api_the_workers_know():
            return score_churn_on_dask.with_options(task_runner=runner)(as_of, partitions)
    if FlowRunContext.get() is None:  # the command line: the step itself, no task run
        return score_churn_task.fn(as_of)
    return score_churn_task(as_of)


@task(name="recommend for every user", retries=1, retry_delay_seconds=5)
def recommend_task(as_of: date | None, k: int) -> dict[str, object]:
    """Top-k shows for every recent viewer, from their history in the feature store."""
    from ml.recommender.score import recommend_all

    started = time.perf_counter()
    report = recommend_all(get_settings(), as_of, k)
    if report is None:
        run_logger().warning("no recommender @champion yet; skipped")
        progress.phase("recommend", "no recommender @champion yet: skipped", ok=False)
        return {"rows": 0}
    progress.phase(
        "recommend",
        f"recommender v{report.model_version}: top {k} for {report.users:,} users",
        time.perf_counter() - started,
    )
    run_logger().info(
        "recommender v%s: %s rows -> %s", report.model_version, report.rows, report.table
    )
    return {"rows": report.rows, "version": report.model_version}


@flow(name="loopline-score", log_prints=True)
def batch_score(params: ScoreFlowParams | None = None) -> dict[str, object]:
    """Churn scores first (they fix the as-of day), then recommendations for the same day."""
    params = params or ScoreFlowParams()
    # each step holds the warehouse slot while it reads, scores and writes (flows/slots.py)
    with each_write_takes_the_slot():
        churn = score_churn_step(params.as_of, params.partitions, params.dask_address)
        as_of = churn["as_of"]  # the day churn was scored for (None: no churn champion yet)
        recs = recommend_task(as_of if isinstance(as_of, date) else params.as_of, params.k)
    return {"churn": churn, "recommendations": recs}
