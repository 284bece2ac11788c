"""The extraction's cursor: where each entity stands, saved after every page, one extraction at a time.

The cursor lives in ``<state_dir>/catalogue_cursor.json`` (replaced atomically after every
page)::

    {"shows": {"high_water": "2026-03-30T20:31:34.000000Z", "last_batch_id": "...",
               "batch_id": null, "updated_since": null, "next_page": null,
               "page_token": null, "batch_max_updated_at": null}, "episodes": {...}}

``high_water`` is the largest ``updated_at`` of the last *completed* batch; the next batch asks
for ``updated_since=high_water`` (the API filter is strictly greater). While a batch runs, the
other fields say where it stands (``IN_PROGRESS_FIELDS``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.ingest.catalogue.durable import write_atomic
from loopline.ingest.catalogue.reports import ExtractError
from loopline.locks import exclusive_file
from loopline.settings import Settings

STATE_FILENAME = "catalogue_cursor.json"
IN_PROGRESS_FIELDS = (
    "batch_id",
    "updated_since",
    "next_page",
    "page_token",
    "batch_max_updated_at",
)


def state_path(settings: Settings) -> Path:
    """The cursor file."""
    return settings.state_dir / STATE_FILENAME


def iso_z(value: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` allowed; naive is UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def later(a: str | None, b: str | None) -> str | None:
    """The later of two ISO timestamps (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if parse_ts(b) > parse_ts(a) else a


def empty_cursor() -> dict[str, Any]:
    """An entity's cursor before anything was extracted."""
    return {"high_water": None, "last_batch_id": None, **dict.fromkeys(IN_PROGRESS_FIELDS)}


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
        state[entity] = {**empty_cursor(), **saved}
    return state


def save_cursor(settings: Settings, state: dict[str, dict[str, Any]]) -> None:
    """Replace the state file atomically."""
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    write_atomic(state_path(settings), text.encode("utf-8"))


def lock_path(settings: Settings) -> Path:
    """The lock file beside the cursor that one extraction at a time holds."""
    return settings.state_dir / "catalogue_cursor.lock"


@contextlib.contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """Hold the cursor's lock so two extractions never share one cursor.

    A second extraction queues here (up to ``LOOPLINE_LOCK_TIMEOUT``), saying who holds the
    lock and since when, rather than failing at once.
    """
    with exclusive_file(
        lock_path(settings),
        "the catalogue cursor",
        timeout_s=settings.lock_timeout,
        busy=ExtractError,
    ):
        yield
