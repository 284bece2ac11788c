"""Landed micro-batches: immutable files the file ingest loads, named by their positions."""

from __future__ import annotations

from datetime import UTC, datetime

from loopline.ingest.files import SOURCES, load_files
from loopline.stream import sink
from loopline.stream.sources import Entry, LandedRange
from loopline.warehouse import writing
from tests.stream.conftest import event


def test_a_batch_lands_whole_where_the_ingest_loads_events(settings):
    batch = [Entry(f"{i:015d}", event(i)) for i in range(1, 4)]
    at = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    path = sink.land(settings.landing_dir, "spool", batch, at)
    assert path.parent == settings.landing_dir / "events" / "date=2026-03-01"
    assert path.name.startswith("events_20260301T10_stream-spool-")
    assert path.read_text().splitlines() == [e.line for e in batch]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert sink.landed_ranges(settings.landing_dir, "spool") == [
        LandedRange("000000000000001", "000000000000003")
    ]
    assert sink.landed_ranges(settings.landing_dir, "redis") == []

    events = next(s for s in SOURCES if s.name == "events")
    with writing(settings) as con:
        report = load_files(con, settings.landing_dir, "b1", [events], show_progress=False)
        rows = con.execute("select _file, _line_no from raw.events_lines order by 2").fetchall()
    assert report.records == {"events": 3}
    assert rows == [(str(path.relative_to(settings.landing_dir)), n) for n in (1, 2, 3)]


def test_a_half_written_batch_is_invisible_to_the_ingest_and_removed_at_start(settings):
    folder = settings.landing_dir / "events" / "date=2026-03-01"
    folder.mkdir(parents=True)
    partial = folder / ".events_20260301T10_stream-spool-000000000000001-000000000000009.ndjson.tmp"
    partial.write_text(event(1)[:20])
    assert sink.landed_ranges(settings.landing_dir, "spool") == []
    assert sink.remove_partial(settings.landing_dir, "spool") == 1
    assert not partial.exists()
