"""Land a micro-batch as one immutable NDJSON file where the file ingest loads events.

The file goes to ``landing/events/date=<day>/`` and its name matches the ingest's
``events_*.ndjson`` pattern: ``events_<YYYYMMDDTHH>_stream-<source>-<first>-<last>.ndjson``,
the hour being when it landed (staging reads it as the file's landing hour) and
``<first>``/``<last>`` the stream positions of its first and last event. It is written under
a dot-name (which the ingest ignores), fsynced, renamed into place and the folder fsynced:
once `land` returns, the file survives a crash, and a reader never sees half of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from loopline.stream.sources import Entry, LandedRange, _fsync_dir

_STREAM_TAG = "_stream-"


def batch_name(source: str, entries: Sequence[Entry], at: datetime) -> str:
    """The file name of a batch of `source` landed at `at`."""
    first, last = entries[0].position, entries[-1].position
    return f"events_{at:%Y%m%dT%H}{_STREAM_TAG}{source}-{first}-{last}.ndjson"


def land(landing: Path, source: str, entries: Sequence[Entry], at: datetime | None = None) -> Path:
    """Write `entries` as one file, durably; return its path."""
    if not entries:
        raise ValueError("an empty batch lands no file")
    at = at or datetime.now(UTC)
    folder = landing / "events" / f"date={at:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / batch_name(source, entries, at)
    tmp = folder / f".{path.name}.tmp"
    data = "".join(f"{entry.line}\n" for entry in entries).encode()
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    _fsync_dir(folder)
    return path


def landed_ranges(landing: Path, source: str) -> list[LandedRange]:
    """The positions of every file `source` landed (read back after a restart)."""
    ranges = []
    for path in (landing / "events").glob(f"date=*/events_*{_STREAM_TAG}{source}-*.ndjson"):
        first, last = path.name.removesuffix(".ndjson").rsplit("-", 2)[1:]
        ranges.append(LandedRange(first, last, path))
    return ranges


def remove_partial(landing: Path, source: str) -> int:
    """Delete half-written batch files a killed consumer left (dot-names); return how many."""
    removed = 0
    for tmp in (landing / "events").glob(f"date=*/.events_*{_STREAM_TAG}{source}-*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
