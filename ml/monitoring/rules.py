"""Performance rules judged per window: metric values in, one verdict per rule and window out.

Pure: no warehouse, no MLflow. `evaluate_rules` takes the metrics of every (model, version,
window) in long form and the rules of `conf/monitoring.yaml`, and returns the rows of
``monitoring.model_performance``. A window with too few labelled rows, or without the metric
(ROC AUC of a window with one class), is ``no_data``: it neither passes nor fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from ml.monitoring.config import Rule

PASS, FAIL, NO_DATA = "pass", "fail", "no_data"
#: the metric every window carries: how many labelled rows it was computed on
ROWS = "n"
WINDOW_KEYS = ["model", "version", "window_start", "window_end"]
METRIC_COLUMNS = [*WINDOW_KEYS, "metric", "value"]
RESULT_COLUMNS = [
    *WINDOW_KEYS,
    "metric",
    "value",
    "comparison",
    "threshold",
    "baseline_metric",
    "n_rows",
    "status",
    "rule",
]


def judge(rule: Rule, value: float | None, baseline: float | None = None) -> tuple[str, float]:
    """(status, threshold) of one rule for one value; NaN or missing values give ``no_data``."""
    if rule.min is not None:
        threshold = rule.min
    elif rule.max is not None:
        threshold = rule.max
    else:
        threshold = math.nan if baseline is None else float(baseline)
    if value is None or math.isnan(value) or math.isnan(threshold):
        return NO_DATA, threshold
    ok = value <= threshold if rule.max is not None else value >= threshold
    return (PASS if ok else FAIL), threshold


def evaluate_rules(metrics: pd.DataFrame, rules: Sequence[Rule], min_rows: int) -> pd.DataFrame:
    """One row per rule and (model, version, window) found in `metrics` (long form:
    `METRIC_COLUMNS`, with an ``n`` metric per window); windows are judged only with at least
    `min_rows` labelled rows."""
    missing = set(METRIC_COLUMNS) - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics lacks columns {sorted(missing)}; expected {METRIC_COLUMNS}")
    rows = []
    for keys, window in metrics.groupby(WINDOW_KEYS, sort=True):
        values = dict(zip(window["metric"], window["value"].astype(float), strict=True))
        n_rows = int(values.get(ROWS, 0))
        model = keys[0]
        for rule in rules:
            if rule.model != model:
                continue
            value = values.get(rule.metric)
            baseline = values.get(rule.at_least) if rule.at_least else None
            status, threshold = judge(rule, value, baseline)
            if n_rows < min_rows:
                status = NO_DATA
            rows.append(
                {
                    **dict(zip(WINDOW_KEYS, keys, strict=True)),
                    "metric": rule.metric,
                    "value": math.nan if value is None else float(value),
                    "comparison": "<=" if rule.max is not None else ">=",
                    "threshold": threshold,
                    "baseline_metric": rule.at_least,
                    "n_rows": n_rows,
                    "status": status,
                    "rule": rule.name,
                }
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def failures(results: pd.DataFrame, model: str, version: str | None = None) -> pd.DataFrame:
    """The failed rules of `model` (and `version`) in its latest judged window."""
    rows = results[(results["model"] == model) & (results["status"] != NO_DATA)]
    if version is not None:
        rows = rows[rows["version"] == version]
    if rows.empty:
        return rows
    latest = rows["window_start"].max()
    latest_rows = rows[rows["window_start"] == latest]
    return latest_rows[latest_rows["status"] == FAIL]
