"""The monitoring run's self-contained HTML page: distributions, statistics, performance over
time and the data-quality summary (plots inlined by `ml.report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.report import images, table, verdict, write_report

DRIFT_COLUMNS = [
    "feature", "aspect", "kind", "test", "statistic", "p_adjusted", "effect_name", "effect",
    "min_effect", "psi", "drifted", "is_ignored", "note",
]  # fmt: skip


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.2, 3.2))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def distribution_plot(reference: pd.Series, current: pd.Series, name: str, out: Path) -> Path:
    """Reference vs current: overlaid density histograms (numbers) or proportions (categories)."""
    fig, ax = _figure()
    if pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference):
        ref = reference.dropna().astype(float).to_numpy()
        cur = current.dropna().astype(float).to_numpy()
        both = np.concatenate([ref, cur])
        bins = np.histogram_bin_edges(both, bins=30) if both.size else 10
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label=f"reference ({ref.size:,})")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label=f"current ({cur.size:,})")
        ax.set_ylabel("density")
    else:
        shares = pd.DataFrame(
            {
                "reference": reference.astype(str).value_counts(normalize=True),
                "current": current.astype(str).value_counts(normalize=True),
            }
        ).fillna(0.0)
        shares.head(12).plot.bar(ax=ax, alpha=0.7)
        ax.set_ylabel("share of rows")
    ax.set_title(name)
    ax.legend(fontsize=8)
    return _save(fig, out / f"dist_{name}.png")


def performance_plots(history: pd.DataFrame, out: Path) -> list[Path]:
    """One plot per model and judged metric: value per window and version, threshold dashed."""
    paths: list[Path] = []
    ruled = history[history["status"] != "info"]
    for (model, metric), rows in ruled.groupby(["model", "metric"], sort=True):
        fig, ax = _figure()
        latest = rows.sort_values("measured_at").drop_duplicates(
            ["version", "window_start"], keep="last"
        )
        for version, line in latest.groupby("version", sort=True):
            line = line.sort_values("window_start")
            ax.plot(pd.to_datetime(line["window_start"]), line["value"], marker="o",
                    label=f"v{version}")  # fmt: skip
        thresholds = latest["threshold"].dropna()
        if not thresholds.empty and latest["baseline_metric"].isna().all():
            ax.axhline(float(thresholds.iloc[-1]), linestyle="--", color="grey", label="threshold")
        ax.set_title(f"{model}: {metric} per week")
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        paths.append(_save(fig, out / f"perf_{model}_{metric}.png"))
    return paths


def _rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, object]]:
    present = [c for c in columns if c in frame.columns]
    return [
        {
            c: ("" if v is None or (isinstance(v, float) and np.isnan(v)) else v)
            for c, v in row.items()
        }
        for row in frame[present].to_dict("records")
    ]


def write_monitoring_report(
    path: Path,
    summary: Mapping[str, object],
    reasons: Sequence[str],
    retrain: str,
    drift: pd.DataFrame,
    prediction_drift: pd.DataFrame,
    served_drift: pd.DataFrame,
    distributions: Sequence[Path],
    performance: pd.DataFrame,
    performance_charts: Sequence[Path],
    data_quality: pd.DataFrame,
    lineage: Mapping[str, str],
) -> Path:
    """Write the page; return its path."""
    alarm = bool(reasons)
    head = "; ".join(reasons) if alarm else "no performance rule failed and no drift confirmed"
    # no churn champion yet (nothing passed the gate): nothing was compared, an empty table
    ordered = (
        drift.sort_values(["drifted", "p_adjusted"], ascending=[False, True])
        if {"drifted", "p_adjusted"} <= set(drift.columns)
        else drift
    )
    sections = [
        ("Verdict", verdict(not alarm, head) + f"<p>{retrain}</p>"),
        ("Run", table(dict(summary))),
        ("Feature drift: reference (champion's training set) vs current window",
         table(_rows(ordered, DRIFT_COLUMNS))),
        ("Distributions (drifted features first, then the largest effects)", images(distributions)),
        ("Prediction drift (churn probability: holdout scores vs the current window)",
         table(_rows(prediction_drift, DRIFT_COLUMNS))),
        ("Served requests (the API's prediction log) vs the reference",
         table(_rows(served_drift, DRIFT_COLUMNS)) if len(served_drift)
         else "<p>Too few requests in the window to compare (drift.min_served_rows).</p>"),
        ("Performance over time", images(performance_charts)),
        ("Performance rules, every window", table(_rows(performance, [
            "model", "version", "window_start", "window_end", "metric", "value", "comparison",
            "threshold", "baseline_metric", "n_rows", "status"]))),
        ("Data quality (latest validation run)", table(_rows(data_quality, list(data_quality.columns)))),
        ("Reference lineage (the champion's training run)", table(dict(lineage))),
    ]  # fmt: skip
    return write_report(path, "Monitoring run", sections)
