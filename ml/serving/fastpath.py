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
import pickle
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


def _is_passthrough(step: Any) -> bool:
    # a fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer
    return (isinstance(step, str) and step == "passthrough") or (
        isinstance(step, FunctionTransformer) and step.func is None
    )


def _step(step: Any) -> Step:
    if _is_passthrough(step):
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


RowPlan = Callable[[Mapping[str, object]], list[float]]


def _row_plan(
    ct: ColumnTransformer, columns: Sequence[str], numeric: frozenset[str]
) -> RowPlan | None:
    """A fitted ColumnTransformer replayed on one feature dict with plain Python, or None
    where it has a part this does not cover (the numpy steps then run instead).

    Covers what the gradient-boosting pipeline holds: numeric columns passed through, and
    categorical ones imputed (without an indicator) then one-hot encoded. A one-row numpy
    pass costs a few microseconds per call of fixed overhead whatever the row's width;
    this costs a dict lookup per column. Same rules as the numpy steps: a missing number is
    NaN, a missing category (None or NaN) takes the imputer's fill value, an unknown one
    sets no bit.
    """
    parts: list[RowPlan] = []
    for _, transformer, selected in ct.transformers_:
        if (isinstance(transformer, str) and transformer == "drop") or not selected:
            continue
        if _is_passthrough(transformer) and all(c in numeric for c in selected):
            parts.append(_passthrough_plan(list(selected)))
            continue
        steps = transformer.steps if isinstance(transformer, Pipeline) else []
        if (
            len(steps) == 2
            and isinstance(steps[0][1], SimpleImputer)
            and not steps[0][1].add_indicator
            and steps[0][1].statistics_.dtype.kind == "O"
            and isinstance(steps[1][1], OneHotEncoder)
            and not any(c in numeric for c in selected)
        ):
            _onehot(steps[1][1])  # refuses what the numpy step refuses too
            parts.append(_categorical_plan(list(selected), steps[0][1], steps[1][1]))
            continue
        return None

    def run(values: Mapping[str, object]) -> list[float]:
        out: list[float] = []
        for part in parts:
            out += part(values)
        return out

    return run


def _passthrough_plan(selected: list[str]) -> RowPlan:
    nan = math.nan
    return lambda values: [
        nan if (v := values.get(c)) is None else float(v)  # type: ignore[arg-type]
        for c in selected
    ]


def _categorical_plan(
    selected: list[str], imputer: SimpleImputer, encoder: OneHotEncoder
) -> RowPlan:
    fills = imputer.statistics_.tolist()
    lookups = [{value: i for i, value in enumerate(cats.tolist())} for cats in encoder.categories_]
    width = sum(len(cats) for cats in encoder.categories_)
    offsets = np.cumsum([0, *(len(cats) for cats in encoder.categories_)])[:-1].tolist()
    columns = list(zip(selected, fills, lookups, offsets, strict=True))

    def run(values: Mapping[str, object]) -> list[float]:
        out = [0.0] * width
        for name, fill, lookup, offset in columns:
            value = values.get(name)
            hit = lookup.get(fill if _is_missing(value) else value)
            if hit is not None:
                out[offset + hit] = 1.0
        return out

    return run


def _estimator(est: Any) -> Step:
    if isinstance(est, LogisticRegression):
        coef, intercept = est.coef_[0], float(est.intercept_[0])
        return lambda x: x @ coef + intercept
    if isinstance(est, HistGradientBoostingClassifier):
        return _forest(est)
    raise NotCompilableError(f"no fast path for estimator {type(est).__name__}")


def _forest(est: HistGradientBoostingClassifier) -> Step:
    """One model's trees as a forest step: its raw score per row."""
    forest = compile_forest([est])
    return lambda x: forest.raw([x])[:, 0]


def compile_forest(
    models: Sequence[HistGradientBoostingClassifier], sources: Sequence[int] | None = None
) -> Forest | LeafMaskForest:
    """The trees of `models` in one vectorised walker: `LeafMaskForest` when every tree has
    at most 64 leaves (the default grid's trees have 15 or 31), else the level walk `Forest`.
    Model ``m`` reads input ``sources[m]`` (default: its own)."""
    try:
        return LeafMaskForest.of(models, sources)
    except _TooManyLeavesError:
        return Forest.of(models, sources)


def _doubled(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The models' inputs side by side, twice: NaN as -inf (read by the nodes that send
    missing values left: ``-inf <= t`` holds), then as they are (``NaN <= t`` never holds)."""
    parts = [np.asarray(x, dtype=float) for x in inputs]
    rows = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return np.concatenate((np.where(np.isnan(rows), -np.inf, rows), rows), axis=1)


def _tree_nodes(
    models: Sequence[HistGradientBoostingClassifier], sources: Sequence[int] | None = None
) -> tuple[tuple[int, ...], list[np.ndarray], list[int], list[int]]:
    """Each input's width; every tree's node array; each tree's feature offset in the
    concatenated inputs; the first tree of each model. Model ``m`` reads input
    ``sources[m]`` (default: its own), so models fed the same input share it. Refuses what
    the walkers cannot replay."""
    if not models:
        raise NotCompilableError("no model to compile")
    sources = list(range(len(models))) if sources is None else list(sources)
    if sorted(set(sources)) != list(range(max(sources) + 1)):
        raise ValueError(f"sources {sources} must number the inputs 0, 1, ...")
    widths = tuple(int(models[sources.index(i)].n_features_in_) for i in range(max(sources) + 1))
    if any(int(est.n_features_in_) != widths[i] for est, i in zip(models, sources, strict=True)):
        raise NotCompilableError("models sharing an input have different widths")
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
        feature_offsets += [sum(widths[: sources[m]])] * len(nodes_of)
    if not trees:
        raise NotCompilableError("a model without trees")
    return widths, trees, feature_offsets, tree_starts


def _baselines(models: Sequence[HistGradientBoostingClassifier]) -> np.ndarray:
    return np.array([float(np.asarray(est._baseline_prediction).ravel()[0]) for est in models])


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
    widths: tuple[int, ...]  # each input's width
    depth: int
    baselines: np.ndarray

    @classmethod
    def of(
        cls, models: Sequence[HistGradientBoostingClassifier], sources: Sequence[int] | None = None
    ) -> Forest:
        widths, trees, feature_offsets, tree_starts = _tree_nodes(models, sources)
        total = sum(widths)
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
            baselines=_baselines(models),
        )

    def raw(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Each model's raw score (n rows, n models), from each input's (n, width) rows."""
        if tuple(x.shape[1] for x in inputs) != self.widths:
            raise ValueError(f"expected inputs of widths {self.widths}")
        doubled = _doubled(inputs)
        feature, threshold, children = self.feature, self.threshold, self.children
        out = np.empty((doubled.shape[0], len(self.baselines)))
        for i, row in enumerate(doubled):
            node = self.roots
            for _ in range(self.depth):
                goes_left = row[feature[node]] <= threshold[node]
                node = children[2 * node + goes_left]
            out[i] = self.baselines + np.add.reduceat(self.value[node], self.tree_starts)
        return out


class _TooManyLeavesError(NotCompilableError):
    """A tree has more leaves than a 64-bit mask holds (`LeafMaskForest`)."""


# rows tested at once: (8, splits) arrays stay in the CPU's cache (~300 KB for 10,000 splits);
# 64 rows at a time was 3x slower a row on a 9,000-split forest
_ROW_CHUNK = 8


@dataclass(frozen=True)
class LeafMaskForest:
    """The trees of one or more `HistGradientBoostingClassifier` scored without walking them:
    every split of every tree is tested at once, and each tree's exit leaf read off bit masks
    (the QuickScorer idea: Lucchese et al., SIGIR 2015).

    A tree's leaves are numbered left to right, one bit each. A split that sends the row right
    rules out every leaf of its left subtree; the leaves no such split rules out are those on
    the row's path's right, and the leftmost of them is the exit leaf. So a row costs a fixed
    handful of numpy operations over all the splits (one gather, one compare, one AND per
    tree, one lowest-set-bit), not one pass per tree level. Missing values follow
    ``missing_go_to_left`` through the doubled row of `_doubled`, as in `Forest`.
    """

    feature: np.ndarray  # per split: where its feature is in the doubled, concatenated row
    threshold: np.ndarray
    left_leaves: np.ndarray  # per split: its left subtree's leaves, ruled out if it goes right
    split_starts: np.ndarray  # the first split of each tree (every tree has at least one)
    leaf_starts: np.ndarray  # the first leaf of each tree in `leaf_value`
    leaf_value: np.ndarray
    tree_starts: np.ndarray  # the first tree of each model, for the per-model sums
    widths: tuple[int, ...]  # each input's width
    baselines: np.ndarray

    @classmethod
    def of(
        cls, models: Sequence[HistGradientBoostingClassifier], sources: Sequence[int] | None = None
    ) -> LeafMaskForest:
        widths, trees, feature_offsets, tree_starts = _tree_nodes(models, sources)
        total = sum(widths)
        feature: list[int] = []
        threshold: list[float] = []
        left_leaves: list[int] = []
        split_starts: list[int] = []
        leaf_starts: list[int] = []
        leaf_value: list[float] = []
        most_leaves = 1
        for nodes, offset in zip(trees, feature_offsets, strict=True):
            split_starts.append(len(feature))
            leaf_starts.append(len(leaf_value))
            first, count, leaves = _leaf_spans(nodes)
            if len(leaves) > 64:
                raise _TooManyLeavesError(f"a tree with {len(leaves)} leaves")
            most_leaves = max(most_leaves, len(leaves))
            # a tree that is one leaf gets a split every row passes left (x <= inf; the
            # -inf copy of a missing value too), so every tree has a split to AND over
            splits = [i for i in range(len(nodes)) if not nodes["is_leaf"][i]]
            if not splits:
                feature.append(0)
                threshold.append(np.inf)
                left_leaves.append(0)
            for i in splits:
                f = int(nodes["feature_idx"][i]) + offset
                feature.append(f if nodes["missing_go_to_left"][i] else f + total)
                threshold.append(float(nodes["num_threshold"][i]))
                left = int(nodes["left"][i])
                left_leaves.append(((1 << count[left]) - 1) << first[left])
            leaf_value += [float(nodes["value"][i]) for i in leaves]
        return cls(
            feature=np.asarray(feature, dtype=np.intp),
            threshold=np.asarray(threshold, dtype=float),
            # 32-bit masks when they fit (max_leaf_nodes 31 by default): half the memory
            left_leaves=np.asarray(
                left_leaves, dtype=np.uint32 if most_leaves <= 32 else np.uint64
            ),
            split_starts=np.asarray(split_starts, dtype=np.intp),
            leaf_starts=np.asarray(leaf_starts, dtype=np.intp),
            leaf_value=np.asarray(leaf_value, dtype=float),
            tree_starts=np.asarray(tree_starts, dtype=np.intp),
            widths=widths,
            baselines=_baselines(models),
        )

    def raw(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Each model's raw score (n rows, n models), from each input's (n, width) rows."""
        if tuple(x.shape[1] for x in inputs) != self.widths:
            raise ValueError(f"expected inputs of widths {self.widths}")
        doubled = _doubled(inputs)
        out = np.empty((doubled.shape[0], len(self.baselines)))
        for start in range(0, doubled.shape[0], _ROW_CHUNK):
            x = np.take(doubled[start : start + _ROW_CHUNK], self.feature, axis=1)
            ruled_out = self.left_leaves * ~(x <= self.threshold)  # the splits going right
            dead = np.bitwise_or.reduceat(ruled_out, self.split_starts, axis=1)
            exit_bit = (dead + dead.dtype.type(1)) & ~dead  # the lowest leaf not ruled out
            leaf = np.frexp(exit_bit.astype(float))[1] - 1
            values = self.leaf_value[self.leaf_starts + leaf]
            out[start : start + _ROW_CHUNK] = self.baselines + np.add.reduceat(
                values, self.tree_starts, axis=1
            )
        return out


def _leaf_spans(nodes: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """Each node's first leaf number and number of leaves (leaves numbered left to right),
    and the tree's leaves in that order."""
    first = [0] * len(nodes)
    count = [0] * len(nodes)
    leaves: list[int] = []

    def visit(node: int) -> None:
        first[node] = len(leaves)
        if nodes["is_leaf"][node]:
            leaves.append(node)
        else:
            visit(int(nodes["left"][node]))
            visit(int(nodes["right"][node]))
        count[node] = len(leaves) - first[node]

    visit(0)
    return first, count, leaves


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
    # every fold's trees walked at once (gradient boosting)
    forest: Forest | LeafMaskForest | None = None
    # per fold: the first fold with the same fitted preprocessing, whose output it reuses
    # (the folds' ColumnTransformers often learn the same categories and nothing else)
    same_preprocess_as: tuple[int, ...] = ()
    # every fold's sigmoid calibration (a, b) as arrays, when all are sigmoid: the folds'
    # probabilities in one numpy pass
    sigmoid: tuple[np.ndarray, np.ndarray] | None = None
    # per fold, its preprocessing replayed on one dict in plain Python, when every fold's
    # can be: `score` then builds no object matrix at all
    row_plans: tuple[RowPlan, ...] = ()
    # the folds whose inputs the forest reads (one per distinct preprocessing); () all
    forest_inputs: tuple[int, ...] = ()

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

    def rows(self, many: Sequence[Mapping[str, object]]) -> np.ndarray:
        """An (n, n_features) object matrix of feature dicts; absent keys are missing."""
        out = np.empty((len(many), len(self.feature_columns)), dtype=object)
        for j, name in enumerate(self.feature_columns):
            if name in self.numeric:
                column = [values.get(name) for values in many]
                out[:, j] = [np.nan if v is None else float(v) for v in column]  # type: ignore[arg-type]
            else:
                out[:, j] = [np.nan if _is_missing(v := values.get(name)) else v for values in many]
        return out

    def _inputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Each fold's model input, preprocessing shared by folds computed once."""
        inputs: list[np.ndarray] = []
        for k, (preprocess, _, _) in enumerate(self.folds):
            same = self.same_preprocess_as[k] if self.same_preprocess_as else k
            inputs.append(inputs[same] if same < k else preprocess(x))
        return inputs

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The calibrated positive-class probability of each row (mean over the folds)."""
        return self._probabilities(self._inputs(x))

    def _probabilities(self, inputs: list[np.ndarray]) -> np.ndarray:
        """The mean calibrated probability over the folds, from each fold's model input."""
        total = np.zeros(inputs[0].shape[0])
        if self.forest is not None:
            raw = self.forest.raw([inputs[k] for k in self.forest_inputs or range(len(inputs))])
            if self.sigmoid is not None:
                a, b = self.sigmoid
                return (1.0 / (1.0 + np.exp(a * raw + b))).sum(axis=1) / len(self.folds)
            for k, (_, _, calibrate) in enumerate(self.folds):
                total += calibrate(raw[:, k])
            return total / len(self.folds)
        for (_, estimator, calibrate), fold_input in zip(self.folds, inputs, strict=True):
            total += calibrate(estimator(fold_input))
        return total / len(self.folds)

    def score(self, values: Mapping[str, object]) -> float:
        """The probability for one feature dict."""
        return float(self.score_many([values])[0])

    def score_many(self, many: Sequence[Mapping[str, object]]) -> np.ndarray:
        """The probability of each feature dict, in one pass over all of them."""
        if not many:
            return np.zeros(0)
        if not self.row_plans:
            return self.predict_proba(self.rows(many) if len(many) > 1 else self.row(many[0]))
        inputs: list[np.ndarray] = []
        for k, plan in enumerate(self.row_plans):
            same = self.same_preprocess_as[k]
            inputs.append(inputs[same] if same < k else np.array([plan(v) for v in many]))
        return self._probabilities(inputs)


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
    same_as: list[int] = []
    fitted: list[bytes] = []  # each fold's fitted preprocessing, to find equal ones
    plans: list[RowPlan | None] = []
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
        fitted.append(pickle.dumps(ct))
        same_as.append(fitted.index(fitted[-1]))  # equal pickles: equal fitted parameters
        fresh = same_as[-1] == len(same_as) - 1
        plans.append(_row_plan(ct, feature_columns, frozenset(numeric)) if fresh else None)
        plans[-1] = plans[same_as[-1]]
        folds.append(
            (
                _column_transformer(ct, feature_columns),
                _estimator(est),
                _calibrator(fold.calibrators[0]),
            )
        )
    forest = None
    if all(isinstance(est, HistGradientBoostingClassifier) for est in estimators):
        # folds with the same preprocessing read one input: the forest tests it once
        distinct = sorted(set(same_as))
        forest = compile_forest(estimators, [distinct.index(k) for k in same_as])
    calibrators = [fold.calibrators[0] for fold in model.calibrated_classifiers_]
    sigmoid = None
    if all(type(c).__name__ == "_SigmoidCalibration" for c in calibrators):
        sigmoid = (
            np.array([float(c.a_) for c in calibrators]),
            np.array([float(c.b_) for c in calibrators]),
        )
    row_plans = tuple(plan for plan in plans if plan is not None)
    return FastChurnScorer(
        tuple(feature_columns), frozenset(numeric), tuple(folds), forest,
        tuple(same_as), sigmoid, row_plans if len(row_plans) == len(plans) else (),
        tuple(sorted(set(same_as))),
    )  # fmt: skip
