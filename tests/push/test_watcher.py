"""The landing watcher's rules: which files count, and when a burst is over."""

from __future__ import annotations

from pathlib import Path

from loopline.push.watcher import Burst, drop_patterns, landed


def test_only_drops_count_not_the_catalogue_pages_the_line_writes_itself(tmp_path):
    landing = tmp_path / "landing"
    drops = [
        landing / "events" / "date=2026-01-02" / "events_20260102T10.ndjson",
        landing / "payments" / "payments_20260102.csv",
        landing / "tickets" / "tickets_20260102.ndjson",
    ]
    others = [
        landing / "catalogue" / "shows" / "batch=1" / "page_0001.json",
        landing / "events" / "date=2026-01-02" / ".events_20260102T11.ndjson.tmp",
        landing / "_rejected" / "events" / "date=2026-01-02" / "events_20260102T09.ndjson",
    ]
    for path in drops + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    assert landed(landing, drop_patterns()) == set(drops)


def test_a_burst_is_announced_once_it_is_quiet_or_has_waited_long_enough():
    burst = Burst(quiet_s=3, max_wait_s=10)
    assert not burst.due(0)
    burst.add([Path("a")], now=0)
    burst.add([], now=1)  # nothing new: the burst's clock does not move
    burst.add([Path("b")], now=2)
    assert not burst.due(4.9)  # a file 2.9 s ago: still arriving
    assert burst.due(5)
    assert burst.take() == [Path("a"), Path("b")] and not burst.due(100)
    for second in range(12):  # a steady trickle never goes quiet ...
        burst.add([Path(f"f{second}")], now=20 + second)
        if burst.due(20 + second):
            break
    assert second == 10  # ... so it is announced max_wait_s after its first file
