"""The ML configuration file: the shipped one is valid, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import ConfigError, load_ml_config


def test_shipped_config_loads_with_a_gate_and_both_models() -> None:
    config = load_ml_config()
    assert config.churn.policy.gate["roc_auc"] > 0.5
    assert set(config.churn.train.candidates) == {"logreg", "hist_gb"}
    assert config.recommender.k == 10 and config.recommender.params.neighbours >= 1


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ml.yaml"
    path.write_text("churn:\n  policy:\n    margin: 0.05\n")
    config = load_ml_config(path)
    assert config.churn.policy.margin == 0.05
    assert config.churn.holdout_fraction == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("churn:\n  holdout_fraction: 1.5\n", "holdout_fraction"),
        ("churn:\n  thresold: {rule: f1}\n", "thresold"),
        ("churn:\n  threshold: {rule: magic}\n", "rule"),
        ("churn: [unclosed\n", "invalid"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ml.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_ml_config(path)
    assert str(path) in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_ml_config(tmp_path / "nope.yaml")
