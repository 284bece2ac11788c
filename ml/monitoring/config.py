"""The monitoring configuration file (`conf/monitoring.yaml`): typed, validated before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml.config import load_yaml_model

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "conf" / "monitoring.yaml"

Model = Literal["churn", "recommender"]


class Rule(BaseModel):
    """One performance rule: a metric of one model, judged per window against a bound."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Model
    metric: str
    min: float | None = None
    max: float | None = None
    at_least: str | None = Field(None, description="another metric of the same window")

    @model_validator(mode="after")
    def _one_bound(self) -> Rule:
        given = [b for b in (self.min, self.max, self.at_least) if b is not None]
        if len(given) != 1:
            raise ValueError(
                f"rule {self.model}.{self.metric}: give exactly one of min, max, at_least"
            )
        return self

    @property
    def name(self) -> str:
        """A readable name: ``churn roc_auc >= 0.7``."""
        if self.min is not None:
            return f"{self.model} {self.metric} >= {self.min:g}"
        if self.max is not None:
            return f"{self.model} {self.metric} <= {self.max:g}"
        return f"{self.model} {self.metric} >= {self.at_least}"


class PerformanceConfig(BaseModel):
    """The rules and how much labelled data a window needs before it is judged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rows: int = Field(50, ge=1)
    rules: tuple[Rule, ...] = ()


class DriftConfig(BaseModel):
    """How the champion's features are compared with the latest window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_days: int = Field(7, ge=1, description="the current window: days up to the newest")
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    min_effect: dict[str, float] = Field(
        default_factory=lambda: {"numeric": 0.1, "categorical": 0.1, "null_rate": 0.1}
    )
    ignore: tuple[str, ...] = ()
    entity: str = "user_id"
    sample_seed: int = 0
    warmup_days: int = Field(30, ge=0, description="reference days skipped after the data's first")
    window_pattern: str = Field(
        r"_(\d+)d$",
        description="a feature whose name matches looks back group(1) days: where the "
        "reference's days began before such a window was full, it is compared, never confirmed",
    )
    min_served_rows: int = Field(
        100, ge=1, description="served requests needed before the prediction log is compared"
    )


class RetrainConfig(BaseModel):
    """When the monitor starts a training run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    on_performance: bool = True
    on_drift: bool = True
    # the training run a trigger starts learns from the latest N labelled days only (None:
    # the window of conf/ml.yaml): after a shift, older days teach the old world
    training_days: int | None = Field(None, ge=2)
    # a rule the champion also failed on its own holdout is a standing failure, not a
    # reason, unless the window is worse than the holdout by more than this (metric units)
    standing_tolerance: float = Field(0.05, ge=0.0)


class MonitoringConfig(BaseModel):
    """Everything `conf/monitoring.yaml` holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    performance: PerformanceConfig = PerformanceConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()


class MonitoringConfigError(ValueError):
    """The monitoring configuration is missing or invalid; the message names the file."""


def load_monitoring_config(path: Path | None = None) -> MonitoringConfig:
    """Read and validate the monitoring configuration (default: `conf/monitoring.yaml`)."""
    return load_yaml_model(
        path, DEFAULT_PATH, MonitoringConfig, "LOOPLINE_MONITORING_CONFIG", MonitoringConfigError
    )
