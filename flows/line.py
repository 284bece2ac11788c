"""The line: extract and load every source, build with dbt, audit, publish, refresh online features.

Write-audit-publish (loopline/publish.py, docs/validation.md): dbt builds into the colour
that is not live, the Great Expectations suites judge it, and only then do the plain
schemas' views move to it; a critical failure stops the run before publication, so
training, scoring and the online store keep the last good data. Every step writes the
DuckDB warehouse, so they run in sequence; several triggers (schedule, on-demand events)
queue on the warehouse writer lock. Each step reports one phase line.

The tasks are the steps `loopline ingest` and `loopline build` run too (the command line
calls the task functions directly, outside Prefect), so both leave the same state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict

from prefect import flow, task
from pydantic import BaseModel, ConfigDict

from flows.logs import run_logger
from flows.slots import warehouse_slot
from loopline import progress
from loopline.progress import phase
from loopline.settings import get_settings

if TYPE_CHECKING:
    from loopline.ingest.run import IngestReport


class LineParams(BaseModel):
    """Parameters of a line run (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")

    catalogue_url: str | None = None  # default: LOOPLINE_CATALOGUE_URL
    full_refresh: bool = False


class Loaded(TypedDict):
    """What the ingest step loaded (plain values: Prefect shows them with the run)."""

    batch_id: str
    oltp_tables: dict[str, int]  # rows copied per changed table
    catalogue_pages: int
    files: dict[str, int]  # new files per source
    records: dict[str, int]  # records per source
    rejected: list[str]  # unreadable files, moved aside
    seconds: float


# no task-level retries: the catalogue client retries with backoff itself, and a source that
# stays down is reported after the others were loaded (SourceFailedError), not retried whole
@task(name="ingest")
def ingest_sources(
    catalogue_url: str | None, show_progress: bool = True, prepare_plain_build: bool = True
) -> Loaded:
    """Extract the API and load new files and OLTP tables into raw (a rerun is safe).

    `prepare_plain_build=False` when a colour build follows (loopline.ingest.run.ingest)."""
    from loopline.ingest.run import ingest

    report = ingest(
        get_settings(),
        catalogue_url=catalogue_url,
        progress=show_progress,
        prepare_plain_build=prepare_plain_build,
    )
    return loaded_from(report)


def loaded_from(report: IngestReport) -> Loaded:
    """The ingest step's result as plain values (also for a report with a failed source)."""
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


class Built(TypedDict):
    """What the build step did: node statuses and the colour it built (None: in place)."""

    colour: str | None
    statuses: dict[str, int]


@task(name="dbt build")
def dbt_build(full_refresh: bool, extra_args: tuple[str, ...] = ()) -> Built:
    """Run `dbt build` (seeds, snapshots, models, tests) into the colour that is not live.

    In a flow run every dbt node shows as a task run of its own while it runs, and a table
    artifact lists how each ended; a failure raises `DbtError` naming the failed nodes.

    `extra_args` (`loopline build --select ...`) make a developer's partial build: it runs
    in place in the plain schemas, unaudited, as a plain `dbt build` does (a partial colour
    cannot be published whole).

    The audited build leaves out dbt's unit tests, as dbt's docs advise for production: their
    inputs are fixed rows, so they say the same on every build of the same code. They run
    where the code changes: a plain `dbt build` or `dbt test`, a developer's partial build,
    and the test suite's session build (tests/conftest.py).
    """
    from flows.dbt_nodes import node_runs
    from loopline.dbt import run_dbt
    from loopline.publish import build_colour

    settings = get_settings()
    colour = None if extra_args else build_colour(settings)
    args = ["build", *(["--full-refresh"] if full_refresh else []), *extra_args]
    if colour is not None:
        args += ["--exclude-resource-type", "unit_test"]
    # in a flow run, each node is a task run of its own as it runs (flows/dbt_nodes.py)
    with node_runs() as callbacks:
        result = run_dbt(settings, args, colour=colour, callbacks=callbacks)
    statuses: dict[str, int] = {}
    for _, status in result.results:
        statuses[status] = statuses.get(status, 0) + 1
    run_logger().info("dbt build into %s: %s", colour or "the plain schemas", statuses)
    return Built(colour=colour, statuses=statuses)


@task(name="audit and publish")
def audit_and_publish_build(colour: str | None) -> dict[str, object]:
    """Validate the built colour with the GX suites; publish it, or stop the run.

    Raises `PublicationBlockedError` (naming the failed suites and the Data Docs) when a
    critical expectation fails: the views keep the last good colour.
    """
    from loopline.publish import audit_and_publish

    if colour is None:
        return {"published": None}
    started = time.perf_counter()
    publication, report = audit_and_publish(get_settings(), colour)
    warned = sum(1 for s in report.suites if not s.success)
    phase(
        "publish",
        f"{colour} is live: {publication.relations} relations "
        f"({len(report.suites)} suites passed their critical checks, {warned} with warnings)",
        time.perf_counter() - started,
    )
    run_logger().info("published %s after validation run %s", colour, report.run_id)
    return {
        "published": colour,
        "previous": publication.previous_colour,
        "relations": publication.relations,
        "validation_run_id": report.run_id,
        "suites_with_warnings": warned,
    }


@task(name="count rejects")
def count_rejects(batch_id: str, colour: str | None = None) -> dict[str, int]:
    """Records quarantined and files rejected in this ingest batch (counted after the build),
    reported under the build's phase line: expected rejects are news, not errors."""
    from rich.markup import escape

    from loopline.ingest.run import rejects

    found = rejects(get_settings(), batch_id, colour)
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
    run_logger().info(
        "online store: %s",
        ", ".join(f"{name} {r.written} written, {r.skipped} already newer ({r.days.describe()})"
                  for name, r in reports.items()),
    )  # fmt: skip
    read = " / ".join(sorted({r.days.describe() for r in reports.values()}))
    phase(
        "online",
        f"{churn.written:,} churn vectors, {histories.written:,} histories; read {read}",
        time.perf_counter() - started,
    )
    return {
        "written": churn.written,
        "skipped": churn.skipped,
        "histories": histories.written,
    }


@flow(name="loopline-line", log_prints=True)
def line(params: LineParams | None = None) -> dict[str, object]:
    """Ingest, build, audit and publish, then refresh the online features.

    Returns what each step reported; a critical validation failure raises before publication.
    """
    from loopline.ingest.run import SourceFailedError

    params = params or LineParams()
    failed: SourceFailedError | None = None
    # one writing run at a time: a second one waits here, visibly (flows/slots.py)
    with warehouse_slot():
        try:
            # the colour build below leaves the plain stand-ins a plain `dbt build` needs
            loaded = ingest_sources(params.catalogue_url, prepare_plain_build=False)
        except SourceFailedError as exc:  # the other sources were loaded: build them
            failed, loaded = exc, loaded_from(exc.report)
            run_logger().warning("%s; building what was loaded", exc)
        built = dbt_build(params.full_refresh)
        rejected = count_rejects(loaded["batch_id"], built["colour"])
        published = audit_and_publish_build(built["colour"])
        online = materialize_online_features()
    if failed is not None:
        raise failed  # the run fails, naming the source, after the rest went through
    return {
        "ingest": loaded,
        "dbt": built,
        "rejects": rejected,
        "published": published,
        "online": online,
    }
