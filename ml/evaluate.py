"""Evaluate a churn classifier: thresholds, metrics, permutation importance, a gate, plots.

All functions are pure except `plot_evaluation`, which writes PNGs into the folder it is given.
Plots use `matplotlib.figure.Figure` directly (Agg canvas), so no global pyplot state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOWER_IS_BETTER = frozenset({"log_loss", "brier"})
"""Metrics whose gate threshold is a maximum; every other metric's threshold is a minimum."""


@dataclass(frozen=True)
class CalibrationBins:
    """Per non-empty probability bin: mean predicted probability, fraction positive, row count."""

    mean_predicted: list[float]
    fraction_positive: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics at one threshold, plus the curve points needed to plot them."""

    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    threshold: float
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]
    calibration: CalibrationBins
    positive_rate: float
    n: int
    roc_points: tuple[list[float], list[float]]  # (fpr, tpr)
    pr_points: tuple[list[float], list[float]]  # (recall, precision)

    def metrics(self) -> dict[str, float]:
        """Return the scalar metrics as a flat dict (for MLflow)."""
        (tn, fp), (fn, tp) = self.confusion
        return {
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "log_loss": self.log_loss,
            "brier": self.brier,
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "positive_rate": self.positive_rate,
            "predicted_positive_rate": (fp + tp) / self.n,
            "n": float(self.n),
            "tn": float(tn),
            "fp": float(fp),
            "fn": float(fn),
            "tp": float(tp),
        }


@dataclass(frozen=True)
class GateResult:
    """Whether every gated metric met its threshold, and a message per failure."""

    passed: bool
    failures: list[str]


def _arrays(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(proba, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but proba has {p.size}; pass aligned arrays")
    if y.size == 0:
        raise ValueError("y_true is empty; evaluate on at least one row of each class")
    if np.isnan(p).any():
        raise ValueError("proba has NaN values; check the model's input features")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("y_true must be binary (0/1 or bool)")
    return y, p


def _need_both_classes(y: np.ndarray) -> None:
    if np.unique(y).size < 2:
        raise ValueError("y_true has a single class; ROC AUC and F1 need positives and negatives")


def choose_threshold(
    y_true: ArrayLike,
    proba: ArrayLike,
    rule: Literal["f1", "capacity"],
    capacity_share: float = 0.1,
) -> float:
    """Return the score threshold (predict positive when proba >= threshold) for `rule`.

    ``f1``: the threshold maximising F1 on the given data. ``capacity``: the score of the
    ``ceil(capacity_share * n)``-th highest row, so that share is contacted (more on ties).
    """
    y, p = _arrays(y_true, proba)
    if rule == "capacity":
        if not 0.0 < capacity_share <= 1.0:
            raise ValueError(f"capacity_share must be in (0, 1], got {capacity_share}")
        k = max(1, math.ceil(capacity_share * p.size - 1e-9))
        return float(np.sort(p)[::-1][k - 1])
    if rule == "f1":
        _need_both_classes(y)
        precision, recall, thresholds = precision_recall_curve(y, p)
        precision, recall = precision[:-1], recall[:-1]
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thresholds[int(np.argmax(f1))])
    raise ValueError(f"unknown threshold rule {rule!r}; use 'f1' or 'capacity'")


def _calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> CalibrationBins:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    mean_predicted: list[float] = []
    fraction_positive: list[float] = []
    counts: list[int] = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            mean_predicted.append(float(p[mask].mean()))
            fraction_positive.append(float(y[mask].mean()))
            counts.append(int(mask.sum()))
    return CalibrationBins(mean_predicted, fraction_positive, counts)


def evaluate(
    y_true: ArrayLike, proba: ArrayLike, threshold: float, calibration_bins: int = 10
) -> Evaluation:
    """Return ranking, probability and threshold metrics of `proba` against `y_true`."""
    y, p = _arrays(y_true, proba)
    _need_both_classes(y)
    predicted = (p >= threshold).astype(int)
    fpr, tpr, _ = roc_curve(y, p)
    precision_pts, recall_pts, _ = precision_recall_curve(y, p)
    matrix = confusion_matrix(y, predicted, labels=[0, 1])
    return Evaluation(
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        threshold=float(threshold),
        precision=float(precision_score(y, predicted, zero_division=0)),
        recall=float(recall_score(y, predicted, zero_division=0)),
        f1=float(f1_score(y, predicted, zero_division=0)),
        confusion=[[int(v) for v in row] for row in matrix],
        calibration=_calibration_bins(y, p, calibration_bins),
        positive_rate=float(y.mean()),
        n=int(y.size),
        roc_points=(fpr.tolist(), tpr.tolist()),
        pr_points=(recall_pts.tolist(), precision_pts.tolist()),
    )


def permutation_importance_table(
    model: Any, x: pd.DataFrame, y: ArrayLike, n_repeats: int = 5, random_state: int = 0
) -> pd.DataFrame:
    """Return per-feature drop in ROC AUC when permuted (pass the holdout), largest first."""
    result = permutation_importance(
        model,
        x,
        np.asarray(y).astype(int),
        scoring="roc_auc",
        n_repeats=n_repeats,
        random_state=random_state,
    )
    table = pd.DataFrame(
        {
            "feature": list(x.columns),
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return table.sort_values(
        ["importance_mean", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def quality_gate(evaluation: Evaluation, thresholds: Mapping[str, float]) -> GateResult:
    """Check metrics against thresholds: a maximum for `LOWER_IS_BETTER`, else a minimum."""
    metrics = evaluation.metrics()
    unknown = sorted(set(thresholds) - set(metrics))
    if unknown:
        raise ValueError(f"unknown gate metric(s) {unknown}; choose from {sorted(metrics)}")
    failures: list[str] = []
    for name, limit in thresholds.items():
        value = metrics[name]
        if name in LOWER_IS_BETTER:
            if not value <= limit:  # NaN fails
                failures.append(f"{name}={value:.4f} is above the maximum {limit}")
        elif not value >= limit:
            failures.append(f"{name}={value:.4f} is below the minimum {limit}")
    return GateResult(passed=not failures, failures=failures)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_evaluation(
    evaluation: Evaluation, importance: pd.DataFrame | None, out_dir: Path
) -> list[Path]:
    """Write ROC, PR, calibration, confusion and (if given) importance PNGs; return their paths."""
    from matplotlib.figure import Figure  # imported here: scoring and serving never draw

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    fpr, tpr = evaluation.roc_points
    ax.plot(fpr, tpr, label=f"AUC = {evaluation.roc_auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    written.append(_save(fig, out_dir / "roc_curve.png"))

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    recall, precision = evaluation.pr_points
    ax.step(recall, precision, where="post", label=f"AP = {evaluation.pr_auc:.3f}")
    ax.axhline(evaluation.positive_rate, linestyle="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    written.append(_save(fig, out_dir / "pr_curve.png"))

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    bins = evaluation.calibration
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.plot(bins.mean_predicted, bins.fraction_positive, marker="o")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Fraction positive",
        title=f"Calibration (Brier = {evaluation.brier:.3f})",
    )
    written.append(_save(fig, out_dir / "calibration_curve.png"))

    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    matrix = np.asarray(evaluation.confusion)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["stay", "churn"],
        yticklabels=["stay", "churn"],
        xlabel="Predicted",
        ylabel="Actual",
        title=f"Confusion at {evaluation.threshold:.3f}",
    )
    written.append(_save(fig, out_dir / "confusion_matrix.png"))

    if importance is not None and not importance.empty:
        top = importance.head(20).iloc[::-1]
        fig = Figure(figsize=(6, max(3.0, 0.3 * len(top) + 1)))
        ax = fig.subplots()
        ax.barh(top["feature"], top["importance_mean"], xerr=top["importance_std"])
        ax.set(xlabel="Mean drop in ROC AUC", title="Permutation importance (holdout)")
        written.append(_save(fig, out_dir / "permutation_importance.png"))
    return written
