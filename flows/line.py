"""The line: extract and load every source, build the warehouse with dbt, refresh online features.

Both steps write the DuckDB warehouse, so they run in sequence in one flow; several
triggers (schedule, on-demand events) queue on the warehouse writer lock. Each step
reports one phase line (ingest and dbt report theirs themselves, bars included).

The tasks are the steps `loopline ingest` and `loopline build` run too (the command line
calls the task functions directly, outside Prefect), so both leave the same state.
"""

from __future__ import annotations

import logging
import time
from typing import TypedDict

from prefect import flow, get_run_logger, task
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict

from loopline import progress
from loopline.progress import phase
from loopline.settings import get_settings


class LineParams(BaseModel):
    """Parameters of a line run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    catalogue_url: str | None = None  # default: LOOPLINE_CATALOGUE_URL
    full_refresh: bool = False


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger in a flow or task run; loopline's own when the CLI calls a step."""
    try:
        return get_run_logger()
    except MissingContextError:
        return progress.logger


class Loaded(TypedDict):
    """What the ingest step loaded (plain values: Prefect shows them with the run)."""

    batch_id: str
    oltp_tables: dict[str, int]  # rows copied per changed table
    catalogue_pages: int
    files: dict[str, int]  # new files per source
    records: dict[str, int]  # records per source
    rejected: list[str]  # unreadable files, moved aside
    seconds: float


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_sources(catalogue_url: str | None, show_progress: bool = True) -> Loaded:
    """Extract the API and load new files and OLTP tables into raw (a rerun is safe)."""
    from loopline.ingest.run import ingest

    report = ingest(get_settings(), catalogue_url=catalogue_url, progress=show_progress)
    run_logger().info(
        "ingest %s: files %s, records %s, rejected %s, OLTP tables copied %s",
        report.batch_id, report.files.files, report.files.records, report.files.rejected,
        report.oltp_tables,
    )  # fmt: skip
    return Loaded(
        batch_id=report.batch_id,
        oltp_tables=report.oltp_tables,
        catalogue_pages=report.catalogue_pages,
        files=report.files.files,
        records=report.files.records,
        rejected=report.files.rejected,
        seconds=report.seconds,
    )


@task(name="dbt build")
def dbt_build(full_refresh: bool, extra_args: tuple[str, ...] = ()) -> dict[str, int]:
    """Run `dbt build` (seeds, snapshots, models, tests) on the warehouse; count node statuses.

    `extra_args` go to dbt as given (`loopline build --select ...`).
    """
    from loopline.dbt import run_dbt

    args = ["build", *(["--full-refresh"] if full_refresh else []), *extra_args]
    result = run_dbt(get_settings(), args)
    statuses: dict[str, int] = {}
    for _, status in result.results:
        statuses[status] = statuses.get(status, 0) + 1
    run_logger().info("dbt build: %s", statuses)
    return statuses


@task(name="count rejects")
def count_rejects(batch_id: str) -> dict[str, int]:
    """Records quarantined and files rejected in this ingest batch (counted after the build),
    reported under the build's phase line: expected rejects are news, not errors."""
    from rich.markup import escape

    from loopline.ingest.run import rejects

    found = rejects(get_settings(), batch_id)
    progress.logger.info(found.summary())
    progress.say(f"  {escape(found.summary())}")
    return {"quarantined": found.quarantined_records, "rejected_files": found.rejected_files}


@task(name="materialize online features", retries=2, retry_delay_seconds=5)
def materialize_online_features() -> dict[str, int]:
    """Push the latest churn feature vector and viewing history per user to the online store."""
    from loopline.warehouse import reading
    from ml.features import materialize_online
    from ml.online_store import open_online_store
    from ml.recs import materialize_histories

    settings = get_settings()
    started = time.perf_counter()
    store = open_online_store(settings)
    try:
        with reading(settings) as con:
            report = materialize_online(con, store)
            histories = materialize_histories(settings, con)
    finally:
        store.close()
    run_logger().info(
        "online store: churn features %s written, %s already newer; %s viewing histories",
        report.written, report.skipped, histories,
    )  # fmt: skip
    phase(
        "online",
        f"{report.written:,} churn vectors, {histories:,} viewing histories",
        time.perf_counter() - started,
    )
    return {"written": report.written, "skipped": report.skipped, "histories": histories}


@flow(name="loopline-line", log_prints=True)
def line(params: LineParams | None = None) -> dict[str, object]:
    """Ingest, build, then refresh the online features; return what each step reported."""
    params = params or LineParams()
    loaded = ingest_sources(params.catalogue_url)
    built = dbt_build(params.full_refresh)
    rejected = count_rejects(loaded["batch_id"])
    online = materialize_online_features()
    return {"ingest": loaded, "dbt": built, "rejects": rejected, "online": online}
