"""The vendor API as a FastAPI app: ``GET /v1/shows``, ``GET /v1/episodes``, ``GET /healthz``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from loopline.api_docs import offline_docs
from loopline.simulate.vendor_api.behaviour import ApiBehaviour, FailureInjector, TokenBucket
from loopline.simulate.vendor_api.errors import ApiError, error_response
from loopline.simulate.vendor_api.store import RESOURCES, Catalogue, Resource
from loopline.simulate.vendor_api.tokens import PageCursor, iso_z, parse_updated_since

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
_DATA_PREFIX = "/v1/"

PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _now_iso() -> str:
    """The server clock as ISO-8601 ``Z``."""
    return iso_z(datetime.now(UTC)) or ""


def _retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def make_app(catalogue_dir: Path, behaviour: ApiBehaviour | None = None) -> FastAPI:
    """Build the vendor API over ``catalogue_dir`` with the given misbehaviour."""
    behaviour = behaviour or ApiBehaviour()
    catalogue = Catalogue(Path(catalogue_dir))
    bucket = TokenBucket(behaviour.rate_limit_per_s, behaviour.burst)
    failures = FailureInjector(behaviour)

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
        return error_response(400, "invalid_parameter", "; ".join(problems) or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        """Answer routing errors (404, 405) with the same JSON shape."""
        return error_response(
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
            return error_response(
                429,
                "rate_limited",
                f"rate limit of {behaviour.rate_limit_per_s:g} requests/s exceeded",
                {"Retry-After": retry},
                retry_after_s=int(retry),
            )
        status = failures.draw()
        if status == 503:
            return error_response(
                503, "unavailable", "service temporarily unavailable", {"Retry-After": "1"}
            )
        if status == 500:
            return error_response(500, "internal_error", "internal server error (injected)")
        response = await call_next(request)
        return response

    def _serve_page(
        resource: Resource, updated_since: str | None, page_size: int, page_token: str | None
    ) -> JSONResponse:
        """Validate the parameters and answer one page."""
        since_us = parse_updated_since(updated_since) if updated_since is not None else None
        cursor = PageCursor.decode(page_token, resource.name) if page_token else None
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
