"""Fixtures of the stream tests: settings in a temp folder, a Redis stream of their own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.settings import Settings
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of an empty data folder, small batches, no Redis."""
    return Settings(
        data_dir=tmp_path / "data",
        stream_batch_events=10,
        stream_batch_max_events=200,
        stream_batch_seconds=0.2,
    )


@pytest.fixture
def redis_key() -> Iterator[str]:
    """A stream key of this test's own on the local Redis; deleted afterwards."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    key = f"loopline-test:stream:{uuid.uuid4().hex}"
    yield key
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(key)
    finally:
        client.close()


def event(i: int, user: int = 1, show: str = "sh_1", session: str = "s1", at: str = "") -> str:
    """One viewing event's NDJSON line with id ``e<i>``."""
    return json.dumps(
        {
            "event_id": f"e{i}",
            "event_type": "heartbeat",
            "user_id": user,
            "session_id": session,
            "show_id": show,
            "occurred_at": at or f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
        }
    )


def landed_ids(landing: Path) -> list[str]:
    """The event id of every line of every file the stream landed (repeats kept)."""
    ids = []
    for path in sorted(landing.glob("events/date=*/events_*_stream-*.ndjson")):
        ids += [json.loads(line)["event_id"] for line in path.read_text().splitlines()]
    return ids
