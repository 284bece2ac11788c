"""The spool and the Redis stream: read in order, acknowledge, resume, recover, report lag."""

from __future__ import annotations

import pytest

from loopline.stream.sources import (
    LandedRange,
    RedisSource,
    RedisTarget,
    SpoolSource,
    SpoolTarget,
    StreamError,
    open_source,
)
from tests.stream.conftest import REDIS_URL, event


def test_the_spool_reads_complete_lines_and_resumes_after_the_acknowledged_offset(tmp_path):
    path = tmp_path / "spool.ndjson"
    SpoolTarget(path).publish([event(1), event(2), event(3)])
    with path.open("a") as spool:
        spool.write(event(4)[:10])  # a line still being written
    source = SpoolSource(path)
    assert source.lag() == 3
    first = source.read(2, 0)
    assert [e.line for e in first] == [event(1), event(2)]
    assert int(first[-1].position) == len(event(1)) + len(event(2)) + 2
    rest = source.read(10, 0)
    assert [e.line for e in rest] == [event(3)]  # not the partial line
    source.ack(first)
    assert source.lag() == 1

    again = SpoolSource(path)  # a restart: what was read but not acknowledged comes again
    assert [e.line for e in again.read(10, 0)] == [event(3)]
    with path.open("a") as spool:
        spool.write(event(4)[10:] + "\n")
    assert [e.line for e in again.read(10, 0)] == [event(4)]


def test_the_spool_recovers_what_a_landed_file_holds(tmp_path):
    path = tmp_path / "spool.ndjson"
    SpoolTarget(path).publish([event(i) for i in range(1, 6)])
    source = SpoolSource(path)
    batch = source.read(3, 0)
    # landed as a file, then the process died before it acknowledged
    landed = [LandedRange(batch[0].position, batch[-1].position)]
    restarted = SpoolSource(path)
    assert restarted.recover(landed) == 3
    assert [e.line for e in restarted.read(10, 0)] == [event(4), event(5)]
    assert restarted.recover(landed) == 0  # already acknowledged


def test_a_bad_offset_file_is_a_clear_error(tmp_path):
    (tmp_path / "spool.ndjson.offset").write_text("twelve")
    with pytest.raises(StreamError, match="delete it"):
        SpoolSource(tmp_path / "spool.ndjson")


def test_an_unreachable_or_unknown_stream_url_is_a_clear_error(settings):
    with pytest.raises(StreamError, match="unset LOOPLINE_STREAM_URL"):
        open_source(settings.model_copy(update={"stream_url": "redis://127.0.0.1:1/0"}))
    with pytest.raises(StreamError, match="redis://host:port"):
        open_source(settings.model_copy(update={"stream_url": "kafka://broker:9092"}))


@pytest.mark.redis
def test_a_consumer_group_rereads_its_unacknowledged_entries_after_a_restart(redis_key):
    target = RedisTarget(REDIS_URL, redis_key)
    target.publish([event(i) for i in range(1, 7)])
    source = RedisSource(REDIS_URL, redis_key, group="g", consumer="c1")
    assert source.lag() == 6
    first = source.read(2, 0)
    assert [e.line for e in first] == [event(1), event(2)]
    source.ack(first)
    second = source.read(2, 0)  # delivered, never acknowledged: the process dies here
    assert source.lag() == 4
    source.close()

    restarted = RedisSource(REDIS_URL, redis_key, group="g", consumer="c1")
    assert [e.line for e in restarted.read(10, 0)] == [event(3), event(4)]  # its pending first
    assert [e.line for e in restarted.read(10, 0)] == [event(i) for i in (5, 6)]
    assert restarted.read(10, 0.05) == []
    assert restarted.recover([LandedRange(second[0].position, second[-1].position)]) == 2
    assert restarted.lag() == 2  # entries 5 and 6: read, not acknowledged
    restarted.close()
    target.close()


@pytest.mark.redis
def test_a_large_publish_is_sent_in_slices_and_arrives_whole_and_in_order(redis_key):
    target = RedisTarget(REDIS_URL, redis_key)
    target.PUBLISH_SLICE = 3  # 10 lines: slices of 3, 3, 3 and 1
    target.publish([event(i) for i in range(10)])
    target.publish([])
    target.close()
    source = RedisSource(REDIS_URL, redis_key, group="g", consumer="c")
    assert [e.line for e in source.read(100, 0)] == [event(i) for i in range(10)]
    source.close()


@pytest.mark.redis
def test_a_restarted_consumer_recovers_only_what_it_landed_itself(redis_key, tmp_path):
    from loopline.stream import sink

    RedisTarget(REDIS_URL, redis_key).publish([event(i) for i in range(1, 5)])
    one = RedisSource(REDIS_URL, redis_key, group="g", consumer="one")
    two = RedisSource(REDIS_URL, redis_key, group="g", consumer="two")
    assert one.name != two.name and "-" not in one.name
    first = one.read(2, 0)
    sink.land(tmp_path, one.name, first)  # landed, then both processes die
    sink.land(tmp_path, two.name, two.read(2, 0))
    one.close()
    two.close()

    again = RedisSource(REDIS_URL, redis_key, group="g", consumer="one")
    assert again.recover(sink.landed_ranges(tmp_path, again.name)) == 2
    assert again.lag() == 2  # the other consumer's two entries stay pending for it
    again.close()
    with pytest.raises(StreamError, match="letters, digits"):
        RedisSource(REDIS_URL, redis_key, group="g", consumer="landing-1")


@pytest.mark.redis
def test_entries_every_group_acknowledged_are_trimmed_and_no_other(redis_key):
    """Two consumer groups read one stream: an entry leaves the stream only once both have
    acknowledged it; delivered-but-unacknowledged and undelivered entries stay, so a
    restarted consumer still rereads its pending entries after a trim."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    target = RedisTarget(REDIS_URL, redis_key)
    target.publish([event(i) for i in range(1, 11)])
    fast = RedisSource(REDIS_URL, redis_key, group="fast", consumer="c1")
    slow = RedisSource(REDIS_URL, redis_key, group="slow", consumer="c1")
    fast.ack(fast.read(10, 0))  # fast is done with all ten
    assert client.xlen(redis_key) == 10  # slow has read none: nothing goes
    done = slow.read(4, 0)
    slow.ack(done[:3])  # slow: 1-3 acknowledged, 4 delivered and pending, 5-10 undelivered
    assert client.xlen(redis_key) == 7
    slow.close()
    restarted = RedisSource(REDIS_URL, redis_key, group="slow", consumer="c1")
    pending = restarted.read(10, 0)
    assert [e.line for e in pending] == [event(4)]  # its pending entry survived the trim
    rest = restarted.read(10, 0)
    assert [e.line for e in rest] == [event(i) for i in range(5, 11)]
    target.publish([event(11)])
    assert restarted.lag() == 8  # 4-10 pending, 11 new: the lag still counts after trims
    restarted.ack(pending + rest)
    assert client.xlen(redis_key) == 1  # only 11: fast has not read it yet
    for source in (fast, restarted):
        source.close()
    target.close()
    client.close()


@pytest.mark.redis
def test_trims_are_throttled_and_close_trims_what_is_left(redis_key):
    """The first ack trims, later ones within `trim_every_s` do not (3 round trips each),
    `close` does; a delivered but unacknowledged entry is never trimmed."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    RedisTarget(REDIS_URL, redis_key).publish([event(i) for i in range(1, 9)])
    source = RedisSource(REDIS_URL, redis_key, group="g", consumer="c1", trim_every_s=3600)
    source.ack(source.read(2, 0))
    assert client.xlen(redis_key) == 6  # the first ack trimmed
    batch = source.read(4, 0)
    source.ack(batch[:3])
    assert client.xlen(redis_key) == 6  # throttled
    source.close()
    assert client.xlen(redis_key) == 3  # entry 6 is pending: it and 7, 8 stay
    again = RedisSource(REDIS_URL, redis_key, group="g", consumer="c1")
    assert [e.line for e in again.read(10, 0)] == [event(6)]
    again.close()
    client.close()


@pytest.mark.redis
def test_entries_are_read_whatever_the_fields_order_and_positions_sort_in_stream_order(
    redis_key,
):
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(redis_key, {"line": event(1)}, id="5-9")
    client.xadd(redis_key, {"other": "x", "line": event(2)}, id="5-10")
    client.xadd(redis_key, {"other": "x"}, id="40-0")
    client.xadd(redis_key, {"line": event(3)}, id="40-1234567")  # a sequence past 6 digits
    client.xadd(redis_key, {"line": event(4)}, id="1795784774919-0")  # a real clock's ms
    source = RedisSource(REDIS_URL, redis_key, group="g", consumer="c1")
    entries = source.read(10, 0)
    assert [e.line for e in entries] == [event(1), event(2), "", event(3), event(4)]
    positions = [e.position for e in entries]
    assert positions == sorted(positions) == [
        "000000000000005.000009", "000000000000005.000010", "000000000000040.000000",
        "000000000000040.1234567", "001795784774919.000000",
    ]  # fmt: skip
    source.ack(entries)  # each position back to its entry id: nothing stays pending
    assert source.lag() == 0
    source.close()
    client.close()
