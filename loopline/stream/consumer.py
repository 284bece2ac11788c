"""The long-lived stream consumer: read, batch, land durably, features, then acknowledge.

Order per micro-batch: the file is written and fsynced (`sink.land`), then the streaming
features are written, then the events are acknowledged (`Source.ack`) and the metrics
updated. Meanwhile the next batch is read on a thread (delivered, not acknowledged: a crash
loses nothing of it either). A crash before the file is in place loses nothing (the events were never
acknowledged, so they are read again); a crash between landing and acknowledging is
repaired at start: the features of what a landed file holds are written (again: the writes
are newer-wins, so twice is once), then `Source.recover` acknowledges it, so the events are
not landed twice and their features not lost. (Features written after the acknowledgement
were lost when the process died between the two: the file was landed and acknowledged, so
nothing ever read it again; found by `tests/reliability/`.) The consumer only writes files:
it never waits for the warehouse writer lock, so a long ingest or dbt build never holds the
stream back.

Metrics go to ``<data_dir>/stream/metrics.json`` after every batch (replaced atomically),
for the monitor and `loopline status`, and one `progress.phase` line per report interval.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loopline import progress
from loopline.stream import sink
from loopline.stream.batcher import Batcher
from loopline.stream.features import (
    open_store,
    serving_history_version,
    streaming_features,
    write_features,
)
from loopline.stream.sources import Entry, Source

if TYPE_CHECKING:
    from loopline.settings import Settings
    from ml.features.online import OnlineStore

log = logging.getLogger("loopline.stream")


@dataclass
class StreamMetrics:
    """What the consumer has done so far, as written to ``metrics.json``."""

    source: str
    started_at: str
    updated_at: str = ""
    lag_events: int = 0  # events in the stream not acknowledged yet
    events_total: int = 0  # events landed by this process
    batches_total: int = 0
    recovered_events: int = 0  # landed by a previous run, acknowledged at start
    last_batch_events: int = 0
    largest_batch_events: int = 0
    batch_size: int = 0  # the batcher's current count bound
    events_per_second: float = 0.0  # landed, over the last report interval
    last_file: str | None = None
    feature_users_total: int = 0
    feature_errors: int = 0


def metrics_path(settings: Settings) -> Path:
    """Where the consumer writes its metrics."""
    return settings.stream_dir / "metrics.json"


def read_metrics(settings: Settings) -> dict[str, object] | None:
    """The consumer's latest metrics, or None if it never ran."""
    try:
        loaded: dict[str, object] = json.loads(metrics_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def _settle_heap() -> None:
    """Move every object alive now (the imports: MLflow and SQLAlchemy alone are millions)
    out of the garbage collector's reach. Each batch makes tens of thousands of small
    objects, so collections run often; without this each full collection walked the whole
    import graph (about 2 s of a 200,000-event backlog). Objects made later are collected
    as usual. Process-wide: only for a process that is the consumer alone."""
    gc.collect()
    gc.freeze()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Consumer:
    """Consumes `source` into `settings.landing_dir` (see the module docstring)."""

    settings: Settings
    source: Source
    features: bool = True
    report_every_s: float = 10.0
    # for a process that is this consumer alone (`loopline stream`): move what is alive once
    # started out of the collector's reach (`_settle_heap`, process-wide, so not by default)
    settle_heap: bool = False
    metrics: StreamMetrics = field(init=False)
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.batcher = Batcher(
            s.stream_batch_events, s.stream_batch_max_events, s.stream_batch_seconds
        )
        self.metrics = StreamMetrics(self.source.name, _now(), batch_size=self.batcher.size)
        self._window: dict[str, dict[str, datetime]] = {}
        self._store: OnlineStore | None = None  # opened at the first features write
        self._history_version: str | None = None
        self._interval_events = 0
        self._interval_start = time.monotonic()
        # while a batch is landed, featurised and acknowledged, the next read runs on this
        # thread (Redis answers meanwhile): set by `run` only
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: Future[list[Entry]] | None = None

    def recover(self) -> int:
        """Clear half-written files; write the features of what a previous run landed but did
        not acknowledge (it may have died before writing them), then acknowledge it; return
        how many events that was."""
        landing = self.settings.landing_dir
        sink.remove_partial(landing, self.source.name)
        landed = sink.landed_ranges(landing, self.source.name)
        if self.features:
            for unacknowledged in self.source.pending(landed):
                if unacknowledged.path is not None:
                    lines = unacknowledged.path.read_text().splitlines()
                    self._features([Entry(unacknowledged.first, line) for line in lines])
        recovered = self.source.recover(landed)
        self.metrics.recovered_events = recovered
        if recovered:
            progress.phase("stream", f"{recovered:,} events landed before a restart acknowledged")
        return recovered

    def run(
        self, stop: threading.Event | None = None, idle_exit_s: float | None = None
    ) -> StreamMetrics:
        """Consume until `stop` is set (or, with `idle_exit_s`, until the stream has been
        drained that long); land what is batched before returning."""
        stop = stop or threading.Event()
        self.recover()
        if self.settle_heap:
            _settle_heap()
        self._write_metrics()
        idle_since = time.monotonic()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-read")
        try:
            while not stop.is_set():
                room = self.batcher.room()
                entries = self._read(room, min(self.batcher.wait_s(), 0.5))
                if entries:
                    idle_since = time.monotonic()
                self.batcher.add(entries)
                # a short read may mean the stream is drained: the batcher asks if it matters
                if self.batcher.due(self._drained if len(entries) < room else None):
                    self.flush()
                self._maybe_report()
                if (
                    idle_exit_s is not None
                    and not self.batcher.entries
                    and time.monotonic() - idle_since >= idle_exit_s
                    and self.source.lag() == 0
                ):
                    break
        finally:
            self._reader.shutdown(wait=True)
            self._reader = None
        try:
            if self._ahead is not None:  # read while the last batch landed: land it too
                self.batcher.add(self._read(0, 0))
            if self.batcher.entries:
                self.flush()
            self._report()
        finally:
            self._close_store()
        return self.metrics

    def _read(self, room: int, block_s: float) -> list[Entry]:
        """What the read ahead got, if it got anything; else a read now."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            entries = ahead.result()
            if entries:
                return entries
        return self.source.read(room, block_s) if room else []

    def _drained(self) -> bool:
        """Whether nothing waits beyond the open batch (a round trip to the source). No read
        ahead is in flight here, so every entry read and not acknowledged is in the batch."""
        return self.source.lag() <= len(self.batcher.entries)

    def flush(self) -> Path:
        """Land the open batch, write its features, acknowledge it, update the metrics."""
        batch = self.batcher.take()
        if self._reader is not None:  # read the next batch meanwhile (no wait: none may come)
            self._ahead = self._reader.submit(self.source.read, self.batcher.size, 0)
        path = sink.land(self.settings.landing_dir, self.source.name, batch)
        if self.features:
            self._features(batch)
        self.source.ack(batch)
        m = self.metrics
        m.events_total += len(batch)
        m.batches_total += 1
        m.last_batch_events = len(batch)
        m.largest_batch_events = max(m.largest_batch_events, len(batch))
        m.last_file = str(path.relative_to(self.settings.landing_dir))
        self._interval_events += len(batch)
        m.lag_events = self.source.lag()
        m.batch_size = self.batcher.resize(m.lag_events)
        self._write_metrics()
        return path

    def _features(self, batch: list[Entry]) -> None:
        try:
            self._window, rows = streaming_features(self._window, (e.line for e in batch))
            if self._store is None:
                self._store = open_store(self.settings)
                # the version the API serves, looked up again whenever the store is reopened
                self._history_version = serving_history_version(self.settings)
                if self.settle_heap:
                    _settle_heap()
            self.metrics.feature_users_total += write_features(
                self._store, rows, self._history_version
            )
        except Exception as exc:  # landing matters more than features: say so and go on
            self.metrics.feature_errors += 1
            log.warning("streaming features not written: %s", exc)
            self._close_store()  # reopened for the next batch (a Redis restart, say)

    def _close_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def _maybe_report(self) -> None:
        if time.monotonic() - self._interval_start >= self.report_every_s:
            self._report()

    def _report(self) -> None:
        elapsed = max(time.monotonic() - self._interval_start, 1e-9)
        m = self.metrics
        m.events_per_second = round(self._interval_events / elapsed, 1)
        m.lag_events = self.source.lag()
        self._write_metrics()
        files = f"file{'' if m.batches_total == 1 else 's'}"
        progress.phase(
            "stream",
            f"{m.source}: lag {m.lag_events:,}, {m.events_per_second:,.0f} events/s, "
            f"batch ≤{m.batch_size:,}; {m.events_total:,} events in {m.batches_total:,} {files}",
        )
        self._interval_events = 0
        self._interval_start = time.monotonic()

    def _write_metrics(self) -> None:
        self.metrics.updated_at = _now()
        path = metrics_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self.metrics), indent=2))
        tmp.replace(path)
