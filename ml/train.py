"""Train a churn classifier: time-based split and CV, a small grid per candidate, calibration.

Everything here is pure: frames in, fitted estimators out, no MLflow and no warehouse access.
Folds are built over *days*, so one day never sits on both sides of a split and every
validation day comes strictly after every training day of its fold.

Calibration: ``class_weight="balanced"`` inflates scores, so the chosen pipeline is wrapped in
``CalibratedClassifierCV(pipeline, cv=<time folds>, method=...)``. Each fold fits a clone on
its earlier days and a calibrator on its later days; ``predict_proba`` averages the folds.
Calibrating a model refit on all rows (``FrozenEstimator``) would need data it never saw, and
sklearn's ``ensemble=False`` needs folds that partition the rows, which time folds do not.
The refit-on-all-rows pipeline is kept as ``TrainedModel.base_model`` for inspection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

Kind = Literal["logreg", "hist_gb"]
Fold = tuple[np.ndarray, np.ndarray]
Grid = dict[str, list[float | int | str]]

DEFAULT_EXCLUDE = ("user_id", "as_of_date", "event_timestamp")
_TEMPORAL = frozenset({"date", "datetime", "datetime64", "time", "timedelta", "period"})


def _logreg_grid() -> Grid:
    return {"C": [0.1, 1.0]}


def _hist_gb_grid() -> Grid:
    return {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]}


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
    n_jobs: int | None = None

    @field_validator("candidates")
    @classmethod
    def _some_candidate(cls, value: tuple[Kind, ...]) -> tuple[Kind, ...]:
        if not value:
            raise ValueError("candidates is empty; name at least one of 'logreg', 'hist_gb'")
        return value

    def grid(self, kind: Kind) -> Grid:
        """Return the hyperparameter grid of one candidate (unprefixed estimator params)."""
        return self.logreg_grid if kind == "logreg" else self.hist_gb_grid


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """The calibrated winner, its kind, params, per-candidate CV AUC and the columns it reads."""

    model: Any
    kind: Kind
    best_params: dict[str, Any]
    cv_scores: dict[str, float]
    feature_columns: list[str]
    numeric: list[str]
    categorical: list[str]
    base_model: Any = field(default=None, repr=False)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the calibrated positive-class probability of each row of `frame`."""
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks feature columns {missing}; pass the training columns")
        return np.asarray(
            self.model.predict_proba(as_model_input(frame[self.feature_columns]))[:, 1]
        )


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

    searches: dict[str, GridSearchCV] = {}
    for kind in params.candidates:
        grid = {f"model__{k}": v for k, v in params.grid(kind).items()}
        search = GridSearchCV(
            make_pipeline(kind, numeric, categorical, params),
            grid,
            scoring="roc_auc",
            cv=folds,
            refit=True,
            n_jobs=params.n_jobs,
        )
        search.fit(x, y)
        searches[kind] = search
    cv_scores = {kind: float(s.best_score_) for kind, s in searches.items()}
    best_kind: Kind = max(params.candidates, key=lambda k: cv_scores[k])
    best = searches[best_kind]
    calibrated = CalibratedClassifierCV(
        clone(best.best_estimator_), method=params.calibration, cv=folds, ensemble=True
    )
    calibrated.fit(x, y)
    return TrainedModel(
        model=calibrated,
        kind=best_kind,
        best_params={k.removeprefix("model__"): v for k, v in best.best_params_.items()},
        cv_scores=cv_scores,
        feature_columns=columns,
        numeric=numeric,
        categorical=categorical,
        base_model=best.best_estimator_,
    )
