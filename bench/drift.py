"""Drift detection against scipy per column (issue 14, row 3).

    python -m bench.drift              # 100 numeric + 20 categorical x 1M rows a side
    python -m bench.drift --quick      # the same columns x 20,000 rows

loopline's side is `ml.drift.detect_drift` on two pandas frames and `detect_drift_duckdb` on
the same data as two tables of a DuckDB file. The alternative is what a user would write:
scipy per column on the pandas frames, `ks_2samp` for numeric columns and `chi2_contingency`
(no continuity correction) on the 2 x k table of value counts for categorical ones.

Before a ratio is reported both must give the same statistics to 1e-9 (relative): the KS
statistic D of every numeric column; chi-square, its degrees of freedom and p-value of every
categorical one; and the pandas and DuckDB reports must agree. The KS p-values differ by
design (ml/drift.py uses Kolmogorov's limiting law, and a discrete null for tied integer
columns; scipy the exact one-sample law): their largest gap is reported, not checked.

The data: continuous normal columns, Poisson counts (ties), and 8-category strings with a
sparse tail; a tenth of the columns of each kind drift a little, as a monitoring run sees.
Also measured on its own: `detect_drift_duckdb` over 1,000 normal features x 1M rows a side
(target < 60 s), on two tables of a DuckDB file on disk (16 GB of float64, far more than the
machine can hold as pandas frames beside other work). The tables are written first in row
blocks (memory stays at one block) and not timed; the first columns' KS statistics are checked
against scipy.

    python -m bench.drift --wide-rows 1000000 --rows 20000 --runs 1   # mostly the wide run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.fixture import bench_settings
from bench.memory import sampled, timed

NUMERIC, POISSON, CATEGORICAL = 80, 20, 20  # 100 numeric + 20 categorical
SHARES = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])
LABELS = np.array([f"level_{i}" for i in range(SHARES.size)], dtype=object)
TOLERANCE = 1e-9
TARGET = 3.0
WIDE_FEATURES = 1_000
WIDE_TARGET_S = 60.0


# --------------------------------------------------------------------------------------------
# the data


def frames(rows: int, seed: int = 14) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """A reference and a current frame; the numeric and the categorical column names."""
    rng = np.random.default_rng(seed)

    def side(shift: float) -> pd.DataFrame:
        drifted = np.zeros(NUMERIC + POISSON, dtype=bool)
        drifted[:: max(1, (NUMERIC + POISSON) // 10)] = True
        columns: dict[str, Any] = {}
        for i in range(NUMERIC):
            columns[f"x{i:03d}"] = rng.normal(shift * drifted[i], 1.0, rows)
        for i in range(POISSON):
            columns[f"n{i:03d}"] = rng.poisson(3.0 + shift * 10 * drifted[NUMERIC + i], rows)
        for i in range(CATEGORICAL):
            shares = SHARES.copy()
            if shift and i % 10 == 0:  # two of twenty move a little mass between levels
                shares[0], shares[1] = shares[0] - 0.01, shares[1] + 0.01
            codes = np.searchsorted(np.cumsum(shares), rng.random(rows), side="right")
            columns[f"c{i:03d}"] = LABELS[np.minimum(codes, SHARES.size - 1)]
        return pd.DataFrame(columns)

    reference, current = side(0.0), side(0.05)
    numeric = [c for c in reference.columns if c[0] in "xn"]
    categorical = [c for c in reference.columns if c[0] == "c"]
    return reference, current, numeric, categorical


# --------------------------------------------------------------------------------------------
# the two sides


def scipy_per_column(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, dict[str, float]]:
    """`ks_2samp` per numeric column, `chi2_contingency` per categorical one."""
    from scipy import stats

    out: dict[str, dict[str, float]] = {}
    for column in numeric:
        ks = stats.ks_2samp(reference[column].to_numpy(), current[column].to_numpy())
        out[column] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}
    for column in categorical:
        a, b = reference[column].value_counts(), current[column].value_counts()
        levels = a.index.union(b.index)
        table = np.vstack(
            [a.reindex(levels, fill_value=0).to_numpy(), b.reindex(levels, fill_value=0).to_numpy()]
        )
        chi2 = stats.chi2_contingency(table, correction=False)
        out[column] = {
            "statistic": float(chi2.statistic),
            "p_value": float(chi2.pvalue),
            "dof": float(chi2.dof),
        }
    return out


def values_rows(report: Any) -> dict[str, dict[str, float]]:
    """The statistics of a DriftReport's values rows, by column."""
    rows = report.features[report.features["aspect"] == "values"]
    return {
        str(r.feature): {"statistic": float(r.statistic), "p_value": float(r.p_value), "dof": r.dof}
        for r in rows.itertuples()
    }


def _gap(ours: float, theirs: float) -> float:
    """Relative difference, absolute below 1 (as the drift tests compare)."""
    return abs(ours - theirs) / max(1.0, abs(theirs))


def compare(
    ours: dict[str, dict[str, float]],
    theirs: dict[str, dict[str, float]],
    numeric: list[str],
    categorical: list[str],
) -> dict[str, Any]:
    """Largest gaps between loopline's and scipy's statistics; raises past the tolerance."""
    ks_d = max(_gap(ours[c]["statistic"], theirs[c]["statistic"]) for c in numeric)
    ks_p = max(abs(ours[c]["p_value"] - theirs[c]["p_value"]) for c in numeric)
    chi2 = max(
        max(_gap(ours[c][k], theirs[c][k]) for k in ("statistic", "p_value", "dof"))
        for c in categorical
    )
    if max(ks_d, chi2) > TOLERANCE:
        raise AssertionError(
            f"statistics differ from scipy: KS D by {ks_d:.1e}, chi-square by {chi2:.1e}"
        )
    return {"ks_statistic_gap": ks_d, "chi2_gap": chi2, "ks_p_value_gap": ks_p}


def _same_reports(pandas_report: Any, duckdb_report: Any) -> float:
    """Largest gap between the pandas and DuckDB reports' statistics and p-values."""
    a, b = values_rows(pandas_report), values_rows(duckdb_report)
    if a.keys() != b.keys():
        raise AssertionError("the pandas and DuckDB reports test different columns")
    gap = max(_gap(a[c][k], b[c][k]) for c in a for k in ("statistic", "p_value"))
    if gap > TOLERANCE:
        raise AssertionError(f"the pandas and DuckDB reports differ by {gap:.1e}")
    return gap


# --------------------------------------------------------------------------------------------
# timing


def run_drift(
    rows: int, runs: int, wide_rows: int | None, wide_dir: Path | None = None
) -> dict[str, Any]:
    """Warm-up on a small sample, then `runs` interleaved runs of each side at `rows`; then
    the wide run (`run_wide`, its DuckDB file in a temporary folder under `wide_dir`)."""
    from loopline.warehouse import connect
    from ml.drift import detect_drift, detect_drift_duckdb

    small = frames(2_000, seed=1)
    detect_drift(small[0], small[1])
    scipy_per_column(*small)

    reference, current, numeric, categorical = frames(rows)
    sides: dict[str, list[tuple[float, float]]] = {"pandas": [], "duckdb": [], "scipy": []}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as work:
        con = connect(Path(work) / "drift.duckdb", bench_settings(Path(work)))
        con.register("reference_frame", reference)
        con.register("current_frame", current)
        con.execute("create table reference as select * from reference_frame")
        con.execute("create table current as select * from current_frame")
        con.execute("checkpoint")
        detect_drift_duckdb(con, "reference", "current")  # warm the DuckDB path too
        for _ in range(runs):
            pandas_report, s, mb = timed(lambda: detect_drift(reference, current))
            sides["pandas"].append((s, mb))
            duckdb_report, s, mb = timed(lambda: detect_drift_duckdb(con, "reference", "current"))
            sides["duckdb"].append((s, mb))
            theirs, s, mb = timed(
                lambda: scipy_per_column(reference, current, numeric, categorical)
            )
            sides["scipy"].append((s, mb))
        con.close()
    gaps = compare(values_rows(pandas_report), theirs, numeric, categorical)
    gaps["pandas_vs_duckdb_gap"] = _same_reports(pandas_report, duckdb_report)
    medians = {
        side: {
            "median_s": statistics.median(s for s, _ in measured),
            "peak_rss_added_mb": max(mb for _, mb in measured),
        }
        for side, measured in sides.items()
    }
    result: dict[str, Any] = {
        "rows": rows,
        "runs": runs,
        "numeric": len(numeric),
        "categorical": len(categorical),
        "drifted_features": pandas_report.drifted_features,
        "verification": gaps,
        **medians,
        "ratio": medians["scipy"]["median_s"] / medians["pandas"]["median_s"],
        "ratio_duckdb": medians["scipy"]["median_s"] / medians["duckdb"]["median_s"],
        "target": TARGET,
    }
    if wide_rows:
        del reference, current  # the wide run's memory is its own
        result["wide"] = run_wide(wide_rows, work=wide_dir)
    return result


WIDE_BLOCK_ROWS = (
    50_000  # rows generated and appended at a time (400 MB of float64 at 1,000 columns)
)


def wide_tables(con: Any, rows: int, features: int, seed: int = 15) -> None:
    """Tables ``reference`` and ``current`` of `features` normal columns x `rows`, written in
    row blocks (memory stays at one block however large the tables are)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    names = [f"f{i:04d}" for i in range(features)]
    for table in ("reference", "current"):
        columns = ", ".join(f"{n} double" for n in names)
        con.execute(f"create or replace table {table} ({columns})")
        for start in range(0, rows, WIDE_BLOCK_ROWS):
            block = rng.normal(size=(features, min(WIDE_BLOCK_ROWS, rows - start)))
            arrow = pa.Table.from_arrays(list(block), names=names)
            con.execute(f"insert into {table} select * from arrow")
            del arrow, block
        con.execute("checkpoint")


def run_wide(
    rows: int, features: int = WIDE_FEATURES, work: Path | None = None, checked: int = 5
) -> dict[str, Any]:
    """`detect_drift_duckdb` alone over `features` normal columns x `rows` a side (one run),
    on two tables of a DuckDB file on disk (made first, in blocks; not timed), and the first
    `checked` columns' KS statistic against scipy."""
    from scipy import stats

    from loopline.warehouse import connect
    from ml.drift import detect_drift_duckdb

    with tempfile.TemporaryDirectory(prefix="bench-drift-wide-", dir=work) as folder:
        con = connect(Path(folder) / "wide.duckdb", bench_settings(Path(folder)))
        try:
            _, made_s, _ = timed(lambda: wide_tables(con, rows, features))
            size_gb = (Path(folder) / "wide.duckdb").stat().st_size / 1e9
            with sampled() as peak:
                started = time.perf_counter()
                report = detect_drift_duckdb(con, "reference", "current")
                seconds = time.perf_counter() - started
            ours = values_rows(report)
            if len(ours) != features:
                raise AssertionError("the wide report lacks columns")
            gap = 0.0
            for name in list(ours)[:checked]:
                a, b = (
                    con.sql(f"select {name} from {t}").fetchnumpy()[name]
                    for t in ("reference", "current")
                )
                gap = max(gap, _gap(ours[name]["statistic"], float(stats.ks_2samp(a, b).statistic)))
            if gap > TOLERANCE:
                raise AssertionError(f"wide: KS statistic differs from scipy by {gap:.1e}")
        finally:
            con.close()
    return {
        "features": features,
        "rows": rows,
        "seconds": seconds,
        "peak_rss_added_mb": peak.added_mb,
        "peak_rss_mb": peak.mb,
        "seconds_per_million_values": seconds / (features * rows * 2 / 1e6),
        "generate_s": made_s,
        "file_gb": size_gb,
        "checked_columns": checked,
        "ks_statistic_gap": gap,
        "target_s": WIDE_TARGET_S,
        "target_rows": 1_000_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows a side, one run")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--wide-rows", type=int, help="rows a side of the 1,000-feature run")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    runs = args.runs or (1 if args.quick else 5)
    wide = args.wide_rows if args.wide_rows is not None else (2_000 if args.quick else 1_000_000)
    print(json.dumps(run_drift(rows, runs, wide), indent=2, default=str))


if __name__ == "__main__":
    main()
