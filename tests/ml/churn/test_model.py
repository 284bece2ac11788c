"""Tests for ml/churn/model.py on small synthetic churn frames with a known logistic relation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

from ml.churn.evaluate import expected_calibration_error
from ml.churn.model import (
    TrainedModel,
    TrainParams,
    as_model_input,
    feature_columns,
    make_pipeline,
    split_by_time,
    time_folds,
    train,
)

LABEL = "churned_within_30d"
TIME = "event_timestamp"


def synthetic_frame(n_days: int = 60, per_day: int = 100, seed: int = 0) -> pd.DataFrame:
    """Rows over `n_days` days; churn follows a logistic model of two features and a plan."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    day = np.repeat(np.arange(n_days), per_day)
    start = pd.Timestamp("2026-01-01")
    timestamps = (
        start
        + pd.to_timedelta(day, unit="D")
        + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    )
    watch = rng.normal(0, 1, n)
    failed = rng.poisson(0.5, n).astype(float)
    plan = rng.choice(["basic", "standard", "premium"], n)
    logit = -3.3 - 1.2 * watch + 0.9 * failed + 0.7 * (plan == "basic")
    p_true = 1 / (1 + np.exp(-logit))
    noise = rng.normal(0, 1, n)
    noise[rng.random(n) < 0.1] = np.nan
    watch_obs = watch.copy()
    watch_obs[rng.random(n) < 0.05] = np.nan
    country = pd.Series(rng.choice(["US", "DE", "BR", None], n), dtype="str")
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "as_of_date": timestamps.normalize().date,
            TIME: timestamps,
            LABEL: rng.random(n) < p_true,
            "watch_minutes_7d": watch_obs,
            "failed_payments_30d": failed,
            "noise_a": noise,
            "tenure_days": rng.integers(0, 1000, n).astype(float),
            "plan_name": pd.Series(plan, dtype="str"),
            "country": country,
            "p_true": p_true,
        }
    )


FAST = TrainParams(
    logreg_grid={"C": [0.1, 1.0]},
    hist_gb_grid={"learning_rate": [0.1], "max_leaf_nodes": [15], "max_iter": [60]},
    exclude=("user_id", "as_of_date", "p_true"),
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """OpenMP threads in HistGradientBoosting crawl on a busy machine; one thread is fast."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> tuple[TrainedModel, pd.DataFrame, pd.DataFrame]:
    before = frame.copy(deep=True)
    train_part, holdout = split_by_time(frame, TIME, 0.2, label=LABEL)
    train_copy = train_part.copy(deep=True)
    model = train(train_part, LABEL, TIME, FAST)
    pd.testing.assert_frame_equal(train_part, train_copy)
    pd.testing.assert_frame_equal(frame, before)
    return model, train_part, holdout


def _days(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame[TIME]).dt.normalize()


def test_split_by_time_separates_days_and_holds_out_latest(frame: pd.DataFrame) -> None:
    train_part, holdout = split_by_time(frame, TIME, 0.25, label=LABEL)
    train_days, holdout_days = set(_days(train_part)), set(_days(holdout))
    assert not train_days & holdout_days
    assert max(train_days) < min(holdout_days)
    assert max(holdout_days) == _days(frame).max()
    assert len(holdout_days) == 15
    assert len(train_part) + len(holdout) == len(frame)


def test_split_by_time_rejects_one_class_side(frame: pd.DataFrame) -> None:
    one_class = frame.assign(**{LABEL: frame[LABEL] & (_days(frame) < pd.Timestamp("2026-02-15"))})
    with pytest.raises(ValueError, match="holdout side"):
        split_by_time(one_class, TIME, 0.2, label=LABEL)


def test_split_by_time_rejects_bad_fraction_and_single_day(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_by_time(frame, TIME, 1.5)
    one_day = frame[_days(frame) == _days(frame).min()]
    with pytest.raises(ValueError, match="distinct day"):
        split_by_time(one_day, TIME, 0.2)


def test_time_folds_validate_strictly_after_training_days(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    days = _days(shuffled).to_numpy()
    folds = time_folds(shuffled, TIME, 3)
    assert len(folds) == 3
    for train_idx, val_idx in folds:
        assert len(train_idx) and len(val_idx)
        assert days[train_idx].max() < days[val_idx].min()
        assert not set(days[train_idx]) & set(days[val_idx])
    # expanding window: each fold trains on more days and validates later
    assert [len(t) for t, _ in folds] == sorted(len(t) for t, _ in folds)
    assert days[folds[-1][1]].max() == days.max()


def _entities_repeat_over_days(frame: pd.DataFrame) -> pd.DataFrame:
    """The synthetic frame with 100 users, each appearing on every day (like the churn mart)."""
    return frame.assign(user_id=frame["user_id"] % 100)


def test_entity_split_never_evaluates_a_trained_entity(frame: pd.DataFrame) -> None:
    repeated = _entities_repeat_over_days(frame)
    train_part, holdout = split_by_time(repeated, TIME, 0.25, label=LABEL, entity="user_id")
    assert not set(train_part["user_id"]) & set(holdout["user_id"])
    assert _days(train_part).max() < _days(holdout).min()
    assert 10 <= holdout["user_id"].nunique() <= 40  # about a quarter of the users
    # stable: the same users are held out on every run and with other rows present
    again = split_by_time(repeated.iloc[::-1], TIME, 0.25, label=LABEL, entity="user_id")[1]
    assert set(again["user_id"]) == set(holdout["user_id"])


def test_gap_days_purge_training_rows_before_the_cut(frame: pd.DataFrame) -> None:
    _, holdout = split_by_time(frame, TIME, 0.25, label=LABEL)
    train_part, _ = split_by_time(frame, TIME, 0.25, label=LABEL, gap_days=10)
    gap = _days(holdout).min() - _days(train_part).max()
    assert gap == pd.Timedelta(days=11)  # the 10 days before the cut are dropped
    with pytest.raises(ValueError, match="gap"):
        split_by_time(frame, TIME, 0.25, label=LABEL, gap_days=60)


def test_entity_folds_validate_on_entities_they_did_not_train_on(frame: pd.DataFrame) -> None:
    repeated = _entities_repeat_over_days(frame)
    users = repeated["user_id"].to_numpy()
    days = _days(repeated).to_numpy()
    folds = time_folds(repeated, TIME, 3, entity="user_id")
    validated: set[int] = set()
    for train_idx, val_idx in folds:
        assert len(train_idx) and len(val_idx)
        assert not set(users[train_idx]) & set(users[val_idx])
        assert days[train_idx].max() < days[val_idx].min()
        validated |= set(users[val_idx])
    assert len(validated) == 100  # the folds' entity shares together cover everyone


def test_feature_columns_split_by_dtype(frame: pd.DataFrame) -> None:
    numeric, categorical = feature_columns(frame, ["user_id", "p_true", LABEL])  # dates dropped
    assert numeric == ["watch_minutes_7d", "failed_payments_30d", "noise_a", "tenure_days"]
    assert categorical == ["plan_name", "country"]


@pytest.mark.parametrize("kind", ["logreg", "hist_gb"])
def test_make_pipeline_fits_with_nans_and_unknown_categories(
    frame: pd.DataFrame, kind: str
) -> None:
    numeric, categorical = ["watch_minutes_7d", "tenure_days"], ["country"]
    pipe = make_pipeline(kind, numeric, categorical, FAST)  # type: ignore[arg-type]
    pipe.fit(frame[numeric + categorical], frame[LABEL])
    unseen = frame[numeric + categorical].head(3).assign(country="ZZ")
    assert pipe.predict_proba(unseen).shape == (3, 2)


def test_make_pipeline_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown candidate"):
        make_pipeline("svm", ["a"], [], FAST)  # type: ignore[arg-type]


def test_train_discriminates_close_to_truth(
    fitted: tuple[TrainedModel, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, holdout = fitted
    proba = model.predict_proba(holdout)
    auc = roc_auc_score(holdout[LABEL], proba)
    best_possible = roc_auc_score(holdout[LABEL], holdout["p_true"])
    assert auc > 0.75
    assert auc > best_possible - 0.05
    assert set(model.cv_scores) == {"logreg", "hist_gb"}
    assert model.cv_scores[model.kind] == max(model.cv_scores.values())
    assert "p_true" not in model.feature_columns and LABEL not in model.feature_columns


def test_train_is_calibrated_on_holdout(
    fitted: tuple[TrainedModel, pd.DataFrame, pd.DataFrame],
) -> None:
    """Class weights inflate the raw scores far above the churn rate; calibration on the
    folds' later days brings them back, on days no fold saw."""
    model, _, holdout = fitted
    y = holdout[LABEL].astype(int).to_numpy()
    calibrated = model.predict_proba(holdout)
    rows = as_model_input(holdout[model.feature_columns])
    uncalibrated = np.mean(
        [fold.estimator.predict_proba(rows)[:, 1] for fold in model.model.calibrated_classifiers_],
        axis=0,
    )
    assert FAST.class_weight == "balanced"
    assert expected_calibration_error(y, uncalibrated) > 0.1
    assert expected_calibration_error(y, calibrated) < 0.05
    assert abs(calibrated.mean() - y.mean()) < 0.03


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order `train` fits them: by day, stable."""
    day = pd.to_datetime(frame[TIME]).dt.normalize()
    return as_model_input(frame).assign(__day=day).sort_values("__day", kind="stable")


def test_calibration_reuses_the_search_fits_exactly(
    fitted: tuple[TrainedModel, pd.DataFrame, pd.DataFrame],
) -> None:
    """The assembled model equals what CalibratedClassifierCV's own fit gives on the folds."""
    model, train_part, holdout = fitted
    ordered = _ordered(train_part)
    x = ordered[model.feature_columns].reset_index(drop=True)
    y = ordered[LABEL].astype(int).to_numpy()
    refit = clone(model.model).fit(x, y)
    assert len(refit.calibrated_classifiers_) == len(model.model.calibrated_classifiers_) == 3
    rows = as_model_input(holdout[model.feature_columns])
    np.testing.assert_allclose(
        model.model.predict_proba(rows), refit.predict_proba(rows), rtol=0, atol=1e-12
    )


def test_search_scores_every_grid_point_like_grid_search(frame: pd.DataFrame) -> None:
    """Each candidate's fold AUCs are GridSearchCV's on the same folds; the best one wins."""
    params = TrainParams.model_validate(
        {
            **FAST.model_dump(),
            "candidates": ("logreg",),
            "logreg_grid": {"C": [0.01, 1.0], "class_weight": [None, "balanced"]},
        }
    )
    train_part, _ = split_by_time(frame, TIME, 0.2, label=LABEL)
    model = train(train_part, LABEL, TIME, params)
    assert len(model.candidates) == 4
    ordered = _ordered(train_part)
    x = ordered[model.feature_columns].reset_index(drop=True)
    y = ordered[LABEL].astype(int).to_numpy()
    folds = time_folds(ordered, TIME, params.n_splits)
    search = GridSearchCV(
        make_pipeline("logreg", model.numeric, model.categorical, params),
        {f"model__{k}": v for k, v in params.logreg_grid.items()},
        scoring="roc_auc",
        cv=folds,
        refit=False,
    ).fit(x, y)
    expected = {
        tuple(sorted((k.removeprefix("model__"), v) for k, v in point.items())): [
            search.cv_results_[f"split{i}_test_score"][j] for i in range(len(folds))
        ]
        for j, point in enumerate(search.cv_results_["params"])
    }
    for candidate in model.candidates:
        key = tuple(sorted(candidate.params.items()))
        np.testing.assert_allclose(candidate.fold_scores, expected[key], rtol=0, atol=1e-12)
    best = max(model.candidates, key=lambda c: c.mean_score)
    assert model.chosen is best and model.best_params == best.params
    assert model.cv_scores == {"logreg": best.mean_score}
    assert best.params == {k.removeprefix("model__"): v for k, v in search.best_params_.items()}


def test_grid_search_reports_every_fit_as_progress(frame: pd.DataFrame, monkeypatch) -> None:
    """Candidates x folds on one bar (here as the log records every mode writes)."""
    import logging

    from loopline import progress

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    monkeypatch.setenv("LOOPLINE_PROGRESS", "quiet")
    handler = Keep()
    progress.logger.addHandler(handler)
    try:
        params = TrainParams.model_validate({**FAST.model_dump(), "candidates": ("logreg",)})
        train(split_by_time(frame, TIME, 0.2, label=LABEL)[0], LABEL, TIME, params)
    finally:
        progress.logger.removeHandler(handler)
    title = "churn grid search (2 candidates x 3 folds)"
    assert seen[0] == f"{title}: started (6 fits)"
    assert any("logreg {'C': 1.0} fold" in line for line in seen[1:-1])
    assert seen[-1].startswith(f"{title}: done, 6 fits in")


def test_train_rejects_missing_label(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="label column"):
        train(frame.drop(columns=[LABEL]), LABEL, TIME, FAST)


def test_params_reject_empty_candidates() -> None:
    with pytest.raises(ValueError, match="candidates"):
        TrainParams(candidates=())
