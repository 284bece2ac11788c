"""`loopline ingest`: extract every source and load it into the raw layer, once."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from loopline.ingest.files import REJECTED_DIR, LoadReport, load_files
from loopline.ingest.oltp import load_oltp
from loopline.paths import shown
from loopline.progress import phase
from loopline.settings import Settings
from loopline.warehouse import connect, source_kind, warehouse_writer, writing

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """An ingest that cannot go ahead, with the reason and the fix."""


class SourceFailedError(IngestError):
    """A source could not be extracted; every other source was loaded (`report`)."""

    def __init__(self, report: IngestReport) -> None:
        failed = "; ".join(f"{source}: {why}" for source, why in report.failed.items())
        super().__init__(
            f"{failed} (the other sources were loaded in batch {report.batch_id}; "
            "rerun `loopline ingest` once the source is back)"
        )
        self.report = report


@dataclass
class IngestReport:
    """What one ingest did."""

    batch_id: str
    oltp_tables: dict[str, int] = field(default_factory=dict)
    catalogue_pages: int = 0
    files: LoadReport = field(default_factory=LoadReport)
    failed: dict[str, str] = field(default_factory=dict)  # source -> why it was not loaded
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: landed files and records loaded, API pages, OLTP tables copied."""
        landed = [source for source in self.files.files if source != "catalogue"]
        files = sum(self.files.files[source] for source in landed)
        records = sum(self.files.records[source] for source in landed)
        # rejected files are reported by `rejects` (after the build) and by the CLI
        notes = [
            f"{len(self.files.changed)} changed after load (rejected)"
            if self.files.changed
            else "",
            f"{sum(self.files.oversized.values()):,} oversized records quarantined"
            if self.files.oversized
            else "",
            *(f"{source} FAILED" for source in self.failed),
        ]
        notes = [note for note in notes if note]
        if not (files or self.files.rejected or self.catalogue_pages or self.oltp_tables):
            return "; ".join(["nothing new: no files, API pages or changed OLTP tables", *notes])
        return "; ".join(
            [
                f"{files:,} files, {records:,} records",
                f"{self.catalogue_pages} API pages, {len(self.oltp_tables)} OLTP tables",
                *notes,
            ]
        )


@dataclass(frozen=True)
class Rejects:
    """What the line set aside in one ingest batch, counted in the warehouse after the build."""

    quarantined_records: int
    rejected_files: int
    rejected_dir: Path

    def summary(self) -> str:
        """`quarantined N records, rejected M files (see <folder of rejected files>)`."""
        files = "file" if self.rejected_files == 1 else "files"
        return (
            f"quarantined {self.quarantined_records:,} records, rejected "
            f"{self.rejected_files} {files} (see {shown(self.rejected_dir)})"
        )


def rejects(settings: Settings, batch_id: str, colour: str | None = None) -> Rejects:
    """Quarantined records and rejected files of `batch_id` (from `fct_load_accounting`).

    `colour`: read the accounting of a build not published yet (`monitoring__<colour>`).
    """
    schema = f"monitoring__{colour}" if colour else "monitoring"
    with writing(settings) as con:
        row = con.execute(
            "select coalesce(sum(quarantined_records), 0), coalesce(sum(rejected_files), 0) "
            f"from {schema}.fct_load_accounting where _batch_id = ?",
            [batch_id],
        ).fetchone()
    quarantined, files = row or (0, 0)
    return Rejects(int(quarantined), int(files), settings.landing_dir / REJECTED_DIR)


def _check_source_db(settings: Settings) -> None:
    """Refuse at once, with the fix, when the source database is absent."""
    db_url = settings.resolved_source_db_url
    if source_kind(db_url) == "sqlite" and not Path(db_url.removeprefix("sqlite:///")).exists():
        raise IngestError(
            f"no source database at {db_url}: set LOOPLINE_SOURCE_DB_URL, "
            "or simulate the demo's company first (the `simulate` command)"
        )


def _check_catalogue(catalogue_url: str) -> None:
    """Raise `ExtractError` at once, with the fix, when nothing answers at `catalogue_url`."""
    from loopline.ingest.catalogue import ExtractError

    parts = urlsplit(catalogue_url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=5).close()
    except (OSError, ValueError):
        raise ExtractError(
            f"no catalogue API answers at {catalogue_url}: point LOOPLINE_CATALOGUE_URL "
            "(or --catalogue-url) at it; the demo's simulated vendor runs with "
            "`loopline catalogue-api` or `loopline up catalogue`"
        ) from None


def _extract(settings: Settings, url: str) -> int:
    """Catalogue pages landed; raises `ExtractError` (one line, no traceback) on any failure."""
    import httpx

    from loopline.ingest.catalogue import ExtractError, extract_catalogue

    _check_catalogue(url)
    try:
        return extract_catalogue(settings, url, max_attempts=settings.catalogue_max_attempts).pages
    except (httpx.HTTPError, OSError, ValueError) as exc:  # ExtractError passes through
        raise ExtractError(f"catalogue extraction from {url} failed: {exc}") from exc


def new_batch_id() -> str:
    """A sortable, unique id for one ingest run."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def ingest(
    settings: Settings,
    catalogue_url: str | None = None,
    progress: bool = True,
    prepare_plain_build: bool = True,
) -> IngestReport:
    """Extract the catalogue API, then load the OLTP tables and every new landed file.

    The API is `catalogue_url`, else `settings.resolved_catalogue_url`
    (``LOOPLINE_CATALOGUE_URL``). When the API cannot be extracted, everything else is still
    loaded, then `SourceFailedError` (carrying the report) says which source failed. Reports
    one phase line; `progress=False` hides the bar over the files.

    `prepare_plain_build` creates any missing incremental model empty (a dbt parse and an
    empty build), so a plain `dbt build` passes next; a caller that builds a colour straight
    after (the line flow) passes False: that build leaves the same stand-ins, for nothing.
    """
    from loopline.ingest.catalogue import ExtractError

    started = time.perf_counter()
    url = catalogue_url or settings.resolved_catalogue_url
    _check_source_db(settings)
    report = IngestReport(batch_id=new_batch_id())

    # 1. extract: the API's raw pages land as immutable files (no warehouse lock needed). An
    # outage of the vendor does not hold back the other sources: they load, then it is reported
    try:
        report.catalogue_pages = _extract(settings, url)
    except ExtractError as exc:
        report.failed["catalogue"] = str(exc)

    # 2. load: the single warehouse writer (pages landed before an outage load too)
    with warehouse_writer(settings) as path:
        con = connect(path, settings)
        try:
            report.oltp_tables = load_oltp(con, settings.resolved_source_db_url, report.batch_id)
            report.files = load_files(
                con,
                settings.landing_dir,
                report.batch_id,
                show_progress=progress,
                max_record_bytes=settings.max_record_bytes,
            )
            con.execute("checkpoint")
        finally:
            con.close()
    # plain `dbt build` from the repo root must pass on a fresh warehouse: its unit tests
    # of incremental models need those relations to exist (created empty the first time)
    if prepare_plain_build:
        from loopline.dbt import ensure_incremental_relations

        ensure_incremental_relations(settings)
    report.seconds = time.perf_counter() - started
    phase("ingest", report.summary(), report.seconds)
    if report.failed:
        raise SourceFailedError(report)
    return report
