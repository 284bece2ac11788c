"""A one-row fast path for the churn model: the fitted pipeline compiled to numpy operations.

Scoring one row through scikit-learn costs milliseconds, almost none of it arithmetic: a
one-row DataFrame, input validation in every step, and three calibrated folds each running
their own ColumnTransformer. `compile_churn` reads the fitted parameters of the pipelines
`ml.churn.model.make_pipeline` builds (imputers, scaler, quantile bins, one-hot encoder, logistic
regression or histogram gradient boosting) and the fold calibrators, and replays them with
plain numpy on one row. Anything it does not recognise raises `NotCompilableError`, and the
caller keeps the scikit-learn model. `tests/ml/serving/test_fastpath.py` checks the compiled scorer
against ``predict_proba`` on real holdout rows, unknown categories and missing values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    OneHotEncoder,
    StandardScaler,
)

Step = Callable[[np.ndarray], np.ndarray]


class NotCompilableError(TypeError):
    """The fitted model has a step the fast path does not replay; use scikit-learn instead."""


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _imputer(step: SimpleImputer) -> Step:
    fill = step.statistics_
    indicator = step.indicator_.features_ if step.add_indicator else None
    numeric = fill.dtype.kind == "f"

    def run(x: np.ndarray) -> np.ndarray:
        if numeric:
            xf = x.astype(float)
            mask = np.isnan(xf)
            out: np.ndarray = np.where(mask, fill, xf)
        else:
            # scikit-learn's rule for object columns: only NaN (x != x) is missing
            mask = np.array([[v != v for v in row] for row in x], dtype=bool)
            out = np.where(mask, fill, x).astype(object)
        if indicator is not None and len(indicator):
            out = np.hstack([out, mask[:, indicator].astype(float)])
        return out

    return run


def _scaler(step: StandardScaler) -> Step:
    mean = step.mean_ if step.with_mean else 0.0
    scale = step.scale_ if step.with_std and step.scale_ is not None else 1.0
    return lambda x: (x.astype(float) - mean) / scale


def _bins(step: KBinsDiscretizer) -> Step:
    if step.encode != "onehot-dense":
        raise NotCompilableError(f"KBinsDiscretizer(encode={step.encode!r})")
    inner = [edges[1:-1] for edges in step.bin_edges_]
    widths = [int(n) for n in step.n_bins_]

    def run(x: np.ndarray) -> np.ndarray:
        xf = x.astype(float)
        out = np.zeros((xf.shape[0], sum(widths)))
        offset = 0
        for j, (edges, width) in enumerate(zip(inner, widths, strict=True)):
            idx = np.searchsorted(edges, xf[:, j], side="right")
            out[np.arange(xf.shape[0]), offset + idx] = 1.0
            offset += width
        return out

    return run


def _onehot(step: OneHotEncoder) -> Step:
    if step.drop is not None or step.handle_unknown != "ignore":
        raise NotCompilableError("OneHotEncoder with drop or without handle_unknown='ignore'")
    if getattr(step, "_infrequent_enabled", False):
        raise NotCompilableError("OneHotEncoder with infrequent categories")
    lookups = [{value: i for i, value in enumerate(cats.tolist())} for cats in step.categories_]
    widths = [len(cats) for cats in step.categories_]

    def run(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], sum(widths)))
        offset = 0
        for j, (lookup, width) in enumerate(zip(lookups, widths, strict=True)):
            for i, value in enumerate(x[:, j]):
                hit = lookup.get(value)
                if hit is not None:
                    out[i, offset + hit] = 1.0
            offset += width
        return out

    return run


def _step(step: Any) -> Step:
    if (isinstance(step, str) and step == "passthrough") or (
        isinstance(step, FunctionTransformer) and step.func is None
    ):  # a fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer
        return lambda x: x.astype(float)
    if isinstance(step, Pipeline):
        parts = [_step(inner) for _, inner in step.steps]

        def run(x: np.ndarray) -> np.ndarray:
            for part in parts:
                x = part(x)
            return x

        return run
    for kind, compile_one in (
        (SimpleImputer, _imputer),
        (StandardScaler, _scaler),
        (KBinsDiscretizer, _bins),
        (OneHotEncoder, _onehot),
    ):
        if isinstance(step, kind):
            return compile_one(step)
    raise NotCompilableError(f"no fast path for {type(step).__name__}")


def _column_transformer(ct: ColumnTransformer, columns: Sequence[str]) -> Step:
    position = {name: i for i, name in enumerate(columns)}
    parts: list[tuple[Step, list[int]]] = []
    for name, transformer, selected in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if not isinstance(selected, list) or not all(isinstance(c, str) for c in selected):
            raise NotCompilableError(f"ColumnTransformer part {name!r} selects columns by position")
        if not selected:
            continue
        parts.append((_step(transformer), [position[c] for c in selected]))

    def run(x: np.ndarray) -> np.ndarray:
        return np.hstack([step(x[:, idx]) for step, idx in parts])

    return run


def _estimator(est: Any) -> Step:
    if isinstance(est, LogisticRegression):
        coef, intercept = est.coef_[0], float(est.intercept_[0])
        return lambda x: x @ coef + intercept
    if isinstance(est, HistGradientBoostingClassifier):
        return _forest(est)
    raise NotCompilableError(f"no fast path for estimator {type(est).__name__}")


def _forest(est: HistGradientBoostingClassifier) -> Step:
    """One model's trees as a `Forest` step: its raw score per row."""
    forest = Forest.of([est])
    return lambda x: forest.raw([x])[:, 0]


@dataclass(frozen=True)
class Forest:
    """The trees of one or more `HistGradientBoostingClassifier` (one per calibrated fold) in
    one flat node array, walked level by level for every tree of every model at once.

    Calling each tree's predictor costs a Python call per tree (hundreds per row), and walking
    each model on its own costs numpy calls per level per model; here a row costs a handful
    of vectorised operations per tree level, whatever the number of models. Same rule as
    scikit-learn's predictor: a missing value follows ``missing_go_to_left``, else
    ``x <= num_threshold`` goes left. Missing values are handled without a branch: every model
    input row is laid out twice, once with NaN as -inf (read by the nodes that send missing
    values left: ``-inf <= t`` holds) and once as it is (read by the others: ``NaN <= t`` never
    holds), and each node reads the copy its rule needs.
    """

    feature: np.ndarray  # per node: where its feature is in the doubled, concatenated row
    threshold: np.ndarray
    children: np.ndarray  # per node: [right, left] flattened (index 2 * node + goes_left)
    value: np.ndarray
    roots: np.ndarray
    tree_starts: np.ndarray  # the first root of each model, for the per-model sums
    widths: tuple[int, ...]  # each model's input width
    depth: int
    baselines: np.ndarray

    @classmethod
    def of(cls, models: Sequence[HistGradientBoostingClassifier]) -> Forest:
        if not models:
            raise NotCompilableError("no model to compile")
        widths = tuple(int(est.n_features_in_) for est in models)
        total = sum(widths)
        trees: list[np.ndarray] = []
        feature_offsets: list[int] = []
        tree_starts: list[int] = []
        for m, est in enumerate(models):
            if est.n_trees_per_iteration_ != 1:
                raise NotCompilableError("multiclass HistGradientBoostingClassifier")
            nodes_of = [predictors[0].nodes for predictors in est._predictors]
            if any(nodes["is_categorical"].any() for nodes in nodes_of):
                raise NotCompilableError("native categorical splits")
            tree_starts.append(len(trees))
            trees += nodes_of
            feature_offsets += [sum(widths[:m])] * len(nodes_of)
        if not trees:
            raise NotCompilableError("a model without trees")
        sizes = [len(nodes) for nodes in trees]
        offsets = np.cumsum([0, *sizes[:-1]])
        nodes = np.concatenate(trees)
        shift = np.repeat(offsets, sizes)
        is_leaf = nodes["is_leaf"].astype(bool)
        here = np.arange(len(nodes))
        left = np.where(is_leaf, here, nodes["left"].astype(np.intp) + shift)
        right = np.where(is_leaf, here, nodes["right"].astype(np.intp) + shift)
        missing_left = nodes["missing_go_to_left"].astype(bool)
        feature = nodes["feature_idx"].astype(np.intp) + np.repeat(feature_offsets, sizes)
        return cls(
            feature=np.where(missing_left, feature, feature + total),
            threshold=nodes["num_threshold"].astype(float),
            children=np.stack([right, left], axis=1).ravel(),
            value=nodes["value"].astype(float),
            roots=offsets.astype(np.intp),
            tree_starts=np.asarray(tree_starts, dtype=np.intp),
            widths=widths,
            depth=int(nodes["depth"].max()),
            baselines=np.array(
                [float(np.asarray(est._baseline_prediction).ravel()[0]) for est in models]
            ),
        )

    def raw(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Each model's raw score (n rows, n models), from each model's (n, width) input."""
        if tuple(x.shape[1] for x in inputs) != self.widths:
            raise ValueError(f"expected inputs of widths {self.widths}")
        rows = np.hstack([np.asarray(x, dtype=float) for x in inputs])
        doubled = np.hstack([np.where(np.isnan(rows), -np.inf, rows), rows])
        feature, threshold, children = self.feature, self.threshold, self.children
        out = np.empty((rows.shape[0], len(self.widths)))
        for i, row in enumerate(doubled):
            node = self.roots
            for _ in range(self.depth):
                goes_left = row[feature[node]] <= threshold[node]
                node = children[2 * node + goes_left]
            out[i] = self.baselines + np.add.reduceat(self.value[node], self.tree_starts)
        return out


def _calibrator(calibrator: Any) -> Callable[[np.ndarray], np.ndarray]:
    if type(calibrator).__name__ == "_SigmoidCalibration":
        a, b = float(calibrator.a_), float(calibrator.b_)
        return lambda t: 1.0 / (1.0 + np.exp(a * t + b))
    if type(calibrator).__name__ == "IsotonicRegression":
        return lambda t: np.asarray(calibrator.predict(t), dtype=float)
    raise NotCompilableError(f"no fast path for calibrator {type(calibrator).__name__}")


@dataclass(frozen=True)
class FastChurnScorer:
    """Scores feature rows with the compiled folds; rows are dicts or (n, columns) arrays."""

    feature_columns: tuple[str, ...]
    numeric: frozenset[str]
    folds: tuple[tuple[Step, Step, Callable[[np.ndarray], np.ndarray]], ...]
    forest: Forest | None = None  # every fold's trees walked at once (gradient boosting)

    def row(self, values: Mapping[str, object]) -> np.ndarray:
        """One (1, n_features) object row in training column order; absent keys are missing."""
        out = np.empty((1, len(self.feature_columns)), dtype=object)
        for j, name in enumerate(self.feature_columns):
            value = values.get(name)
            if name in self.numeric:
                out[0, j] = np.nan if value is None else float(value)  # type: ignore[arg-type]
            else:
                out[0, j] = np.nan if _is_missing(value) else value
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The calibrated positive-class probability of each row (mean over the folds)."""
        total = np.zeros(x.shape[0])
        if self.forest is not None:
            raw = self.forest.raw([preprocess(x) for preprocess, _, _ in self.folds])
            for k, (_, _, calibrate) in enumerate(self.folds):
                total += calibrate(raw[:, k])
            return total / len(self.folds)
        for preprocess, estimator, calibrate in self.folds:
            total += calibrate(estimator(preprocess(x)))
        return total / len(self.folds)

    def score(self, values: Mapping[str, object]) -> float:
        """The probability for one feature dict."""
        return float(self.predict_proba(self.row(values))[0])


def compile_churn(
    model: Any, feature_columns: Sequence[str], numeric: Sequence[str]
) -> FastChurnScorer:
    """Compile a fitted `CalibratedClassifierCV` over a `make_pipeline` pipeline."""
    if not isinstance(model, CalibratedClassifierCV):
        raise NotCompilableError(f"expected CalibratedClassifierCV, got {type(model).__name__}")
    if list(model.classes_) != [0, 1]:
        raise NotCompilableError(f"expected classes [0, 1], got {list(model.classes_)}")
    folds = []
    estimators = []
    for fold in model.calibrated_classifiers_:
        pipeline = fold.estimator
        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            raise NotCompilableError("expected a (preprocess, model) pipeline in every fold")
        ct, est = pipeline.steps[0][1], pipeline.steps[1][1]
        if not isinstance(ct, ColumnTransformer):
            raise NotCompilableError("expected a ColumnTransformer as the first pipeline step")
        if len(fold.calibrators) != 1:
            raise NotCompilableError("expected one calibrator per fold (binary)")
        estimators.append(est)
        folds.append(
            (
                _column_transformer(ct, feature_columns),
                _estimator(est),
                _calibrator(fold.calibrators[0]),
            )
        )
    forest = None
    if all(isinstance(est, HistGradientBoostingClassifier) for est in estimators):
        forest = Forest.of(estimators)
    return FastChurnScorer(tuple(feature_columns), frozenset(numeric), tuple(folds), forest)
