"""The serving prediction log: every answer appended to JSON-lines files, off the request path.

Records go on an in-memory queue (no I/O on the request path) and a background thread appends
them to ``<folder>/date=YYYY-MM-DD/predictions-<pid>.jsonl``; `close` drains the queue.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any


class PredictionLog:
    """Appends records to JSON-lines files from a background thread; `put` never blocks."""

    def __init__(self, folder: Path, linger_seconds: float = 0.05) -> None:
        self.folder = folder
        self.linger_seconds = linger_seconds
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="loopline-prediction-log", daemon=True
        )
        self.written = 0
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Queue one record (called on the request path)."""
        self._queue.put(record)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _path(self, day: str) -> Path:
        path = self.folder / f"date={day}" / f"predictions-{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _run(self) -> None:
        handles: dict[str, Any] = {}
        try:
            while True:
                record = self._queue.get()
                # let a burst gather (sleeping releases the GIL): one wake-up and one
                # flush per burst instead of per request, so the request thread rarely waits
                time.sleep(self.linger_seconds)
                batch = [record]
                while True:  # drain what else is waiting: one flush per burst
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                for item in batch:
                    if item is None:
                        return
                    day = str(item["logged_at"])[:10]
                    if day not in handles:
                        handles[day] = self._path(day).open("a", encoding="utf-8")
                    handles[day].write(json.dumps(item, default=str) + "\n")
                    self.written += 1
                for handle in handles.values():
                    handle.flush()
        finally:
            for handle in handles.values():
                handle.close()
