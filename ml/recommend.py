"""Show recommendations: an item-item collaborative model with a popularity prior.

**Task.** "Next new show": given what a user has watched, rank the shows they have *not*
watched yet. Offline it is measured on a time split (`split_by_time`): the model is fit on
interactions first watched before a cut day, and judged on the user × show pairs first watched
on or after it that the user had not watched before it (re-watches are not recommendations).

**Interactions** (`load_interactions`) are distinct user × show pairs from the per-event
viewing log (``staging.stg_events__viewing_events``), which sees every show of a session, not
only the first and last one the sessions mart keeps: first and last watch time and seconds of
playback progress (positive position deltas within one player session, as the sessions mart
counts them).

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

`PopularityRecommender` is the baseline with the same interface.

**Serving and MLflow.** `save`/`load` write numpy ``.npz`` (``allow_pickle=False``) and JSON,
never pickle. `ml.recommender_model.RecommenderPyfunc` wraps the saved folder as an MLflow
pyfunc model; `log_recommender` logs it with a signature (see `predict_frame` for the input
and output columns). `user_histories` builds the ``recs_user_history`` online feature rows: each
user's recently watched shows, most recent first, as a JSON string (the online store holds
scalars best; a JSON string round-trips unchanged through every backend).
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARTIFACT_KEY",
    "EVENTS_RELATION",
    "HISTORY_FEATURE_SET",
    "ItemItemRecommender",
    "PopularityRecommender",
    "RecEvaluation",
    "RecParams",
    "Recommender",
    "batch_recommend",
    "default_cut",
    "evaluate_recommender",
    "histories_from",
    "load",
    "load_interactions",
    "log_recommender",
    "parse_history",
    "plot_ranking_curves",
    "predict_frame",
    "ranking_curves",
    "recall_ndcg",
    "save",
    "split_by_time",
    "user_histories",
]

EVENTS_RELATION = "staging.stg_events__viewing_events"
HISTORY_FEATURE_SET = "recs_user_history"
HISTORY_FEATURE_SET_VERSION = "v1"
FORMAT_VERSION = 1
ARTIFACT_KEY = "recommender"
_INTERACTION_COLUMNS = [
    "user_id",
    "show_id",
    "first_watched_at",
    "last_watched_at",
    "watched_seconds",
]


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
    history_window_days: int = Field(90, ge=1, description="Days of viewing kept as history.")
    max_history: int = Field(100, ge=1, description="Most recent shows kept per user.")


# --------------------------------------------------------------------------------------------
# interactions and the time split


def load_interactions(
    con: Any, start: date | None, end: date, relation: str = EVENTS_RELATION
) -> pd.DataFrame:
    """Return distinct user × show pairs watched on days in [start, end] (start None: all).

    Columns: user_id (str), show_id (str), first_watched_at and last_watched_at (timestamps),
    watched_seconds (float: positive playback progress within player sessions).
    """
    sql = f"""
        with events as (
            select
                user_id,
                show_id,
                occurred_at,
                position_ms - lag(position_ms) over (
                    partition by session_id order by occurred_at, event_id
                ) as delta_ms
            from {relation}
            where
                event_date <= $end
                and ($start is null or event_date >= $start)
                and user_id is not null
                and show_id is not null
        )
        select
            user_id::varchar as user_id,
            show_id::varchar as show_id,
            min(occurred_at)::timestamp as first_watched_at,
            max(occurred_at)::timestamp as last_watched_at,
            (coalesce(sum(greatest(delta_ms, 0)), 0) / 1000.0)::double as watched_seconds
        from events
        group by all
        order by user_id, first_watched_at, show_id
    """
    frame: pd.DataFrame = con.execute(sql, {"start": start, "end": end}).fetchdf()
    return _typed_interactions(frame)


def _typed_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["show_id"] = out["show_id"].astype(str)
    out["first_watched_at"] = pd.to_datetime(out["first_watched_at"])
    if "last_watched_at" not in out:
        out["last_watched_at"] = out["first_watched_at"]
    out["last_watched_at"] = pd.to_datetime(out["last_watched_at"])
    out["watched_seconds"] = out["watched_seconds"].astype(float)
    extra = [c for c in out.columns if c not in _INTERACTION_COLUMNS]
    return out[_INTERACTION_COLUMNS + extra].reset_index(drop=True)


def split_by_time(interactions: pd.DataFrame, cut: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, test): pairs first watched before ``cut``, and new pairs from ``cut`` on.

    Train rows are clipped to what was known before the cut (``last_watched_at`` at most the
    first watch before it; ``watched_seconds`` is kept, a small look-ahead in a weight only).
    Test holds the user × show pairs first watched on or after the cut; a pair's first watch
    is its earliest, so none of them was watched by that user before the cut.
    """
    frame = _typed_interactions(interactions)
    cut_ts = pd.Timestamp(cut)
    before = frame["first_watched_at"] < cut_ts
    train = frame[before].copy()
    clipped = train["last_watched_at"] >= cut_ts
    train.loc[clipped, "last_watched_at"] = train.loc[clipped, "first_watched_at"]
    test = frame[~before].copy()
    return train.reset_index(drop=True), test.reset_index(drop=True)


def default_cut(interactions: pd.DataFrame, holdout_days: int = 14) -> date:
    """Return the first day of the last ``holdout_days`` days of the interactions."""
    if interactions.empty:
        raise ValueError("no interactions: cannot place a time split")
    last = pd.Timestamp(interactions["last_watched_at"].max()).date()
    return last - timedelta(days=holdout_days - 1)


# --------------------------------------------------------------------------------------------
# recommenders


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
        train = _typed_interactions(train)
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
        train = _typed_interactions(train)
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
        cf = np.bincount(nbr.ravel(), weights=weights.ravel(), minlength=n)
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


# --------------------------------------------------------------------------------------------
# offline evaluation


@dataclass(frozen=True)
class RecEvaluation:
    """Mean per-user recall@k and NDCG@k over the users with a new show in the test window."""

    recall_at_k: float
    ndcg_at_k: float
    users: int
    k: int

    def metrics(self) -> dict[str, float]:
        """Return the metrics as a flat dict (e.g. for ``mlflow.log_metrics``)."""
        return {key: float(value) for key, value in asdict(self).items()}


def histories_from(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Return each user's shows, most recently watched first."""
    frame = _typed_interactions(interactions).sort_values(
        ["user_id", "last_watched_at", "show_id"], ascending=[True, False, True]
    )
    return {str(u): list(g) for u, g in frame.groupby("user_id", sort=False)["show_id"]}


def recall_ndcg(recommended: Sequence[str], relevant: set[str], k: int) -> tuple[float, float]:
    """Return (recall@k, NDCG@k) of one ranked list: binary relevance, log2 discount."""
    if not relevant:
        raise ValueError("no relevant items: recall is undefined")
    top = list(recommended)[:k]
    gains = [1.0 if show in relevant else 0.0 for show in top]
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return sum(gains) / len(relevant), dcg / ideal


def evaluate_recommender(
    model: Recommender, train: pd.DataFrame, test: pd.DataFrame, k: int = 10
) -> RecEvaluation:
    """Score the next-new-show task: history is the user's train shows, relevant the test ones."""
    if test.empty:
        raise ValueError("the test window holds no new user x show pairs")
    history = histories_from(train)
    relevant = {str(u): set(g) for u, g in _typed_interactions(test).groupby("user_id")["show_id"]}
    users = sorted(relevant)
    recs = model.recommend_many([history.get(u, []) for u in users], k)
    recalls, ndcgs = zip(
        *(recall_ndcg([s for s, _ in r], relevant[u], k) for u, r in zip(users, recs, strict=True)),
        strict=True,
    )
    return RecEvaluation(
        recall_at_k=float(np.mean(recalls)), ndcg_at_k=float(np.mean(ndcgs)), users=len(users), k=k
    )


CURVE_COLUMNS = ["k", "recall", "ndcg", "coverage", "popularity"]


def ranking_curves(
    model: Recommender, train: pd.DataFrame, test: pd.DataFrame, k_max: int = 20
) -> pd.DataFrame:
    """Return one row per k in 1..k_max of the next-new-show task (as `evaluate_recommender`).

    Columns: ``recall`` and ``ndcg`` (means over the test users, as `recall_ndcg`),
    ``coverage`` (share of the model's catalogue in at least one user's top k) and
    ``popularity`` (popularity bias: the mean popularity percentile of the recommended shows
    in the catalogue, by the model's recency-weighted first watches before the cut, the
    popularity prior; 1.0 is the most watched show).
    """
    if test.empty:
        raise ValueError("the test window holds no new user x show pairs")
    if k_max < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    history = histories_from(train)
    relevant = {str(u): set(g) for u, g in _typed_interactions(test).groupby("user_id")["show_id"]}
    users = sorted(relevant)
    recs = model.recommend_many([history.get(u, []) for u in users], k_max)
    percentile = (
        pd.Series(model.popularity, index=model.show_ids).rank(pct=True, method="average").to_dict()
    )
    n_users = len(users)
    hits = np.zeros((n_users, k_max))
    popularity = np.full((n_users, k_max), np.nan)
    first_rank: dict[str, int] = {}  # show -> best rank at which any user got it
    for i, (user, ranked) in enumerate(zip(users, recs, strict=True)):
        for rank, (show, _) in enumerate(ranked):
            hits[i, rank] = show in relevant[user]
            popularity[i, rank] = percentile.get(show, 0.0)
            first_rank[show] = min(first_rank.get(show, rank), rank)
    ks = np.arange(1, k_max + 1)
    n_relevant = np.array([len(relevant[u]) for u in users])
    discount = 1.0 / np.log2(np.arange(k_max) + 2.0)
    dcg = np.cumsum(hits * discount, axis=1)
    ideal_cum = np.cumsum(discount)
    ideal = ideal_cum[np.minimum(ks[None, :], n_relevant[:, None]) - 1]
    shown = np.bincount(list(first_rank.values()), minlength=k_max)[:k_max]
    filled = np.cumsum(~np.isnan(popularity), axis=1)
    pop_sum = np.cumsum(np.nan_to_num(popularity), axis=1)
    return pd.DataFrame(
        {
            "k": ks,
            "recall": (np.cumsum(hits, axis=1) / n_relevant[:, None]).mean(axis=0),
            "ndcg": (dcg / ideal).mean(axis=0),
            "coverage": np.cumsum(shown) / max(model.n_shows, 1),
            "popularity": pop_sum.sum(axis=0) / np.maximum(filled.sum(axis=0), 1),
        }
    )


def plot_ranking_curves(curves: Mapping[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write recall@k / NDCG@k and coverage / popularity-bias plots of each named model's
    `ranking_curves`; return the PNG paths."""
    from matplotlib.figure import Figure  # imported here: serving never draws

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, panels in (
        ("ranking_at_k.png", (("recall", "Recall@k"), ("ndcg", "NDCG@k"))),
        ("coverage_and_popularity.png", (("coverage", "Catalogue coverage@k"),
                                         ("popularity", "Popularity bias@k"))),
    ):  # fmt: skip
        fig = Figure(figsize=(10, 4))
        axes = fig.subplots(1, 2)
        for ax, (column, title) in zip(axes, panels, strict=True):
            for label, frame in curves.items():
                ax.plot(frame["k"], frame[column], marker="o", markersize=3, label=label)
            ax.set(xlabel="k (recommendations shown)", title=title)
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        if name == "coverage_and_popularity.png":
            axes[0].set(ylabel="share of the catalogue recommended", ylim=(0, 1.02))
            axes[1].set(ylabel="mean popularity percentile (1 = most watched)", ylim=(0, 1.02))
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, format="png", dpi=100)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# serialisation: npz + json, no pickle


def save(model: ItemItemRecommender, path: Path) -> Path:
    """Write ``model`` into the folder ``path`` (created) as ``arrays.npz`` and ``model.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(
        path / "arrays.npz",
        neighbour_idx=model.neighbour_idx,
        neighbour_sim=model.neighbour_sim,
        popularity=model.popularity,
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "item_item",
        "show_ids": model.show_ids,
        "params": model.params.model_dump(mode="json"),
    }
    (path / "model.json").write_text(json.dumps(meta))
    return path


def load(path: Path) -> ItemItemRecommender:
    """Read a model written by `save`."""
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "item_item":
        raise ValueError(f"{path} is not an item-item recommender of format {FORMAT_VERSION}")
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        idx, sim, pop = arrays["neighbour_idx"], arrays["neighbour_sim"], arrays["popularity"]
    model = ItemItemRecommender()
    model.params = RecParams.model_validate(meta["params"])
    model._set_catalogue(meta["show_ids"], pop)
    model._set_neighbours(idx, sim)
    return model


# --------------------------------------------------------------------------------------------
# batch and online serving


def user_histories(
    con: Any,
    as_of: date,
    window_days: int,
    max_history: int = 100,
    relation: str = EVENTS_RELATION,
) -> pd.DataFrame:
    """Return one ``recs_user_history`` feature row per user who watched in the window.

    Columns: user_id (str), recent_shows (JSON list of show ids, most recently watched first,
    at most ``max_history``), last_show_id (the most recent one, a ``just_watched`` for
    serving), feature_timestamp (the day after ``as_of``), created_at (when the inputs were
    known: the later of that and the last landing time of the user's events),
    feature_set_version.
    """
    start = as_of - timedelta(days=window_days - 1)
    sql = f"""
        select
            user_id::varchar as user_id,
            show_id::varchar as show_id,
            max(occurred_at) as last_watched_at,
            max(_landed_at) as known_at
        from {relation}
        where
            event_date between $start and $end
            and user_id is not null
            and show_id is not null
        group by all
    """
    pairs: pd.DataFrame = con.execute(sql, {"start": start, "end": as_of}).fetchdf()
    feature_ts = pd.Timestamp(as_of + timedelta(days=1))
    if pairs.empty:
        return pd.DataFrame(
            {
                "user_id": pd.Series([], dtype=str),
                "recent_shows": pd.Series([], dtype=str),
                "last_show_id": pd.Series([], dtype=str),
                "feature_timestamp": pd.Series([], dtype="datetime64[us]"),
                "created_at": pd.Series([], dtype="datetime64[us]"),
                "feature_set_version": pd.Series([], dtype=str),
            }
        )
    pairs = pairs.sort_values(
        ["user_id", "last_watched_at", "show_id"], ascending=[True, False, True]
    )
    grouped = pairs.groupby("user_id", sort=True)
    shows = grouped["show_id"].agg(lambda s: json.dumps(list(s)[:max_history]))
    known = pd.to_datetime(grouped["known_at"].max())
    frame = pd.DataFrame(
        {
            "user_id": shows.index.astype(str),
            "recent_shows": shows.to_numpy(),
            "last_show_id": grouped["show_id"].first().to_numpy(),
            "feature_timestamp": feature_ts,
            "created_at": known.where(known > feature_ts, feature_ts).fillna(feature_ts).to_numpy(),
            "feature_set_version": HISTORY_FEATURE_SET_VERSION,
        }
    )
    frame["feature_timestamp"] = pd.to_datetime(frame["feature_timestamp"])
    frame["created_at"] = pd.to_datetime(frame["created_at"])
    return frame


def batch_recommend(
    model: Recommender,
    histories: pd.DataFrame,
    k: int = 10,
    use_last_show: bool = False,
) -> pd.DataFrame:
    """Return the top ``k`` of every user in ``histories`` (user_id, rank, show_id, score).

    ``histories`` has user_id and recent_shows (JSON string or list, e.g. from
    `user_histories`); with ``use_last_show`` its last_show_id is used as ``just_watched``.
    """
    lists = [parse_history(v) for v in histories["recent_shows"].tolist()]
    justs: list[str | None] | None = None
    if use_last_show and "last_show_id" in histories:
        justs = [_optional_show(v) for v in histories["last_show_id"].tolist()]
    recs = model.recommend_many(lists, k, justs)
    users = histories["user_id"].astype(str).tolist()
    counts = [len(r) for r in recs]
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.array(users, dtype=object), counts),
            "rank": np.concatenate([np.arange(1, c + 1) for c in counts] or [np.zeros(0, int)]),
            "show_id": [s for r in recs for s, _ in r],
            "score": np.array([x for r in recs for _, x in r], dtype=np.float64),
        }
    )


# --------------------------------------------------------------------------------------------
# MLflow


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
    counts = [len(r) for r in recs]
    return pd.DataFrame(
        {
            "row": np.repeat(np.arange(len(recs), dtype=np.int64), counts),
            "rank": np.concatenate(
                [np.arange(1, c + 1, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)]
            ),
            "show_id": pd.Series([s for r in recs for s, _ in r], dtype=object),
            "score": np.array([x for r in recs for _, x in r], dtype=np.float64),
        }
    )


def log_recommender(
    model: ItemItemRecommender,
    name: str,
    input_example: pd.DataFrame,
    registered_model_name: str | None = None,
    k: int = 10,
    pip_requirements: list[str] | None = None,
) -> Any:
    """Log ``model`` as a pyfunc in the active MLflow run; return the ``ModelInfo``.

    The signature is inferred from ``input_example`` and the model's output on it, with the
    param ``k``: an example whose ``history`` holds lists gives an ``Array(string)`` column
    (MLflow then rejects JSON strings), one holding JSON strings gives a ``string`` column. The caller starts the run (and may register via ``registered_model_name``).
    """
    import mlflow
    from mlflow.models import infer_signature

    output = predict_frame(model, input_example, k)
    with warnings.catch_warnings():
        # the hint is about integer *input* columns with missing values; ours are outputs
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        signature = infer_signature(input_example, output, params={"k": k})
    with tempfile.TemporaryDirectory(prefix="loopline-recs-") as tmp:
        folder = save(model, Path(tmp) / ARTIFACT_KEY)
        return mlflow.pyfunc.log_model(
            name=name,
            # model from code: the wrapper is this repo's file, never a cloudpickle
            python_model=str(Path(__file__).with_name("recommender_model.py")),
            pip_requirements=pip_requirements,
            artifacts={ARTIFACT_KEY: str(folder)},
            signature=signature,
            input_example=input_example,
            registered_model_name=registered_model_name,
        )


def metrics_table(evaluations: Mapping[str, RecEvaluation]) -> pd.DataFrame:
    """Return one row per named evaluation (for reports)."""
    return pd.DataFrame({name: e.metrics() for name, e in evaluations.items()}).T
