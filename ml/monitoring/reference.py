"""The champion's training set, fetched by the lineage its MLflow run logged.

`ml.churn` logs, on the training run, the training set's data window, feature set version,
``as_known_at`` flag and content hash, and on the model version how the holdout was drawn.
`champion_reference` rebuilds the same point-in-time training set from the feature store
(``ml.features.churn_training_set``), says whether its content hash equals the logged one
(it does unless rows behind it changed since), and redraws the holdout by the logged rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from loopline.settings import Settings
from ml.churn.model import as_model_input, split_by_time
from ml.churn.train import LABEL, TIME
from ml.features.training_sets import churn_training_set
from ml.registry import CHAMPION, CHURN_MODEL, RegistryError, alias_version, configure, version_tags


@dataclass(frozen=True, eq=False)
class ChampionReference:
    """The champion version and the training set it was trained on, rebuilt."""

    model_name: str
    version: str
    run_id: str
    feature_set_version: str
    feature_columns: list[str]
    threshold: float
    frame: pd.DataFrame  # labelled training rows, model-input dtypes
    holdout: pd.DataFrame  # the rows the version was evaluated on
    lineage: dict[str, str]
    reproduced: bool  # the rebuilt set's content hash equals the logged one


def _as_of(tag: str) -> date:
    # the window is logged as event timestamps: the end of each as-of day
    return (datetime.fromisoformat(tag.removesuffix("Z")) - timedelta(days=1)).date()


def _entity(tag: str | None) -> str | None:
    return None if tag in (None, "", "None") else tag


def champion_reference(
    settings: Settings, con: Any, version: str | None = None
) -> ChampionReference:
    """The churn @champion's (or `version`'s) training set, rebuilt from its run's lineage tags."""
    client = configure(settings)
    version = version or alias_version(client, CHURN_MODEL, CHAMPION)
    if version is None:
        raise RegistryError(f"{CHURN_MODEL} has no @{CHAMPION} yet; run `loopline train` first")
    tags = version_tags(client, CHURN_MODEL, version)
    run_id = str(client.get_model_version(CHURN_MODEL, version).run_id)
    run_tags = dict(client.get_run(run_id).data.tags)
    lineage = {
        k: v
        for k, v in run_tags.items()
        if k.startswith(("training_set.", "feature_set_version.", "lineage."))
    }
    missing = [
        t
        for t in ("training_set.data_window_start", "training_set.data_window_end")
        if t not in run_tags
    ]
    if missing:
        raise RegistryError(
            f"{CHURN_MODEL} v{version}: its run {run_id} lacks lineage tags {missing}"
        )
    feature_set_version = tags.get("feature_set_version", "")
    training_set = churn_training_set(
        con,
        _as_of(run_tags["training_set.data_window_start"]),
        _as_of(run_tags["training_set.data_window_end"]),
        feature_set_version or None,
        as_known_at=run_tags.get("training_set.as_known_at", "true") == "true",
    )
    frame = as_model_input(training_set.frame.dropna(subset=[LABEL]))
    _, holdout = split_by_time(
        frame,
        TIME,
        float(tags.get("split.holdout_fraction", "0.25")),
        LABEL,
        _entity(tags.get("split.entity")),
        int(tags.get("split.gap_days", "0")),
    )
    return ChampionReference(
        model_name=CHURN_MODEL,
        version=version,
        run_id=run_id,
        feature_set_version=feature_set_version,
        feature_columns=list(json.loads(tags["feature_columns"])),
        threshold=float(tags.get("threshold", "0.5")),
        frame=frame,
        holdout=holdout,
        lineage=lineage,
        reproduced=training_set.content_hash == run_tags.get("training_set.content_hash"),
    )
