"""Publish the simulator's viewing events to the stream at a set rate, with an optional spike.

`simulated_lines` continues the simulated company (the state `loopline simulate` saved) a
day at a time *in memory*, without saving it, and yields each day's clean viewing events
as NDJSON lines in arrival order (the simulator's injected defects stay in its file drops).
`publish` paces any lines: `rate` events per second, multiplied by `spike_factor` for
`spike_seconds` from `spike_after_s` on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from loopline.settings import Settings

TICK_S = 0.05  # how often the producer publishes what its rate allows


class Target(Protocol):
    def publish(self, lines: list[str]) -> None: ...


class NothingSimulatedError(RuntimeError):
    """There is no simulated company to continue."""


def simulated_lines(settings: Settings, days: int | None = None) -> Iterator[str]:
    """The clean viewing events of the days after the simulated ones (none saved)."""
    import pyarrow.compute as pc

    from loopline.simulate.engine import simulate_day
    from loopline.simulate.run import load_state
    from loopline.simulate.writers.events import event_lines

    state = load_state(settings)
    if state is None:
        raise NothingSimulatedError(
            f"nothing simulated in {settings.sim_state_dir}: run `loopline simulate` first"
        )
    done = 0
    while days is None or done < days:
        out = simulate_day(state, state.last_day + 1)
        lines = event_lines(state, out.sessions)
        clean = lines.filter(
            pc.and_(pc.equal(lines.column("defect"), 0), pc.equal(lines.column("copy"), 0))
        )
        clean = clean.sort_by([("arrival_ms", "ascending"), ("event_id", "ascending")])
        yield from clean.column("line").to_pylist()
        done += 1


@dataclass(frozen=True)
class Published:
    """What one `publish` call sent."""

    events: int
    seconds: float


def publish(
    target: Target,
    lines: Iterable[str],
    rate: float,
    limit: int | None = None,
    seconds: float | None = None,
    spike_factor: float = 1.0,
    spike_after_s: float = 0.0,
    spike_seconds: float = 0.0,
) -> Published:
    """Send `lines` at `rate` events/s (times `spike_factor` during the spike window) until
    `limit` events or `seconds` have passed or the lines run out."""
    started = time.monotonic()
    spike_end = spike_after_s + spike_seconds
    owed = 0.0
    sent = 0
    last = started
    source = iter(lines)
    exhausted = False
    while not exhausted and (limit is None or sent < limit):
        now = time.monotonic()
        elapsed = now - started
        if seconds is not None and elapsed >= seconds:
            break
        # the rate integrated over the time since the last tick, so a slow tick that
        # straddles the spike (a loaded machine, a slow target) still owes its events
        before = last - started
        overlap = max(0.0, min(elapsed, spike_end) - max(before, spike_after_s))
        owed += (elapsed - before) * rate + overlap * rate * (spike_factor - 1.0)
        last = now
        want = int(owed) if limit is None else min(int(owed), limit - sent)
        chunk: list[str] = []
        for _ in range(want):
            line = next(source, None)
            if line is None:
                exhausted = True
                break
            chunk.append(line)
        if chunk:
            target.publish(chunk)
            sent += len(chunk)
            owed -= len(chunk)
        time.sleep(TICK_S)
    return Published(sent, time.monotonic() - started)
