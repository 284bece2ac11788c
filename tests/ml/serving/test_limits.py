"""Unbounded input cannot hurt the API: huge numbers, strings and bodies get a short 4xx, error
bodies match the OpenAPI schema, and the prediction log rotates and keeps a bounded amount."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import date, timedelta

import jsonschema
import pytest
from fastapi.testclient import TestClient

from ml.serving.prediction_log import PredictionLog
from tests.ml.serving.fakes import FixedModels, churn_model, client_for, recommender

SCORE = "/v1/churn/score"
# each case and its outcome goes into docs/reliability.md (`python -m loopline.reliability`)
pytestmark = pytest.mark.reliability("bad_input")


def _models() -> FixedModels:
    return FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))


def _error_schema(client: TestClient, path: str, method: str, status: int) -> dict:
    """The JSON schema the app's OpenAPI document declares for one error answer."""
    spec = client.get("/openapi.json").json()
    declared = spec["paths"][path][method]["responses"][str(status)]
    ref = declared["content"]["application/json"]["schema"]["$ref"]
    return {
        **spec["components"]["schemas"][ref.rsplit("/", 1)[1]],
        "components": spec["components"],
    }


def test_a_401_digit_number_is_a_4xx_with_a_message_not_a_500(tmp_path, store):
    body = '{"features": {"minutes": ' + "9" * 401 + "}}"
    with client_for(tmp_path, store, _models()) as client:
        response = client.post(SCORE, content=body, headers={"content-type": "application/json"})
        fits = client.post(SCORE, content='{"features": {"minutes": 12345678901234567890}}',
                           headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 422, response.text
    assert "within" in response.text and "9" * 50 not in response.text
    assert fits.status_code == 200, fits.text  # a big integer within the float range scores


def test_oversized_values_and_bodies_are_refused_before_they_are_logged(tmp_path, store):
    with client_for(tmp_path, store, _models(), api_max_body_bytes=64 * 1024) as client:
        long_string = client.post(SCORE, json={"features": {"minutes": "x" * 2000}})
        huge = client.post(SCORE, json={"features": {"minutes": "x" * 10_000_000}})

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
            yield b'{"features": {"minutes": "'
            for _ in range(1000):
                yield b"x" * 1000
            yield b'"}}'

        streamed = client.post(
            SCORE, content=chunks(), headers={"content-type": "application/json"}
        )
        ok = client.post(SCORE, json={"features": {"minutes": 1.0}})
    assert long_string.status_code == 422 and "at most 1024" in long_string.text
    assert len(long_string.content) < 2000  # the value is not echoed
    for response in (huge, streamed):
        assert response.status_code == 413, response.text[:200]
        assert "LOOPLINE_API_MAX_BODY_BYTES" in response.json()["detail"]
    assert ok.status_code == 200
    logged = list((tmp_path / "predictions" / "serving").rglob("*.jsonl"))
    assert sum(p.stat().st_size for p in logged) < 2000  # only the one accepted answer


def test_a_422_lists_the_first_problems_and_never_echoes_the_input(tmp_path, store):
    many_keys = {f"key_{i:06d}_" + "k" * 40: 1 for i in range(1000)}
    with client_for(tmp_path, store, _models(), api_max_body_bytes=1024 * 1024) as client:
        too_many = client.post(SCORE, json={"features": many_keys})
        unknown = client.post(SCORE, json={"features": dict(list(many_keys.items())[:500])})
        bad_values = client.post(
            SCORE, json={"features": {f"f{i}": "x" * 2000 for i in range(100)}}
        )
        schema = _error_schema(client, SCORE, "post", 422)
        not_found = client.post(SCORE, json={"user_id": 987654321})
        schema_404 = _error_schema(client, SCORE, "post", 404)
    assert too_many.status_code == 422 and "512" in too_many.text
    assert unknown.status_code == 422 and "and 480 more" in unknown.text
    assert len(unknown.content) < 4000
    body = bad_values.json()
    assert bad_values.status_code == 422 and body["errors_total"] == 100
    assert len(body["errors"]) == 20 and len(bad_values.content) < 6000
    for response in (too_many, unknown, bad_values):
        jsonschema.validate(response.json(), schema)
    assert not_found.status_code == 404
    jsonschema.validate(not_found.json(), schema_404)


def test_readyz_and_errors_are_declared_in_the_openapi_schema(tmp_path, store):
    with client_for(tmp_path, store, _models()) as client:
        spec = client.get("/openapi.json").json()
    score = spec["paths"][SCORE]["post"]["responses"]
    assert {"200", "401", "404", "413", "422", "503"} <= set(score)
    recs = spec["paths"]["/v1/recommendations/{user_id}"]["get"]["responses"]
    assert {"200", "401", "404", "422", "503"} <= set(recs)
    assert {"200", "503"} <= set(spec["paths"]["/readyz"]["get"]["responses"])


def test_the_prediction_log_rotates_and_keeps_a_bounded_number_of_files(tmp_path):
    folder = tmp_path / "log"
    old_day = (date.today() - timedelta(days=40)).isoformat()
    (folder / f"date={old_day}").mkdir(parents=True)
    (folder / f"date={old_day}" / "predictions-1-0.jsonl").write_text("{}\n")
    prediction_log = PredictionLog(folder, linger_seconds=0, max_file_bytes=2048, keep_files=3)
    today = date.today().isoformat()
    for i in range(200):
        prediction_log.put({"logged_at": f"{today}T00:00:00", "i": i, "pad": "p" * 100})
    prediction_log.close()
    files = sorted(folder.rglob("*.jsonl"))
    assert not (folder / f"date={old_day}").exists()  # older than keep_days (30)
    assert prediction_log.rotations >= 10 and len(files) == 3
    assert all(p.stat().st_size <= 2048 for p in files)
    kept = [json.loads(line)["i"] for p in files for line in p.read_text().splitlines()]
    assert max(kept) == 199  # the newest records are the ones kept
    assert prediction_log.written == 200


def test_the_prediction_log_deletes_the_oldest_files_first(tmp_path):
    folder = tmp_path / "log" / f"date={date.today().isoformat()}"
    folder.mkdir(parents=True)
    for n in range(5):
        path = folder / f"predictions-1-{n}.jsonl"
        path.write_text("{}\n")
        os.utime(path, (time.time() - 1000 + n, time.time() - 1000 + n))
    prediction_log = PredictionLog(tmp_path / "log", keep_files=2)
    prediction_log.close()
    assert sorted(p.name for p in folder.iterdir()) == [
        "predictions-1-3.jsonl",
        "predictions-1-4.jsonl",
    ]
