"""`POST /v1/ingest/events` on a minimal FastAPI app: auth, limits, bad lines, landed files."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loopline.ingest.files import SOURCES
from loopline.push.webhook import router
from loopline.settings import Settings, get_settings

TOKEN = "s3cret-token"
EVENTS = b'{"event_id": "e1", "user_id": 1}\n{"event_id": "e2", "user_id": 2}\n'


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", ingest_token=TOKEN, ingest_max_bytes=1024)


@pytest.fixture
def client(settings) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_settings] = lambda: settings
    return TestClient(app, raise_server_exceptions=False)


def post(client: TestClient, body: bytes, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/v1/ingest/events", content=body, headers=headers)


def landed(settings: Settings) -> list:
    return sorted((settings.landing_dir / "events").rglob("*"))


def test_a_valid_batch_lands_as_one_file_the_ingest_loads(client, settings):
    answer = post(client, EVENTS)
    assert answer.status_code == 202, answer.text
    assert answer.json()["records"] == 2
    files = [p for p in landed(settings) if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == EVENTS
    assert answer.json()["file"] == str(files[0].relative_to(settings.landing_dir))
    # where the ingest's event source looks, under a name it takes
    events = next(s for s in SOURCES if s.name == "events")
    assert files[0] in set(settings.landing_dir.glob(events.pattern))
    # a second batch is a second file: nothing is ever rewritten
    assert post(client, EVENTS).status_code == 202
    assert len([p for p in landed(settings) if p.is_file()]) == 2


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_a_missing_or_wrong_token_is_refused_and_nothing_lands(client, settings, token):
    answer = post(client, EVENTS, token=token)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert not [p for p in landed(settings) if p.is_file()]


def test_a_body_over_the_limit_is_refused(client, settings):
    big = b"\n".join(json.dumps({"event_id": i, "pad": "x" * 40}).encode() for i in range(40))
    assert len(big) > settings.ingest_max_bytes
    answer = post(client, big)
    assert answer.status_code == 413
    assert not [p for p in landed(settings) if p.is_file()]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"event_id": "e1"}\n{"event_id": \n', "line 2 is not JSON"),
        (b'{"event_id": "e1"}\n[1, 2]\n', "line 2 is a JSON list, not an object"),
        (b"\n\n", "no events"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_malformed_body_gets_a_400_naming_the_problem(client, settings, body, message):
    answer = post(client, body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["detail"]
    assert not [p for p in landed(settings) if p.is_file()]


def test_without_a_configured_token_the_webhook_is_off(client, settings):
    settings.ingest_token = None
    answer = post(client, EVENTS)
    assert answer.status_code == 403
    assert "LOOPLINE_INGEST_TOKEN" in answer.json()["detail"]
