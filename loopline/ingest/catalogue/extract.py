"""Extract the vendor catalogue API into immutable raw pages, incrementally and resumably.

Every page the API answers is written as one JSON document::

    <landing>/catalogue/<entity>/batch=<batch_id>/page_00001.json

    {"entity": "shows", "batch_id": "20260124T063000Z-1a2b3c4d", "page": 1,
     "extracted_at": "2026-01-24T06:30:00.123456Z",
     "request": {"url": "http://host/v1/shows", "params": {"page_size": 200}},
     "status": 200, "body": {"data": [...], "next_page_token": ..., "has_more": ...,
                             "server_time": ...}}

written durably (``durable.write_atomic``), so a reader never sees half a page. ``body`` is the
response JSON as received. Only 200 responses become files.

A restarted extraction resumes the batch the cursor (``cursor``) says was running, with the
same id, the next page number and the saved page token, so a crash leaves no gap and no
duplicate page (a page written just before a crash, whose state was not saved yet, is fetched
again and rewritten under the same name). A batch whose first page is empty writes nothing, so
running the extraction again with no new data changes nothing on disk but the state file. When
a request fails for good (``client``), the cursor stays saved, so rerunning resumes where it
stopped.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loopline.ingest.catalogue.client import DEFAULT_TIMEOUT, Fetcher
from loopline.ingest.catalogue.cursor import (
    IN_PROGRESS_FIELDS,
    empty_cursor,
    exclusive,
    iso_z,
    later,
    load_cursor,
    save_cursor,
    state_path,
)
from loopline.ingest.catalogue.durable import write_atomic
from loopline.ingest.catalogue.reports import EntityReport, ExtractReport, PageProgress
from loopline.settings import Settings

log = logging.getLogger(__name__)

ENTITIES: tuple[str, ...] = ("shows", "episodes")


def catalogue_landing_dir(settings: Settings) -> Path:
    """Root of the raw catalogue pages."""
    return settings.landing_dir / "catalogue"


def batch_dir(settings: Settings, entity: str, batch_id: str) -> Path:
    """Folder of one batch's page files."""
    return catalogue_landing_dir(settings) / entity / f"batch={batch_id}"


def page_name(page: int) -> str:
    """``page_00001.json``."""
    return f"page_{page:05d}.json"


def batch_id_for(now: datetime) -> str:
    """A sortable batch id: UTC start time plus 8 random hex digits."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def extract_catalogue(
    settings: Settings,
    base_url: str,
    entities: Sequence[str] = ENTITIES,
    page_size: int = 200,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 8,
    progress: Callable[[PageProgress], None] | None = None,
    *,
    max_rate_limit_wait: float = 600.0,
) -> ExtractReport:
    """Extract new and changed catalogue items since the saved cursor into raw landing pages."""
    unknown = [e for e in entities if e not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown catalogue entities {unknown}; choose from {list(ENTITIES)}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 (got {max_attempts})")
    report = ExtractReport()
    own_client = client is None
    http = client if client is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)
    try:
        with exclusive(settings):
            state = load_cursor(settings)
            new_batch_id = batch_id_for(datetime.now(UTC))
            for entity in entities:
                report.entities[entity] = _extract_entity(
                    settings,
                    base_url.rstrip("/"),
                    entity,
                    state,
                    new_batch_id,
                    page_size,
                    http,
                    sleep,
                    max_attempts,
                    max_rate_limit_wait,
                    progress,
                )
    finally:
        if own_client:
            http.close()
    return report


def _extract_entity(
    settings: Settings,
    base_url: str,
    entity: str,
    state: dict[str, dict[str, Any]],
    new_batch_id: str,
    page_size: int,
    client: httpx.Client,
    sleep: Callable[[float], None],
    max_attempts: int,
    max_rate_limit_wait: float,
    progress: Callable[[PageProgress], None] | None,
) -> EntityReport:
    """Run (or resume) one entity's batch to its last page, saving the cursor after each page."""
    cursor = state.setdefault(entity, empty_cursor())
    url = f"{base_url}/v1/{entity}"
    resumed = cursor.get("batch_id") is not None
    if resumed:
        batch_id = str(cursor["batch_id"])
        page = int(cursor.get("next_page") or 1)
        log.info("%s: resuming batch %s at page %d", entity, batch_id, page)
    else:
        # Record the batch before the first request, so a crash right after writing page 1
        # resumes this batch instead of starting another with the same items.
        batch_id = new_batch_id
        page = 1
        cursor.update(
            batch_id=batch_id,
            updated_since=cursor.get("high_water"),
            next_page=1,
            page_token=None,
            batch_max_updated_at=None,
        )
        save_cursor(settings, state)
        log.info("%s: batch %s, updated_since=%s", entity, batch_id, cursor["updated_since"])
    folder = batch_dir(settings, entity, batch_id)
    _remove_stale_temps(folder)
    report = EntityReport(
        entity=entity,
        batch_id=batch_id if page > 1 else None,
        resumed=resumed,
        last_page=page - 1,
        high_water=cursor.get("high_water"),
    )

    def resume_hint() -> str:
        """Where the cursor stands, for error messages."""
        return (
            f"The cursor in {state_path(settings)} is saved at page {cursor.get('next_page')} "
            f"of {entity} batch {batch_id}; rerun to resume."
        )

    fetcher = Fetcher(
        client, sleep, max_attempts, max_rate_limit_wait, resume_hint, report,
        max_bytes=settings.catalogue_max_page_bytes,
    )  # fmt: skip
    while True:
        token = cursor.get("page_token")
        params: dict[str, Any] = {"page_size": page_size}
        if token:
            params["page_token"] = token  # the token carries the batch's updated_since
        elif cursor.get("updated_since"):
            params["updated_since"] = cursor["updated_since"]
        body = fetcher.get(url, params)
        extracted_at = iso_z(datetime.now(UTC))
        items: list[Any] = body["data"]
        next_token: str | None = body["next_page_token"]
        if page == 1 and not items and next_token is None:
            log.info("%s: nothing updated since %s; wrote nothing", entity, cursor["high_water"])
        else:
            document = {
                "entity": entity,
                "batch_id": batch_id,
                "page": page,
                "extracted_at": extracted_at,
                "request": {"url": url, "params": params},
                "status": 200,
                "body": body,
            }
            payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"
            write_atomic(folder / page_name(page), payload.encode("utf-8"))
            report.pages += 1
            report.items += len(items)
            report.last_page = page
            report.batch_id = batch_id
            batch_max = cursor.get("batch_max_updated_at")
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("updated_at"), str):
                    batch_max = later(batch_max, item["updated_at"])
            cursor["batch_max_updated_at"] = batch_max
            log.debug("%s: page %d, %d items", entity, page, len(items))
        if next_token is None:
            cursor["high_water"] = later(cursor.get("high_water"), cursor["batch_max_updated_at"])
            if report.last_page:
                cursor["last_batch_id"] = batch_id
            cursor.update(dict.fromkeys(IN_PROGRESS_FIELDS))
            save_cursor(settings, state)
            report.completed = True
            report.high_water = cursor["high_water"]
            if progress is not None and report.last_page == page:
                progress(PageProgress(entity, batch_id, page, len(items), report.items, False))
            log.info(
                "%s: batch %s complete: %d pages, %d items this run; high_water=%s",
                entity,
                batch_id,
                report.pages,
                report.items,
                report.high_water,
            )
            return report
        page += 1
        cursor.update(next_page=page, page_token=next_token)
        save_cursor(settings, state)
        if progress is not None:
            progress(PageProgress(entity, batch_id, page - 1, len(items), report.items, True))


def _remove_stale_temps(folder: Path) -> None:
    """Delete temp files a crashed run left in a batch folder (never finished pages)."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".page_*.tmp"):
        tmp.unlink(missing_ok=True)
