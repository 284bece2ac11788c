"""The serving prediction log: every answer appended to JSON-lines files, off the request path.

Records go on an in-memory queue (no I/O on the request path) and a background thread appends
them to ``<folder>/date=YYYY-MM-DD/predictions-<pid>-<n>.jsonl``; `close` drains the queue.

The log is bounded: a file rotates to the next ``<n>`` once it reaches ``max_file_bytes``, and
after every rotation (and at start) the oldest files beyond ``keep_files`` and the day folders
older than ``keep_days`` are deleted. The settings ``LOOPLINE_PREDICTION_LOG_*`` set the three.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("loopline.serve")


class PredictionLog:
    """Appends records to JSON-lines files from a background thread; `put` never blocks."""

    def __init__(
        self,
        folder: Path,
        linger_seconds: float = 0.05,
        max_file_bytes: int = 32 * 1024 * 1024,
        keep_files: int = 64,
        keep_days: int = 30,
    ) -> None:
        self.folder = folder
        self.linger_seconds = linger_seconds
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        self.keep_days = keep_days
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="loopline-prediction-log", daemon=True
        )
        self.written = 0
        self.rotations = 0
        self._open: dict[str, _File] = {}
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Queue one record (called on the request path)."""
        self._queue.put(record)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _file(self, day: str, after: int = -1) -> _File:
        """The file to append to for `day`: this process's first one with room after `after`."""
        folder = self.folder / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        n = after + 1
        while True:
            path = folder / f"predictions-{os.getpid()}-{n}.jsonl"
            size = path.stat().st_size if path.exists() else 0
            if size < self.max_file_bytes:
                return _File(n, path, path.open("a", encoding="utf-8"), size)
            n += 1

    def prune(self) -> list[Path]:
        """Delete day folders older than `keep_days` and the oldest files beyond `keep_files`
        (never a file this log has open); return what was deleted."""
        deleted: list[Path] = []
        oldest_kept = (date.today() - timedelta(days=self.keep_days)).isoformat()
        for folder in sorted(self.folder.glob("date=*")):
            if folder.is_dir() and folder.name.removeprefix("date=") < oldest_kept:
                shutil.rmtree(folder, ignore_errors=True)
                deleted.append(folder)
        open_paths = {f.path for f in self._open.values()}
        files = [p for p in self.folder.glob("date=*/*.jsonl") if p not in open_paths]
        extra = len(files) + len(open_paths) - self.keep_files
        if extra > 0:
            files.sort(key=lambda p: (p.stat().st_mtime, str(p)))
            for path in files[:extra]:
                path.unlink(missing_ok=True)
                deleted.append(path)
        for folder in self.folder.glob("date=*"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if deleted:
            log.info("prediction log: deleted %d old file(s) or folder(s)", len(deleted))
        return deleted

    def _write(self, item: dict[str, Any]) -> None:
        day = str(item["logged_at"])[:10]
        line = json.dumps(item, default=str) + "\n"
        size = len(line.encode())
        current = self._open.get(day)
        if current is None:
            current = self._open[day] = self._file(day)
        elif current.size and current.size + size > self.max_file_bytes:
            current.handle.close()
            current = self._open[day] = self._file(day, after=current.n)
            self.rotations += 1
            self.prune()
        current.handle.write(line)
        current.size += size
        self.written += 1

    def _run(self) -> None:
        try:
            self.prune()
        except OSError:  # a log that cannot prune still logs
            log.exception("prediction log: pruning failed")
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
                    self._write(item)
                for current in self._open.values():
                    current.handle.flush()
        finally:
            for current in self._open.values():
                current.handle.close()


class _File:
    """One open log file: its rotation number, path, handle and size so far."""

    def __init__(self, n: int, path: Path, handle: IO[str], size: int) -> None:
        self.n = n
        self.path = path
        self.handle = handle
        self.size = size
