"""`loopline ingest`: extract every source and load it into the raw layer, once."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.progress import Progress

from loopline.duck import connect, warehouse_writer
from loopline.ingest.files import LoadReport, load_files
from loopline.ingest.oltp import load_oltp
from loopline.settings import Settings

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """An ingest that cannot go ahead, with the reason and the fix."""


@dataclass
class IngestReport:
    """What one ingest did."""

    batch_id: str
    oltp_tables: dict[str, int] = field(default_factory=dict)
    catalogue_pages: int = 0
    files: LoadReport = field(default_factory=LoadReport)
    seconds: float = 0.0


def new_batch_id() -> str:
    """A sortable, unique id for one ingest run."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def ingest(
    settings: Settings, catalogue_url: str | None = None, progress: bool = True
) -> IngestReport:
    """Extract the catalogue API, then load the OLTP tables and every new landed file.

    Without `catalogue_url` the simulated vendor API is started in-process on a free port
    over the simulator's catalogue (with its rate limit and injected failures).
    """
    from loopline.ingest.catalogue import extract_catalogue
    from loopline.simulate.run import catalogue_dir

    started = time.perf_counter()
    if (
        not (settings.sources_dir / "catalogue" / "shows.parquet").exists()
        and catalogue_url is None
    ):
        raise IngestError(
            f"no source data under {settings.sources_dir}: run `loopline simulate` first"
        )
    report = IngestReport(batch_id=new_batch_id())

    # 1. extract: the API's raw pages land as immutable files (no warehouse lock needed)
    if catalogue_url is None:
        from loopline.sources.catalogue_api import CatalogueServer

        with CatalogueServer(catalogue_dir(settings)) as server:
            extracted = extract_catalogue(settings, server.url)
    else:
        extracted = extract_catalogue(settings, catalogue_url)
    report.catalogue_pages = extracted.pages

    # 2. load: the single warehouse writer
    with warehouse_writer(settings) as path:
        con = connect(path, settings)
        try:
            report.oltp_tables = load_oltp(con, settings.resolved_source_db_url, report.batch_id)
            with Progress(disable=not progress) as bar:
                task = bar.add_task("load files", total=None)

                def advance(source: str, done: int, total: int) -> None:
                    bar.update(task, description=f"load {source}", completed=done, total=total)

                report.files = load_files(
                    con, settings.landing_dir, report.batch_id, on_file=advance
                )
            con.execute("checkpoint")
        finally:
            con.close()
    # plain `dbt build` from the repo root must pass on a fresh warehouse: its unit tests
    # of incremental models need those relations to exist (created empty the first time)
    from loopline.dbt import ensure_incremental_relations

    ensure_incremental_relations(settings)
    report.seconds = time.perf_counter() - started
    return report
