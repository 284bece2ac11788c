"""A file lock that queues: a waiter waits (bounded), saying who holds the lock and since when.

`exclusive_file(lock, what)` takes an exclusive `flock` on `lock`, polling so it can give up
after `timeout_s` and tell the user who is in the way (the holder writes its pid, command
line and start time into the lock file once it holds it). The lock belongs to the open file,
so it goes with the process: a killed holder never leaves a stale lock behind. Re-entrant
within a process (a nested take of the same lock yields at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

# lock files this process holds: flock locks belong to an open file, so a second open and
# lock of the same file in the same process would wait for itself
_HELD: set[Path] = set()


class LockBusyError(RuntimeError):
    """Another process held the lock for longer than the caller would wait."""


def holds(lock: Path) -> bool:
    """True when this process holds `lock`."""
    return lock.resolve() in _HELD


def holder(lock: Path) -> str:
    """Who holds (or last held) `lock`: "pid 123 (loopline ingest) since 21:30:05"."""
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info:
        return "another process"
    since = datetime.fromtimestamp(float(info.get("since", 0))).strftime("%H:%M:%S")
    return f"pid {info.get('pid')} ({info.get('command', '?')}) since {since}"


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:120]


def _say(note: str) -> None:
    from loopline import progress

    progress.logger.info(note)
    progress.say(note)


@contextmanager
def exclusive_file(
    lock: Path,
    what: str,
    timeout_s: float = 1800.0,
    waiting_note_s: float = 2.0,
    note: Callable[[str], None] = _say,
    busy: Callable[[str], Exception] = LockBusyError,
) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock`, waiting for another holder up to `timeout_s`.

    `what` names what the lock guards in the messages ("the catalogue cursor"). A waiter
    reports who holds it after `waiting_note_s`, then every minute, through `note`; after
    `timeout_s` it raises `busy(message)`.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    if holds(lock):
        yield
        return
    with lock.open("a+") as handle:
        started = time.monotonic()
        next_note = started + waiting_note_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - started > timeout_s:
                    raise busy(
                        f"{holder(lock)} has held {what} for over {timeout_s:.0f} s "
                        f"(lock {lock}); wait for it or stop it"
                    ) from None
                if now >= next_note:
                    note(
                        f"waiting for {what}: {holder(lock)} holds it "
                        f"(waited {now - started:.0f} s)"
                    )
                    next_note = now + 60.0
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "command": _command_line(), "since": time.time()})
        )
        handle.flush()
        held = lock.resolve()
        _HELD.add(held)
        try:
            yield
        finally:
            _HELD.discard(held)
            fcntl.flock(handle, fcntl.LOCK_UN)
