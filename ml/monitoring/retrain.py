"""Feeding back: when the monitor's findings start a training run, and the record of it.

`decide_trigger` is pure: a failed performance rule of the churn champion (its latest judged
window; not one it also failed on its own holdout: `standing`) or drift confirmed on its
features gives a `Trigger` with one-line reasons and the
evidence (the rules' and features' numbers). The training run it starts is the ordinary one
(`ml.churn.train_churn`): the new version passes the quality gate and must beat the champion
on its holdout, the latest labelled days, to be promoted (`ml.registry.decide`).
`record_trigger` stores the trigger with the registry's decision in
``monitoring.retrain_triggers``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from loopline.settings import Settings
from loopline.warehouse import RETRAIN_TRIGGERS_TABLE
from ml.monitoring.config import RetrainConfig
from ml.monitoring.rules import failures

if TYPE_CHECKING:
    from ml.registry import Decision

Action = Literal["retrain", "disabled"]


@dataclass(frozen=True)
class Trigger:
    """Why the monitor wants a new churn version, with the numbers behind it."""

    run_id: str
    model_name: str
    champion_version: str | None
    reasons: list[str]
    evidence: dict[str, Any]
    action: Action
    triggered_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @property
    def fires(self) -> bool:
        """True when a training run should start now."""
        return self.action == "retrain"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return _plain(value.item())
    return value


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [{c: _plain(row[c]) for c in columns} for _, row in frame.iterrows()]


def standing(
    failed: pd.DataFrame, holdout: Mapping[str, float] | None, tolerance: float = 0.05
) -> pd.Series:
    """Per failed rule row: True when the champion failed the same rule on its own holdout
    when it was trained and is no worse now than there by more than `tolerance` (in the
    metric's units): a standing failure, not a change (the quality gate let that version
    through, and retraining on the same world would not mend it). Worse than that is a
    change, and a reason."""
    if not holdout or failed.empty:
        return pd.Series(False, index=failed.index)

    def fails(row: pd.Series) -> bool:
        value = holdout.get(str(row["metric"]))
        if value is None or not math.isfinite(value) or not math.isfinite(row["threshold"]):
            return False
        if row["comparison"] == "<=":
            return bool(value > row["threshold"] and row["value"] <= value + tolerance)
        return bool(value < row["threshold"] and row["value"] >= value - tolerance)

    return failed.apply(fails, axis=1).astype(bool)


def decide_trigger(
    run_id: str,
    model_name: str,
    champion_version: str | None,
    performance: pd.DataFrame,
    drift_rows: pd.DataFrame,
    confirmed: list[str],
    config: RetrainConfig,
    enabled: bool = True,
    holdout: Mapping[str, float] | None = None,
) -> Trigger | None:
    """A trigger when a rule of the champion failed in its latest judged window or drift is
    confirmed on its features (each as `config` allows); None when there is no reason.

    A rule the champion also failed on its `holdout` (its metrics there, when known) is a
    standing failure, not a reason: monitoring feeds back what changed."""
    reasons: list[str] = []
    evidence: dict[str, Any] = {}
    if config.on_performance and not performance.empty:
        failed = failures(performance, "churn", champion_version)
        failed = failed[~standing(failed, holdout, config.standing_tolerance)]
        for _, row in failed.iterrows():
            reasons.append(
                f"performance: {row['rule']} failed with {row['value']:.4f} in the week of "
                f"{row['window_start']} ({row['n_rows']} labelled rows)"
            )
        if not failed.empty:
            evidence["failed_rules"] = _records(
                failed,
                ["rule", "metric", "value", "threshold", "window_start", "window_end", "n_rows"],
            )
    if config.on_drift and confirmed:
        rows = drift_rows[drift_rows["drifted"] & drift_rows["feature"].isin(confirmed)]
        rows = rows if "scope" in rows else rows.assign(scope="features")
        names = ", ".join(confirmed)
        reasons.append(
            f"drift: {len(confirmed)} feature(s) of v{champion_version} drifted: {names}"
        )
        evidence["drifted_features"] = _records(
            rows,
            ["scope", "feature", "aspect", "test", "statistic", "p_adjusted", "effect_name", "effect",
             "min_effect", "psi", "reference_mean", "current_mean"],
        )  # fmt: skip
    if not reasons:
        return None
    action: Action = "retrain" if (enabled and config.enabled) else "disabled"
    return Trigger(run_id, model_name, champion_version, reasons, evidence, action)


def record_trigger(
    settings: Settings,
    trigger: Trigger,
    decision: Decision | None = None,
    error: str | None = None,
) -> None:
    """Append the trigger and, if training ran, the registry's decision on the new version."""
    from loopline.warehouse import ensure, writing

    action = "failed" if error else ("retrained" if decision is not None else trigger.action)
    row = {
        "run_id": trigger.run_id,
        "triggered_at": trigger.triggered_at,
        "model_name": trigger.model_name,
        "champion_version": trigger.champion_version,
        "reasons": json.dumps(trigger.reasons),
        "evidence": json.dumps({**trigger.evidence, **({"error": error} if error else {})}),
        "action": action,
        "new_version": decision.version if decision else None,
        "decision": decision.action if decision else None,
        "decision_reason": decision.reason if decision else None,
        "promoted": decision.promoted if decision else None,
        "training_run_id": decision.run_id if decision else None,
    }
    with writing(settings) as con:
        ensure(con, RETRAIN_TRIGGERS_TABLE)
        con.execute(
            f"insert into {RETRAIN_TRIGGERS_TABLE} ({', '.join(row)}) "
            f"values ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
