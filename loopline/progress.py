"""Progress a person can follow: one line per phase, a bar on every step that takes a while.

Steps in `loopline/`, `ml/` and `flows/` report through this module and never print
directly, so the same code shows bars in a terminal, throttled log lines in a Prefect
worker's log (and the Prefect UI), and nothing in tests unless asked:

    with track("simulating days", total=120, unit="days") as bar:
        for day in days:
            ...
            bar.advance()
    phase("simulate", "120 days, 879,123 events", seconds=16.2)

Where output goes is decided by ``LOOPLINE_PROGRESS``:

- ``auto`` (default): ``bar`` when stderr is a terminal, ``quiet`` otherwise;
- ``bar``: draw bars (rich, transient: they vanish when done);
- ``log``: no bars; print a line at the start, every quarter and the end of each step;
- ``quiet``: no bars and no step lines on the terminal;
- ``off``: nothing on the terminal at all, phase lines included.

Everything (phase lines and step progress) also goes to the ``loopline`` logger, which
Prefect forwards to a flow run's logs (``PREFECT_LOGGING_EXTRA_LOGGERS=loopline``), so the
UI shows progress of a run started by a worker. Phase lines are printed one per line, cut to
the terminal's width, in every mode but ``off``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Mode = Literal["bar", "log", "quiet", "off"]
T = TypeVar("T")

logger = logging.getLogger("loopline")
logger.setLevel(logging.INFO)
logger.propagate = False  # the terminal gets what this module prints; handlers forward the rest
_lock = threading.RLock()
_live: Progress | None = None
_active = 0
_console: Console | None = None


def mode() -> Mode:
    """How progress is shown in this process (see the module docstring)."""
    wanted = os.environ.get("LOOPLINE_PROGRESS", "auto").strip().lower()
    if wanted in ("bar", "log", "quiet", "off"):
        return wanted  # type: ignore[return-value]
    return "bar" if sys.stderr.isatty() else "quiet"


def console() -> Console:
    """The console phase lines and bars are drawn on (stderr, so stdout stays data)."""
    global _console
    with _lock:
        if _console is None:
            _console = Console(stderr=True, highlight=False, soft_wrap=False)
        return _console


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} m {rest:02d} s"


def phase(name: str, summary: str, seconds: float | None = None, *, ok: bool = True) -> str:
    """Report one finished phase on one line; return the line (without markup)."""
    timing = f" ({_fmt_seconds(seconds)})" if seconds is not None else ""
    head = f"{name:<10} "
    line = f"{head}{summary}{timing}"
    logger.info(line if ok else f"warning: {line}")
    if mode() != "off":
        mark = "[green]✓[/green]" if ok else "[yellow]![/yellow]"
        shown = head + _fit(summary, 2 + len(head) + len(timing)) + timing
        say(f"{mark} {_escape(shown)}")
    return line


def say(markup: str) -> None:
    """Print one line of rich markup above any live bars (nothing in ``off`` mode)."""
    if mode() == "off":
        return
    with _lock:
        target = _live.console if _live is not None else console()
        target.print(markup, overflow="ellipsis", no_wrap=True, crop=True)


def _fit(text: str, reserved: int = 0) -> str:
    """`text` cut to the terminal's width (minus `reserved` columns) with an ellipsis."""
    width = max(console().width - reserved, 10)
    return text if len(text) <= width else text[: width - 1] + "…"


def _step_line(text: str) -> None:
    """A step's progress as a log record, and on the terminal in ``log`` mode."""
    logger.info(text)
    if mode() == "log":
        say(f"  {_escape(_fit(text, 2))}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


class Tracker:
    """A handle on one running step: advance it, or change its total or description."""

    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.started = time.monotonic()
        self._task: TaskID | None = None
        self._next_log = 0.25

    def advance(self, amount: float = 1) -> None:
        """Count `amount` more units done."""
        with _lock:
            self.completed += amount
            if self._task is not None and _live is not None:
                _live.update(self._task, completed=self.completed)
            elif self.total:
                share = self.completed / self.total
                while share >= self._next_log and self._next_log < 1.0:
                    _step_line(
                        f"{self.description}: {self.completed:,.0f}/{self.total:,.0f} "
                        f"{self.unit} ({round(self._next_log * 100)}%)"
                    )
                    self._next_log += 0.25

    def set_total(self, total: float | None) -> None:
        """Change how many units the step has (known only after it started, say)."""
        with _lock:
            self.total = total
            if self._task is not None and _live is not None:
                _live.update(self._task, total=total)

    def note(self, text: str) -> None:
        """Say what the step is doing now: beside its bar, or as a step line of its own (a
        long step with few units, dbt's feature batches say, shows it is moving)."""
        with _lock:
            if self._task is not None and _live is not None:
                _live.update(self._task, description=_escape(f"{self.description}: {text}"))
                logger.info(f"{self.description}: {text}")
            else:
                _step_line(f"{self.description}: {text}")

    def set_description(self, description: str) -> None:
        """Change the text shown beside the bar."""
        with _lock:
            self.description = description
            if self._task is not None and _live is not None:
                _live.update(self._task, description=_escape(description))


def _start_bar(tracker: Tracker) -> None:
    global _live, _active
    if _live is None:
        _live = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console(),
            transient=True,
            refresh_per_second=5,
        )
        _live.start()
    _active += 1
    tracker._task = _live.add_task(
        _escape(tracker.description), total=tracker.total, unit=tracker.unit
    )


def _stop_bar(tracker: Tracker) -> None:
    global _live, _active
    if _live is None or tracker._task is None:
        return
    _live.remove_task(tracker._task)
    tracker._task = None
    _active -= 1
    if _active <= 0:
        _live.stop()
        _live = None
        _active = 0


@contextmanager
def track(description: str, total: float | None = None, unit: str = "") -> Iterator[Tracker]:
    """Show a bar (or log lines) for one step while the block runs."""
    tracker = Tracker(description, total, unit)
    shown = mode()
    with _lock:
        if shown == "bar":
            _start_bar(tracker)
        else:
            _step_line(f"{description}: started" + (f" ({total:,.0f} {unit})" if total else ""))
    try:
        yield tracker
    finally:
        with _lock:
            if shown == "bar":
                _stop_bar(tracker)
            else:
                elapsed = _fmt_seconds(time.monotonic() - tracker.started)
                _step_line(
                    f"{tracker.description}: done, {tracker.completed:,.0f} {tracker.unit} "
                    f"in {elapsed}"
                )


def iterate(
    items: Iterable[T], description: str, total: int | None = None, unit: str = ""
) -> Iterator[T]:
    """Yield from `items`, advancing a bar by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with track(description, total, unit) as bar:
        for item in items:
            yield item
            bar.advance()
