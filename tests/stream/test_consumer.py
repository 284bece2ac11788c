"""The consumer: every event lands once, across crashes and spikes, and lag returns to zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from loopline.ingest.files import SOURCES, load_files
from loopline.settings import Settings
from loopline.stream.consumer import Consumer, read_metrics
from loopline.stream.producer import publish
from loopline.stream.sources import (
    Entry,
    RedisSource,
    RedisTarget,
    SpoolSource,
    SpoolTarget,
    open_source,
)
from loopline.warehouse import writing
from tests.stream.conftest import REDIS_URL, event, landed_ids

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 180  # generous bound on a busy 2-core machine; never a timing assertion


def wait_for(check, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            pytest.fail(f"{what} did not happen within {WAIT_S} s\n{tail}")
        time.sleep(0.1)


class DiesBeforeAck(SpoolSource):
    """A spool source whose process 'dies' right after its first batch landed."""

    def ack(self, entries):
        raise SystemExit("killed between landing and acknowledging")


def test_a_batch_landed_but_not_acknowledged_is_not_landed_again(settings):
    spool = settings.resolved_stream_spool_path
    offsets = settings.stream_dir / "spool.offset"
    SpoolTarget(spool).publish([event(i) for i in range(25)])
    with pytest.raises(SystemExit):
        Consumer(settings, DiesBeforeAck(spool, offsets), features=False).run(idle_exit_s=0.1)
    assert len(landed_ids(settings.landing_dir)) == 10  # one batch landed, none acknowledged

    restarted = Consumer(settings, SpoolSource(spool, offsets), features=False)
    metrics = restarted.run(idle_exit_s=0.1)
    assert metrics.recovered_events == 10
    ids = landed_ids(settings.landing_dir)
    assert Counter(ids) == Counter(f"e{i}" for i in range(25))  # each once
    assert metrics.lag_events == 0


class DiesAfterAck(SpoolSource):
    """A spool source whose process dies right after it acknowledged its first batch."""

    def ack(self, entries):
        super().ack(entries)
        raise SystemExit("killed after acknowledging")


class DiesInTheFeatures(Consumer):
    """A consumer whose process dies while it writes its first batch's features."""

    def _features(self, batch):
        raise SystemExit("killed while writing the features")


def _streamed_shows(settings) -> dict[str, str]:
    """user -> the show of their latest streamed event, from the online store."""
    from loopline.stream.features import STREAM_FEATURE_SET, STREAM_FEATURE_SET_VERSION
    from ml.features.online import open_online_store

    with open_online_store(settings) as store:
        vectors = store.get(STREAM_FEATURE_SET, list(range(8)), STREAM_FEATURE_SET_VERSION)
    return {str(u): str(v.values["last_watched_show"]) for u, v in enumerate(vectors) if v}


# users 0..3 watch only in the first batch of 10 events, users 4..7 only afterwards
FIRST_USERS = [event(i, user=i % 4, show=f"sh_{i}") for i in range(10)]
LATER_USERS = [event(i, user=4 + i % 4, show=f"sh_{i}") for i in range(10, 25)]
LATEST_SHOWS = {  # user -> the show of their latest event (the events are in time order)
    str(doc["user_id"]): doc["show_id"] for doc in map(json.loads, FIRST_USERS + LATER_USERS)
}


def test_the_features_of_a_batch_acknowledged_just_before_a_crash_are_not_lost(settings):
    """A crash right after the acknowledgement: the batch's features were written before it
    (they used to be written after, and were lost: nothing reads an acknowledged batch)."""
    spool = settings.resolved_stream_spool_path
    offsets = settings.stream_dir / "spool.offset"
    SpoolTarget(spool).publish(FIRST_USERS + LATER_USERS)
    with pytest.raises(SystemExit):
        Consumer(settings, DiesAfterAck(spool, offsets)).run(idle_exit_s=0.1)
    Consumer(settings, SpoolSource(spool, offsets)).run(idle_exit_s=0.1)
    assert Counter(landed_ids(settings.landing_dir)) == Counter(f"e{i}" for i in range(25))
    assert _streamed_shows(settings) == LATEST_SHOWS  # users 0..3 from the first batch


def test_a_batch_landed_before_its_features_were_written_gets_them_at_the_restart(settings):
    """Landed, then the process died while writing its features (not acknowledged): the
    restart writes them from the landed file, and acknowledges it without landing it again."""
    spool = settings.resolved_stream_spool_path
    offsets = settings.stream_dir / "spool.offset"
    SpoolTarget(spool).publish(FIRST_USERS + LATER_USERS)
    with pytest.raises(SystemExit):
        DiesInTheFeatures(settings, SpoolSource(spool, offsets)).run(idle_exit_s=0.1)
    assert _streamed_shows(settings) == {}
    metrics = Consumer(settings, SpoolSource(spool, offsets)).run(idle_exit_s=0.1)
    assert metrics.recovered_events == 10
    assert Counter(landed_ids(settings.landing_dir)) == Counter(f"e{i}" for i in range(25))
    assert _streamed_shows(settings) == LATEST_SHOWS  # users 0..3 from the first batch


def test_a_spike_grows_the_batches_and_the_lag_returns_to_zero(settings):
    spool = settings.resolved_stream_spool_path
    consumer = Consumer(settings, open_source(settings), report_every_s=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        lines = [event(i, user=i % 7, session=f"s{i // 50}") for i in range(3000)]
        # 100 events/s, then 30 times as many for half a second
        sent = publish(
            SpoolTarget(spool), lines, rate=100, seconds=5, spike_factor=30,
            spike_after_s=0.5, spike_seconds=0.5,
        )  # fmt: skip

        def drained() -> bool:
            metrics = read_metrics(settings) or {}
            return metrics.get("events_total") == sent.events and metrics.get("lag_events") == 0

        wait_for(drained, "draining the stream after the spike")
    finally:
        stop.set()
        thread.join(timeout=60)
    metrics = read_metrics(settings)
    assert metrics is not None
    assert sent.events > 1000  # the spike happened
    assert metrics["largest_batch_events"] > settings.stream_batch_events  # batches grew
    assert metrics["largest_batch_events"] <= settings.stream_batch_max_events  # bounded
    assert metrics["feature_users_total"] > 0 and metrics["feature_errors"] == 0
    assert Counter(landed_ids(settings.landing_dir)) == Counter(f"e{i}" for i in range(sent.events))


@pytest.mark.parametrize("backend", ["spool", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_tail_of_a_backlog_lands_without_waiting_out_the_batch_age(settings, backend, request):
    """A backlog grows the batches; its last, partial batch lands once nothing more waits,
    not after the age bound (an hour here). A trickle below the base size still waits."""
    settings = settings.model_copy(update={"stream_batch_seconds": 3600.0})
    if backend == "redis":
        key = request.getfixturevalue("redis_key")
        settings = settings.model_copy(update={"stream_url": REDIS_URL})
        source, target = open_source(settings, key), RedisTarget(REDIS_URL, key)
    else:
        source, target = open_source(settings), SpoolTarget(settings.resolved_stream_spool_path)
    # base 10: batches of 10, 20, 40, then the 25 left, fewer than the grown size of 40
    target.publish([event(i) for i in range(95)])
    consumer = Consumer(settings, source, features=False)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: consumer.metrics.events_total == 95, "the backlog's tail to land")
        assert consumer.metrics.largest_batch_events > settings.stream_batch_events
        assert source.lag() == 0
        target.publish([event(i) for i in range(95, 98)])  # 3 events: below the base size
        time.sleep(1.0)  # not a timing bound: they may only land at the hour's age, or at stop
        assert consumer.metrics.events_total == 95
    finally:
        stop.set()
        thread.join(timeout=60)
        target.close()
    assert landed_ids(settings.landing_dir) == [f"e{i}" for i in range(98)]  # in order, once


def _consumer(settings: Settings, log: Path, batch_seconds: float, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOOPLINE_DATA_DIR": str(settings.data_dir),
        "LOOPLINE_STREAM_BATCH_EVENTS": "200",
        "LOOPLINE_STREAM_BATCH_MAX_EVENTS": "200",
        "LOOPLINE_STREAM_BATCH_SECONDS": str(batch_seconds),
        "LOOPLINE_PROGRESS": "log",
    }
    if settings.stream_url:
        env["LOOPLINE_STREAM_URL"] = settings.stream_url
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "loopline.cli", "stream", "--report-every", "1", *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["spool", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_consumer_killed_mid_batch_and_restarted_lands_every_event_once(
    settings, backend, request, tmp_path
):
    """SIGKILL while a batch is open; restart; every event id is in the warehouse once."""
    args: list[str] = []
    if backend == "redis":
        key = request.getfixturevalue("redis_key")
        settings = settings.model_copy(update={"stream_url": REDIS_URL})
        target: SpoolTarget | RedisTarget = RedisTarget(REDIS_URL, key)
        args = ["--key", key]
    else:
        target = SpoolTarget(settings.resolved_stream_spool_path)
    sent = [event(i) for i in range(1100)]
    target.publish(sent)
    log = tmp_path / "stream.log"

    # batches of 200 close by count only: five land, the last 100 events wait in an open batch
    first = _consumer(settings, log, 600, *args)
    wait_for(lambda: (read_metrics(settings) or {}).get("events_total") == 1000, "5 batches", log)
    if backend == "redis":  # the open batch's events were delivered and are unacknowledged
        source = RedisSource(REDIS_URL, key, consumer="watcher")
        client = source._client
        wait_for(lambda: client.xpending(key, "loopline-landing")["pending"] == 100, "reads", log)
        source.close()
    else:
        time.sleep(0.5)  # let it read the rest of the spool (not asserted: it cannot be seen)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert len(landed_ids(settings.landing_dir)) == 1000

    second = _consumer(settings, log, 0.2, "--idle-exit", "1", *args)
    assert second.wait(timeout=WAIT_S) == 0, log.read_text()[-2000:]
    target.close()

    expected = Counter(json.loads(line)["event_id"] for line in sent)
    assert Counter(landed_ids(settings.landing_dir)) == expected
    assert (read_metrics(settings) or {}).get("lag_events") == 0
    # the file ingest loads each landed file once: every event id once in raw
    events = next(s for s in SOURCES if s.name == "events")
    with writing(settings) as con:
        load_files(con, settings.landing_dir, "b1", [events], show_progress=False)
        load_files(con, settings.landing_dir, "b2", [events], show_progress=False)  # a rerun
        rows = con.execute(
            "select line::json ->> '$.event_id', count(*) from raw.events_lines group by 1"
        ).fetchall()
    assert dict(rows) == dict(expected)


def test_every_entry_of_a_batch_lands_in_stream_order(settings):
    entries = [Entry(f"{i:015d}", event(i)) for i in range(1, 4)]
    SpoolTarget(settings.resolved_stream_spool_path).publish([e.line for e in entries])
    Consumer(settings, open_source(settings), features=False).run(idle_exit_s=0.1)
    assert landed_ids(settings.landing_dir) == ["e1", "e2", "e3"]


def test_the_consumer_keeps_landing_while_the_warehouse_writer_is_busy(settings, tmp_path):
    """The warehouse is held (open, under the writer lock) for the whole run."""
    SpoolTarget(settings.resolved_stream_spool_path).publish([event(i) for i in range(50)])
    log = tmp_path / "stream.log"
    with writing(settings):
        consumer = _consumer(settings, log, 0.2, "--idle-exit", "0.5")
        try:
            assert consumer.wait(timeout=WAIT_S) == 0, log.read_text()[-2000:]
        finally:
            consumer.kill()
        assert Counter(landed_ids(settings.landing_dir)) == Counter(f"e{i}" for i in range(50))


def test_an_unreachable_online_store_costs_features_not_events(settings):
    broken = settings.model_copy(update={"online_store_url": "redis://127.0.0.1:1/0"})
    SpoolTarget(broken.resolved_stream_spool_path).publish([event(i) for i in range(25)])
    metrics = Consumer(broken, open_source(broken)).run(idle_exit_s=0.1)
    assert metrics.feature_errors == metrics.batches_total > 0
    assert Counter(landed_ids(broken.landing_dir)) == Counter(f"e{i}" for i in range(25))
    assert metrics.lag_events == 0


class StopsAtFirstAck(SpoolSource):
    """A spool source that stops its consumer at its first ack: the next batch is being read
    ahead (or already was) when the consumer sees the stop."""

    def __init__(self, *args, stop: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop
        self.read_entries = 0

    def read(self, max_entries, block_s):
        entries = super().read(max_entries, block_s)
        self.read_entries += len(entries)
        return entries

    def ack(self, entries):
        super().ack(entries)
        self.stop.set()


def test_what_was_read_ahead_when_the_consumer_stops_is_landed_and_acknowledged(settings):
    spool = settings.resolved_stream_spool_path
    offsets = settings.stream_dir / "spool.offset"
    SpoolTarget(spool).publish([event(i) for i in range(35)])
    stop = threading.Event()
    source = StopsAtFirstAck(spool, offsets, stop=stop)
    metrics = Consumer(settings, source, features=False).run(stop)
    landed = landed_ids(settings.landing_dir)
    assert source.read_entries > 10  # the batch, and what was read ahead of it
    assert landed == [f"e{i}" for i in range(source.read_entries)]  # in order, each once
    assert metrics.events_total == source.read_entries
    assert SpoolSource(spool, offsets).lag() == 35 - source.read_entries  # acknowledged
