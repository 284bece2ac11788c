"""Scenario knobs of the source-system simulator."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scale = Literal["demo", "small", "large"]
DriftKind = Literal["none", "device_mix", "price_rise"]

# users at the start, days simulated by default
SCALES: dict[str, tuple[int, int]] = {
    "small": (300, 45),  # tests
    "demo": (1_500, 120),  # the whole demo loop in a few minutes on 2 cores
    "large": (25_000, 180),  # > 10 million viewing events
}


class SimConfig(BaseModel):
    """Everything that decides what the simulator writes; fixed at the first run.

    A continuation (`simulate --until`) reuses the stored config, so the same seed and
    knobs always give the same company.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42
    start: date = date(2026, 1, 1)
    users: int = Field(1_500, ge=10, description="Subscribers on the start date.")
    signups_per_day_rate: float = Field(
        0.004, ge=0, description="New users a day, per starting user."
    )
    shows: int = Field(0, ge=0, description="Shows at the start; 0 derives it from `users`.")
    heartbeat_s: int = Field(600, ge=60, description="Seconds between heartbeat events.")

    # drift scenario: a covariate shift and/or a concept shift from a date on
    drift_kind: DriftKind = "none"
    drift_start: date | None = None
    concept_drift_start: date | None = None

    # a volume spike (e.g. a hit release): viewing multiplied on these days
    spike_start: date | None = None
    spike_days: int = Field(2, ge=1)
    spike_factor: float = Field(3.0, ge=1.0)

    # schema evolution in the viewing events
    field_added_on: date | None = None  # default: start + 20 days
    rename_rollout_on: date | None = None  # default: start + 30 days

    # injected defects: probability a record carries one (each record carries at most one)
    defect_rate: float = Field(0.002, ge=0, le=0.05)
    late_rate: float = Field(
        0.03, ge=0, le=0.5, description="Share of events arriving 1 h to 4 days late."
    )

    @model_validator(mode="after")
    def _defaults(self) -> SimConfig:
        if self.field_added_on is None:
            object.__setattr__(self, "field_added_on", self.start + timedelta(days=20))
        if self.rename_rollout_on is None:
            object.__setattr__(self, "rename_rollout_on", self.start + timedelta(days=30))
        if self.drift_kind != "none" and self.drift_start is None:
            raise ValueError("drift_kind needs drift_start (the first day of the shift)")
        return self

    @property
    def n_shows(self) -> int:
        return self.shows or int(min(1_500, max(120, self.users // 8)))

    def day_index(self, day: date) -> int:
        return (day - self.start).days

    def date_of(self, day_index: int) -> date:
        return self.start + timedelta(days=day_index)


def config_for_scale(scale: Scale, **overrides: object) -> tuple[SimConfig, int]:
    """A config for a named scale and the number of days it simulates by default."""
    users, days = SCALES[scale]
    values: dict[str, object] = {"users": users}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SimConfig.model_validate(values), days


@dataclass(frozen=True)
class Scenario:
    """How to start a new company: a scale and knobs (None: the settings' default)."""

    scale: Scale | None = None
    seed: int | None = None
    users: int | None = None
    drift_kind: str = "none"
    drift_start: date | None = None
    concept_drift_start: date | None = None
    spike_start: date | None = None

    def is_default(self) -> bool:
        """Whether nothing was chosen (every knob left at its default)."""
        return self == Scenario()

    def config(self, default_scale: Scale, default_seed: int, start: date) -> tuple[SimConfig, int]:
        """The config of a company started from this scenario, and its default length in days."""
        knobs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scale"}
        seed = knobs.pop("seed")
        return config_for_scale(
            self.scale or default_scale,
            seed=default_seed if seed is None else seed,
            start=start,
            **knobs,
        )
