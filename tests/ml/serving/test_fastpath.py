"""The compiled one-row scorer must give scikit-learn's probabilities, edge cases included."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from threadpoolctl import threadpool_limits

from ml.churn.model import TrainedModel, TrainParams, split_by_time, train
from ml.serving.fastpath import NotCompilableError, compile_churn, compile_forest
from tests.ml.churn.test_model import FAST, LABEL, TIME, synthetic_frame


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_by_time(synthetic_frame(n_days=40, per_day=80, seed=3), TIME, 0.25, label=LABEL)


def _fit(data: tuple[pd.DataFrame, pd.DataFrame], kind: str, **extra: object) -> TrainedModel:
    params = TrainParams.model_validate({**FAST.model_dump(), "candidates": (kind,), **extra})
    return train(data[0], LABEL, TIME, params)


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, object]]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame[columns].to_dict("records")
    ]


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("logreg", {}), ("hist_gb", {}), ("logreg", {"calibration": "isotonic"})],
)
def test_compiled_scorer_matches_predict_proba(data, kind, extra) -> None:
    trained = _fit(data, kind, **extra)
    holdout = data[1]
    scorer = compile_churn(trained.model, trained.feature_columns, trained.numeric)
    expected = trained.predict_proba(holdout)
    got = np.array([scorer.score(row) for row in _rows(holdout, trained.feature_columns)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the same through the batch entry point on an object matrix
    matrix = np.vstack(
        [scorer.row(row) for row in _rows(holdout.head(50), trained.feature_columns)]
    )
    np.testing.assert_allclose(scorer.predict_proba(matrix), expected[:50], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["logreg", "hist_gb"])
def test_compiled_scorer_handles_missing_unknown_and_absent_values(data, kind) -> None:
    trained = _fit(data, kind)
    scorer = compile_churn(trained.model, trained.feature_columns, trained.numeric)
    base = _rows(data[1].head(1), trained.feature_columns)[0]
    cases = [
        {**base, "plan_name": "platinum-never-seen"},  # unknown category
        {**base, "watch_minutes_7d": None, "country": None},  # missing values
        {"tenure_days": 10.0},  # every other feature absent
    ]
    frame = pd.DataFrame([{c: case.get(c) for c in trained.feature_columns} for case in cases])
    frame[trained.numeric] = frame[trained.numeric].astype(float)
    expected = trained.predict_proba(frame)
    got = np.array([scorer.score(case) for case in cases])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len(set(np.round(got, 12))) == 3  # the cases really differ


def test_compile_refuses_what_it_cannot_replay(data) -> None:
    forest = RandomForestClassifier(n_estimators=3).fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(NotCompilableError, match="CalibratedClassifierCV"):
        compile_churn(forest, ["a"], ["a"])


@pytest.mark.parametrize("kind", ["logreg", "hist_gb"])
def test_scoring_many_rows_at_once_gives_each_rows_probability(data, kind) -> None:
    """The batch entry point (one pass over every row) against predict_proba, row for row."""
    trained = _fit(data, kind)
    holdout = data[1]
    scorer = compile_churn(trained.model, trained.feature_columns, trained.numeric)
    rows = _rows(holdout, trained.feature_columns)
    rows[3] = {"tenure_days": 10.0}  # absent features in the middle of a batch
    expected = trained.predict_proba(
        pd.DataFrame([{c: row.get(c) for c in trained.feature_columns} for row in rows]).astype(
            {c: float for c in trained.numeric}
        )
    )
    np.testing.assert_allclose(scorer.score_many(rows), expected, rtol=0, atol=1e-12)
    assert scorer.score_many([]).shape == (0,)


@pytest.mark.parametrize(
    ("leaves", "walker"),
    [(31, "LeafMaskForest"), (48, "LeafMaskForest"), (100, "Forest"), (None, "LeafMaskForest")],
)
def test_every_forest_walker_gives_scikit_learns_raw_scores(leaves, walker) -> None:
    """32- and 64-bit leaf masks, the level walk for bigger trees, and trees that are a
    single leaf (no split: every sample in one leaf), with missing values everywhere."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(scale=0.3, size=3000) > 0).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    if leaves is None:  # a leaf needs more samples than there are: no tree ever splits
        model = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=3000)
    else:
        model = HistGradientBoostingClassifier(
            max_iter=15, max_leaf_nodes=leaves, min_samples_leaf=2, random_state=0
        )
    model.fit(x, y)
    other = HistGradientBoostingClassifier(max_iter=5, random_state=1).fit(x[:, :4], y)
    forest = compile_forest([model, other, model], sources=[0, 1, 0])
    assert type(forest).__name__ == walker
    raw = forest.raw([x, x[:, :4]])
    np.testing.assert_allclose(raw[:, 0], model._raw_predict(x)[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(raw[:, 1], other._raw_predict(x[:, :4])[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(raw[:, 0], raw[:, 2])
