"""`POST /v1/churn/score/batch`: the single route's answers row for row, one model call, a
per-row status for rows it cannot score, and a 4xx (never a 500) for a bad request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ml.serving.models import LoadedChurn
from tests.ml.serving.fakes import FixedModels, churn_model, client_for, recommender
from tests.ml.serving.test_fuzz import _fast_churn

BATCH = "/v1/churn/score/batch"
SINGLE = "/v1/churn/score"
ROW_FIELDS = ("user_id", "churn_probability", "is_high_risk", "feature_set_version",
              "feature_timestamp", "features_from", "imputed")  # fmt: skip


def _rows(churn: LoadedChurn) -> list[dict[str, Any]]:
    """Known and unknown users, features full, partial and unreadable, in a mix."""
    columns = churn.champion.feature_columns
    numeric = churn.champion.numeric_columns
    full = {c: (1.5 if c in numeric else "basic") for c in columns}
    return [
        {"user_id": 1},
        {"features": full},
        {"user_id": 987654321},  # not in the online store
        {"features": {numeric[0]: -2.0}},  # the rest imputed
        {"features": {"not_a_feature": 1}},
        {"user_id": 1},  # the same user twice
        {"features": {numeric[0]: "many"}},  # a number the model reads, sent as text
        {"features": {**full, numeric[-1]: None}},
    ]


@pytest.mark.parametrize("kind", ["scikit-learn", "compiled"])
def test_a_batch_answers_what_the_single_route_answers_row_for_row(tmp_path, store, kind):
    churn = (
        churn_model("2", ["minutes", "tickets"], "fsb") if kind == "scikit-learn" else _fast_churn()
    )
    rows = _rows(churn)
    with client_for(tmp_path, store, FixedModels(churn, recommender("h1"))) as client:
        batch = client.post(BATCH, json={"rows": rows})
        singles = [client.post(SINGLE, json=row) for row in rows]
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["model"] == {"name": "loopline-churn", "version": churn.champion.version}
    assert body["threshold"] == churn.champion.threshold
    assert batch.headers["x-churn-model-version"] == churn.champion.version
    assert (body["rows"], body["scored"]) == (len(rows), 5)
    assert [r["status"] for r in body["results"]] == [s.status_code for s in singles]
    assert [r["status"] for r in body["results"]] == [200, 200, 404, 200, 422, 200, 422, 200]
    for result, single in zip(body["results"], singles, strict=True):
        if single.status_code == 200:
            expected = single.json()
            assert {f: result[f] for f in ROW_FIELDS} == {f: expected[f] for f in ROW_FIELDS}
            assert result["error"] is None
        else:  # the same message the single route gives, on the row
            assert result["error"] == single.json()["detail"]
            assert result["churn_probability"] is None
    assert body["results"][0]["features_from"] == "online_store"
    assert body["results"][0]["feature_timestamp"] is not None


def test_batch_rows_are_logged_like_single_answers(tmp_path, store):
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    with client_for(tmp_path, store, models) as client:
        rows = [{"user_id": 1}, {"user_id": 5}, {"features": {"minutes": 2.0}}]
        client.post(BATCH, json={"rows": rows})
    logged = [
        json.loads(line)
        for path in (tmp_path / "predictions" / "serving").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    # the scored rows only (user 5 is unknown), as the monitoring reads single answers
    assert [(r["endpoint"], r["model_version"], r["user_id"]) for r in logged] == [
        ("churn", "2", 1),
        ("churn", "2", None),
    ]
    assert logged[0]["features"] == {"minutes": -3.0, "tickets": 9.0}
    assert logged[1]["features"] == {"minutes": 2.0, "tickets": None}


def test_bad_batches_get_a_4xx_with_a_message_never_a_500(tmp_path, store):
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    headers = {"content-type": "application/json"}
    with client_for(tmp_path, store, models, api_max_batch_rows=3) as client:
        cases = [
            (client.post(BATCH, json={"rows": [{"user_id": 1}] * 4}), 422,
             "LOOPLINE_API_MAX_BATCH_ROWS"),
            (client.post(BATCH, json={"rows": []}), 422, "at least 1"),
            (client.post(BATCH, json={}), 422, "rows"),
            (client.post(BATCH, json=[{"user_id": 1}]), 422, "invalid"),
            (client.post(BATCH, json={"rows": [{"user_id": 1, "features": {}}]}), 422,
             "exactly one"),
            (client.post(BATCH, json={"rows": [{"user_id": 1}], "extra": 1}), 422, "extra"),
            (client.post(BATCH, content='{"rows": [{"features": {"minutes": NaN}}]}',
                         headers=headers), 422, "NaN"),
            (client.post(BATCH, content="{not json", headers=headers), 422, "invalid"),
        ]  # fmt: skip
        within = client.post(BATCH, json={"rows": [{"user_id": 1}] * 3})
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.text, response.text
    invalid_row = cases[4][0].json()["errors"][0]["where"]
    assert invalid_row.startswith("body.rows.0"), invalid_row  # which row is wrong
    assert within.status_code == 200 and within.json()["scored"] == 3


def test_the_batch_route_is_declared_in_the_openapi_schema(tmp_path, store):
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    with client_for(tmp_path, store, models) as client:
        spec = client.get("/openapi.json").json()
    batch = spec["paths"][BATCH]["post"]
    assert {"200", "413", "422", "503"} <= set(batch["responses"])
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChurnBatchRequest"
    }
    # the single route parses its body by hand, and still declares it
    single = spec["paths"][SINGLE]["post"]["requestBody"]["content"]["application/json"]
    assert single["schema"] == {"$ref": "#/components/schemas/ChurnRequest"}
    assert "oneOf" in spec["components"]["schemas"]["ChurnRequest"]
