"""The optional bearer token: what it guards, what stays open, and that services stay on loopback."""

from __future__ import annotations

import inspect

from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from loopline import cli, services
from loopline.settings import Settings
from ml.serving.app import create_app, is_loopback
from ml.serving.auth import require_token
from tests.ml.serving.fakes import FixedModels, churn_model, recommender

SECRET = "s3cret-token"
GOOD = {"authorization": f"Bearer {SECRET}"}
BAD = {"authorization": "Bearer wrong"}


def _client(tmp_path, store, **settings: object) -> TestClient:
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    app = create_app(
        Settings(data_dir=tmp_path, **settings), poll_seconds=60, store=store, models=models
    )
    # what the webhook router will do: guard a write endpoint with the shared dependency
    writes = APIRouter(dependencies=[Depends(require_token)])

    @writes.post("/v1/hooks/test")
    async def hook() -> dict[str, str]:
        return {"accepted": "yes"}

    app.include_router(writes)
    return TestClient(app)


def test_with_a_token_writes_and_internals_need_it_and_reads_stay_open(tmp_path, store):
    with _client(tmp_path, store, api_token=SECRET) as client:
        assert client.post("/v1/hooks/test").status_code == 401
        refused = client.post("/v1/hooks/test", headers=BAD)
        assert refused.status_code == 401 and "LOOPLINE_API_TOKEN" in refused.json()["detail"]
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/hooks/test", headers=GOOD).json() == {"accepted": "yes"}
        # /readyz says ready to anyone, but versions and errors only with the token
        assert client.get("/readyz").json() == {"ready": True}
        assert client.get("/readyz", headers=GOOD).json()["churn_model"] == "2"
        # scoring stays open unless LOOPLINE_API_TOKEN_REQUIRED_FOR_READS says otherwise
        assert client.post("/v1/churn/score", json={"user_id": 1}).status_code == 200
        assert client.get("/v1/recommendations/1").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_reads_can_require_the_token_too(tmp_path, store):
    with _client(tmp_path, store, api_token=SECRET, api_token_required_for_reads=True) as client:
        assert client.post("/v1/churn/score", json={"user_id": 1}).status_code == 401
        assert client.get("/v1/recommendations/1", headers=BAD).status_code == 401
        assert client.post("/v1/churn/score", json={"user_id": 1}, headers=GOOD).status_code == 200
        assert client.get("/v1/recommendations/1", headers=GOOD).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes never need it


def test_without_a_token_nothing_is_required(tmp_path, store):
    for token in (None, ""):  # an empty LOOPLINE_API_TOKEN is no token, not "" as the token
        with _client(tmp_path, store, api_token=token) as client:
            assert client.post("/v1/hooks/test").status_code == 200
            assert client.get("/readyz").json()["churn_model"] == "2"


def test_every_service_and_loopline_serve_bind_to_loopback_by_default():
    assert services.HOST == "127.0.0.1" and is_loopback(services.HOST)
    settings = Settings()
    assert is_loopback(settings.catalogue_host)
    serve_host = inspect.signature(cli.serve).parameters["host"].default
    assert is_loopback(serve_host)
    for name, service in services.REGISTRY.items():
        command = service.command(settings)
        if "--host" in command:
            assert is_loopback(command[command.index("--host") + 1]), name
        assert "0.0.0.0" not in command and "::" not in command, name
        if service.ready is not None:
            assert service.ready(settings).startswith("http://127.0.0.1:"), name
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert is_loopback("::1") and is_loopback("localhost")
