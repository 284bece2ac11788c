"""Model performance per weekly window, from predictions joined with their realised outcomes.

Pure: frames in (the rows of ``monitoring.fct_churn_prediction_outcomes`` and
``monitoring.fct_recommendation_outcomes``), frames out. Metrics are computed only on rows
whose outcome is known; a window's ``n`` says how many. The rules of `conf/monitoring.yaml`
judge them (`ml.monitoring.rules`); metrics without a rule are kept with status ``info`` so
the history of every metric can be plotted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ml.churn.evaluate import evaluate, expected_calibration_error
from ml.monitoring.config import Rule
from ml.monitoring.rules import METRIC_COLUMNS, RESULT_COLUMNS, WINDOW_KEYS, evaluate_rules

INFO = "info"
_GROUP = ["model_version", "window_start", "window_end"]


def _long(
    model: str, keys: tuple[object, ...], values: dict[str, float]
) -> list[dict[str, object]]:
    version, start, end = keys
    return [
        {"model": model, "version": str(version), "window_start": start, "window_end": end,
         "metric": metric, "value": float(value)}
        for metric, value in values.items()
    ]  # fmt: skip


def churn_window_metrics(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per churn version and window: n, positives, ROC AUC (NaN with one class), recall,
    precision and accuracy at the version's threshold, calibration error, Brier score."""
    rows: list[dict[str, object]] = []
    known = outcomes[outcomes["has_outcome"].astype(bool)]
    for keys, window in known.groupby(_GROUP, sort=True):
        values = churn_metrics(
            window["is_churned"].astype(int).to_numpy(),
            window["churn_probability"].astype(float).to_numpy(),
            float(window["threshold"].iloc[0]),
        )
        rows.extend(_long("churn", keys, values))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def churn_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The churn metrics of one set of labelled rows (a window, or a version's holdout): n,
    positives, ROC AUC (NaN with one class), recall, precision and accuracy at `threshold`
    (high risk: p >= threshold), calibration error, Brier score."""
    predicted = p >= threshold
    values = {
        "n": float(len(y)),
        "positives": float(y.sum()),
        "positive_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "accuracy": float((predicted == y.astype(bool)).mean()),
        "calibration_error": expected_calibration_error(y, p),
        "brier": float(np.mean((p - y) ** 2)),
    }
    if 0 < y.sum() < len(y):
        metrics = evaluate(y, p, threshold).metrics()
        values.update(
            roc_auc=metrics["roc_auc"], recall=metrics["recall"], precision=metrics["precision"]
        )
    else:
        values.update(roc_auc=np.nan, recall=np.nan, precision=np.nan)
    return values


def recommender_window_metrics(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per recommender version and window: users with a started show (n), the model's mean
    recall@10 and the popularity baseline's on the same users."""
    rows: list[dict[str, object]] = []
    known = outcomes[outcomes["has_outcome"].astype(bool) & (outcomes["started_shows"] > 0)]
    for keys, window in known.groupby(_GROUP, sort=True):
        values = {
            "n": float(len(window)),
            "recall_at_10": float(window["recall_at_10"].mean()),
            "popularity_recall_at_10": float(window["popularity_recall_at_10"].mean()),
        }
        rows.extend(_long("recommender", keys, values))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def performance_rows(metrics: pd.DataFrame, rules: Sequence[Rule], min_rows: int) -> pd.DataFrame:
    """The rows of ``monitoring.model_performance``: every rule's verdict per window, plus
    every other metric with status ``info``."""
    judged = evaluate_rules(metrics, rules, min_rows)
    ruled = {(rule.model, rule.metric) for rule in rules}
    keep = np.array(
        [(m, k) not in ruled for m, k in zip(metrics["model"], metrics["metric"], strict=True)],
        dtype=bool,
    )
    rest = metrics[keep]
    n_rows = metrics[metrics["metric"] == "n"].set_index(WINDOW_KEYS)["value"]
    info = rest.assign(
        comparison=None,
        threshold=np.nan,
        baseline_metric=None,
        n_rows=[int(n_rows.get(tuple(k), 0)) for k in rest[WINDOW_KEYS].itertuples(index=False)],
        status=INFO,
        rule=None,
    )
    frames = [f for f in (judged, info[RESULT_COLUMNS]) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(
        [*WINDOW_KEYS, "metric"], kind="stable", ignore_index=True
    )
