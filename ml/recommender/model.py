"""Show recommendations: an item-item collaborative model with a popularity prior.

**Task.** "Next new show": given what a user has watched, rank the shows they have *not*
watched yet (the offline split and the metrics: `ml.recommender.interactions`,
`ml.recommender.evaluate`).

**Model** (`ItemItemRecommender`). A sparse user × show matrix with implicit weights
(binary, or log of watched minutes) gives show-show similarities
``co(i, j) / (|i|^(1-a) · |j|^a)`` (``a = 0.5`` is cosine; a higher ``a`` favours popular
neighbours), shrunk by ``co / (co + shrinkage)`` so a pair seen by one or two users does not
count as much as an established one, keeping the top-M neighbours of every show as two dense
arrays (indices, similarities). A user's score for show ``c`` is
``Σ_h decay^rank(h) · sim(h, c)`` over the history (most recent first), plus
``just_watched_boost · sim(just_watched, c)`` for the "finished a show, what next" case. It
is normalised by its maximum and blended with a recency-weighted popularity prior
(``(1 - w) · cf + w · pop``): the prior ranks shows the neighbourhood does not reach, and is
the whole score of a cold user (no known show in the history). Watched shows are never
returned. One call is a ``bincount`` over at most ``len(history) · M`` entries and an
``argpartition`` over the catalogue: no pandas, tens of microseconds. `batch_recommend` scores
many users at once as one sparse product per chunk of users.

`PopularityRecommender` is the baseline with the same interface. Histories for serving and
batch scoring come from the dbt feature set ``recs_user_history``
(`ml.features.definitions.USER_HISTORY`): each user's recently watched shows, most recent
first, as a JSON string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from ml.recommender.interactions import typed_interactions


class RecParams(BaseModel):
    """Hyperparameters of the recommenders (defaults tuned on the simulated company)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    neighbours: int = Field(10, ge=1, description="Neighbours kept per show.")
    weighting: Literal["binary", "log_minutes"] = "binary"
    similarity_alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="0.5 is cosine; higher favours popular neighbours."
    )
    shrinkage: float = Field(5.0, ge=0.0, description="co / (co + shrinkage) damps rare pairs.")
    popularity_weight: float = Field(
        0.3, ge=0.0, le=1.0, description="Blend weight of the popularity prior."
    )
    popularity_half_life_days: float | None = Field(
        14.0, gt=0.0, description="Recency half-life of first watches; None counts all equally."
    )
    history_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="Weight decay per history position (most recent first)."
    )
    just_watched_boost: float = Field(
        1.0, ge=0.0, description="Extra weight on the neighbours of the show just finished."
    )


def parse_history(value: object) -> list[str]:
    """Return a history as a list of show ids from a list, an array, a JSON string or None."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError(f"a history JSON string must hold a list, got {type(parsed)}")
        return [str(item) for item in parsed]
    if isinstance(value, float) and math.isnan(value):
        return []
    if isinstance(value, np.ndarray | list | tuple):
        return [str(item) for item in value]
    raise TypeError(f"a history must be a list of show ids or a JSON string, got {type(value)}")


def _optional_show(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text or None


class Recommender:
    """Shared ranking: exclusion of watched shows, top-k, single and batch calls."""

    show_ids: list[str]
    popularity: np.ndarray  # per show, max 1 (0 for a show nobody watched recently)
    params: RecParams

    def __init__(self) -> None:
        self.show_ids = []
        self.popularity = np.zeros(0)
        self.params = RecParams()
        self._index: dict[str, int] = {}
        self._ids = np.array([], dtype=object)
        self._pop_order = np.zeros(0, dtype=np.int64)

    @property
    def n_shows(self) -> int:
        """Return the number of shows the model knows."""
        return len(self.show_ids)

    def _set_catalogue(self, show_ids: Sequence[str], popularity: np.ndarray) -> None:
        self.show_ids = [str(s) for s in show_ids]
        self._index = {show: i for i, show in enumerate(self.show_ids)}
        self._ids = np.array(self.show_ids, dtype=object)
        self.popularity = np.asarray(popularity, dtype=np.float64)
        # ties broken by catalogue position, the same in every call
        self._pop_order = np.lexsort((np.arange(self.n_shows), -self.popularity))

    def knows(self, show_id: str) -> bool:
        """Return whether ``show_id`` is in the catalogue the model was fit on."""
        return show_id in self._index

    def _indices(self, shows: Iterable[str]) -> list[int]:
        index = self._index
        return [index[s] for s in shows if s in index]

    def _scores(self, history: list[int], just: int | None) -> np.ndarray:
        raise NotImplementedError

    def _score_rows(self, histories: list[list[int]], justs: list[int | None]) -> np.ndarray:
        return np.vstack([self._scores(h, j) for h, j in zip(histories, justs, strict=True)])

    def recommend(
        self, history: Sequence[str], k: int = 10, just_watched: str | None = None
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` (show_id, score) pairs, best first, none of them in the history."""
        idx = self._indices(history)
        just = self._index.get(just_watched) if just_watched is not None else None
        scores = self._scores(idx, just)
        if just is not None:
            idx.append(just)
        if idx:
            scores[idx] = -np.inf
        top = _top_k(scores, k)
        return [(self.show_ids[i], float(scores[i])) for i in top]

    def recommend_many(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        just_watched: Sequence[str | None] | None = None,
        chunk: int = 2048,
    ) -> list[list[tuple[str, float]]]:
        """Return `recommend` of each history (and just-watched show), scored in chunks."""
        justs = list(just_watched) if just_watched is not None else [None] * len(histories)
        if len(justs) != len(histories):
            raise ValueError("just_watched must have one entry per history")
        out: list[list[tuple[str, float]]] = []
        for lo in range(0, len(histories), chunk):
            rows = [self._indices(h) for h in histories[lo : lo + chunk]]
            jidx = [self._index.get(j) if j is not None else None for j in justs[lo : lo + chunk]]
            scores = self._score_rows(rows, jidx)
            # watched shows and the one just watched are never recommended
            r_idx = [r for r, h in enumerate(rows) for _ in h]
            c_idx = [c for h in rows for c in h]
            for r, j in enumerate(jidx):
                if j is not None:
                    r_idx.append(r)
                    c_idx.append(j)
            scores[r_idx, c_idx] = -np.inf
            tops = _top_k_rows(scores, k)
            for r, top in enumerate(tops):
                out.append([(self.show_ids[i], float(scores[r, i])) for i in top])
        return out


def _top_k(scores: np.ndarray, k: int) -> list[int]:
    """Return the indices of the ``k`` best finite scores, best first, ties by index."""
    return _top_k_rows(scores[None, :], k)[0]


def _top_k_rows(scores: np.ndarray, k: int) -> list[list[int]]:
    n = scores.shape[1]
    if n == 0 or k <= 0:
        return [[] for _ in range(scores.shape[0])]
    kk = min(k, n)
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    picked = np.take_along_axis(scores, part, axis=1)
    # sort by score desc, then index asc (argpartition does not keep a stable order)
    order = np.lexsort((part, -picked), axis=1)
    part = np.take_along_axis(part, order, axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    return [
        [int(i) for i, s in zip(row, vals, strict=True) if np.isfinite(s)]
        for row, vals in zip(part, picked, strict=True)
    ]


def _popularity(
    train: pd.DataFrame, show_ids: Sequence[str], half_life_days: float | None
) -> np.ndarray:
    """Return per-show first-watch counts, recency-weighted by half-life, scaled to max 1."""
    if train.empty:
        return np.zeros(len(show_ids))
    first = pd.to_datetime(train["first_watched_at"])
    if half_life_days is None:
        weight = np.ones(len(train))
    else:
        age_days = (first.max() - first).dt.total_seconds().to_numpy() / 86_400.0
        weight = np.power(0.5, age_days / half_life_days)
    counts = pd.Series(weight, index=train["show_id"].to_numpy()).groupby(level=0).sum()
    pop = counts.reindex(list(show_ids)).fillna(0.0).to_numpy(dtype=np.float64)
    top = pop.max() if len(pop) else 0.0
    return pop / top if top > 0 else pop


class PopularityRecommender(Recommender):
    """Baseline: the recency-weighted most popular shows the user has not watched."""

    def fit(self, train: pd.DataFrame, params: RecParams | None = None) -> PopularityRecommender:
        """Count first watches per show (recency-weighted per ``params``)."""
        self.params = params or RecParams()
        train = typed_interactions(train)
        shows = sorted(train["show_id"].unique())
        self._set_catalogue(shows, _popularity(train, shows, self.params.popularity_half_life_days))
        return self

    def _scores(self, history: list[int], just: int | None) -> np.ndarray:
        return self.popularity.copy()

    def _score_rows(self, histories: list[list[int]], justs: list[int | None]) -> np.ndarray:
        return np.tile(self.popularity, (len(histories), 1))


class ItemItemRecommender(Recommender):
    """Item-item neighbourhood model blended with a popularity prior (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.neighbour_idx = np.zeros((0, 0), dtype=np.int32)
        self.neighbour_sim = np.zeros((0, 0), dtype=np.float64)
        self._sim_matrix: sp.csr_matrix | None = None

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, params: RecParams | None = None) -> ItemItemRecommender:
        """Fit similarities and the popularity prior on ``train`` interactions only."""
        self.params = p = params or RecParams()
        train = typed_interactions(train)
        shows = sorted(train["show_id"].unique())
        users = sorted(train["user_id"].unique())
        self._set_catalogue(shows, _popularity(train, shows, p.popularity_half_life_days))
        n = len(shows)
        if n == 0:
            self._set_neighbours(np.zeros((0, 0), np.int32), np.zeros((0, 0)))
            return self
        rows = pd.Index(users).get_indexer(train["user_id"])
        cols = pd.Index(shows).get_indexer(train["show_id"])
        if p.weighting == "binary":
            values = np.ones(len(train))
        else:
            values = np.log1p(train["watched_seconds"].to_numpy(dtype=np.float64) / 60.0)
            values = np.maximum(values, 1e-3)
        matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(users), n))
        binary = matrix.copy()
        binary.data[:] = 1.0
        gram = (matrix.T @ matrix).toarray()  # weighted co-occurrence, shows x shows
        co = (binary.T @ binary).toarray()  # co-viewers, for shrinkage
        norm = np.sqrt(np.maximum(np.diag(gram), 1e-12))
        a = p.similarity_alpha
        sim = gram / np.outer(norm ** (2.0 * (1.0 - a)), norm ** (2.0 * a))
        if p.shrinkage > 0:
            sim *= co / (co + p.shrinkage)
        np.fill_diagonal(sim, 0.0)
        m = min(p.neighbours, max(n - 1, 1))
        if m < n:
            top = np.argpartition(-sim, m - 1, axis=1)[:, :m]
        else:
            top = np.broadcast_to(np.arange(n), (n, n)).copy()
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        self._set_neighbours(
            np.take_along_axis(top, order, axis=1).astype(np.int32),
            np.take_along_axis(top_sim, order, axis=1),
        )
        return self

    def _set_neighbours(self, idx: np.ndarray, sim: np.ndarray) -> None:
        keep = sim > 0
        self.neighbour_idx = np.where(keep, idx, 0).astype(np.int32)
        self.neighbour_sim = np.where(keep, sim, 0.0).astype(np.float64)
        n = self.n_shows
        rows = np.repeat(np.arange(n), idx.shape[1] if idx.ndim == 2 else 0)
        self._sim_matrix = sp.csr_matrix(
            (self.neighbour_sim.ravel(), (rows, self.neighbour_idx.ravel())), shape=(n, n)
        )

    # -- scoring ---------------------------------------------------------------------------
    def _history_weights(self, count: int) -> np.ndarray:
        return np.power(self.params.history_decay, np.arange(count, dtype=np.float64))

    def _blend(self, cf: np.ndarray) -> np.ndarray:
        w = self.params.popularity_weight
        top = cf.max(axis=-1, keepdims=True) if cf.size else cf
        scaled = np.divide(cf, top, out=np.zeros_like(cf), where=top > 0)
        return (1.0 - w) * scaled + w * self.popularity

    def _scores(self, history: list[int], just: int | None) -> np.ndarray:
        n = self.n_shows
        if not history and just is None:
            return self._blend(np.zeros(n))
        nbr = self.neighbour_idx[history]
        weights = self.neighbour_sim[history] * self._history_weights(len(history))[:, None]
        # float even for an empty history (bincount of nothing is an int array, and the
        # just-watched boost below cannot be added to it in place)
        cf = np.bincount(nbr.ravel(), weights=weights.ravel(), minlength=n).astype(float)
        if just is not None and self.params.just_watched_boost > 0:
            cf += np.bincount(
                self.neighbour_idx[just],
                weights=self.neighbour_sim[just] * self.params.just_watched_boost,
                minlength=n,
            )
        return self._blend(cf)

    def _score_rows(self, histories: list[list[int]], justs: list[int | None]) -> np.ndarray:
        n = self.n_shows
        assert self._sim_matrix is not None
        r_idx: list[int] = []
        c_idx: list[int] = []
        vals: list[float] = []
        for r, hist in enumerate(histories):
            r_idx.extend([r] * len(hist))
            c_idx.extend(hist)
            vals.extend(self._history_weights(len(hist)).tolist())
        boost = self.params.just_watched_boost
        if boost > 0:
            for r, j in enumerate(justs):
                if j is not None:
                    r_idx.append(r)
                    c_idx.append(j)
                    vals.append(boost)
        weights = sp.csr_matrix((vals, (r_idx, c_idx)), shape=(len(histories), n))
        cf = np.asarray((weights @ self._sim_matrix).todense(), dtype=np.float64)
        return self._blend(cf)


def _ranked(recs: list[list[tuple[str, float]]]) -> tuple[list[int], dict[str, object]]:
    """Return per-row counts and the rank, show_id and score columns of flattened top-k lists."""
    counts = [len(r) for r in recs]
    columns: dict[str, object] = {
        "rank": np.concatenate(
            [np.arange(1, c + 1, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)]
        ),
        "show_id": pd.Series([s for r in recs for s, _ in r], dtype=object),
        "score": np.array([x for r in recs for _, x in r], dtype=np.float64),
    }
    return counts, columns


def batch_recommend(
    model: Recommender,
    histories: pd.DataFrame,
    k: int = 10,
    use_last_show: bool = False,
) -> pd.DataFrame:
    """Return the top ``k`` of every user in ``histories`` (user_id, rank, show_id, score).

    ``histories`` has user_id and recent_shows (JSON string or list, as the
    ``recs_user_history`` feature set holds them); with ``use_last_show`` its last_show_id is
    used as ``just_watched``. User ids keep their type.
    """
    lists = [parse_history(v) for v in histories["recent_shows"].tolist()]
    justs: list[str | None] | None = None
    if use_last_show and "last_show_id" in histories:
        justs = [_optional_show(v) for v in histories["last_show_id"].tolist()]
    counts, columns = _ranked(model.recommend_many(lists, k, justs))
    users = np.repeat(histories["user_id"].to_numpy(), counts)
    return pd.DataFrame({"user_id": users, **columns})


def predict_frame(model: Recommender, model_input: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Return the pyfunc output frame (row, rank, show_id, score) for ``model_input``."""
    frame = pd.DataFrame(model_input)
    if "history" not in frame:
        raise ValueError(f"model input needs a 'history' column; it has {list(frame.columns)}")
    lists = [parse_history(v) for v in frame["history"].tolist()]
    justs = (
        [_optional_show(v) for v in frame["just_watched"].tolist()]
        if "just_watched" in frame
        else None
    )
    recs = model.recommend_many(lists, k, justs)
    counts, columns = _ranked(recs)
    return pd.DataFrame({"row": np.repeat(np.arange(len(recs), dtype=np.int64), counts), **columns})
