"""The catalogue held in memory: the parquet files the simulator writes, sorted for keyset paging.

Each file is read once, sorted by ``(updated_at, id)`` and reloaded when its stat changes;
a page is a bisect into the sorted keys.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loopline.simulate.vendor_api.errors import ApiError
from loopline.simulate.vendor_api.tokens import PageCursor, iso_z

log = logging.getLogger(__name__)

MISSING_CATALOGUE_MESSAGE = "catalogue not generated yet: run `loopline simulate`"


def show_item(row: dict[str, Any]) -> dict[str, Any]:
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
        "updated_at": iso_z(row["updated_at"]),
    }


def episode_item(row: dict[str, Any]) -> dict[str, Any]:
    """An episode row as flat JSON."""
    return {
        "episode_id": row["episode_id"],
        "show_id": row.get("show_id"),
        "season": row.get("season"),
        "episode_number": row.get("episode_number"),
        "title": row.get("title"),
        "duration_s": row.get("duration_s"),
        "released_at": iso_z(row.get("released_at")),
        "updated_at": iso_z(row["updated_at"]),
    }


@dataclass(frozen=True)
class Resource:
    """One served collection: its file, id column, required columns and JSON shape."""

    name: str
    filename: str
    id_column: str
    columns: tuple[str, ...]
    to_item: Callable[[dict[str, Any]], dict[str, Any]]


RESOURCES: dict[str, Resource] = {
    "shows": Resource(
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
        to_item=show_item,
    ),
    "episodes": Resource(
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
        to_item=episode_item,
    ),
}


@dataclass(frozen=True)
class Snapshot:
    """One loaded file: the table sorted by (updated_at, id) and its keys for bisect."""

    signature: tuple[int, int, int]
    table: pa.Table
    keys: list[tuple[int, str]]


def load_snapshot(path: Path, resource: Resource, signature: tuple[int, int, int]) -> Snapshot:
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
    return Snapshot(signature=signature, table=table, keys=list(zip(micros, ids, strict=True)))


class Catalogue:
    """The catalogue folder held in memory, reloaded when a file's stat changes."""

    def __init__(self, catalogue_dir: Path) -> None:
        """Nothing is read until the first request."""
        self.catalogue_dir = Path(catalogue_dir)
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def snapshot(self, resource: Resource) -> Snapshot:
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
                fresh = load_snapshot(path, resource, signature)
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
        self, resource: Resource, since_us: int | None, cursor: PageCursor | None, page_size: int
    ) -> tuple[list[dict[str, Any]], PageCursor | None]:
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
        return items, PageCursor(resource.name, since_us, last_us, last_id)
