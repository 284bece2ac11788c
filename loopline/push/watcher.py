"""The landing watcher: new dropped files become ONE Prefect event per burst.

    python -m loopline.push.watcher        # `loopline up` runs it as the `push` service

It polls the landing folder (no extra dependency; a few thousand paths a second is cheap)
for new files of the file-drop sources the ingest loads (events, payments, tickets; the
catalogue pages are written by the line itself and would re-trigger it). Once new files
stop arriving for ``LOOPLINE_PUSH_QUIET_SECONDS`` (or ``LOOPLINE_PUSH_MAX_WAIT_SECONDS``
after the first of them), it emits one ``loopline.landing.files-arrived`` event. The line
deployment's trigger (``LINE_TRIGGER``, the same in ``prefect.yaml``) turns that event into a
line run: fifty files in a few seconds give one run, not fifty. A file that lands while that
run already ingests is announced with the next burst (or picked up by the schedule).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.progress import say
from loopline.settings import Settings, get_settings

EVENT = "loopline.landing.files-arrived"
RESOURCE = "loopline.landing"
# the automation on the line deployment: any announcement starts one run (the watcher has
# already collapsed the burst); declared again in prefect.yaml (a test keeps them equal)
LINE_TRIGGER: dict[str, Any] = {
    "type": "event",
    "enabled": True,
    "match": {"prefect.resource.id": RESOURCE},
    "expect": [EVENT],
    "posture": "Reactive",
    "threshold": 1,
    "within": 0,
}


def drop_patterns() -> list[str]:
    """Globs (under the landing folder) of the files whose arrival should run the line."""
    from loopline.ingest.files import SOURCES

    return [source.pattern for source in SOURCES if source.name != "catalogue"]


def landed(landing: Path, patterns: list[str]) -> set[Path]:
    """The complete files there now (temporary names start with a dot and are skipped)."""
    return {
        path
        for pattern in patterns
        for path in landing.glob(pattern)
        if path.is_file() and not path.name.startswith(".")
    }


@dataclass
class Burst:
    """New files seen since the last announcement, and when they arrived (monotonic s)."""

    quiet_s: float
    max_wait_s: float
    files: list[Path] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0

    def add(self, new: list[Path], now: float) -> None:
        if not new:
            return
        if not self.files:
            self.first_at = now
        self.files.extend(new)
        self.last_at = now

    def due(self, now: float) -> bool:
        """Whether the burst is over (quiet long enough) or has waited long enough."""
        if not self.files:
            return False
        return now - self.last_at >= self.quiet_s or now - self.first_at >= self.max_wait_s

    def take(self) -> list[Path]:
        files, self.files = self.files, []
        return files


def announce(files: list[Path], landing: Path) -> None:
    """Emit the event that triggers the line, naming how many files arrived and a few."""
    from prefect.events import emit_event

    names = sorted(str(p.relative_to(landing)) for p in files)
    emit_event(
        EVENT,
        resource={"prefect.resource.id": RESOURCE, "prefect.resource.name": "landing"},
        payload={"files": len(names), "first": names[:20]},
    )
    say(f"push: {len(names)} new landed file(s): the line is triggered")


def watch(settings: Settings, poll_s: float = 1.0, stop: threading.Event | None = None) -> None:
    """Poll the landing folder until `stop` is set, announcing each burst of new files."""
    landing = settings.landing_dir
    patterns = drop_patterns()
    seen = landed(landing, patterns)  # already there: the schedule's business, not a push
    burst = Burst(settings.push_quiet_seconds, settings.push_max_wait_seconds)
    say(f"push: watching {landing} ({', '.join(patterns)})")
    stop = stop or threading.Event()
    while not stop.wait(poll_s):
        now_files = landed(landing, patterns)
        new = sorted(now_files - seen)
        seen |= now_files
        now = time.monotonic()
        burst.add(new, now)
        if burst.due(now):
            announce(burst.take(), landing)


def main() -> None:  # pragma: no cover - the long-running `push` service
    from prefect.events.worker import EventsWorker

    try:
        watch(get_settings())
    except KeyboardInterrupt:
        pass
    finally:
        EventsWorker.drain_all()


if __name__ == "__main__":  # pragma: no cover
    main()
