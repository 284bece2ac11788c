"""Where streamed events come from: one interface, a Redis stream and an NDJSON spool behind it.

Every entry has a *position*: a string that sorts in stream order (the spool's byte offset
after the line, or the Redis entry id, both zero-padded). Landed files are named by the
positions of their first and last entry, which is how a restarted consumer finds what it
landed but had not yet acknowledged (`Source.recover`).

Both backends also have a publishing side (`SpoolTarget`, `RedisTarget`), used by the
producer and by tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from loopline.settings import Settings

DEFAULT_STREAM_KEY = "loopline:viewing-events"
DEFAULT_GROUP = "loopline-landing"
DEFAULT_CONSUMER = "landing"
_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_READ_BYTES = 4 << 20  # the most the spool source reads per call
# how often a Redis source trims acknowledged entries (at its first ack, then at most this often)
TRIM_EVERY_S = 5.0


class StreamError(RuntimeError):
    """The stream cannot be reached or read (the message names it and the fix)."""


class Entry(NamedTuple):
    """One streamed event: its position in the stream and its NDJSON line (no newline).

    A named tuple rather than a frozen dataclass: a batch makes one per event, and a tuple
    is several times cheaper to build."""

    position: str
    line: str


@dataclass(frozen=True)
class LandedRange:
    """The first and last position of a landed file (and the file, when read back)."""

    first: str
    last: str
    path: Path | None = field(default=None, compare=False)


class Source(ABC):
    """A stream the consumer reads, acknowledging entries once they are durably landed."""

    name: str  # file-name safe, no "-": "spool", or "redis.<consumer>.<stream hash>"

    @abstractmethod
    def read(self, max_entries: int, block_s: float) -> list[Entry]:
        """Return up to `max_entries` entries after the last read, waiting up to `block_s`."""

    @abstractmethod
    def ack(self, entries: Sequence[Entry]) -> None:
        """Mark `entries` (the oldest unacknowledged, in order) as durably landed."""

    @abstractmethod
    def lag(self) -> int:
        """Return how many entries are not acknowledged yet (read or not)."""

    @abstractmethod
    def pending(self, landed: Sequence[LandedRange]) -> list[LandedRange]:
        """The landed ranges that hold entries not acknowledged yet, in stream order."""

    @abstractmethod
    def recover(self, landed: Sequence[LandedRange]) -> int:
        """Acknowledge entries a previous run landed but did not acknowledge; return how many."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files."""


# -- the embedded spool -----------------------------------------------------------------------


def _offset_position(offset: int) -> str:
    return f"{offset:015d}"


class SpoolSource(Source):
    """Tail an append-only NDJSON file; the acknowledged byte offset is kept beside it.

    The offset file is replaced atomically (write, fsync, rename), so after a crash it holds
    either the old or the new offset. Only complete lines (ending in a newline) are read.
    """

    name = "spool"

    def __init__(self, path: Path, offset_path: Path | None = None) -> None:
        self.path = path
        self.offset_path = offset_path or path.with_name(path.name + ".offset")
        self.acked = self._load_offset()
        self._read_to = self.acked  # read but maybe not acknowledged yet

    def _load_offset(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise StreamError(
                f"{self.offset_path} does not hold a byte offset ({exc}); delete it to read "
                f"{self.path} from the start"
            ) from None

    def _save_offset(self, offset: int) -> None:
        self.offset_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.offset_path.with_name(f".{self.offset_path.name}.tmp")
        with tmp.open("w") as out:
            out.write(f"{offset}\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.offset_path)
        _fsync_dir(self.offset_path.parent)
        self.acked = offset

    def read(self, max_entries: int, block_s: float) -> list[Entry]:
        entries = self._read_now(max_entries)
        if not entries and block_s > 0:
            # a file has no blocking read: poll a few times within `block_s`
            deadline = time.monotonic() + block_s
            while not entries and time.monotonic() < deadline:
                time.sleep(min(0.05, block_s))
                entries = self._read_now(max_entries)
        return entries

    def _read_now(self, max_entries: int) -> list[Entry]:
        try:
            with self.path.open("rb") as spool:
                spool.seek(self._read_to)
                data = spool.read(_READ_BYTES)
        except FileNotFoundError:
            return []
        entries: list[Entry] = []
        start = 0
        while len(entries) < max_entries:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end].decode("utf-8", errors="replace")
            start = end + 1
            if line.strip():
                entries.append(Entry(_offset_position(self._read_to + start), line))
        self._read_to += start
        return entries

    def ack(self, entries: Sequence[Entry]) -> None:
        if entries:
            self._save_offset(int(entries[-1].position))

    def lag(self) -> int:
        count = 0
        try:
            with self.path.open("rb") as spool:
                spool.seek(self.acked)
                while chunk := spool.read(1 << 20):
                    count += chunk.count(b"\n")
        except FileNotFoundError:
            return 0
        return count

    def close(self) -> None:
        pass  # no file stays open between reads

    def pending(self, landed: Sequence[LandedRange]) -> list[LandedRange]:
        return sorted((r for r in landed if int(r.last) > self.acked), key=lambda r: r.first)

    def recover(self, landed: Sequence[LandedRange]) -> int:
        ends = [int(r.last) for r in landed if int(r.last) > self.acked]
        if not ends:
            return 0
        before = self.acked
        with self.path.open("rb") as spool:
            spool.seek(before)
            skipped = spool.read(max(ends) - before).count(b"\n")
        self._save_offset(max(ends))
        self._read_to = self.acked
        return skipped


class SpoolTarget:
    """Append events to the spool: each call one `write` of whole lines under a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def publish(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        data = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
        with self.path.open("ab") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            try:
                spool.write(data)
                spool.flush()
                os.fsync(spool.fileno())
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)

    def close(self) -> None:
        pass


# -- Redis Streams ------------------------------------------------------------------------------


def _ms_prefix(millis: bytes | str) -> str:
    """The millisecond part of a position: zero-filled to 15 digits, so positions sort as
    the stream does, then the dot before the sequence part."""
    return f"{int(millis):015d}."


def _id_position(entry_id: bytes | str) -> str:
    """The position of a Redis entry id ``<ms>-<seq>`` (canonical decimal digits)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis, _, seq = text.partition("-")
    return _ms_prefix(millis) + (seq or "0").zfill(6)


def _position_ids(positions: Sequence[str]) -> list[str]:
    """The Redis entry ids (``<ms>-<seq>``) of positions (what `_id_position` makes), the
    millisecond part converted once per millisecond."""
    ids: list[str] = []
    append = ids.append
    last, head = "", ""
    for position in positions:
        millis, _, seq = position.partition(".")
        if millis != last:
            last, head = millis, f"{int(millis)}-"
        append(head + (seq.lstrip("0") or "0"))
    return ids


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id ``<ms>-<seq>`` as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _redis_client(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        client.close()
        raise StreamError(
            f"the Redis stream at {_redact(url)} is unreachable ({exc}); start Redis there, "
            "or unset LOOPLINE_STREAM_URL to use the embedded spool"
        ) from exc
    return client


class RedisSource(Source):
    """Read a Redis stream as one consumer of a consumer group; XACK once landed.

    A restarted consumer first re-reads its own pending entries (delivered, never
    acknowledged), then new ones, so nothing delivered before a crash is skipped. Entries
    every group is done with are trimmed at the first ack, then at most every
    `trim_every_s` seconds, and at `close`.
    """

    def __init__(
        self,
        url: str,
        key: str = DEFAULT_STREAM_KEY,
        group: str = DEFAULT_GROUP,
        consumer: str = DEFAULT_CONSUMER,
        trim_every_s: float = TRIM_EVERY_S,
    ) -> None:
        import redis

        if not _CONSUMER_NAME.match(consumer):
            raise StreamError(
                f"consumer name {consumer!r}: use letters, digits and underscores only"
            )
        self.key, self.group, self.consumer = key, group, consumer
        # a file name tag per (stream, group, consumer): recovery acknowledges only entries
        # this consumer landed, never those another consumer (or stream) had in its files
        digest = hashlib.sha256(f"{key}\n{group}".encode()).hexdigest()[:8]
        self.name = f"redis.{consumer}.{digest}"
        self._client = _redis_client(url)
        try:
            self._client.xgroup_create(key, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # the reply of XREADGROUP as Redis sent it (lists of bytes): redis-py's parsing into a
        # dict per entry cost more than the rest of the read
        self._client.set_response_callback("XREADGROUP", _raw_reply)
        self._pending_done = False  # read our own pending entries first
        self._after: bytes | str = "0"
        self.trim_every_s = trim_every_s
        self._next_trim = 0.0  # the first ack trims

    def read(self, max_entries: int, block_s: float) -> list[Entry]:
        if not self._pending_done:
            reply = self._client.xreadgroup(
                self.group, self.consumer, {self.key: self._after}, count=max_entries
            )
            rows = _reply_rows(reply)
            if rows:
                self._after = rows[-1][0]
                return _entries(rows)
            self._pending_done = True
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        reply = self._client.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=max_entries, block=block
        )
        return _entries(_reply_rows(reply))

    def ack(self, entries: Sequence[Entry]) -> None:
        """XACK the entries (one round trip, however many), then trim the stream at most
        every `trim_every_s` seconds (`trim` costs 3 round trips: not one per batch)."""
        ids = _position_ids([e.position for e in entries])
        if ids:
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, len(ids), 10_000):
                pipe.xack(self.key, self.group, *ids[start : start + 10_000])
            pipe.execute()
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + self.trim_every_s
            self.trim()

    def trim(self) -> int:
        """Delete the entries every consumer group of the stream is done with, so the stream
        does not grow for ever: below the oldest entry any group still holds (delivered, not
        acknowledged) or has not been delivered yet. Entries a group has not acknowledged,
        and entries after any group's last delivered one, stay. (A reader without a group,
        a plain XREAD, is not seen: give each reader a group.) Returns the entries deleted."""
        keep_from: list[tuple[int, int]] = []
        for info in self._client.xinfo_groups(self.key):
            last = _stream_id(_text(info.get("last-delivered-id")) or "0-0")
            first_undelivered = (last[0], last[1] + 1)
            if int(info.get("pending") or 0):
                oldest = _text(self._client.xpending(self.key, _text(info["name"]))["min"])
                if oldest:
                    first_undelivered = min(first_undelivered, _stream_id(oldest))
            keep_from.append(first_undelivered)
        if not keep_from:
            return 0
        ms, seq = min(keep_from)
        return int(self._client.xtrim(self.key, minid=f"{ms}-{seq}", approximate=False))

    def lag(self) -> int:
        for info in self._client.xinfo_groups(self.key):
            if _text(info.get("name")) == self.group:
                waiting = info.get("lag")
                if waiting is None:  # Redis cannot tell (entries deleted): count them
                    last = _text(info.get("last-delivered-id")) or "0"
                    waiting = len(self._client.xrange(self.key, min=f"({last}"))
                return int(waiting) + int(info.get("pending") or 0)
        return 0

    def _pending_positions(self) -> list[tuple[str, Any]]:
        """(position, entry id) of every entry delivered to this consumer, not acknowledged."""
        pending = self._client.xpending_range(
            self.key, self.group, min="-", max="+", count=1_000_000, consumername=self.consumer
        )
        return [(_id_position(p["message_id"]), p["message_id"]) for p in pending]

    def pending(self, landed: Sequence[LandedRange]) -> list[LandedRange]:
        positions = [position for position, _ in self._pending_positions()]
        holding = (r for r in landed if any(r.first <= p <= r.last for p in positions))
        return sorted(holding, key=lambda r: r.first)

    def recover(self, landed: Sequence[LandedRange]) -> int:
        positions = self._pending_positions()
        done = [
            entry_id
            for position, entry_id in positions
            if any(r.first <= position <= r.last for r in landed)
        ]
        for start in range(0, len(done), 1000):
            self._client.xack(self.key, self.group, *done[start : start + 1000])
        return len(done)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # what the throttle left: best effort
            self.trim()
        self._client.close()


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _reply_rows(reply: Any) -> list[Any]:
    """The entries of a one-stream XREADGROUP reply: RESP3 sends a map, RESP2 a list of
    (key, entries) pairs, nothing at all when none came."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values())) or []
    return reply[0][1] or []


def _entries(rows: Sequence[Any]) -> list[Entry]:
    """`Entry`s of raw stream entries ``[id, [field, value, ...]]`` (the field `line`).

    One Python pass per entry, kept lean (it is a large share of the consumer's time): the
    position's millisecond part is formatted once per millisecond (a burst shares it), and
    the sequence part is zero-filled as Redis writes it (canonical decimal digits)."""
    out: list[Entry] = []
    append = out.append
    last_ms, prefix = b"", ""
    for entry_id, fields in rows:
        if type(fields) is list and len(fields) == 2 and fields[0] == b"line":
            raw = fields[1]
        else:
            raw = _line_field(fields)
        ms, _, seq = entry_id.partition(b"-")
        if ms != last_ms:
            last_ms, prefix = ms, _ms_prefix(ms)
        append(Entry(prefix + seq.zfill(6).decode(), raw.decode("utf-8", errors="replace")))
    return out


def _line_field(fields: Any) -> bytes:
    """The field `line` of an entry's fields in any shape Redis replies with (a map, a flat
    list of pairs, nothing for an entry deleted while pending)."""
    if isinstance(fields, dict):
        return bytes(fields.get(b"line", b""))
    pairs = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
    return bytes(pairs.get(b"line", b""))


class RedisTarget:
    """Append events to a Redis stream (XADD, pipelined), one field `line` per entry.

    A large call is sent `PUBLISH_SLICE` entries per round trip, so the entries arrive
    steadily while the rest is packed (one pipeline of 100,000 XADDs is packed for seconds
    before Redis gets the first) and the client's memory stays bounded."""

    PUBLISH_SLICE = 5_000

    def __init__(self, url: str, key: str = DEFAULT_STREAM_KEY) -> None:
        self.key = key
        self._client = _redis_client(url)

    def publish(self, lines: Sequence[str]) -> None:
        for start in range(0, len(lines), self.PUBLISH_SLICE):
            pipe = self._client.pipeline(transaction=False)
            for line in lines[start : start + self.PUBLISH_SLICE]:
                pipe.xadd(self.key, {"line": line.rstrip("\n")})
            pipe.execute()

    def close(self) -> None:
        self._client.close()


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


# -- picking one from settings -----------------------------------------------------------------


def _check_url(url: str) -> None:
    if urlsplit(url).scheme.lower() not in ("redis", "rediss"):
        raise StreamError(
            f"LOOPLINE_STREAM_URL={_redact(url)!r}: use redis://host:port/db (or rediss://), "
            "or unset it to use the embedded spool"
        )


def open_source(
    settings: Settings, key: str = DEFAULT_STREAM_KEY, consumer: str = DEFAULT_CONSUMER
) -> Source:
    """The source `settings.stream_url` names (unset: the embedded spool)."""
    if settings.stream_url:
        _check_url(settings.stream_url)
        return RedisSource(settings.stream_url, key, consumer=consumer)
    return SpoolSource(settings.resolved_stream_spool_path, settings.stream_dir / "spool.offset")


def open_target(settings: Settings, key: str = DEFAULT_STREAM_KEY) -> SpoolTarget | RedisTarget:
    """Where the producer publishes: the same stream `open_source` reads."""
    if settings.stream_url:
        _check_url(settings.stream_url)
        return RedisTarget(settings.stream_url, key)
    return SpoolTarget(settings.resolved_stream_spool_path)
