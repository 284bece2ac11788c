"""Drift of the champion's inputs and outputs: which rows to compare, and the verdict.

Both sides hold **one row per user**: a user's rows on neighbouring days are near-copies, and
counting them as independent draws would make every p-value of `ml.drift` far too small. The
reference is the champion's training set (`ml.monitoring.reference`), less its first
`warmup_days` of data (30-day features are still filling up there), sampled as an average
snapshot of `window_days` windows (`snapshot_sample`: a user is kept in proportion to the
windows they appear in, so users who left early are not over-weighted); the current side is
each user's newest row in the latest window. Features in ``ignore`` (tenure
grows with the calendar by construction) are tested and shown but never confirm drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.churn.model import as_model_input
from ml.drift import DriftReport, detect_drift
from ml.monitoring.config import DriftConfig

PREDICTION = "churn_probability"


@dataclass(frozen=True, eq=False)
class DriftCheck:
    """One comparison: the report, its rows for the warehouse, and the confirmed features."""

    report: DriftReport
    rows: pd.DataFrame  # DriftReport.to_frame() plus is_ignored
    confirmed: list[str]  # drifted features that are not ignored

    @property
    def drifted(self) -> bool:
        """True when drift is confirmed on at least one feature that is not ignored."""
        return bool(self.confirmed)


def snapshot_sample(
    frame: pd.DataFrame, time_column: str, entity: str, window_days: int, seed: int
) -> pd.DataFrame:
    """One row per entity, drawn so that the sample looks like the current window does: an
    average of the snapshots ("each entity's newest row in `window_days` days") the frame's
    span holds, not one row of every entity that ever appeared in it.

    The difference matters. Over a long span the entities that left early (churned users:
    the least active) appear as often as those that stayed, so a sample of one row per
    entity over-weights them against any single window, and the features of a calm company
    look drifted. Here the span is cut into `window_days` windows counted back from its
    newest day (an incomplete oldest window is dropped when a full one exists); an entity
    present in n of the W windows is kept with probability n / W, with one of its windows'
    newest rows at random. So each window is represented as much as the others, every
    entity at most once (its rows on neighbouring days are near-copies, not draws)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    days = pd.to_datetime(frame[time_column]).dt.normalize()
    end = days.max()
    window = (end - days).dt.days // window_days
    full = ((end - days.min()).days + 1) // window_days
    inside = window < full if full >= 1 else window >= 0
    rows = frame[inside.to_numpy()].assign(_window=window[inside], _day=days[inside])
    newest = rows.sort_values("_day", kind="stable").drop_duplicates(
        [entity, "_window"], keep="last"
    )
    windows = newest["_window"].nunique()
    present = newest.groupby(entity)["_window"].transform("size")
    shuffled = newest.assign(_present=present).sample(frac=1.0, random_state=seed)
    one = shuffled.drop_duplicates(entity)
    rng = np.random.default_rng(seed)
    kept = one[rng.random(len(one)) < one["_present"].to_numpy() / windows]
    return kept.drop(columns=["_window", "_day", "_present"]).sort_values(entity, ignore_index=True)


def reference_rows(
    frame: pd.DataFrame,
    time_column: str,
    data_from: date | None,
    columns: Sequence[str],
    config: DriftConfig,
) -> pd.DataFrame:
    """The training rows to compare with: rows that found a feature row (the point-in-time
    join leaves a row's features null when none was known yet; the current window has only
    rows that exist), past the warm-up days if any remain, one per user drawn as the current
    window is (`snapshot_sample`)."""
    rows = frame[frame[list(columns)].notna().any(axis=1)]
    frame = rows
    if data_from is not None and config.warmup_days:
        cut = pd.Timestamp(data_from + timedelta(days=config.warmup_days))
        warm = frame[pd.to_datetime(frame[time_column]) >= cut]
        rows = warm if warm[config.entity].nunique() >= 2 else frame
    return snapshot_sample(rows, time_column, config.entity, config.window_days, config.sample_seed)


def latest_window(
    con: Any, relation: str, feature_set_version: str, end: date, window_days: int, entity: str
) -> pd.DataFrame:
    """Each entity's newest row of one feature set version in the `window_days` ending `end`."""
    frame: pd.DataFrame = con.execute(
        f"""
        select * from {relation}
        where feature_set_version = ? and as_of_date > ? and as_of_date <= ?
        qualify row_number() over (partition by {entity} order by as_of_date desc) = 1
        order by {entity}
        """,
        [feature_set_version, end - timedelta(days=window_days), end],
    ).df()
    return as_model_input(frame)


def served_window(
    folder: Path, version: str, columns: Sequence[str], window_days: int, entity: str
) -> pd.DataFrame:
    """Churn requests `version` answered in the newest `window_days` days of the API's
    prediction log (``<folder>/date=YYYY-MM-DD/*.jsonl``, written by `ml.serve`): the features
    it scored, one row per user (the latest request; requests by features alone count each)."""
    days = sorted(p for p in folder.glob("date=*") if p.is_dir())[-window_days:]
    records = []
    for day in days:
        for path in sorted(day.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                item = json.loads(line) if line.strip() else {}
                if item.get("endpoint") == "churn" and str(item.get("model_version")) == version:
                    records.append(
                        {entity: item.get("user_id"), "logged_at": item.get("logged_at"),
                         **{c: (item.get("features") or {}).get(c) for c in columns}}
                    )  # fmt: skip
    frame = pd.DataFrame(records, columns=[entity, "logged_at", *columns])
    if frame.empty:
        return frame
    frame = frame.sort_values("logged_at", kind="stable")
    by_user = frame[frame[entity].notna()].drop_duplicates(entity, keep="last")
    rows = pd.concat([by_user, frame[frame[entity].isna()]], ignore_index=True)
    # the log holds JSON values: numbers as float, the rest as text (as the model reads them)
    return as_model_input(rows.infer_objects())


def unfilled_windows(
    reference: pd.DataFrame,
    time_column: str,
    data_from: date | None,
    columns: Sequence[str],
    pattern: str,
) -> list[str]:
    """Features whose look-back window (N days, read from the name by `pattern`) was not yet
    full on the reference's earliest day: a 90-day count on the data's 40th day covers 40 days,
    so it is bound to be lower than the same count later, drift or not."""
    if data_from is None or reference.empty:
        return []
    first = pd.Timestamp(pd.to_datetime(reference[time_column]).min()).date()
    unfilled = []
    for column in columns:
        found = re.search(pattern, column)
        if found and first < data_from + timedelta(days=int(found.group(1))):
            unfilled.append(column)
    return unfilled


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    config: DriftConfig,
    unfilled: Sequence[str] = (),
) -> DriftCheck:
    """`ml.drift.detect_drift` on `columns`, with the monitor's thresholds; features in the
    ignore list or in `unfilled` are tested and shown but never confirm drift."""
    report = detect_drift(
        reference[list(columns)],
        current[list(columns)],
        alpha=config.alpha,
        min_effect=config.min_effect,
        workers=1,
    )
    rows = report.to_frame()
    rows["is_ignored"] = rows["feature"].isin([*config.ignore, *unfilled])
    hit = rows.loc[rows["drifted"] & ~rows["is_ignored"], "feature"]
    return DriftCheck(report, rows, list(dict.fromkeys(hit)))
