"""Micro-batches bounded by count and age, whose count grows while the consumer is behind.

At a steady rate a batch closes at `base` events or when its oldest event has waited
`max_age_s`, whichever comes first. After each batch the consumer tells the batcher how
many events still wait (the lag): while more wait than one batch holds, the next batch is
twice as large (up to `ceiling`), so a producer spike costs a few large files instead of a
backlog that never shrinks; once the lag falls below a quarter of a batch, the size halves
back towards `base`. A grown batch that holds at least `base` events also closes as soon as
nothing more waits (the consumer says so): the backlog it grew for is gone, and waiting out
`max_age_s` would only hold back its last events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loopline.stream.sources import Entry


@dataclass
class Batcher:
    """Collects entries into one batch at a time (see the module docstring)."""

    base: int
    ceiling: int
    max_age_s: float
    clock: Callable[[], float] = time.monotonic
    size: int = 0  # the current count bound
    entries: list[Entry] = field(default_factory=list)
    _opened: float | None = None

    def __post_init__(self) -> None:
        self.ceiling = max(self.ceiling, self.base)
        self.size = self.size or self.base

    def room(self) -> int:
        """Return how many more entries the open batch takes."""
        return max(self.size - len(self.entries), 0)

    def add(self, entries: Sequence[Entry]) -> None:
        """Put entries into the open batch (opening it with the first)."""
        if entries and self._opened is None:
            self._opened = self.clock()
        self.entries.extend(entries)

    def wait_s(self) -> float:
        """Return how long the open batch may still wait for more entries."""
        if self._opened is None:
            return self.max_age_s
        return max(self.max_age_s - (self.clock() - self._opened), 0.0)

    def due(self, drained: Callable[[], bool] | None = None) -> bool:
        """Return whether the open batch is full, or its oldest entry has waited long enough,
        or it holds at least `base` entries and `drained()` says nothing more waits (called
        only then: asking the source may cost a round trip)."""
        if not self.entries:
            return False
        if len(self.entries) >= self.size or self.wait_s() <= 0:
            return True
        return drained is not None and len(self.entries) >= self.base and drained()

    def take(self) -> list[Entry]:
        """Return the open batch and start a new one."""
        batch, self.entries, self._opened = self.entries, [], None
        return batch

    def resize(self, lag: int) -> int:
        """Adapt the count bound to `lag` events still waiting; return the new bound."""
        if lag > self.size:
            self.size = min(self.size * 2, self.ceiling)
        elif lag < self.size // 4:
            self.size = max(self.size // 2, self.base)
        return self.size
