"""Both APIs' `/docs` pages load Swagger UI from the app itself, never from a CDN."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from loopline.settings import Settings
from loopline.simulate.vendor_api import make_app


def docs_assets(client: TestClient) -> list[str]:
    """Every URL the /docs page loads (scripts, stylesheets, icons, the OpenAPI spec)."""
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    urls += re.findall(r"url: '([^']+)'", html)  # the spec Swagger UI fetches
    assert urls, html
    return urls


def assert_all_local_and_answered(client: TestClient) -> None:
    urls = docs_assets(client)
    remote = [u for u in urls if not u.startswith("/")]
    assert remote == [], f"the docs page loads files from elsewhere: {remote}"
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith(".css") for u in urls)
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.content, url
    assert "cdn." not in client.get("/docs").text


def test_catalogue_api_docs_work_offline(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        assert_all_local_and_answered(client)
        assert client.get("/redoc").status_code == 404  # its page would need a CDN


@pytest.fixture
def serving_client(tmp_path):
    from ml.serving.app import create_app

    # no lifespan: the docs do not need a model, and none is trained here
    return TestClient(create_app(Settings(data_dir=tmp_path)))


def test_serving_api_docs_work_offline(serving_client):
    assert_all_local_and_answered(serving_client)
    spec = serving_client.get("/openapi.json").json()
    assert "/v1/churn/score" in spec["paths"]
