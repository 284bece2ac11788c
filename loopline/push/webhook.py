"""`POST /v1/ingest/events`: a system pushes viewing events; they land as one immutable file.

The body is NDJSON (one JSON object per line) behind a bearer token
(``LOOPLINE_INGEST_TOKEN``). A valid body is written whole, under a temporary dot-name then
renamed, into ``landing/events/date=<UTC day>/`` where the ingest loads event files; the
landing watcher (`loopline/push/watcher.py`) then triggers the line. Answers: 202 with the
file and record count; 401 without or with a wrong token; 413 over
``LOOPLINE_INGEST_MAX_BYTES``; 400 naming the first malformed line; 403 when no token is
configured. The serving app mounts it with ``app.include_router(router)``.
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from pydantic import BaseModel

from loopline.settings import Settings, get_settings

INGEST_PATH = "/v1/ingest/events"
router = APIRouter(tags=["ingest"])


def _authorised(settings: Settings, authorization: str | None) -> None:
    if not settings.ingest_token:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "the ingest webhook is off: set LOOPLINE_INGEST_TOKEN to turn it on",
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.ingest_token.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_ndjson(body: bytes) -> list[dict[str, object]]:
    """The JSON objects of an NDJSON body; ValueError naming the first bad line."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (byte {exc.start})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"line {number} is a JSON {type(record).__name__}, not an object")
        records.append(record)
    if not records:
        raise ValueError("the body holds no events (one JSON object per line)")
    return records


def land(settings: Settings, body: bytes) -> Path:
    """Write `body` as a new immutable event file in the landing folder; its path."""
    now = datetime.now(UTC)
    folder = settings.landing_dir / "events" / f"date={now:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"events_{now:%Y%m%dT%H%M%S}_push_{uuid.uuid4().hex[:12]}.ndjson"
    temporary = folder / f".{name}.tmp"  # dot-names are skipped by ingest and the watcher
    with temporary.open("wb") as out:
        out.write(body if body.endswith(b"\n") else body + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, folder / name)
    return folder / name


class Landed(BaseModel):
    """The file an accepted batch landed as (relative to the landing folder), and its size."""

    file: str
    records: int


class Refused(BaseModel):
    """Why a push was refused."""

    detail: str


_REFUSED: dict[int | str, dict[str, Any]] = {
    code: {"model": Refused, "description": why}
    for code, why in [
        (400, "a malformed NDJSON line (the first is named)"),
        (401, "no bearer token, or a wrong one"),
        (403, "the webhook is off (LOOPLINE_INGEST_TOKEN unset)"),
        (413, "a body over LOOPLINE_INGEST_MAX_BYTES"),
    ]
}


@router.post(INGEST_PATH, status_code=status.HTTP_202_ACCEPTED, responses=_REFUSED)
async def ingest_events(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> Landed:
    """Land an NDJSON batch of viewing events; the line loads it on its next run."""
    _authorised(settings, authorization)
    body = await _body(request, settings.ingest_max_bytes)
    try:
        records = parse_ndjson(body)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    path = land(settings, body)
    return Landed(file=str(path.relative_to(settings.landing_dir)), records=len(records))
