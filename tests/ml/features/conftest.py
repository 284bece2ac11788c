"""Fixtures of the feature-store tests: the built warehouse, one real online store per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ml.features.online.base import OnlineStore
from ml.features.online.redis import RedisOnlineStore
from ml.features.online.sqlite import SqliteOnlineStore
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def con(built_warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the session's built warehouse (same config as dbt)."""
    settings, _ = built_warehouse
    connection = duckdb.connect(str(settings.resolved_warehouse_path))
    yield connection
    connection.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteOnlineStore]:
    store = SqliteOnlineStore(tmp_path / "online" / "online_store.sqlite")
    yield store
    store.close()


@pytest.fixture
def redis_store() -> Iterator[RedisOnlineStore]:
    """A Redis store under a namespace of its own; every key in it is deleted afterwards."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    namespace = f"loopline-test:{uuid.uuid4().hex}:"
    store = RedisOnlineStore(REDIS_URL, namespace=namespace)
    yield store
    store.close()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{namespace}*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest) -> OnlineStore:
    return request.getfixturevalue(f"{request.param}_store")
