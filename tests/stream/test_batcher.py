"""Micro-batches close at a count or an age, and their count grows while the consumer lags."""

from __future__ import annotations

from loopline.stream.batcher import Batcher
from loopline.stream.sources import Entry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entries(n: int) -> list[Entry]:
    return [Entry(f"{i:015d}", f"line {i}") for i in range(n)]


def test_a_batch_closes_when_full():
    batcher = Batcher(base=5, ceiling=50, max_age_s=60, clock=Clock())
    batcher.add(entries(4))
    assert not batcher.due() and batcher.room() == 1
    batcher.add(entries(1))
    assert batcher.due()
    assert len(batcher.take()) == 5 and not batcher.entries and batcher.room() == 5


def test_a_batch_closes_when_its_oldest_event_waited_long_enough():
    clock = Clock()
    batcher = Batcher(base=100, ceiling=100, max_age_s=2.0, clock=clock)
    assert not batcher.due()  # an empty batch never closes
    batcher.add(entries(1))
    clock.now = 1.5
    assert not batcher.due() and batcher.wait_s() == 0.5
    clock.now = 2.0
    assert batcher.due()


def test_the_batch_grows_under_a_spike_up_to_the_ceiling_then_shrinks_back():
    batcher = Batcher(base=10, ceiling=70, max_age_s=1.0)
    sizes = [batcher.resize(lag=10_000) for _ in range(5)]
    assert sizes == [20, 40, 70, 70, 70]
    assert batcher.resize(lag=30) == 70  # still more than a quarter of a batch waits
    assert [batcher.resize(lag=0) for _ in range(4)] == [35, 17, 10, 10]


def test_a_grown_batch_closes_as_soon_as_nothing_more_waits_and_a_small_one_keeps_waiting():
    batcher = Batcher(base=5, ceiling=50, max_age_s=60, clock=Clock())
    assert [batcher.resize(lag=1_000) for _ in range(2)] == [10, 20]  # grown under a backlog
    batcher.add(entries(12))
    assert not batcher.due()  # more may still come within the age bound
    asked: list[bool] = []

    def drained() -> bool:
        asked.append(True)
        return True

    assert batcher.due(drained) and asked  # the backlog is gone
    batcher.take()
    asked.clear()
    batcher.add(entries(4))  # below `base`: a trickle waits for its age, drained or not
    assert not batcher.due(drained) and not asked  # nor is the source asked
