"""The loop end to end on simulator data: train -> register -> gate -> promote -> batch score
-> serve over real HTTP, with a real MLflow store and warehouse in a temp folder."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml.churn.model import DEFAULT_EXCLUDE, TrainParams
from ml.churn.train import ChurnOutcome, train_churn
from ml.config import ChurnConfig, RecommenderConfig
from ml.features.materialize import refresh_online_store
from ml.recommender.score import recommend_all
from ml.recommender.train import train_recommender
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    CHURN_MODEL,
    DESCRIPTION_TAG,
    EXPERIMENT_DESCRIPTIONS,
    MODEL_DESCRIPTIONS,
    RECS_MODEL,
    PromotionPolicy,
    alias_version,
    configure,
    record_decision,
    rollback,
    version_tags,
)
from tests.conftest import copy_company, query

GRID = {
    "logreg_grid": {"C": [1.0]},
    "hist_gb_grid": {"learning_rate": [0.1], "max_leaf_nodes": [15], "max_iter": [80]},
}
POLICY = PromotionPolicy(gate={"roc_auc": 0.5, "brier": 0.3}, compare_on="roc_auc", margin=0.01)
# The small company (300 users, 15 labelled days) is too small for a user-disjoint holdout to
# show any signal, so these tests split by time only (entity None): they test the registry
# machinery, whose decisions then rest on stable, clearly different numbers.
FULL = ChurnConfig(
    train=TrainParams.model_validate({**GRID, "entity": None}), policy=POLICY, importance_rows=500
)
# the same training with the strongest signals withheld: a genuinely worse model
WEAK = FULL.model_copy(
    update={
        "train": TrainParams.model_validate(
            {
                **GRID,
                "entity": None,
                "candidates": ("logreg",),
                "exclude": (*DEFAULT_EXCLUDE, "tenure_days", "plan_price_usd", "plan_name",
                            "country", "acquisition_channel", "age_band"),
            }
        )
    }
)  # fmt: skip


@pytest.fixture(scope="module")
def loop(built_warehouse, tmp_path_factory) -> dict[str, Any]:
    """A private copy of the built warehouse with online features and three churn versions."""
    settings = copy_company(built_warehouse[0], tmp_path_factory.mktemp("loop") / "data")
    refresh_online_store(settings)  # what the line flow does after a build
    outcomes: list[ChurnOutcome] = [
        train_churn(settings, WEAK),  # v1: first, promoted
        train_churn(settings, FULL),  # v2: better by the margin, promoted
        train_churn(settings, WEAK),  # v3: worse, kept
    ]
    recs = train_recommender(settings, RecommenderConfig())
    return {"settings": settings, "outcomes": outcomes, "recs": recs}


def test_versions_are_registered_with_lineage_and_judged_both_ways(loop) -> None:
    settings, (v1, v2, v3) = loop["settings"], loop["outcomes"]
    assert [o.version for o in (v1, v2, v3)] == ["1", "2", "3"]
    assert v1.decision.promoted and "no champion" in v1.decision.reason
    assert v2.decision.promoted and v2.decision.champion_version == "1"
    assert v2.metrics["holdout_roc_auc"] > v1.metrics["holdout_roc_auc"] + POLICY.margin
    assert not v3.decision.promoted and v3.decision.champion_version == "2"
    # the champion was scored on v3's own holdout, and the numbers say why it stayed
    assert v3.decision.champion_value is not None
    assert v3.decision.champion_value > v3.decision.challenger_value  # type: ignore[operator]
    client = configure(settings)
    assert alias_version(client, CHURN_MODEL, CHAMPION) == "2"
    assert alias_version(client, CHURN_MODEL, CHALLENGER) == "3"
    run = client.get_run(v2.run_id)
    for tag in (
        "training_set.content_hash", "lineage.dbt_manifest_hash", "lineage.git_commit",
        "training_set.data_window_start", "feature_set_version.features.fs_churn__user_daily",
    ):  # fmt: skip
        assert run.data.tags.get(tag), tag
    assert run.data.tags["lineage.dbt_manifest_hash"] != "unknown"
    assert {"holdout_roc_auc", "holdout_pr_auc", "holdout_log_loss", "holdout_brier",
            "holdout_f1", "bayes_roc_auc"} <= set(run.data.metrics)  # fmt: skip
    artifacts = {a.path for a in client.list_artifacts(v2.run_id, "plots")}
    assert "plots/roc_curve.png" in artifacts and "plots/calibration_curve.png" in artifacts
    assert v2.report.exists() and "Bayes-optimal" in v2.report.read_text()
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{CHURN_MODEL}/2")
    assert info.flavors["sklearn"]["serialization_format"] == "skops"  # never plain pickle
    assert info.signature is not None and info.saved_input_example_info is not None
    decisions = query(
        settings, "select version, action, promoted from ml.model_decisions order by decided_at"
    )
    assert decisions == [
        ("1", "promoted", True), ("2", "promoted", True), ("3", "kept", False),
        ("1", "promoted", True),  # the recommender's first version
    ]  # fmt: skip


def test_the_search_is_logged_as_nested_runs_under_each_training_run(loop) -> None:
    """One nested run per grid point, read back from the store: parent, params, fold AUCs,
    which one was chosen; the experiment, the registered model and the run are described."""
    settings, (v1, v2, _) = loop["settings"], loop["outcomes"]
    client = configure(settings)
    parent = client.get_run(v2.run_id)
    experiment = parent.info.experiment_id

    def children(run_id: str) -> list[Any]:
        return client.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
        )

    nested = children(v2.run_id)
    assert len(nested) == 2  # FULL's grid: one logreg point, one hist_gb point
    assert {run.data.params["estimator"] for run in nested} == {"logreg", "hist_gb"}
    assert {run.data.params.get("C") for run in nested} == {"1.0", None}
    for run in nested:
        metrics = run.data.metrics
        folds = [metrics[f"cv_roc_auc_fold_{i}"] for i in range(FULL.train.n_splits)]
        assert metrics["cv_roc_auc"] == pytest.approx(sum(folds) / len(folds))
        kind = run.data.params["estimator"]
        assert parent.data.metrics[f"cv_roc_auc_{kind}"] == pytest.approx(metrics["cv_roc_auc"])
        assert run.data.tags["model"] == CHURN_MODEL and not client.list_artifacts(run.info.run_id)
    chosen = [run for run in nested if run.data.tags["candidate.chosen"] == "true"]
    assert len(chosen) == 1
    assert chosen[0].data.params["estimator"] == parent.data.params["estimator"] == v2.kind
    assert len(children(v1.run_id)) == 1  # WEAK searches one logreg point
    top_level = [
        run.info.run_id
        for run in client.search_runs([experiment])
        if "mlflow.parentRunId" not in run.data.tags
    ]
    assert sorted(top_level) == sorted(o.run_id for o in loop["outcomes"])

    description = client.get_experiment(experiment).tags[DESCRIPTION_TAG]
    assert description == EXPERIMENT_DESCRIPTIONS[CHURN_MODEL]
    assert parent.data.tags[DESCRIPTION_TAG].startswith(f"Chose {v2.kind}(")
    assert client.get_registered_model(CHURN_MODEL).description == MODEL_DESCRIPTIONS[CHURN_MODEL]
    assert "Model search" in v2.report.read_text()


def test_batch_scoring_writes_every_active_user_once_per_day_and_version(loop) -> None:
    from ml.churn.score import score_churn

    settings = loop["settings"]
    first = score_churn(settings, chunk_rows=100)  # several Arrow chunks
    again = score_churn(settings, chunk_rows=1000)
    assert first.model_version == "2" and first.rows > 100
    assert again.rows == first.rows and again.replaced == first.rows
    ((active,),) = query(
        settings,
        "select count(distinct user_id) from features.fs_churn__user_daily "
        f"where as_of_date = '{first.as_of}'",
    )
    rows = query(
        settings,
        "select count(*), count(distinct user_id), min(churn_probability), "
        "max(churn_probability), any_value(model_version), any_value(feature_set_version) "
        "from ml.churn_predictions",
    )
    count, users, low, high, version, fs_version = rows[0]
    assert count == users == active == first.rows
    assert 0.0 <= low < high <= 1.0 and version == "2" and fs_version


def test_a_scoring_run_that_dies_midway_leaves_the_previous_rows(loop, monkeypatch) -> None:
    import ml.churn.score as score_module

    settings = loop["settings"]
    sql = "select user_id, churn_probability, scored_at from ml.churn_predictions order by 1"
    before = query(settings, sql)
    assert before
    real = score_module.predict_chunks

    def dies_after_one_chunk(frames, champion):
        for i, table in enumerate(real(frames, champion)):
            if i == 1:
                raise RuntimeError("killed mid-run")
            yield table

    monkeypatch.setattr(score_module, "predict_chunks", dies_after_one_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        score_module.score_churn(settings, chunk_rows=50)
    assert query(settings, sql) == before  # rolled back: nothing half-written
    monkeypatch.undo()
    rerun = score_module.score_churn(settings, chunk_rows=50)
    assert rerun.rows == len(before) == rerun.replaced
    assert [r[:2] for r in query(settings, sql)] == [r[:2] for r in before]


def test_recommender_beats_popularity_and_is_registered_as_pyfunc(loop) -> None:
    import mlflow

    recs = loop["recs"]
    assert recs.metrics["recall_at_k"] > recs.baseline["recall_at_k"]
    assert recs.decision.promoted and recs.version == "1"
    info = mlflow.models.get_model_info("models:/loopline-recommender@champion")
    assert "python_function" in info.flavors and info.signature is not None
    assert recs.report == loop["settings"].reports_dir / "recommender" / "v1" / "evaluation.html"
    page = recs.report.read_text()
    assert page.count("data:image/png;base64,") == 2 and "popularity bias" in page.lower()


def test_recommender_run_has_its_plots_curves_report_and_descriptions(loop) -> None:
    """Read back from the MLflow store after the real training run."""
    recs = loop["recs"]
    client = configure(loop["settings"])
    run = client.get_run(recs.run_id)
    assert {a.path for a in client.list_artifacts(recs.run_id, "plots")} == {
        "plots/ranking_at_k.png",
        "plots/coverage_and_popularity.png",
    }
    assert [a.path for a in client.list_artifacts(recs.run_id, "report")] == [
        "report/evaluation.html"
    ]
    logged = client.download_artifacts(recs.run_id, "report/evaluation.html")
    assert Path(logged).read_text(encoding="utf-8") == recs.report.read_text()
    curve = client.get_metric_history(recs.run_id, "curve.item_item.recall")
    assert [m.step for m in curve] == list(range(1, 21))
    at_k = next(m.value for m in curve if m.step == recs.k)
    assert at_k == pytest.approx(recs.metrics["recall_at_k"])
    assert [m.value for m in curve] == sorted(m.value for m in curve)  # recall grows with k
    assert (
        "popularity baseline" in client.get_experiment(run.info.experiment_id).tags[DESCRIPTION_TAG]
    )
    assert client.get_registered_model(RECS_MODEL).description == MODEL_DESCRIPTIONS[RECS_MODEL]
    assert run.data.tags[DESCRIPTION_TAG].startswith("Item-item vs popularity")


def test_batch_recommendations_cover_every_recent_viewer_idempotently(loop) -> None:
    settings = loop["settings"]
    first = recommend_all(settings, None, 5)
    again = recommend_all(settings, None, 5)
    assert first is not None and again is not None
    assert first.rows == again.rows == 5 * first.users and first.users > 100
    rows = query(
        settings,
        "select count(*), count(distinct user_id), min(rank), max(rank), "
        "count(distinct (user_id, show_id)) from ml.recommendations",
    )
    assert rows == [(first.rows, first.users, 1, 5, first.rows)]  # no show twice for a user


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(loop) -> Iterator[str]:
    """The serving app on uvicorn on a free port, polling the registry every 0.2 s."""
    import uvicorn

    from ml.serving.app import create_app

    port = _free_port()
    app = create_app(loop["settings"], poll_seconds=0.2)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv_server = uvicorn.Server(config)
    thread = threading.Thread(target=uv_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv_server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv_server.should_exit = True
    thread.join(timeout=10)


def _a_user(settings) -> int:
    ((user_id,),) = query(settings, "select min(user_id) from features.fs_churn__user_daily")
    return int(user_id)


def test_api_serves_the_registry_champion_and_follows_the_alias(loop, server) -> None:
    """The one end-to-end API test on the real registry and online store (behaviour with
    models built in the test: tests/ml/serving/test_app.py): the champion scores a user
    from the online store in its feature-set version and recommends from the user's history;
    then a rollback while a client keeps scoring: every request succeeds, the version moves."""
    settings = loop["settings"]
    user = _a_user(settings)
    ((viewer,),) = query(
        settings,
        "select user_id from features.fs_recs__user_history "
        "where as_of_date = (select max(as_of_date) from features.fs_recs__user_history) "
        "order by len(recent_shows) desc, user_id limit 1",
    )
    with httpx.Client(base_url=server) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["churn_model"] == "2"
        by_user = client.post("/v1/churn/score", json={"user_id": user})
        assert by_user.status_code == 200, by_user.text
        body = by_user.json()
        assert body["model"] == {"name": CHURN_MODEL, "version": "2"}
        assert body["features_from"] == "online_store" and 0.0 <= body["churn_probability"] <= 1
        assert (
            body["feature_set_version"]
            == version_tags(configure(settings), CHURN_MODEL, "2")["feature_set_version"]
        )
        recs = client.get(f"/v1/recommendations/{viewer}", params={"k": 7}).json()
        assert recs["model"] == {"name": RECS_MODEL, "version": "1"}
        assert recs["user_known"] and recs["strategy"] == "item-item"
        assert len({r["show_id"] for r in recs["recommendations"]}) == 7
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server) as client:
            while not stop.is_set():
                response = client.post("/v1/churn/score", json={"user_id": user})
                version = response.json().get("model", {}).get("version")
                seen.append((response.status_code, version))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.5)
        record_decision(settings, rollback(configure(settings), CHURN_MODEL))
        deadline = time.monotonic() + 30
        while not any(version == "1" for _, version in seen[-5:]):
            assert time.monotonic() < deadline, "the API never switched to v1"
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    statuses = {status for status, _ in seen}
    versions = [version for _, version in seen]
    assert statuses == {200}
    assert versions[0] == "2" and versions[-1] == "1"
    switch = versions.index("1")
    assert set(versions[switch:]) == {"1"}  # once switched, never back
    log_files = list((settings.data_dir / "predictions" / "serving").rglob("*.jsonl"))
    deadline = time.monotonic() + 10
    while sum(len(p.read_text().splitlines()) for p in log_files) < len(seen):
        assert time.monotonic() < deadline, "prediction log did not catch up"
        time.sleep(0.1)
        log_files = list((settings.data_dir / "predictions" / "serving").rglob("*.jsonl"))
