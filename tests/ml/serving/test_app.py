"""The serving API's behaviour with models fitted in the test (no registry): scores, versions,
the online store's version per model, recommendations, and 4xx answers to bad input."""

from __future__ import annotations

import json

from tests.ml.serving.fakes import FixedModels, churn_model, client_for, recommender


def test_each_churn_model_reads_the_feature_set_version_it_was_trained_on(tmp_path, store):
    on_b = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    with client_for(tmp_path, store, on_b) as client:
        body = client.post("/v1/churn/score", json={"user_id": 1}).json()
    assert body["feature_set_version"] == "fsb" and body["imputed"] == []
    assert body["model"] == {"name": "loopline-churn", "version": "2"}
    assert body["churn_probability"] > 0.5  # tickets=9 outweighs minutes=-3 in this model
    assert on_b.loads == 1  # loaded once at start-up

    on_a = FixedModels(churn_model("1", ["minutes"], "fsa"), None)
    with client_for(tmp_path, store, on_a) as client:
        body = client.post("/v1/churn/score", json={"user_id": 1}).json()
    assert body["feature_set_version"] == "fsa" and body["churn_probability"] < 0.5

    unknown = FixedModels(churn_model("4", ["minutes"], "fs-never-built"), None)
    with client_for(tmp_path, store, unknown) as client:
        response = client.post("/v1/churn/score", json={"user_id": 1})
    assert response.status_code == 404 and "no features" in response.text


def test_bad_input_gets_a_4xx_with_a_message_and_the_versions(tmp_path, store):
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    headers = {"content-type": "application/json"}
    with client_for(tmp_path, store, models) as client:
        by_features = client.post("/v1/churn/score", json={"features": {"minutes": 1.0}})
        assert by_features.status_code == 200
        assert by_features.json()["features_from"] == "request"
        assert by_features.json()["imputed"] == ["tickets"]
        cases = [
            (client.post("/v1/churn/score", json={"user_id": 987654321}), 404, "no features"),
            (client.post("/v1/churn/score", content='{"features": {"minutes": NaN}}',
                         headers=headers), 422, "NaN"),
            (client.post("/v1/churn/score", content='{"features": {"minutes": Infinity}}',
                         headers=headers), 422, "infinity"),
            (client.post("/v1/churn/score", json={"features": {"nope": 1}}), 422, "unknown feature"),
            (client.post("/v1/churn/score", json={"features": {"minutes": "old"}}), 422, "number"),
            (client.post("/v1/churn/score", json={}), 422, "exactly one"),
            (client.post("/v1/churn/score", content="{not json", headers=headers), 422, "invalid"),
            (client.post("/v1/churn/score", json={"user_id": -1}), 422, "invalid"),
            (client.post("/v1/churn/score", json={"user_id": True}), 422, "not a boolean"),
            (client.get("/v1/recommendations/1?k=0"), 422, "invalid"),
            (client.get("/v1/recommendations/1?k=1000"), 422, "invalid"),
            (client.get("/v1/recommendations/not-a-number"), 422, "invalid"),
            (client.get("/v1/recommendations/1?just_watched=zz"), 404, "not in the catalogue"),
        ]  # fmt: skip
        for response, status, text in cases:
            assert response.status_code == status, response.text
            assert text in response.text, response.text
            # the served versions ride along on every answer, errors included
            assert response.headers["x-churn-model-version"] == "2"
            assert response.headers["x-recommender-version"] == "3"
        ready = client.get("/readyz").json()
    assert ready["ready"] and ready["churn_model"] == "2" and ready["recommender"] == "3"


def test_recommendations_follow_the_history_in_the_models_version(tmp_path, store):
    models = FixedModels(None, recommender("h1"))
    with client_for(tmp_path, store, models) as client:
        known = client.get("/v1/recommendations/1", params={"k": 2}).json()
        next_up = client.get("/v1/recommendations/1", params={"k": 2, "just_watched": "b"}).json()
        cold = client.get("/v1/recommendations/2", params={"k": 2}).json()
        cold_next = client.get("/v1/recommendations/2", params={"just_watched": "a"}).json()
        not_ready = client.get("/readyz")
        no_churn = client.post("/v1/churn/score", json={"user_id": 1})
    assert known["user_known"] and known["strategy"] == "item-item"
    assert {r["show_id"] for r in known["recommendations"]} == {"b", "c"}  # a's neighbours
    assert [r["rank"] for r in known["recommendations"]] == [1, 2]
    assert "b" not in [r["show_id"] for r in next_up["recommendations"]]
    assert not cold["user_known"] and cold["strategy"] == "popularity"
    # a user with no history who just finished a show (found by the fuzzing: was a 500)
    assert {r["show_id"] for r in cold_next["recommendations"][:2]} == {"b", "c"}
    assert cold_next["strategy"] == "item-item"
    assert not_ready.status_code == 503 and no_churn.status_code == 503

    other_version = FixedModels(None, recommender("h2"))  # a history version never built
    with client_for(tmp_path, store, other_version) as client:
        body = client.get("/v1/recommendations/1").json()
    assert not body["user_known"] and body["strategy"] == "popularity"


def test_every_answer_is_logged_for_monitoring(tmp_path, store):
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), recommender("h1"))
    with client_for(tmp_path, store, models) as client:
        client.post("/v1/churn/score", json={"user_id": 1})
        client.get("/v1/recommendations/1")
    # shutdown drains the log
    lines = [
        json.loads(line)
        for path in (tmp_path / "predictions" / "serving").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [(r["endpoint"], r["model_version"]) for r in lines] == [
        ("churn", "2"),
        ("recommendations", "3"),
    ]
    assert lines[0]["features"] == {"minutes": -3.0, "tickets": 9.0}
