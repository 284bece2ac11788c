"""Train a churn classifier: time-based split and CV, a small grid per candidate, calibration.

Everything here is pure: frames in, fitted estimators out, no MLflow and no warehouse access.
Folds are built over *days*, so one day never sits on both sides of a split and every
validation day comes strictly after every training day of its fold.

**Search.** Every grid point of every candidate kind is fitted once per time fold and scored
(ROC AUC) on that fold's validation days; `TrainedModel.candidates` keeps each point's fold
scores, so the search can be logged and compared (`ml.churn.train` logs one MLflow run per point).

**Calibration.** Class weights inflate scores, so the winner is wrapped in
``CalibratedClassifierCV(pipeline, cv=<time folds>, method=...)``: each fold has a clone fitted on its earlier days and a calibrator
fitted on its later days; ``predict_proba`` averages the folds. Calibrating a model refit on
all rows (``FrozenEstimator``) would need data it never saw, and sklearn's ``ensemble=False``
needs folds that partition the rows, which time folds do not. The search has already fitted
exactly those fold pipelines (same params, same rows, same seed), so `train` does not fit
them again: it fits only the calibrators and assembles the ``CalibratedClassifierCV`` that
``.fit(x, y)`` would have produced (`calibrate_folds`; ``tests/ml/churn/test_model.py`` checks the
two give the same probabilities). Nothing is refit on all rows: no such model is served.

**Threads.** Each fit runs with ``threads_per_fit`` BLAS/OpenMP threads (default one) and
``n_jobs`` fits run at once in threads (default one). OpenMP's worker threads spin while
they wait, so on a small machine that is busy with other work they spend most of their time
waiting for one another: the demo's 12 hist_gb fits took 594 s with the default two threads
per fit and 46 s with one, on the same busy 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from loopline.progress import track

Kind = Literal["logreg", "hist_gb"]
Fold = tuple[np.ndarray, np.ndarray]
Grid = dict[str, list[float | int | str | None]]  # estimator param -> values (None: null)

DEFAULT_EXCLUDE = ("user_id", "as_of_date", "event_timestamp")
_TEMPORAL = frozenset({"date", "datetime", "datetime64", "time", "timedelta", "period"})


def _logreg_grid() -> Grid:
    return {"C": [0.1, 1.0]}


def _hist_gb_grid() -> Grid:
    # unweighted: see conf/ml.yaml
    return {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31], "class_weight": [None]}


class TrainParams(BaseModel):
    """Candidates, CV, grids, imbalance and calibration settings for `train`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidates: tuple[Kind, ...] = ("logreg", "hist_gb")
    n_splits: int = Field(default=3, ge=2)
    logreg_grid: Grid = Field(default_factory=_logreg_grid)
    hist_gb_grid: Grid = Field(default_factory=_hist_gb_grid)
    class_weight: Literal["balanced"] | None = "balanced"
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    binned: tuple[str, ...] = ("tenure_days",)  # extra quantile bins for logreg only
    n_bins: int = Field(default=5, ge=2)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # ids and timestamps; label/time added by train
    entity: str | None = None  # CV folds validate on entities they did not train on
    random_state: int = 0
    n_jobs: int = Field(default=1, ge=1, description="fits run at once (threads)")
    threads_per_fit: int = Field(default=1, ge=1, description="BLAS/OpenMP threads of one fit")

    @field_validator("candidates")
    @classmethod
    def _some_candidate(cls, value: tuple[Kind, ...]) -> tuple[Kind, ...]:
        if not value:
            raise ValueError("candidates is empty; name at least one of 'logreg', 'hist_gb'")
        return value

    def grid(self, kind: Kind) -> Grid:
        """Return the hyperparameter grid of one candidate (unprefixed estimator params)."""
        return self.logreg_grid if kind == "logreg" else self.hist_gb_grid


@dataclass(frozen=True)
class CandidateResult:
    """One grid point of one candidate kind and its validation ROC AUC on each time fold."""

    kind: Kind
    params: dict[str, Any]
    fold_scores: tuple[float, ...]
    fit_seconds: float  # summed over the folds

    @property
    def mean_score(self) -> float:
        """Mean validation ROC AUC over the folds (what the search ranks by)."""
        return float(np.mean(self.fold_scores))

    @property
    def std_score(self) -> float:
        """Spread of the validation ROC AUC over the folds."""
        return float(np.std(self.fold_scores))

    @property
    def name(self) -> str:
        """A short label, e.g. ``hist_gb(learning_rate=0.1, max_leaf_nodes=15)``."""
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in self.params.items())})"


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """The calibrated winner, its kind, params, per-candidate CV AUC and the columns it reads.

    ``cv_scores`` holds each kind's best mean CV AUC; ``candidates`` every grid point's.
    """

    model: Any
    kind: Kind
    best_params: dict[str, Any]
    cv_scores: dict[str, float]
    feature_columns: list[str]
    numeric: list[str]
    categorical: list[str]
    candidates: tuple[CandidateResult, ...] = ()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the calibrated positive-class probability of each row of `frame`."""
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks feature columns {missing}; pass the training columns")
        return np.asarray(
            self.model.predict_proba(as_model_input(frame[self.feature_columns]))[:, 1]
        )

    @property
    def chosen(self) -> CandidateResult | None:
        """The grid point that was calibrated (None for a model built without a search)."""
        for candidate in self.candidates:
            if candidate.kind == self.kind and candidate.params == self.best_params:
                return candidate
        return None


def as_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with numpy dtypes: nullable numbers become float64, strings object, NA is NaN.

    Warehouse reads give pandas' nullable dtypes (``Int64`` with ``pd.NA``), which
    scikit-learn's transformers cannot hold in numpy arrays.
    """
    converted: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
            if isinstance(dtype, pd.BooleanDtype):
                converted[name] = column.astype(object).where(column.notna(), None)
            continue
        if pd.api.types.is_numeric_dtype(dtype) and pd.api.types.is_extension_array_dtype(dtype):
            converted[name] = column.astype("float64")
        elif pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            # NaN, not None: scikit-learn's imputers treat only NaN as missing in object columns
            converted[name] = column.astype(object).where(column.notna(), np.nan)
    return frame.assign(**converted) if converted else frame


def _days(frame: pd.DataFrame, time_column: str) -> pd.Series:
    if time_column not in frame.columns:
        raise ValueError(f"time column {time_column!r} is not in the frame")
    days = pd.to_datetime(frame[time_column]).dt.normalize()
    if days.isna().any():
        raise ValueError(f"time column {time_column!r} has missing values; drop those rows")
    return days


def _check_classes(y: pd.Series, what: str) -> None:
    classes = set(y.dropna().unique().tolist())
    if len(classes) < 2:
        raise ValueError(
            f"{what} has only the class(es) {sorted(classes)}; widen the date range or change "
            "holdout_fraction so both classes appear on each side"
        )


def entity_buckets(values: pd.Series, buckets: int) -> np.ndarray:
    """A stable bucket in [0, buckets) per entity: the same on every run and machine."""
    hashed = pd.util.hash_pandas_object(values.astype(str), index=False).to_numpy()
    return np.asarray(hashed % np.uint64(buckets), dtype=np.int64)


def split_by_time(
    frame: pd.DataFrame,
    time_column: str,
    holdout_fraction: float,
    label: str | None = None,
    entity: str | None = None,
    gap_days: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, holdout): rows before a cut day train, rows on or after it are held out.

    Rows of one entity on neighbouring days share most of their label window, so a model
    can memorise an entity's outcome from its training rows. Two guards, both optional:
    ``entity`` holds out a stable ``holdout_fraction`` of entities (their rows never train,
    the others' rows never evaluate), and ``gap_days`` drops training rows within that
    many days before the cut (set it to the label window to purge overlapping labels).
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if gap_days < 0:
        raise ValueError(f"gap_days must be >= 0, got {gap_days}")
    days = _days(frame, time_column)
    unique = np.sort(days.unique())
    n_holdout = max(1, round(len(unique) * holdout_fraction))
    if len(unique) < 2 or n_holdout >= len(unique):
        raise ValueError(
            f"{len(unique)} distinct day(s) in {time_column!r} cannot give a non-empty train and "
            f"holdout with holdout_fraction={holdout_fraction}; use more days"
        )
    cut = unique[len(unique) - n_holdout]
    before = (days < cut - pd.Timedelta(days=gap_days)).to_numpy().copy()
    after = (days >= cut).to_numpy().copy()
    if entity is not None:
        if entity not in frame.columns:
            raise ValueError(f"entity column {entity!r} is not in the frame")
        held = entity_buckets(frame[entity], 1000) < round(holdout_fraction * 1000)
        before &= ~held
        after &= held
    if not before.any():
        raise ValueError(
            f"no training rows before {pd.Timestamp(cut).date()} minus a {gap_days}-day gap; "
            "use more days, a smaller gap_days or a smaller holdout_fraction"
        )
    train, holdout = frame.loc[before].copy(), frame.loc[after].copy()
    if label is not None:
        _check_classes(train[label], f"the train side (days before {pd.Timestamp(cut).date()})")
        _check_classes(holdout[label], f"the holdout side (days from {pd.Timestamp(cut).date()})")
    return train, holdout


def time_folds(
    frame: pd.DataFrame, time_column: str, n_splits: int, entity: str | None = None
) -> list[Fold]:
    """Return expanding-window (train, validation) positional index arrays over whole days.

    With ``entity``, each fold validates on its own stable share of entities and trains
    only on the others, so no fold scores an entity whose outcome it trained on.
    """
    days = _days(frame, time_column)
    unique = np.sort(days.unique())
    if len(unique) < n_splits + 1:
        raise ValueError(
            f"{len(unique)} distinct day(s) cannot make {n_splits} time folds; "
            f"use at least {n_splits + 1} days or fewer n_splits"
        )
    chunks = np.array_split(np.arange(len(unique)), n_splits + 1)
    day_pos = np.searchsorted(unique, days.to_numpy())
    bucket = entity_buckets(frame[entity], n_splits) if entity is not None else np.zeros(len(frame))
    folds: list[Fold] = []
    for k in range(1, n_splits + 1):
        train_end = chunks[k][0]  # first day index of the validation chunk
        val_end = chunks[k][-1]
        mine = bucket == (k - 1) if entity is not None else np.ones(len(frame), dtype=bool)
        theirs = ~mine if entity is not None else mine
        train_idx = np.flatnonzero((day_pos < train_end) & theirs)
        val_idx = np.flatnonzero((day_pos >= train_end) & (day_pos <= val_end) & mine)
        folds.append((train_idx, val_idx))
    return folds


def feature_columns(frame: pd.DataFrame, exclude: Iterable[str]) -> tuple[list[str], list[str]]:
    """Return (numeric, categorical) feature names; excluded and datetime columns are dropped."""
    skip = set(exclude)
    numeric: list[str] = []
    categorical: list[str] = []
    for name in frame.columns:
        if name in skip:
            continue
        dtype = frame[name].dtype
        if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(dtype):
            numeric.append(name)
        elif (
            pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
        ) and pd.api.types.infer_dtype(frame[name], skipna=True) not in _TEMPORAL:
            # object columns of Python dates/times are timestamps, not categories
            categorical.append(name)
    return numeric, categorical


def make_pipeline(
    kind: Kind, numeric: Sequence[str], categorical: Sequence[str], params: TrainParams
) -> Pipeline:
    """Return an unfitted preprocessing + estimator pipeline for one candidate kind."""
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    transformers: list[tuple[str, Any, list[str]]] = []
    estimator: Any
    if kind == "logreg":
        numeric_steps = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric_steps, list(numeric)))
        binned = [c for c in params.binned if c in numeric]
        if binned:
            bins = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median")),
                    ("bins", KBinsDiscretizer(n_bins=params.n_bins, encode="onehot-dense")),
                ]
            )
            transformers.append(("binned", bins, binned))
        estimator = LogisticRegression(
            max_iter=1000, class_weight=params.class_weight, random_state=params.random_state
        )
    elif kind == "hist_gb":
        # HGB handles NaN natively and needs no scaling
        transformers.append(("numeric", "passthrough", list(numeric)))
        estimator = HistGradientBoostingClassifier(
            class_weight=params.class_weight, random_state=params.random_state
        )
    else:
        raise ValueError(f"unknown candidate {kind!r}; use 'logreg' or 'hist_gb'")
    if categorical:
        transformers.append(("categorical", categorical_steps, list(categorical)))
    if not transformers or not (numeric or categorical):
        raise ValueError("no feature columns; check the frame's dtypes and the exclude list")
    preprocess = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _with_params(pipeline: Pipeline, point: dict[str, Any]) -> Pipeline:
    return pipeline.set_params(**{f"model__{k}": v for k, v in point.items()})


def _fit_fold(
    pipeline: Pipeline, x: pd.DataFrame, y: np.ndarray, fold: Fold
) -> tuple[Pipeline, np.ndarray, float, float]:
    """Fit on the fold's training rows; return (pipeline, validation scores, AUC, seconds)."""
    start = time.perf_counter()
    train_idx, val_idx = fold
    pipeline.fit(x.iloc[train_idx], y[train_idx])
    # the score CalibratedClassifierCV calibrates (and GridSearchCV's roc_auc ranks by)
    scores = np.asarray(pipeline.decision_function(x.iloc[val_idx]), dtype=float)
    auc = float(roc_auc_score(y[val_idx], scores))
    return pipeline, scores, auc, time.perf_counter() - start


def calibrate_folds(
    template: Pipeline,
    fitted: Sequence[tuple[Pipeline, np.ndarray]],
    y: np.ndarray,
    folds: Sequence[Fold],
    method: Literal["sigmoid", "isotonic"],
) -> CalibratedClassifierCV:
    """The ``CalibratedClassifierCV(template, cv=folds)`` that ``.fit`` would return, built
    from pipelines already fitted on each fold's training rows and their validation scores.

    Uses scikit-learn's own per-fold step (``sklearn.calibration._fit_calibrator``, private):
    the fitted object is the public class with the attributes its ``fit`` sets, so scoring,
    serving, skops and `ml.serving.fastpath` see the same model as before.
    """
    from sklearn.calibration import _fit_calibrator
    from sklearn.utils._array_api import get_namespace

    if len(fitted) != len(folds):
        raise ValueError(f"{len(fitted)} fitted pipelines for {len(folds)} folds")
    model = CalibratedClassifierCV(template, method=method, cv=list(folds), ensemble=True)
    model.classes_ = np.unique(y)
    xp, _ = get_namespace(fitted[0][1])
    model.calibrated_classifiers_ = [
        _fit_calibrator(pipeline, scores.reshape(-1, 1), y[val_idx], model.classes_, method, xp=xp)
        for (pipeline, scores), (_, val_idx) in zip(fitted, folds, strict=True)
    ]
    first = fitted[0][0]
    if hasattr(first, "n_features_in_"):
        model.n_features_in_ = first.n_features_in_
    if hasattr(first, "feature_names_in_"):
        model.feature_names_in_ = first.feature_names_in_
    return model


def train(
    train_set: pd.DataFrame, label: str, time_column: str, params: TrainParams
) -> TrainedModel:
    """Grid-search each candidate on day-based time folds (ROC AUC), calibrate the best."""
    if label not in train_set.columns:
        raise ValueError(f"label column {label!r} is not in the training frame")
    if train_set[label].isna().any():
        raise ValueError(f"label column {label!r} has missing values; drop unlabelled rows")
    ordered = (
        as_model_input(train_set)
        .assign(__day=_days(train_set, time_column))
        .sort_values("__day", kind="stable")
    )
    numeric, categorical = feature_columns(ordered, {*params.exclude, label, time_column, "__day"})
    columns = [*numeric, *categorical]
    x = ordered[columns].reset_index(drop=True)
    y = ordered[label].astype(int).to_numpy()
    _check_classes(pd.Series(y), "the training set")
    folds = time_folds(ordered, time_column, params.n_splits, params.entity)
    for i, (_, val_idx) in enumerate(folds):
        _check_classes(pd.Series(y[val_idx]), f"time fold {i} validation days")

    points: list[tuple[Kind, dict[str, Any]]] = [
        (kind, dict(point))
        for kind in params.candidates
        for point in ParameterGrid(params.grid(kind))
    ]
    for kind, _ in points:
        make_pipeline(kind, numeric, categorical, params)  # an unknown kind fails before any fit
    jobs = [(p, f) for p in range(len(points)) for f in range(len(folds))]
    fits: dict[tuple[int, int], tuple[Pipeline, np.ndarray, float, float]] = {}
    title = f"churn grid search ({len(points)} candidates x {len(folds)} folds)"
    with (
        threadpool_limits(limits=params.threads_per_fit),
        track(title, total=len(jobs), unit="fits") as bar,
    ):
        runs = Parallel(n_jobs=params.n_jobs, backend="threading", return_as="generator")(
            delayed(_fit_fold)(
                _with_params(make_pipeline(points[p][0], numeric, categorical, params), points[p][1]),
                x, y, folds[f],
            )
            for p, f in jobs
        )  # fmt: skip
        for (p, f), result in zip(jobs, runs, strict=True):
            fits[p, f] = result
            kind, point = points[p]
            bar.set_description(f"churn grid search: {kind} {point} fold {f + 1}/{len(folds)}")
            bar.advance()
        bar.set_description(title)

    candidates = tuple(
        CandidateResult(
            kind=kind,
            params=point,
            fold_scores=tuple(fits[p, f][2] for f in range(len(folds))),
            fit_seconds=sum(fits[p, f][3] for f in range(len(folds))),
        )
        for p, (kind, point) in enumerate(points)
    )
    # the first best point of each kind, as GridSearchCV ranks; then the best kind
    best: dict[Kind, int] = {}
    for p, candidate in enumerate(candidates):
        if (
            candidate.kind not in best
            or candidate.mean_score > candidates[best[candidate.kind]].mean_score
        ):
            best[candidate.kind] = p
    cv_scores: dict[str, float] = {kind: candidates[p].mean_score for kind, p in best.items()}
    best_kind: Kind = max(params.candidates, key=lambda k: cv_scores[k])
    chosen = best[best_kind]
    template = _with_params(
        make_pipeline(best_kind, numeric, categorical, params), candidates[chosen].params
    )
    calibrated = calibrate_folds(
        template,
        [(fits[chosen, f][0], fits[chosen, f][1]) for f in range(len(folds))],
        y,
        folds,
        params.calibration,
    )
    return TrainedModel(
        model=calibrated,
        kind=best_kind,
        best_params=dict(candidates[chosen].params),
        cv_scores=cv_scores,
        feature_columns=columns,
        numeric=numeric,
        categorical=categorical,
        candidates=candidates,
    )
