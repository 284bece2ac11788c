"""The line: extract and load every source, build the warehouse with dbt, refresh online features.

Both steps write the DuckDB warehouse, so they run in sequence in one flow; several
triggers (schedule, on-demand events) queue on the warehouse writer lock. Each step
reports one phase line (ingest and dbt report theirs themselves, bars included).
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict

from loopline import progress
from loopline.progress import phase
from loopline.settings import get_settings


class LineParams(BaseModel):
    """Parameters of a line run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    catalogue_url: str | None = None
    full_refresh: bool = False


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_sources(catalogue_url: str | None) -> dict[str, object]:
    """Extract the API and load new files and OLTP tables into raw (a rerun is safe)."""
    from loopline.ingest.run import ingest

    report = ingest(get_settings(), catalogue_url=catalogue_url)
    get_run_logger().info(
        "ingest %s: files %s, records %s, rejected %s, OLTP tables copied %s",
        report.batch_id, report.files.files, report.files.records, report.files.rejected,
        report.oltp_tables,
    )  # fmt: skip
    return {
        "batch_id": report.batch_id,
        "records": report.files.records,
        "rejected": report.files.rejected,
    }


@task(name="dbt build")
def dbt_build(full_refresh: bool) -> dict[str, int]:
    """Run `dbt build` (seeds, snapshots, models, tests) on the warehouse."""
    from loopline.dbt import run_dbt

    args = ["build", *(["--full-refresh"] if full_refresh else [])]
    result = run_dbt(get_settings(), args)
    statuses: dict[str, int] = {}
    for _, status in result.results:
        statuses[status] = statuses.get(status, 0) + 1
    get_run_logger().info("dbt build: %s", statuses)
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
    """Push every online feature set's latest vector per user and version to the online store."""
    from ml.features.definitions import CHURN, USER_HISTORY
    from ml.features.materialize import refresh_online_store

    started = time.perf_counter()
    reports = refresh_online_store(get_settings())
    churn, histories = reports[CHURN.name], reports[USER_HISTORY.name]
    get_run_logger().info(
        "online store: %s",
        ", ".join(f"{name} {r.written} written, {r.skipped} already newer"
                  for name, r in reports.items()),
    )  # fmt: skip
    phase(
        "online",
        f"{churn.written:,} churn vectors, {histories.written:,} viewing histories",
        time.perf_counter() - started,
    )
    return {
        "written": churn.written,
        "skipped": churn.skipped,
        "histories": histories.written,
    }


@flow(name="loopline-line", log_prints=True)
def line(params: LineParams | None = None) -> dict[str, object]:
    """Ingest, build, then refresh the online features; return what each step reported."""
    params = params or LineParams()
    loaded = ingest_sources(params.catalogue_url)
    built = dbt_build(params.full_refresh)
    batch_id = loaded["batch_id"]
    assert isinstance(batch_id, str)
    rejected = count_rejects(batch_id)
    online = materialize_online_features()
    return {"ingest": loaded, "dbt": built, "rejects": rejected, "online": online}
