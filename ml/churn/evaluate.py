"""Evaluate a churn classifier: thresholds, metrics, permutation importance, a gate, plots.

All functions are pure except `plot_evaluation`, which writes PNGs into the folder it is given.
Plots use `matplotlib.figure.Figure` directly (Agg canvas), so no global pyplot state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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

from loopline.progress import iterate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})
"""Metrics whose gate threshold is a maximum; every other metric's threshold is a minimum."""


@dataclass(frozen=True)
class CalibrationBins:
    """Per non-empty probability bin: mean predicted probability, fraction positive, row count."""

    mean_predicted: list[float]
    fraction_positive: list[float]
    counts: list[int]

    def expected_calibration_error(self) -> float:
        """Row-weighted mean gap between predicted probability and observed rate per bin."""
        n = sum(self.counts)
        gaps = (
            c * abs(f - m)
            for c, f, m in zip(
                self.counts, self.fraction_positive, self.mean_predicted, strict=True
            )
        )
        return float(sum(gaps) / n) if n else float("nan")


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics at one threshold, plus the curve points needed to plot them."""

    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float  # expected calibration error over `calibration`'s bins
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
            "ece": self.ece,
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


def expected_calibration_error(y_true: ArrayLike, proba: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error: over equal-width probability bins, the row-weighted mean
    of |observed positive rate - mean predicted probability|. 0 is perfectly calibrated."""
    y, p = _arrays(y_true, proba)
    return _calibration_bins(y, p, n_bins).expected_calibration_error()


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
    bins = _calibration_bins(y, p, calibration_bins)
    return Evaluation(
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        ece=bins.expected_calibration_error(),
        threshold=float(threshold),
        precision=float(precision_score(y, predicted, zero_division=0)),
        recall=float(recall_score(y, predicted, zero_division=0)),
        f1=float(f1_score(y, predicted, zero_division=0)),
        confusion=[[int(v) for v in row] for row in matrix],
        calibration=bins,
        positive_rate=float(y.mean()),
        n=int(y.size),
        roc_points=(fpr.tolist(), tpr.tolist()),
        pr_points=(recall_pts.tolist(), precision_pts.tolist()),
    )


def permutation_importance_table(
    model: Any, x: pd.DataFrame, y: ArrayLike, n_repeats: int = 5, random_state: int = 0
) -> pd.DataFrame:
    """Return per-feature drop in ROC AUC when permuted (pass the holdout), largest first.

    The numbers are scikit-learn's ``permutation_importance(model, x, y, scoring="roc_auc")``
    (same permutations, same scores). For the pipelines `ml.churn.model` builds (alone or inside
    ``CalibratedClassifierCV``) they are computed without pushing every permuted copy of
    ``x`` back through the preprocessing: each fold's preprocessing runs once, and permuting
    a column permutes the rows of the output columns that column feeds (every step is
    row-wise and reads one column). A one-hot encoder over strings costs a Python call per
    value, so this is minutes faster. Other models take scikit-learn's path.
    """
    y_arr = np.asarray(y).astype(int)
    parts = _preprocessed_parts(model, x)
    if parts is None:
        result = permutation_importance(
            model, x, y_arr, scoring="roc_auc", n_repeats=n_repeats, random_state=random_state
        )
        mean, std = result.importances_mean, result.importances_std
    else:
        mean, std = _grouped_importance(parts, list(x.columns), y_arr, n_repeats, random_state)
    table = pd.DataFrame(
        {"feature": list(x.columns), "importance_mean": mean, "importance_std": std}
    )
    return table.sort_values(
        ["importance_mean", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


@dataclass(frozen=True)
class _Part:
    """One fitted pipeline's view of the rows: preprocessed once, and how to score them."""

    rows: np.ndarray  # the preprocessing output, (n_rows, n_outputs)
    groups: list[np.ndarray]  # per input column: the output columns it feeds
    score: Callable[[np.ndarray], np.ndarray]  # preprocessed rows -> what the scorer reads


def _output_sources(step: Any, inputs: list[int]) -> list[int] | None:
    """For each output column of a fitted row-wise step, the one input column it comes
    from (None for a step this does not know: the caller then takes scikit-learn's path)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        KBinsDiscretizer,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    if (isinstance(step, str) and step == "passthrough") or (
        isinstance(step, FunctionTransformer) and step.func is None
    ):
        return list(inputs)
    if isinstance(step, StandardScaler | OrdinalEncoder):
        return list(inputs)
    if isinstance(step, Pipeline):
        sources: list[int] | None = list(inputs)
        for _, inner in step.steps:
            if sources is None:
                return None
            sources = _output_sources(inner, sources)
        return sources
    if isinstance(step, SimpleImputer):
        statistics = np.asarray(step.statistics_)
        kept = list(inputs)
        if statistics.dtype.kind == "f" and not step.keep_empty_features:
            kept = [c for c, value in zip(inputs, statistics, strict=True) if not np.isnan(value)]
        indicator = step.indicator_.features_ if step.add_indicator else []
        return kept + [inputs[i] for i in indicator]
    if isinstance(step, KBinsDiscretizer):
        if step.encode == "ordinal":
            return list(inputs)
        return [c for c, n in zip(inputs, step.n_bins_, strict=True) for _ in range(int(n))]
    if isinstance(step, OneHotEncoder):
        if step.drop is not None or getattr(step, "_infrequent_enabled", False):
            return None
        return [c for c, cats in zip(inputs, step.categories_, strict=True) for _ in cats]
    return None


def _preprocessed_part(pipeline: Any, x: pd.DataFrame, tail: Any) -> _Part | None:
    """`pipeline` = (ColumnTransformer, estimator); `tail` scores the transformed rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    ct = pipeline.steps[0][1]
    if not isinstance(ct, ColumnTransformer):
        return None
    position = {name: i for i, name in enumerate(x.columns)}
    width = max((where.stop for where in ct.output_indices_.values()), default=0)
    sources = np.full(width, -1)
    for name, transformer, selected in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if not isinstance(selected, list) or not all(c in position for c in selected):
            return None
        found = _output_sources(transformer, [position[c] for c in selected])
        where = ct.output_indices_[name]
        if found is None or len(found) != where.stop - where.start:
            return None
        sources[where] = found
    rows = ct.transform(x)
    if not isinstance(rows, np.ndarray) or rows.shape[1] != width or (sources < 0).any():
        return None  # sparse output, or outputs this does not account for
    groups = [np.flatnonzero(sources == j) for j in range(x.shape[1])]
    return _Part(np.asarray(rows, dtype=float), groups, tail)


def _preprocessed_parts(model: Any, x: pd.DataFrame) -> list[_Part] | None:
    """The parts whose scores make the scorer's input: one per calibrated fold, or one."""
    import copy

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    parts: list[_Part | None] = []
    if isinstance(model, CalibratedClassifierCV):
        if list(model.classes_) != [0, 1]:
            return None
        for fold in model.calibrated_classifiers_:
            if not isinstance(fold.estimator, Pipeline):
                return None
            # the fold's own calibrated predict_proba, with the estimator step in place of
            # the pipeline: exactly scikit-learn's arithmetic on the preprocessed rows
            tail = copy.copy(fold)
            tail.estimator = fold.estimator.steps[-1][1]
            parts.append(
                _preprocessed_part(fold.estimator, x, lambda z, t=tail: t.predict_proba(z)[:, 1])
            )
    elif isinstance(model, Pipeline):
        estimator = model.steps[-1][1]
        # the roc_auc scorer reads decision_function where there is one
        if hasattr(estimator, "decision_function"):
            score = estimator.decision_function
        else:
            score = lambda z: estimator.predict_proba(z)[:, 1]  # noqa: E731
        parts.append(_preprocessed_part(model, x, score))
    else:
        return None
    if not parts or any(part is None for part in parts):
        return None
    return [part for part in parts if part is not None]


def _grouped_importance(
    parts: list[_Part], columns: list[str], y: np.ndarray, n_repeats: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) drop in ROC AUC per column, with scikit-learn's permutations.

    scikit-learn draws one seed, then for each column replays the same stream: each repeat
    shuffles an index array in place and re-permutes the already permuted column by it.
    """
    from sklearn.utils import check_random_state

    def auc(rows: list[np.ndarray]) -> float:
        proba = np.zeros(len(y))
        for part, z in zip(parts, rows, strict=True):
            proba += part.score(z)
        proba /= len(parts)  # CalibratedClassifierCV's mean over the folds
        return float(roc_auc_score(y, proba))

    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max + 1)
    baseline = auc([part.rows for part in parts])
    drops = np.zeros((len(columns), n_repeats))
    for j in iterate(range(len(columns)), "permutation importance", unit="features"):
        rng = np.random.RandomState(seed)
        shuffle = np.arange(len(y))
        order = np.arange(len(y))
        for r in range(n_repeats):
            rng.shuffle(shuffle)
            order = order[shuffle]
            permuted = []
            for part in parts:
                z = part.rows.copy()
                cols = part.groups[j]
                z[:, cols] = part.rows[np.ix_(order, cols)]
                permuted.append(z)
            drops[j, r] = baseline - auc(permuted)
    return drops.mean(axis=1), drops.std(axis=1)


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
        title=f"Calibration (Brier {evaluation.brier:.3f}, ECE {evaluation.ece:.3f})",
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
