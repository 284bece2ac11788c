"""Tests for ml/churn/evaluate.py: metrics against sklearn, threshold rules, gate, importance, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ml.churn.evaluate import (
    Evaluation,
    choose_threshold,
    evaluate,
    expected_calibration_error,
    permutation_importance_table,
    plot_evaluation,
    quality_gate,
)
from ml.churn.model import TrainParams, as_model_input, split_by_time, train
from tests.ml.churn.test_model import FAST, LABEL, TIME, synthetic_frame

Y = np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.65, 0.9, 0.2, 0.05, 0.5, 0.3])


def test_evaluate_matches_sklearn_on_hand_made_example() -> None:
    result = evaluate(Y, P, threshold=0.5)
    predicted = (P >= 0.5).astype(int)
    assert result.roc_auc == pytest.approx(roc_auc_score(Y, P))
    assert result.pr_auc == pytest.approx(average_precision_score(Y, P))
    assert result.log_loss == pytest.approx(log_loss(Y, P))
    assert result.brier == pytest.approx(brier_score_loss(Y, P))
    assert result.precision == pytest.approx(precision_score(Y, predicted))
    assert result.recall == pytest.approx(recall_score(Y, predicted))
    assert result.f1 == pytest.approx(f1_score(Y, predicted))
    # predicted positive: 0.8 (neg), 0.65, 0.9, 0.5 (pos) -> tn=5, fp=1, fn=1, tp=3
    assert result.confusion == [[5, 1], [1, 3]]
    assert result.positive_rate == pytest.approx(0.4)
    assert result.n == 10
    assert sum(result.calibration.counts) == 10
    metrics = result.metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["tp"] == 3.0 and metrics["roc_auc"] == result.roc_auc


def test_expected_calibration_error_matches_hand_computed_bins() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.12, 0.85, 0.95, 0.9])
    # bin [0.0, 0.1): 0.05 vs 0/1; bin [0.1, 0.2): mean 0.135 vs 1/2; bin [0.8, 0.9): 0.85 vs
    # 1; bin [0.9, 1.0]: mean 0.925 vs 1/2
    expected = (0.05 + 2 * abs(0.5 - 0.135) + abs(1 - 0.85) + 2 * abs(0.5 - 0.925)) / 6
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    assert evaluate(y, p, 0.5).metrics()["ece"] == pytest.approx(expected)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_evaluate_accepts_bool_labels_and_rejects_one_class() -> None:
    assert evaluate(Y.astype(bool), P, 0.5).roc_auc == pytest.approx(roc_auc_score(Y, P))
    with pytest.raises(ValueError, match="single class"):
        evaluate(np.zeros(10), P, 0.5)
    with pytest.raises(ValueError, match="aligned"):
        evaluate(Y[:5], P, 0.5)


def test_capacity_threshold_contacts_top_share() -> None:
    rng = np.random.default_rng(0)
    proba = rng.random(1000)
    y = rng.random(1000) < proba
    threshold = choose_threshold(y, proba, "capacity", capacity_share=0.1)
    contacted = proba >= threshold
    assert contacted.sum() == 100
    assert proba[contacted].min() > proba[~contacted].max()


def test_f1_threshold_maximises_f1_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    proba = rng.random(500)
    y = (rng.random(500) < proba**2).astype(int)
    threshold = choose_threshold(y, proba, "f1")
    best = max(f1_score(y, proba >= t) for t in np.unique(proba))
    assert f1_score(y, proba >= threshold) == pytest.approx(best)


def test_unknown_threshold_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(Y, P, "median")  # type: ignore[arg-type]


def test_quality_gate_passes_and_fails_both_ways() -> None:
    result = evaluate(Y, P, 0.5)
    assert quality_gate(result, {"roc_auc": 0.6, "brier": 0.3}).passed
    failed = quality_gate(result, {"roc_auc": 0.99, "brier": 0.01, "log_loss": 10.0})
    assert not failed.passed
    assert len(failed.failures) == 2
    assert "roc_auc" in failed.failures[0] and "minimum" in failed.failures[0]
    assert "brier" in failed.failures[1] and "maximum" in failed.failures[1]
    with pytest.raises(ValueError, match="unknown gate metric"):
        quality_gate(result, {"accuracy": 0.9})


def _holdout(seed: int = 0, n: int = 800) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2 + 2 * x["signal"])))).astype(int).to_numpy()
    return x, y


def test_permutation_importance_ranks_signal_first() -> None:
    x, y = _holdout()
    model = LogisticRegression().fit(x, y)
    x_copy = x.copy()
    table = permutation_importance_table(model, x, y, n_repeats=3)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]
    assert table["feature"].tolist() == ["signal", "noise"]
    assert table.loc[0, "importance_mean"] > 0.1
    assert abs(table.loc[1, "importance_mean"]) < 0.02
    pd.testing.assert_frame_equal(x, x_copy)


@pytest.mark.parametrize("kind", ["logreg", "hist_gb"])
def test_importance_of_a_trained_model_is_scikit_learns_exactly(kind: str, monkeypatch) -> None:
    """The transformed-space shortcut gives scikit-learn's numbers: same permutations,
    same scores, for the calibrated model and for one fold's bare pipeline (numeric columns
    with missing values, quantile bins, one-hot categories with missing values)."""
    from threadpoolctl import threadpool_limits

    def no_slow_path(*args: object, **kwargs: object) -> None:
        raise AssertionError("took scikit-learn's path, not the transformed-space one")

    monkeypatch.setattr("ml.churn.evaluate.permutation_importance", no_slow_path)
    frame = synthetic_frame(n_days=30, per_day=60, seed=5)
    train_part, holdout = split_by_time(frame, TIME, 0.25, label=LABEL)
    params = TrainParams.model_validate({**FAST.model_dump(), "candidates": (kind,)})
    with threadpool_limits(limits=1):
        trained = train(train_part, LABEL, TIME, params)
        x = as_model_input(holdout[trained.feature_columns]).head(300)
        y = holdout[LABEL].astype(int).to_numpy()[:300]
        pipeline = trained.model.calibrated_classifiers_[0].estimator
        for model in (trained.model, pipeline):
            ours = permutation_importance_table(model, x, y, n_repeats=3, random_state=7)
            theirs = permutation_importance(
                model, x, y, scoring="roc_auc", n_repeats=3, random_state=7
            )
            got = ours.set_index("feature").loc[list(x.columns)]
            np.testing.assert_allclose(
                got["importance_mean"], theirs.importances_mean, rtol=0, atol=1e-12
            )
            np.testing.assert_allclose(
                got["importance_std"], theirs.importances_std, rtol=0, atol=1e-12
            )
            assert got["importance_mean"].abs().max() > 0.01  # permutations really bite
    assert {"plan_name", "country", "tenure_days"} <= set(x.columns)


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    x, y = _holdout()
    model = LogisticRegression().fit(x, y)
    proba = model.predict_proba(x)[:, 1]
    result: Evaluation = evaluate(y, proba, choose_threshold(y, proba, "f1"))
    table = permutation_importance_table(model, x, y, n_repeats=2)
    paths = plot_evaluation(result, table, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "roc_curve.png",
        "pr_curve.png",
        "calibration_curve.png",
        "confusion_matrix.png",
        "permutation_importance.png",
    ]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plot_evaluation(result, None, tmp_path / "no_importance")) == 4
