"""The simulated catalogue vendor: a local HTTP API serving the show catalogue as paginated JSON.

The simulator writes ``shows.parquet`` and ``episodes.parquet`` into a catalogue folder
(atomically, via rename); this server reads them into memory sorted by ``(updated_at, id)``,
reloads them when their file changes, and serves them the way a real vendor would:
keyset pagination with opaque page tokens, an ``updated_since`` filter, a token-bucket
rate limit (429 + ``Retry-After``) and injected, seeded failures (500 / 503).

Endpoints: ``GET /v1/shows``, ``GET /v1/episodes``, ``GET /healthz``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import random
import socket
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import uvicorn
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from loopline.api_docs import offline_docs

__all__ = [
    "MISSING_CATALOGUE_MESSAGE",
    "ApiBehaviour",
    "CatalogueServer",
    "TokenBucket",
    "make_app",
    "serve_forever",
]

log = logging.getLogger(__name__)

MISSING_CATALOGUE_MESSAGE = "catalogue not generated yet: run `loopline simulate`"
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_TOKEN_VERSION = 1
_DATA_PREFIX = "/v1/"

PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiBehaviour:
    """How the simulated vendor misbehaves: rate limit, burst and injected failures."""

    rate_limit_per_s: float = 50
    burst: int = 20
    failure_rate: float = 0.02
    fail_first_n: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject settings that cannot describe a working server."""
        if not self.rate_limit_per_s > 0:
            raise ValueError(f"rate_limit_per_s must be > 0 (got {self.rate_limit_per_s})")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 (got {self.burst})")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1] (got {self.failure_rate})")
        if self.fail_first_n < 0:
            raise ValueError(f"fail_first_n must be >= 0 (got {self.fail_first_n})")


# -- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ...}`` with the given status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Remember the status, machine-readable code, message and extra headers."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return _error_response(self.status, self.code, self.message, self.headers)


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A JSON error body with a stable shape."""
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    return JSONResponse(status_code=status, content=body, headers=headers)


# -- rate limiting and failure injection ------------------------------------------------------


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens per second, at most ``capacity`` stored."""

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start full."""
        self.rate = rate
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take one token: 0.0 on success, else the seconds until one will be available."""
        if math.isinf(self.rate):
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class _FailureInjector:
    """Decides, per data request, whether to fail: first ``fail_first_n``, then by seeded chance."""

    def __init__(self, behaviour: ApiBehaviour) -> None:
        """Seed the generator from the behaviour."""
        self._behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        self._seen = 0
        self._lock = threading.Lock()

    def draw(self) -> int | None:
        """The status to fail with (500 or 503), or None to serve the request."""
        with self._lock:
            self._seen += 1
            if self._seen <= self._behaviour.fail_first_n:
                return 503
            if self._behaviour.failure_rate <= 0.0:
                return None
            if self._rng.random() < self._behaviour.failure_rate:
                return 503 if self._rng.random() < 0.5 else 500
            return None


# -- timestamps and page tokens -----------------------------------------------------------------


def _to_micros(value: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def _iso_z(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` suffix and microsecond precision."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _iso_from_micros(micros: int) -> str:
    """ISO-8601 ``Z`` string for an epoch-microsecond value."""
    return _iso_z(_EPOCH + timedelta(microseconds=micros)) or ""


def _parse_updated_since(raw: str) -> int:
    """Parse an ISO-8601 timestamp into epoch microseconds, or raise a 400."""
    text = raw.strip()
    candidates = [text]
    if " " in text:  # an unencoded '+' in a query string arrives as a space
        candidates.append(text.replace(" ", "+"))
    for candidate in candidates:
        try:
            return _to_micros(datetime.fromisoformat(candidate))
        except ValueError:
            continue
    raise ApiError(
        400,
        "invalid_updated_since",
        f"updated_since must be an ISO-8601 timestamp (got {raw!r})",
    )


@dataclass(frozen=True)
class _Cursor:
    """What a page token carries: the resource, the filter and the last key served."""

    resource: str
    since_us: int | None
    last_us: int
    last_id: str

    def encode(self) -> str:
        """The opaque, URL-safe token string."""
        payload = {
            "v": _TOKEN_VERSION,
            "r": self.resource,
            "s": self.since_us,
            "u": self.last_us,
            "i": self.last_id,
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, resource: str) -> _Cursor:
        """Parse a token issued for ``resource``, or raise a 400."""
        bad = ApiError(400, "invalid_page_token", "page_token is not a token this API issued")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise bad from None
        if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
            raise bad
        since, last_us, last_id = payload.get("s"), payload.get("u"), payload.get("i")
        if (
            not isinstance(last_us, int)
            or not isinstance(last_id, str)
            or not (since is None or isinstance(since, int))
        ):
            raise bad
        if payload.get("r") != resource:
            raise ApiError(
                400,
                "invalid_page_token",
                f"page_token was issued for /v1/{payload.get('r')}, not /v1/{resource}",
            )
        return cls(resource=resource, since_us=since, last_us=last_us, last_id=last_id)


# -- the in-memory catalogue ----------------------------------------------------------------------


def _show_item(row: dict[str, Any]) -> dict[str, Any]:
    """A show row as the vendor's nested JSON."""
    release: date | None = row.get("release_date")
    return {
        "show_id": row["show_id"],
        "title": row.get("title"),
        "genres": list(row.get("genres") or []),
        "cast": [
            {
                "name": member.get("name"),
                "role": member.get("role"),
                "character": member.get("character"),
            }
            for member in (row.get("cast") or [])
        ],
        "description": row.get("description"),
        "metadata": {
            "maturity_rating": row.get("maturity_rating"),
            "language": row.get("language"),
            "release_date": release.isoformat() if release is not None else None,
        },
        "updated_at": _iso_z(row["updated_at"]),
    }


def _episode_item(row: dict[str, Any]) -> dict[str, Any]:
    """An episode row as flat JSON."""
    return {
        "episode_id": row["episode_id"],
        "show_id": row.get("show_id"),
        "season": row.get("season"),
        "episode_number": row.get("episode_number"),
        "title": row.get("title"),
        "duration_s": row.get("duration_s"),
        "released_at": _iso_z(row.get("released_at")),
        "updated_at": _iso_z(row["updated_at"]),
    }


@dataclass(frozen=True)
class _Resource:
    """One served collection: its file, id column, required columns and JSON shape."""

    name: str
    filename: str
    id_column: str
    columns: tuple[str, ...]
    to_item: Callable[[dict[str, Any]], dict[str, Any]]


RESOURCES: dict[str, _Resource] = {
    "shows": _Resource(
        name="shows",
        filename="shows.parquet",
        id_column="show_id",
        columns=(
            "show_id",
            "title",
            "genres",
            "cast",
            "release_date",
            "maturity_rating",
            "language",
            "description",
            "updated_at",
        ),
        to_item=_show_item,
    ),
    "episodes": _Resource(
        name="episodes",
        filename="episodes.parquet",
        id_column="episode_id",
        columns=(
            "episode_id",
            "show_id",
            "season",
            "episode_number",
            "title",
            "duration_s",
            "released_at",
            "updated_at",
        ),
        to_item=_episode_item,
    ),
}


@dataclass(frozen=True)
class _Snapshot:
    """One loaded file: the table sorted by (updated_at, id) and its keys for bisect."""

    signature: tuple[int, int, int]
    table: pa.Table
    keys: list[tuple[int, str]]


def _load_snapshot(path: Path, resource: _Resource, signature: tuple[int, int, int]) -> _Snapshot:
    """Read a parquet file and sort it by (updated_at, id)."""
    table = pq.read_table(path)
    missing = [c for c in resource.columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{path.name} lacks columns {missing}")
    table = table.select(list(resource.columns))
    updated = table.column("updated_at")
    if not pa.types.is_timestamp(updated.type):
        raise ValueError(f"{path.name}: updated_at is {updated.type}, not a timestamp")
    table = table.set_column(
        table.column_names.index("updated_at"),
        "updated_at",
        updated.cast(pa.timestamp("us", tz="UTC")),
    )
    valid = pc.and_(
        pc.is_valid(table.column("updated_at")), pc.is_valid(table.column(resource.id_column))
    )
    table = table.filter(valid)
    table = table.sort_by([("updated_at", "ascending"), (resource.id_column, "ascending")])
    micros = table.column("updated_at").cast(pa.int64()).to_pylist()
    ids = table.column(resource.id_column).cast(pa.string()).to_pylist()
    return _Snapshot(signature=signature, table=table, keys=list(zip(micros, ids, strict=True)))


class _Catalogue:
    """The catalogue folder held in memory, reloaded when a file's stat changes."""

    def __init__(self, catalogue_dir: Path) -> None:
        """Nothing is read until the first request."""
        self.catalogue_dir = Path(catalogue_dir)
        self._snapshots: dict[str, _Snapshot] = {}
        self._lock = threading.Lock()

    def snapshot(self, resource: _Resource) -> _Snapshot:
        """The current data for ``resource`` (one ``stat`` per call; reload on change)."""
        path = self.catalogue_dir / resource.filename
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ApiError(503, "catalogue_missing", MISSING_CATALOGUE_MESSAGE) from None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        current = self._snapshots.get(resource.name)
        if current is not None and current.signature == signature:
            return current
        with self._lock:
            current = self._snapshots.get(resource.name)
            if current is not None and current.signature == signature:
                return current
            try:
                fresh = _load_snapshot(path, resource, signature)
            except (OSError, ValueError, pa.ArrowException) as exc:
                if current is not None:
                    log.warning("keeping the previous %s: reload failed: %s", resource.name, exc)
                    return current
                if isinstance(exc, FileNotFoundError):
                    raise ApiError(503, "catalogue_missing", MISSING_CATALOGUE_MESSAGE) from None
                raise ApiError(
                    503, "catalogue_unreadable", f"cannot read {resource.filename}: {exc}"
                ) from None
            self._snapshots[resource.name] = fresh
            log.info("loaded %d %s from %s", len(fresh.keys), resource.name, path)
            return fresh

    def page(
        self, resource: _Resource, since_us: int | None, cursor: _Cursor | None, page_size: int
    ) -> tuple[list[dict[str, Any]], _Cursor | None]:
        """One page of items after the cursor (or after ``since_us``) and the next cursor."""
        snap = self.snapshot(resource)
        if cursor is not None:
            start = bisect_right(snap.keys, (cursor.last_us, cursor.last_id))
        elif since_us is not None:
            start = bisect_left(snap.keys, (since_us + 1,))
        else:
            start = 0
        stop = min(start + page_size, len(snap.keys))
        rows = snap.table.slice(start, stop - start).to_pylist() if stop > start else []
        items = [resource.to_item(row) for row in rows]
        if stop >= len(snap.keys) or not rows:
            return items, None
        last_us, last_id = snap.keys[stop - 1]
        return items, _Cursor(resource.name, since_us, last_us, last_id)


# -- the app ------------------------------------------------------------------------------------


def _now_iso() -> str:
    """The server clock as ISO-8601 ``Z``."""
    return _iso_z(datetime.now(UTC)) or ""


def _retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def make_app(catalogue_dir: Path, behaviour: ApiBehaviour | None = None) -> FastAPI:
    """Build the vendor API over ``catalogue_dir`` with the given misbehaviour."""
    behaviour = behaviour or ApiBehaviour()
    catalogue = _Catalogue(Path(catalogue_dir))
    bucket = TokenBucket(behaviour.rate_limit_per_s, behaviour.burst)
    failures = _FailureInjector(behaviour)

    app = FastAPI(
        title="Catalogue vendor API (simulated)", version="1", docs_url=None, redoc_url=None
    )
    offline_docs(app)  # /docs without a CDN
    app.state.catalogue = catalogue
    app.state.behaviour = behaviour

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        """Answer an ApiError as JSON."""
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        """Answer bad query parameters with 400 and a readable message."""
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "query")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error_response(400, "invalid_parameter", "; ".join(problems) or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        """Answer routing errors (404, 405) with the same JSON shape."""
        return _error_response(
            exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {})
        )

    @app.middleware("http")
    async def _gate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Rate-limit data requests, then fail some of them on purpose."""
        if not request.url.path.startswith(_DATA_PREFIX):
            response: Response = await call_next(request)
            return response
        wait = bucket.try_acquire()
        if wait > 0.0:
            retry = _retry_after(wait)
            return _error_response(
                429,
                "rate_limited",
                f"rate limit of {behaviour.rate_limit_per_s:g} requests/s exceeded",
                {"Retry-After": retry},
                retry_after_s=int(retry),
            )
        status = failures.draw()
        if status == 503:
            return _error_response(
                503, "unavailable", "service temporarily unavailable", {"Retry-After": "1"}
            )
        if status == 500:
            return _error_response(500, "internal_error", "internal server error (injected)")
        response = await call_next(request)
        return response

    def _serve_page(
        resource: _Resource, updated_since: str | None, page_size: int, page_token: str | None
    ) -> JSONResponse:
        """Validate the parameters and answer one page."""
        since_us = _parse_updated_since(updated_since) if updated_since is not None else None
        cursor = _Cursor.decode(page_token, resource.name) if page_token else None
        if cursor is not None:
            if updated_since is not None and since_us != cursor.since_us:
                raise ApiError(
                    400,
                    "invalid_page_token",
                    "page_token was issued for a different updated_since",
                )
            since_us = cursor.since_us
        items, next_cursor = catalogue.page(resource, since_us, cursor, page_size)
        body = {
            "data": items,
            "next_page_token": next_cursor.encode() if next_cursor else None,
            "has_more": next_cursor is not None,
            "server_time": _now_iso(),
        }
        return JSONResponse(content=body)

    @app.get("/v1/shows")
    def list_shows(
        updated_since: str | None = None,
        page_size: PageSize = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> JSONResponse:
        """Shows updated after ``updated_since``, ordered by (updated_at, show_id)."""
        return _serve_page(RESOURCES["shows"], updated_since, page_size, page_token)

    @app.get("/v1/episodes")
    def list_episodes(
        updated_since: str | None = None,
        page_size: PageSize = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> JSONResponse:
        """Episodes updated after ``updated_since``, ordered by (updated_at, episode_id)."""
        return _serve_page(RESOURCES["episodes"], updated_since, page_size, page_token)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: never rate-limited, never failed on purpose."""
        return {"status": "ok"}

    return app


# -- running it ---------------------------------------------------------------------------------


class CatalogueServer:
    """Runs the API with uvicorn in a background thread; use as a context manager."""

    def __init__(
        self,
        catalogue_dir: Path,
        behaviour: ApiBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ) -> None:
        """Configure; nothing listens until :meth:`start` (or ``with``)."""
        self.catalogue_dir = Path(catalogue_dir)
        self.behaviour = behaviour or ApiBehaviour()
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.app = make_app(self.catalogue_dir, self.behaviour)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the real port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind, start serving in a daemon thread and wait until ``/healthz`` answers."""
        if self._thread is not None:
            raise RuntimeError("CatalogueServer already started")
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"catalogue-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        """Poll ``/healthz`` until it answers 200, the thread dies or the timeout passes."""
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("catalogue API thread exited during startup")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"catalogue API not healthy at {self.url}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Ask uvicorn to exit, join the thread and release the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("catalogue API thread did not stop within 10 s")
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> Self:
        """Start and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


def serve_forever(
    catalogue_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    behaviour: ApiBehaviour | None = None,
) -> None:
    """Serve in the foreground until interrupted (Ctrl-C)."""
    app = make_app(Path(catalogue_dir), behaviour or ApiBehaviour())
    log.info("catalogue API on http://%s:%d serving %s", host, port, catalogue_dir)
    uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
