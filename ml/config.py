"""The ML configuration file (`conf/ml.yaml`): typed, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml.churn.model import TrainParams
from ml.recommender.model import RecParams
from ml.registry import PromotionPolicy

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "conf" / "ml.yaml"
M = TypeVar("M", bound=BaseModel)


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
    training_days: int | None = Field(
        None, ge=2, description="train on the latest N labelled as-of days (None: all of them)"
    )
    feature_set_version: str | None = None
    as_known_at: bool = False  # see conf/ml.yaml
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


def load_yaml_model(
    path: Path | None,
    default: Path,
    model: type[M],
    env_var: str,
    error: type[ValueError] = ValueError,
) -> M:
    """Read one YAML settings file (`path`, else `default`) into `model`; an `error` names
    the file, and the key on a validation failure, and how to get back to the default."""
    path = path or default
    what = f"{default.stem} config"
    if not path.exists():
        raise error(f"{what} {path} not found; copy conf/{default.name} or unset {env_var}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return model.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise error(f"{what} {path} is invalid:\n{exc}") from exc


def load_ml_config(path: Path | None = None) -> MLConfig:
    """Read and validate the ML configuration (default: `conf/ml.yaml` in the repo)."""
    return load_yaml_model(path, DEFAULT_PATH, MLConfig, "LOOPLINE_ML_CONFIG", ConfigError)
