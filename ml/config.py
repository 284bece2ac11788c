"""The ML configuration file (`conf/ml.yaml`): typed, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml.churn.model import TrainParams
from ml.recommender.model import RecParams
from ml.registry import PromotionPolicy

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "conf" / "ml.yaml"


class ThresholdRule(BaseModel):
    """How the operating threshold is chosen (see `ml.churn.evaluate.choose_threshold`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["f1", "capacity"] = "f1"
    capacity_share: float = Field(0.1, gt=0.0, le=1.0)


class ChurnConfig(BaseModel):
    """Training, evaluation and promotion settings of the churn model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holdout_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    gap_days: int = Field(0, ge=0, description="training rows dropped before the holdout")
    feature_set_version: str | None = None
    as_known_at: bool = True
    threshold: ThresholdRule = ThresholdRule()
    importance_rows: int = Field(5000, ge=100)
    train: TrainParams = TrainParams()
    policy: PromotionPolicy = PromotionPolicy()


class RecommenderConfig(BaseModel):
    """Evaluation and promotion settings of the recommender."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holdout_days: int = Field(14, ge=1)
    k: int = Field(10, ge=1)
    params: RecParams = RecParams()
    policy: PromotionPolicy = PromotionPolicy(gate={}, compare_on="recall_at_k", margin=0.0)


class MLConfig(BaseModel):
    """Everything `conf/ml.yaml` holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    churn: ChurnConfig = ChurnConfig()
    recommender: RecommenderConfig = RecommenderConfig()


class ConfigError(ValueError):
    """The ML configuration file is missing or invalid; the message names the file and key."""


def load_ml_config(path: Path | None = None) -> MLConfig:
    """Read and validate the ML configuration (default: `conf/ml.yaml` in the repo)."""
    path = path or DEFAULT_PATH
    if not path.exists():
        raise ConfigError(
            f"ML config {path} not found; copy conf/ml.yaml or unset LOOPLINE_ML_CONFIG"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return MLConfig.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"ML config {path} is invalid:\n{exc}") from exc
