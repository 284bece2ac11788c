"""The producer's pacing: it sends what its rate owes, spike included, however slow a tick is."""

from __future__ import annotations

import time

from loopline.stream.producer import publish


class SlowTarget:
    """A target whose first publish takes `stall_s` (a loaded machine, a slow broker)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.lines: list[str] = []

    def publish(self, lines: list[str]) -> None:
        if not self.lines and self.stall_s:
            time.sleep(self.stall_s)
        self.lines.extend(lines)


def test_a_tick_that_straddles_the_spike_still_sends_the_spikes_events():
    # the first publish (at about 0.05 s) stalls until past the whole spike window
    target = SlowTarget(stall_s=1.0)
    lines = (f"e{i}" for i in range(100_000))
    sent = publish(
        target, lines, rate=100, seconds=2.0, spike_factor=30, spike_after_s=0.3, spike_seconds=0.5
    )
    # 100/s for 2 s plus 29 x 100/s for 0.5 s: about 1,650; nothing of the spike is lost
    assert sent.events == len(target.lines)
    assert sent.events >= 1_450 + 100  # the spike's 1,450 extra events and most of the base
    assert target.lines == [f"e{i}" for i in range(sent.events)]


def test_without_a_spike_the_rate_is_kept_and_a_limit_stops_it():
    target = SlowTarget(stall_s=0.0)
    sent = publish(target, (f"e{i}" for i in range(10_000)), rate=1_000, limit=300)
    assert sent.events == 300 == len(target.lines)
    # 300 events at 1,000/s take at least 0.3 s minus one tick
    assert sent.seconds >= 0.25
