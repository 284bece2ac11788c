"""Extract the vendor catalogue API into immutable raw pages, incrementally and resumably.

Every page the API answers is written as one JSON document::

    <landing>/catalogue/<entity>/batch=<batch_id>/page_00001.json

    {"entity": "shows", "batch_id": "20260124T063000Z-1a2b3c4d", "page": 1,
     "extracted_at": "2026-01-24T06:30:00.123456Z",
     "request": {"url": "http://host/v1/shows", "params": {"page_size": 200}},
     "status": 200, "body": {"data": [...], "next_page_token": ..., "has_more": ...,
                             "server_time": ...}}

written to a temporary file, fsynced and renamed into place, so a reader never sees half a
page. ``body`` is the response JSON as received. Only 200 responses become files.

The cursor lives in ``<state_dir>/catalogue_cursor.json`` (replaced atomically after every
page)::

    {"shows": {"high_water": "2026-03-30T20:31:34.000000Z", "last_batch_id": "...",
               "batch_id": null, "updated_since": null, "next_page": null,
               "page_token": null, "batch_max_updated_at": null}, "episodes": {...}}

``high_water`` is the largest ``updated_at`` of the last *completed* batch; the next batch asks
for ``updated_since=high_water`` (the API filter is strictly greater). While a batch runs, the
other fields say where it stands; a restarted extraction resumes that batch with the same id,
the next page number and the saved page token, so a crash leaves no gap and no duplicate page
(a page written just before a crash, whose state was not saved yet, is fetched again and
rewritten under the same name). A batch whose first page is empty writes nothing, so running
the extraction again with no new data changes nothing on disk but the state file.

Retries: 429 waits ``Retry-After`` seconds (these waits do not use up ``max_attempts``);
500/502/503/504, timeouts and connection errors back off exponentially (0.5 s doubling, capped
at 30 s, with jitter, at least ``Retry-After``) for at most ``max_attempts`` tries per request.
Any other 4xx stops at once. Either way the error is an :class:`ExtractError` and the cursor
stays saved, so rerunning resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from loopline.settings import Settings

__all__ = [
    "ENTITIES",
    "STATE_FILENAME",
    "EntityReport",
    "ExtractError",
    "ExtractReport",
    "PageProgress",
    "batch_dir",
    "catalogue_landing_dir",
    "extract_catalogue",
    "load_cursor",
    "state_path",
]

log = logging.getLogger(__name__)

ENTITIES: tuple[str, ...] = ("shows", "episodes")
STATE_FILENAME = "catalogue_cursor.json"
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 30.0
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

_IN_PROGRESS_FIELDS = (
    "batch_id",
    "updated_since",
    "next_page",
    "page_token",
    "batch_max_updated_at",
)


class ExtractError(RuntimeError):
    """The extraction stopped; the message names the URL, the status and how to resume."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        """Keep the URL and last HTTP status (None for a transport error) next to the message."""
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass
class EntityReport:
    """What one extraction did for one entity."""

    entity: str
    batch_id: str | None  # None when no page was written for the batch at all
    resumed: bool
    pages: int = 0  # page files written by this call
    items: int = 0  # items in those pages
    last_page: int = 0  # number of the batch's last page file so far
    completed: bool = False
    high_water: str | None = None
    retries_429: int = 0
    retries_5xx: int = 0
    retries_transport: int = 0

    @property
    def retries(self) -> int:
        """Every retried request, whatever the cause."""
        return self.retries_429 + self.retries_5xx + self.retries_transport


@dataclass
class ExtractReport:
    """What :func:`extract_catalogue` did, per entity."""

    entities: dict[str, EntityReport] = field(default_factory=dict)

    def __getitem__(self, entity: str) -> EntityReport:
        """The report for one entity."""
        return self.entities[entity]

    @property
    def pages(self) -> int:
        """Page files written, all entities."""
        return sum(r.pages for r in self.entities.values())

    @property
    def items(self) -> int:
        """Items written, all entities."""
        return sum(r.items for r in self.entities.values())

    @property
    def resumed(self) -> bool:
        """Whether any entity resumed an interrupted batch."""
        return any(r.resumed for r in self.entities.values())

    @property
    def retries_429(self) -> int:
        """Rate-limited requests retried, all entities."""
        return sum(r.retries_429 for r in self.entities.values())

    @property
    def retries_5xx(self) -> int:
        """Server errors (500/502/503/504) retried, all entities."""
        return sum(r.retries_5xx for r in self.entities.values())

    @property
    def retries_transport(self) -> int:
        """Timeouts, connection errors and unreadable 200s retried, all entities."""
        return sum(r.retries_transport for r in self.entities.values())


@dataclass(frozen=True)
class PageProgress:
    """Passed to the ``progress`` callback after each page file is written."""

    entity: str
    batch_id: str
    page: int
    items: int  # in this page
    total_items: int  # written by this call for the entity so far
    has_more: bool


# -- paths and timestamps -----------------------------------------------------------------------


def state_path(settings: Settings) -> Path:
    """The cursor file."""
    return settings.state_dir / STATE_FILENAME


def catalogue_landing_dir(settings: Settings) -> Path:
    """Root of the raw catalogue pages."""
    return settings.landing_dir / "catalogue"


def batch_dir(settings: Settings, entity: str, batch_id: str) -> Path:
    """Folder of one batch's page files."""
    return catalogue_landing_dir(settings) / entity / f"batch={batch_id}"


def _page_name(page: int) -> str:
    """``page_00001.json``."""
    return f"page_{page:05d}.json"


def _iso_z(value: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` allowed; naive is UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two ISO timestamps (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if _parse_ts(b) > _parse_ts(a) else a


def _new_batch_id(now: datetime) -> str:
    """A sortable batch id: UTC start time plus 8 random hex digits."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


# -- durable files ------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a hidden temp file, fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _empty_cursor() -> dict[str, Any]:
    """An entity's cursor before anything was extracted."""
    return {"high_water": None, "last_batch_id": None, **dict.fromkeys(_IN_PROGRESS_FIELDS)}


def load_cursor(settings: Settings) -> dict[str, dict[str, Any]]:
    """The saved cursor per entity (empty cursors when there is no state file yet)."""
    path = state_path(settings)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as exc:
        raise ExtractError(f"cannot read the catalogue cursor {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExtractError(f"the catalogue cursor {path} is not a JSON object")
    state: dict[str, dict[str, Any]] = {}
    for entity, saved in raw.items():
        if not isinstance(saved, dict):
            raise ExtractError(f"the catalogue cursor {path} has a malformed entry {entity!r}")
        state[entity] = {**_empty_cursor(), **saved}
    return state


def _save_cursor(settings: Settings, state: dict[str, dict[str, Any]]) -> None:
    """Replace the state file atomically."""
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    _write_atomic(state_path(settings), text.encode("utf-8"))


@contextlib.contextmanager
def _exclusive(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock so two extractions never share one cursor."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.state_dir / "catalogue_cursor.lock"
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExtractError(
                f"another catalogue extraction holds {lock_path}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- HTTP with retries --------------------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_message(response: httpx.Response) -> str:
    """The server's error code and message, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict) and "message" in body:
        code = body.get("error")
        return f"{code}: {body['message']}" if code else str(body["message"])
    return json.dumps(body)[:300]


class _Fetcher:
    """GETs one page, retrying what is worth retrying and counting every retry."""

    def __init__(
        self,
        client: httpx.Client,
        sleep: Callable[[float], None],
        max_attempts: int,
        max_rate_limit_wait: float,
        resume_hint: Callable[[], str],
        report: EntityReport,
    ) -> None:
        """Remember the client, the (injectable) sleep, the limits and where to count retries."""
        self.client = client
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.max_rate_limit_wait = max_rate_limit_wait
        self.resume_hint = resume_hint
        self.rng = random.Random()
        self.report = report

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter for the n-th failure, at least ``Retry-After``."""
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * BACKOFF_FACTOR ** (failures - 1))
        delay = ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
        return max(delay, retry_after) if retry_after is not None else delay

    def _give_up(self, url: str, status: int | None, last: str, failures: int) -> ExtractError:
        """The error for a request that failed ``max_attempts`` times."""
        what = f"HTTP {status} {last}" if status is not None else last
        return ExtractError(
            f"GET {url} failed {failures} times (last: {what}); gave up after "
            f"max_attempts={self.max_attempts}. {self.resume_hint()}",
            url=url,
            status=status,
        )

    def get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of a 200 answer to ``GET url?params``, after any retries."""
        report = self.report
        failures = 0
        rate_limited = 0
        waited_429 = 0.0
        while True:
            try:
                response = self.client.get(url, params=params)
            except httpx.TransportError as exc:
                failures += 1
                last = f"{type(exc).__name__}: {exc}"
                if failures >= self.max_attempts:
                    raise self._give_up(url, None, last, failures) from exc
                report.retries_transport += 1
                delay = self._backoff(failures, None)
                log.warning("GET %s: %s; retry %d in %.1fs", url, last, failures, delay)
                self.sleep(delay)
                continue
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError as exc:  # a truncated or garbled 200: try again
                    failures += 1
                    last = f"HTTP 200 with a body that is not JSON ({exc})"
                    if failures >= self.max_attempts:
                        raise self._give_up(url, None, last, failures) from exc
                    report.retries_transport += 1
                    self.sleep(self._backoff(failures, None))
                    continue
                _check_body(body, url)
                return body
            if status == 429:
                rate_limited += 1
                wait = _retry_after(response)
                if wait is None:
                    wait = self._backoff(rate_limited, None)
                if waited_429 + wait > self.max_rate_limit_wait:
                    raise ExtractError(
                        f"GET {url} still rate-limited (HTTP 429) after waiting "
                        f"{waited_429:.0f}s in total; gave up. {self.resume_hint()}",
                        url=url,
                        status=429,
                    )
                waited_429 += wait
                report.retries_429 += 1
                log.debug("GET %s: rate-limited, waiting %.1fs", url, wait)
                self.sleep(wait)
                continue
            message = _error_message(response)
            if status in RETRYABLE_STATUSES:
                failures += 1
                if failures >= self.max_attempts:
                    raise self._give_up(url, status, message, failures)
                report.retries_5xx += 1
                delay = self._backoff(failures, _retry_after(response))
                log.warning(
                    "GET %s: HTTP %d %s; retry %d in %.1fs", url, status, message, failures, delay
                )
                self.sleep(delay)
                continue
            raise ExtractError(
                f"GET {url} with {params} failed with HTTP {status} ({message}); not retried. "
                f"{self.resume_hint()}",
                url=url,
                status=status,
            )


def _check_body(body: Any, url: str) -> None:
    """Refuse a 200 body that is not a page of this API."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("data"), list)
        or "next_page_token" not in body
        or not (body["next_page_token"] is None or isinstance(body["next_page_token"], str))
    ):
        raise ExtractError(
            f"GET {url} answered 200 with a body that is not a catalogue page: "
            f"{json.dumps(body)[:200]}",
            url=url,
            status=200,
        )


# -- the extraction -----------------------------------------------------------------------------


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
        with _exclusive(settings):
            state = load_cursor(settings)
            new_batch_id = _new_batch_id(datetime.now(UTC))
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
    cursor = state.setdefault(entity, _empty_cursor())
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
        _save_cursor(settings, state)
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

    fetcher = _Fetcher(client, sleep, max_attempts, max_rate_limit_wait, resume_hint, report)
    while True:
        token = cursor.get("page_token")
        params: dict[str, Any] = {"page_size": page_size}
        if token:
            params["page_token"] = token  # the token carries the batch's updated_since
        elif cursor.get("updated_since"):
            params["updated_since"] = cursor["updated_since"]
        body = fetcher.get(url, params)
        extracted_at = _iso_z(datetime.now(UTC))
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
            _write_atomic(folder / _page_name(page), payload.encode("utf-8"))
            report.pages += 1
            report.items += len(items)
            report.last_page = page
            report.batch_id = batch_id
            batch_max = cursor.get("batch_max_updated_at")
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("updated_at"), str):
                    batch_max = _later(batch_max, item["updated_at"])
            cursor["batch_max_updated_at"] = batch_max
            log.debug("%s: page %d, %d items", entity, page, len(items))
        if next_token is None:
            cursor["high_water"] = _later(cursor.get("high_water"), cursor["batch_max_updated_at"])
            if report.last_page:
                cursor["last_batch_id"] = batch_id
            cursor.update(dict.fromkeys(_IN_PROGRESS_FIELDS))
            _save_cursor(settings, state)
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
        _save_cursor(settings, state)
        if progress is not None:
            progress(PageProgress(entity, batch_id, page - 1, len(items), report.items, True))


def _remove_stale_temps(folder: Path) -> None:
    """Delete temp files a crashed run left in a batch folder (never finished pages)."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".page_*.tmp"):
        tmp.unlink(missing_ok=True)
