"""What the serving API needs of its models, behind one small interface (`ModelService`).

A `ModelService` holds the loaded churn model and recommender and says which versions they
are; `load` brings in new versions. `RegistryModelService` follows an MLflow registry alias
(a version is loaded *beside* the current one and a single reference swapped, so requests in
flight finish on the model they started with); tests build a service around models fitted in
the test, so the API can be exercised without a registry.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.settings import Settings
from ml.churn.score import ChampionModel, load_churn_model
from ml.recommender.persistence import LoadedRecommender, load_recommender
from ml.registry import CHURN_MODEL, RECS_MODEL, alias_version, configure

log = logging.getLogger("loopline.serve")


@dataclass(frozen=True)
class LoadedChurn:
    """A churn model version and the fastest way it can score one row."""

    champion: ChampionModel
    scorer: Any  # FastChurnScorer, or None to use the scikit-learn model

    def score(self, values: dict[str, object]) -> float:
        """The churn probability of one feature dict."""
        if self.scorer is not None:
            return float(self.scorer.score(values))
        return float(self.score_many([values])[0])

    def score_many(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """The churn probability of each feature dict, in one model call for all of them."""
        if not rows:
            return np.zeros(0)
        if self.scorer is not None:
            return np.asarray(self.scorer.score_many(rows), dtype=float)
        import pandas as pd

        from ml.churn.model import as_model_input

        columns = self.champion.feature_columns
        frame = pd.DataFrame([{c: values.get(c) for c in columns} for values in rows])
        return np.asarray(self.champion.model.predict_proba(as_model_input(frame))[:, 1])


def load_churn(settings: Settings, alias: str) -> LoadedChurn:
    """Load the churn model under `alias` and compile its fast path where possible."""
    from ml.serving.fastpath import NotCompilableError, compile_churn

    champion = load_churn_model(settings, alias)
    try:
        scorer = compile_churn(champion.model, champion.feature_columns, champion.numeric_columns)
    except NotCompilableError as exc:
        log.warning(
            "churn v%s has no fast path (%s); serving with scikit-learn", champion.version, exc
        )
        scorer = None
    return LoadedChurn(champion, scorer)


class ModelService(ABC):
    """The models the API serves: the current versions, and `load` to move to new ones.

    Readers take ``churn`` / ``recommender`` once per request and never lock: `load` replaces
    each with a new object, never mutates one in place.
    """

    churn: LoadedChurn | None
    recommender: LoadedRecommender | None
    last_error: str | None

    @abstractmethod
    def load(self) -> bool:
        """Load any model whose version changed; return whether anything was swapped."""

    def versions(self) -> dict[str, str | None]:
        """Return the served version of each model (None: none loaded)."""
        return {
            "churn_model": self.churn.champion.version if self.churn else None,
            "recommender": self.recommender.version if self.recommender else None,
        }


class RegistryModelService(ModelService):
    """The models an MLflow registry alias points at; `load` swaps in versions as it moves."""

    def __init__(self, settings: Settings, alias: str) -> None:
        self.settings = settings
        self.alias = alias
        self.churn = None
        self.recommender = None
        self.last_error = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it

    def load(self) -> bool:
        """Load any model whose alias moved; return whether anything was swapped."""
        with self._lock:
            swapped = False
            try:
                client = configure(self.settings)
                churn_version = alias_version(client, CHURN_MODEL, self.alias)
                current = self.churn.champion.version if self.churn else None
                if churn_version is not None and churn_version != current:
                    self.churn = load_churn(self.settings, self.alias)
                    log.info("churn model now v%s", self.churn.champion.version)
                    swapped = True
                recs_version = alias_version(client, RECS_MODEL, self.alias)
                current = self.recommender.version if self.recommender else None
                if recs_version is not None and recs_version != current:
                    self.recommender = load_recommender(self.settings, self.alias)
                    swapped = True
                self.last_error = None
            except Exception as exc:  # keep serving the loaded versions
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("model refresh failed; still serving the loaded versions")
            return swapped


class Watcher(threading.Thread):
    """Calls ``models.load()`` every ``poll_seconds`` until ``stopped`` is set."""

    def __init__(self, models: ModelService, poll_seconds: float) -> None:
        super().__init__(name="loopline-model-watcher", daemon=True)
        self.models = models
        self.poll_seconds = poll_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.poll_seconds):
            self.models.load()
