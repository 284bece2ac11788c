"""Row 5's spike measures, on lag samples made up to the case: (seconds since the start,
consumer-group lag, events published but not yet queryable)."""

from __future__ import annotations

import pytest

from bench.stream import drain_time, first_back_time

AFTER, SPIKE = 30.0, 10.0  # the spike from 30 s to 40 s


def samples(*points: tuple[float, int]) -> list[tuple[float, int, int]]:
    return [(t, 0, backlog) for t, backlog in points]


# the steady window holds a checkpoint pause (9,000 events), the spike peaks at 80,000, and
# the backlog is down to a few hundred by 46 s; a later pause of 8,000 is the steady state's
STEADY = [(t, 900) for t in range(0, 30, 2)] + [(17.0, 9_000)]
SPIKE_AND_AFTER = [(40.0, 80_000), (43.0, 30_000), (46.0, 700), (50.0, 8_000), (55.0, 600)]


def test_a_pause_as_large_as_the_steady_windows_does_not_count_as_the_spikes_lag() -> None:
    lag = samples(*sorted(STEADY), *SPIKE_AND_AFTER)
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=100.0) == pytest.approx(6.0)
    assert first_back_time(lag, AFTER, SPIKE) == pytest.approx(6.0)


def test_a_later_excursion_above_the_steady_level_moves_the_mark_for_good_only() -> None:
    lag = samples(*sorted(STEADY), *SPIKE_AND_AFTER, (60.0, 20_000), (62.0, 500))
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=100.0) == pytest.approx(22.0)
    assert first_back_time(lag, AFTER, SPIKE) == pytest.approx(6.0)


def test_a_backlog_never_back_runs_until_every_event_was_queryable() -> None:
    lag = samples(*sorted(STEADY), (40.0, 80_000), (50.0, 40_000), (60.0, 20_000))
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=71.5) == pytest.approx(31.5)
    assert first_back_time(lag, AFTER, SPIKE) is None


def test_a_spike_that_never_raised_the_backlog_drains_in_no_time() -> None:
    lag = samples(*sorted(STEADY), (40.0, 900), (45.0, 800))
    assert drain_time(lag, AFTER, SPIKE, all_queryable_s=50.0) == 0.0
    assert first_back_time(lag, AFTER, SPIKE) == pytest.approx(0.0)
