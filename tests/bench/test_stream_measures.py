"""Row 5's spike measures, on lag samples made up to the case: (seconds since the start,
consumer-group lag, events published but not yet queryable)."""

from __future__ import annotations

import pytest

from bench.stream import HOLD_S, _Recording, drain_time, settle_time

AFTER, SPIKE = 30.0, 10.0  # the spike from 30 s to 40 s


def samples(*points: tuple[float, int]) -> list[tuple[float, int, int]]:
    return sorted((t, 0, backlog) for t, backlog in points)


def steady(start: float, end: float, backlog: int = 900) -> list[tuple[float, int]]:
    return [(start + 0.5 * i, backlog) for i in range(int((end - start) / 0.5))]


# the steady window holds a checkpoint pause (9,000 events at 17 s); the spike peaks at
# 80,000 and the backlog is down to the steady 900 at 46 s
BEFORE = [*steady(0.0, 30.0), (17.0, 9_000)]
DRAIN = [(40.0, 80_000), (43.0, 30_000), *steady(46.0, 80.0)]


def test_a_pause_as_large_as_the_steady_windows_counts_as_steady() -> None:
    lag = samples(*BEFORE, *DRAIN, (60.0, 8_000))
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=80.0) == pytest.approx(6.0)
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=80.0) == pytest.approx(6.0)


def test_a_later_pause_above_the_level_moves_the_mark_for_good_only() -> None:
    lag = samples(*BEFORE, *DRAIN, (60.0, 20_000))
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=80.0) == pytest.approx(6.0)
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=80.0) == pytest.approx(20.5)


def test_a_dip_shorter_than_the_hold_is_not_drained() -> None:
    dip = [(40.0, 80_000), (43.0, 500), (43.5, 40_000), (45.0, 30_000), *steady(48.0, 80.0)]
    lag = samples(*BEFORE, *dip)
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=80.0) == pytest.approx(8.0)


def test_a_low_backlog_before_the_producer_sent_the_spike_is_not_drained() -> None:
    """A producer behind its schedule: the backlog is low because the spike is not in the
    stream yet (its excess arrives up to 12 s after the spike's end)."""
    late = [*steady(40.0, 45.0), (52.0, 90_000), (55.0, 20_000), *steady(58.0, 80.0)]
    lag = samples(*BEFORE, *late)
    assert settle_time(lag, AFTER, SPIKE, 12.0, all_queryable_s=80.0) == pytest.approx(18.0)
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=80.0) == pytest.approx(0.0)


def test_a_backlog_never_back_runs_until_every_event_was_queryable() -> None:
    lag = samples(*BEFORE, (40.0, 80_000), (50.0, 40_000), (60.0, 20_000))
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=71.5) == pytest.approx(31.5)
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=71.5) == pytest.approx(31.5)


def test_a_run_ending_inside_the_hold_is_not_drained_before_its_end() -> None:
    lag = samples(*BEFORE, (40.0, 80_000), (42.0, 700), (42.0 + HOLD_S - 1.0, 700))
    assert settle_time(lag, AFTER, SPIKE, 0.0, all_queryable_s=47.0) == pytest.approx(7.0)


class _Target:
    PUBLISH_SLICE = 3

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def publish(self, lines: list[str]) -> None:
        self.calls.append(lines)


def test_a_large_chunk_is_recorded_slice_by_slice() -> None:
    """The sampler's count of events in the stream grows with each round trip, so the
    backlog is never counted below zero while a late tick's large chunk goes out."""
    recording = _Recording(_Target())
    recording.publish([f"e{i}" for i in range(7)])
    assert recording.counts == [3, 6, 7]
    assert [len(c) for c in recording.target.calls] == [3, 3, 1]
    assert recording.delivered_by(4) == recording.times[1]
    assert recording.delivered_by(8) is None
