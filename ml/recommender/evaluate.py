"""Offline evaluation of recommenders on the "next new show" task after a time cut.

`evaluate_recommender` gives recall@k and NDCG@k (history: the user's shows before the cut;
relevant: the new shows they started from it); `ranking_curves` gives the same over k with
catalogue coverage and popularity bias, and `plot_ranking_curves` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.recommender.interactions import histories_from, typed_interactions
from ml.recommender.model import Recommender


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
    relevant = {str(u): set(g) for u, g in typed_interactions(test).groupby("user_id")["show_id"]}
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
    relevant = {str(u): set(g) for u, g in typed_interactions(test).groupby("user_id")["show_id"]}
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


def metrics_table(evaluations: Mapping[str, RecEvaluation]) -> pd.DataFrame:
    """Return one row per named evaluation (for reports)."""
    return pd.DataFrame({name: e.metrics() for name, e in evaluations.items()}).T
