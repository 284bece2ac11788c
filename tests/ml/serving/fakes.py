"""Models, an online store and a client for the serving tests: no registry, real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from loopline.settings import Settings
from ml.churn.score import ChampionModel
from ml.features.definitions import CHURN, USER_HISTORY
from ml.features.online.sqlite import SqliteOnlineStore
from ml.recommender.model import ItemItemRecommender, RecParams
from ml.recommender.persistence import LoadedRecommender
from ml.serving.app import create_app
from ml.serving.models import LoadedChurn, ModelService

DAY = datetime(2026, 2, 1)


class FixedModels(ModelService):
    """A model service around models built in the test; `load` has nothing new to load."""

    def __init__(self, churn: LoadedChurn | None, recommender: LoadedRecommender | None) -> None:
        self.churn = churn
        self.recommender = recommender
        self.last_error = None
        self.loads = 0

    def load(self) -> bool:
        self.loads += 1
        return False


def churn_model(version: str, columns: list[str], feature_set_version: str) -> LoadedChurn:
    """A logistic regression on `columns` (missing values imputed): more of each, more churn."""
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(200, len(columns))), columns=columns)
    y = (x.sum(axis=1) + rng.normal(scale=0.5, size=200) > 0).astype(int)
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, y)
    champion = ChampionModel(
        name="loopline-churn", version=version, model=model, feature_columns=columns,
        numeric_columns=columns, threshold=0.5, feature_set_version=feature_set_version,
    )  # fmt: skip
    return LoadedChurn(champion, scorer=None)


def recommender(history_version: str) -> LoadedRecommender:
    rows = [(f"u{i}", show, day) for i in range(5) for day, show in enumerate(["a", "b", "c"])]
    rows += [(f"v{i}", show, day) for i in range(5) for day, show in enumerate(["x", "y"])]
    interactions = pd.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "show_id": [s for _, s, _ in rows],
            "first_watched_at": [DAY + pd.Timedelta(days=d) for _, _, d in rows],
            "watched_seconds": 600.0,
        }
    )
    model = ItemItemRecommender().fit(interactions, RecParams(neighbours=2, shrinkage=0.0))
    return LoadedRecommender("3", model, history_version)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOnlineStore]:
    """An online store holding user 1's churn vector in versions A and B (B adds a column)
    over the same data, and user 1's history in version H."""
    with SqliteOnlineStore(tmp_path / "online.sqlite") as online:
        common = {"user_id": [1], "feature_timestamp": [DAY], "created_at": [DAY]}
        online.write(CHURN.name, pd.DataFrame({**common, "feature_set_version": ["fsa"],
                                                "minutes": [-3.0]}), ["user_id"])  # fmt: skip
        online.write(CHURN.name, pd.DataFrame({**common, "feature_set_version": ["fsb"],
                                                "minutes": [-3.0], "tickets": [9.0]}),
                     ["user_id"])  # fmt: skip
        online.write(USER_HISTORY.name, pd.DataFrame({**common, "feature_set_version": ["h1"],
                                                       "recent_shows": [json.dumps(["a"])],
                                                       "last_show_id": ["a"]}),
                     ["user_id"])  # fmt: skip
        yield online


def client_for(
    tmp_path: Path, store: SqliteOnlineStore, models: ModelService, **settings: object
) -> TestClient:
    app = create_app(
        Settings(data_dir=tmp_path, **settings), poll_seconds=60, store=store, models=models
    )
    return TestClient(app)
