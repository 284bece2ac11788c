"""Data drift between a reference sample and a current one, with a false-alarm rate you can state.

`detect_drift(reference, current)` tests every column of two data frames and returns a
`DriftReport`; `detect_drift_duckdb(con, reference, current)` computes the same report for two
DuckDB relations (tables, views, queries) one column at a time, so a warehouse table is never
loaded whole; `reference_profile(reference)` derives the bounds a Great Expectations suite can
carry. Everything here is a pure function of its inputs; docs/drift.md has the reasoning and
the measured error rates.

Per column (the *values* row):

- numeric: two-sample Kolmogorov-Smirnov on the non-null values; effect size the
  Wasserstein-1 distance divided by the reference standard deviation (``wasserstein/std``).
  The p-value is Kolmogorov's limiting distribution of sqrt(n m / (n + m)) D (scipy's
  one-sample law costs about 3 s per column at a million rows when p is small); with
  ties (at most `DISCRETE_MAX_VALUES` distinct values, as integer counts have) it is computed
  for the discrete null instead, where the continuous formula is far too conservative.
- categorical: Pearson chi-square on the 2 x k table of reference and current counts (a
  two-sample test: the reference is a sample too), categories unseen in the reference counted
  as their own columns; categories whose expected count is below `MIN_EXPECTED_COUNT` are
  pooled into one cell first. Effect size: Jensen-Shannon distance in bits (log base 2, so it
  lies in [0, 1]).
- nulls: when either side has a null, the null rate is its own binary feature (a *null_rate*
  row: chi-square on the 2 x 2 table, Jensen-Shannon distance as effect).
- PSI on bins fixed from the reference (deciles; categories plus one bin for unseen ones), for
  people who know it. It is reported, never the verdict.

Large continuous columns (`_BUCKET_MIN_VALUES` values and more) are not sorted whole: value
buckets give the ECDF gap exactly at their edges, and only the few buckets where the gap may
change sign or peak are sorted (`_bucketed_stats`); the statistics stay exact.

The verdict: a row drifts when its p-value, adjusted across all tested rows (Benjamini-Hochberg
by default, Holm on request), is at most ``alpha`` **and** its effect reaches ``min_effect``
(`DEFAULT_MIN_EFFECT`), so a million rows do not flag a shift nobody would act on. The data set
drifts when any row does: with no drift anywhere, that happens with probability at most
``alpha`` (Simes' inequality for BH with independent or positively dependent tests, always for
Holm), and the effect threshold only lowers it.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import duckdb
import numpy as np
import pandas as pd
from scipy import special

Kind = Literal["numeric", "categorical"]
Correction = Literal["bh", "holm"]

NUMERIC: Final = "numeric"
CATEGORICAL: Final = "categorical"
NULL_RATE = "null_rate"
VALUES = "values"

#: Practical thresholds on the effect sizes, by kind. numeric: W1 / reference std (a pure mean
#: shift of 0.05 standard deviations); categorical and null_rate: Jensen-Shannon distance in
#: bits (a 50/50 split moving to about 44/56, or 0 % nulls moving to about 0.5 %).
DEFAULT_MIN_EFFECT: Mapping[str, float] = MappingProxyType(
    {NUMERIC: 0.05, CATEGORICAL: 0.05, NULL_RATE: 0.05}
)
#: Chi-square cells need this expected count in both rows; sparser categories are pooled.
MIN_EXPECTED_COUNT = 5.0
#: Numeric columns with at most this many distinct values (and ties) get the discrete KS p-value.
DISCRETE_MAX_VALUES = 100
#: PSI uses reference deciles; empty bins count as this proportion.
PSI_BINS = 10
PSI_FLOOR = 1e-4
#: Jensen-Shannon distance is reported in bits.
JS_LOG_BASE = 2.0
#: Reference quantiles a profile carries bounds for.
PROFILE_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)

_NOT_NULL = "not null"
_NULL = "null"
_BRIDGE_GRID = 48  # cells of the coarse grid (even); the fine grid has twice as many (Richardson)
_BINCOUNT_MIN_RANGE = 1 << 16
_BUCKET_MIN_VALUES = 200_000  # pooled values from which bucketing beats sorting everything
_BUCKET_SIZE = 16  # values per bucket, on average
_LEAF_SIZE = 64  # buckets this small are sorted rather than split again
_BUCKET_DEPTH = 4  # splitting levels at most
_PARALLEL_MIN_VALUES = 1_000_000  # below this many values in all, threads cost more than they save
_QUERY = re.compile(r"^\s*(select|with|from|values|table|\()", re.IGNORECASE)

_COLUMNS = [
    "feature",
    "aspect",
    "kind",
    "test",
    "statistic",
    "dof",
    "p_value",
    "p_adjusted",
    "effect_name",
    "effect",
    "min_effect",
    "significant",
    "drifted",
    "psi",
    "n_reference",
    "n_current",
    "reference_null_rate",
    "current_null_rate",
    "reference_mean",
    "current_mean",
    "reference_std",
    "current_std",
    "wasserstein",
    "note",
]


# --------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class DriftReport:
    """Per-feature tests and the data-set verdict of one reference/current comparison.

    ``features`` has one row per column (``aspect == "values"``) plus one ``"null_rate"`` row
    per column that has a null on either side. Rows that could not be tested (an empty side, a
    single category left after pooling) have NaN p-values, are left out of the correction and
    say why in ``note``.
    """

    features: pd.DataFrame
    alpha: float
    correction: Correction
    min_effect: Mapping[str, float]
    n_reference: int
    n_current: int

    @property
    def drifted(self) -> bool:
        """True when any feature drifted (false-alarm rate at most ``alpha`` without drift)."""
        return bool(self.features["drifted"].any())

    @property
    def drifted_features(self) -> list[str]:
        """Names of the columns with a drifted values or null-rate row, in column order."""
        hit = self.features.loc[self.features["drifted"], "feature"]
        return list(dict.fromkeys(hit))

    def to_frame(self) -> pd.DataFrame:
        """A copy of ``features`` with the data-set verdict and settings on every row."""
        frame = self.features.copy()
        frame["alpha"] = self.alpha
        frame["correction"] = self.correction
        frame["dataset_drifted"] = self.drifted
        return frame

    def summary(self) -> str:
        """One line for a terminal: how many features drifted, and which."""
        tested = int(self.features["p_value"].notna().sum())
        names = self.drifted_features
        head = f"{len(names)} of {self.features['feature'].nunique()} features drifted"
        detail = f": {', '.join(names)}" if names else ""
        return (
            f"{head}{detail} ({tested} tests, {self.correction.upper()} at alpha={self.alpha:g}, "
            f"{self.n_reference:,} reference vs {self.n_current:,} current rows)"
        )


# --------------------------------------------------------------------------------------------
# entry points


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    alpha: float = 0.05,
    min_effect: Mapping[str, float] | None = None,
    correction: Correction = "bh",
    kinds: Mapping[str, Kind] | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DriftReport:
    """Test every column of `current` against the same column of `reference`.

    `min_effect` overrides `DEFAULT_MIN_EFFECT` by kind (``numeric``, ``categorical``,
    ``null_rate``) or by column name (a column's values row; names win over kinds). `kinds`
    forces a column's kind (integer codes as ``categorical``, say); otherwise bool, string,
    object and category columns are categorical and other numbers numeric. `workers` threads
    share the columns (default: the CPU count; small inputs run on one). `progress`, if given,
    is called with 1 after each column. Neither frame is modified.
    """
    _check_alpha(alpha, correction)
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{side} must be a pandas DataFrame, not {type(frame).__name__}")
        if frame.columns.has_duplicates:
            dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise ValueError(f"{side} has duplicate columns {dupes}; rename them")
        if len(frame) == 0:
            raise ValueError(f"{side} has no rows; drift needs a sample on both sides")
    columns = _same_columns(list(reference.columns), list(current.columns))
    kind_of = _frame_kinds(reference, current, columns, kinds)
    thresholds, per_column = _thresholds(min_effect, columns)
    total = (len(reference) + len(current)) * len(columns)

    def one(column: str) -> list[dict[str, Any]]:
        if kind_of[column] == NUMERIC:
            summary: _NumericStats | _CategoricalSummary = _numeric_stats(
                *_pandas_numeric(reference[column], column, "reference"),
                *_pandas_numeric(current[column], column, "current"),
            )
        else:
            summary = _pandas_categorical(reference[column], current[column])
        return _rows(str(column), kind_of[column], summary)

    rows = _run(one, columns, workers, total, progress)
    return _finish(rows, alpha, correction, thresholds, per_column, len(reference), len(current))


def detect_drift_duckdb(
    con: duckdb.DuckDBPyConnection,
    reference: str | duckdb.DuckDBPyRelation,
    current: str | duckdb.DuckDBPyRelation,
    *,
    alpha: float = 0.05,
    min_effect: Mapping[str, float] | None = None,
    correction: Correction = "bh",
    kinds: Mapping[str, Kind] | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DriftReport:
    """`detect_drift` for two DuckDB relations: a table or view name, a query, or a relation.

    Categorical columns and integer columns with a small range are counted by DuckDB
    (``group by``: only the distinct values and their counts reach Python). Other numeric
    columns are fetched one at a time into numpy and take `detect_drift`'s path (buckets for
    large continuous columns, otherwise a sort): DuckDB's ``order by`` or ``group by`` over a
    million distinct doubles costs five to twenty-five times numpy's sort. Every route is exact, so the
    report equals `detect_drift` on the same data. Memory stays at a few columns of both
    sides; DuckDB fetches the next column while threads compute. A query is re-run for every
    column: pass a table or view for large inputs.
    """
    _check_alpha(alpha, correction)
    rels = {
        "reference": _relation(con, reference, "reference"),
        "current": _relation(con, current, "current"),
    }
    columns = _same_columns(rels["reference"].columns, rels["current"].columns)
    types = {
        side: {c: str(t).upper() for c, t in zip(rel.columns, rel.types, strict=True)}
        for side, rel in rels.items()
    }
    kind_of = _duckdb_kinds(types, columns, kinds)
    thresholds, per_column = _thresholds(min_effect, columns)
    profiles = {
        side: _duckdb_profile(rel, columns, kind_of, types[side]) for side, rel in rels.items()
    }
    rows_of = {side: int(p["__rows"]) for side, p in profiles.items()}
    for side, n in rows_of.items():
        if n == 0:
            raise ValueError(f"{side} has no rows; drift needs a sample on both sides")
    limit = {c: _bincount_limit(profiles, c) for c in columns}

    def fetch(column: str) -> Callable[[], list[dict[str, Any]]]:
        # runs in the calling thread (DuckDB work); returns the numpy work for the pool
        ref, cur = rels["reference"], rels["current"]
        if kind_of[column] == CATEGORICAL:
            summary = _duckdb_categorical(ref, cur, column)
            return lambda: _rows(column, CATEGORICAL, summary)
        if limit[column]:
            nulls = tuple(rows_of[side] - int(profiles[side][f"__n_{column}"]) for side in rels)
            counted = _duckdb_counted(ref, cur, column, (nulls[0], nulls[1]))
            return lambda: _rows(column, NUMERIC, _ecdf_stats(counted))
        a, nulls_a = _duckdb_values(ref, column, types["reference"][column], "reference")
        b, nulls_b = _duckdb_values(cur, column, types["current"][column], "current")
        return lambda: _rows(column, NUMERIC, _numeric_stats(a, nulls_a, b, nulls_b))

    rows: list[dict[str, Any]] = []
    n_workers = _workers(workers, sum(rows_of.values()) * len(columns))
    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
        pending: deque[Future[list[dict[str, Any]]]] = deque()
        for column in columns:
            pending.append(pool.submit(fetch(column)))
            while len(pending) > max(1, n_workers):  # bound the columns held in memory
                rows.extend(pending.popleft().result())
                if progress is not None:
                    progress(1)
        while pending:
            rows.extend(pending.popleft().result())
            if progress is not None:
                progress(1)
    return _finish(
        rows, alpha, correction, thresholds, per_column, rows_of["reference"], rows_of["current"]
    )


def reference_profile(
    reference: pd.DataFrame,
    *,
    current_size: int | None = None,
    alpha: float = 0.05,
    min_effect: Mapping[str, float] | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> dict[str, Any]:
    """Bounds derived from a reference sample, for expectations a data-quality suite can carry.

    For a current window of `current_size` rows (default: as many as the reference), each
    bound is the wider of a statistical band (what sampling noise alone moves at ``alpha``)
    and a practical one (what an effect of `min_effect` moves), mirroring `detect_drift`'s
    "significant and large enough" rule:

    - numeric: ``mean_bounds`` (mean +- max(z * sd * sqrt(1/n + 1/m), effect * sd)),
      ``std_bounds`` (sd * (1 -+ w), w from the kurtosis-aware standard error of the sd, or
      from the scale change whose W1 reaches the effect), ``quantile_bounds`` per level in
      `PROFILE_QUANTILES` (the reference quantiles at level -+ the KS critical distance, or
      the quantile -+ effect * sd), ``psi_edges`` / ``psi_proportions``;
    - categorical: ``categories`` (the value set), ``proportions``, ``proportion_bounds``,
      ``kl_threshold`` (for GX's KL-divergence expectation: KL(current || reference) in nats,
      the larger of the chi-square critical value / (2 n_eff) and 4 ln 2 * effect**2), a
      ``tail_weight_holdout`` to give categories unseen in the reference and
      ``unseen_share_max``, the largest share of rows in such categories that is not both
      significant and large (the null-rate rule for a reference rate of 0);
    - every column: ``null_rate`` and ``null_rate_max``.

    The result holds only JSON types (dict, list, str, int, float, bool, None).
    """
    _check_alpha(alpha, "bh")
    if not isinstance(reference, pd.DataFrame) or len(reference) == 0:
        raise ValueError("reference must be a pandas DataFrame with at least one row")
    columns = list(reference.columns)
    kind_of = _frame_kinds(reference, reference, columns, kinds)
    thresholds, per_column = _thresholds(min_effect, columns)
    n_rows = len(reference)
    m = int(current_size) if current_size is not None else n_rows
    if m < 1:
        raise ValueError(f"current_size must be a positive row count, not {current_size}")
    z = float(special.ndtri(1 - alpha / 2))
    out: dict[str, Any] = {
        "alpha": alpha,
        "current_size": m,
        "min_effect": {**thresholds, **per_column},
        "rows": n_rows,
        "columns": {},
    }
    empty = np.empty(0, dtype=np.float64)
    for column in columns:
        effect = per_column.get(str(column), thresholds[kind_of[column]])
        if kind_of[column] == NUMERIC:
            values, nulls = _pandas_numeric(reference[column], column, "reference")
            summary = _numeric_summary(values, nulls, empty, 0)
            entry = _numeric_profile(summary, m, alpha, z, effect)
        else:
            cats = _pandas_categorical(reference[column], reference[column].iloc[:0])
            nulls = cats.nulls_ref
            entry = _categorical_profile(cats, m, alpha, z, effect)
        entry["null_rate"] = nulls / n_rows
        entry["null_rate_max"] = _null_rate_max(nulls, n_rows, m, z, thresholds[NULL_RATE])
        out["columns"][str(column)] = entry
    return out


# --------------------------------------------------------------------------------------------
# validation and kinds


def _check_alpha(alpha: float, correction: str) -> None:
    try:
        level = float(alpha)
    except (TypeError, ValueError):
        level = math.nan
    if isinstance(alpha, bool) or not 0 < level < 1:
        raise ValueError(f"alpha must be a number between 0 and 1 (exclusive), not {alpha!r}")
    if correction not in ("bh", "holm"):
        raise ValueError(
            f"correction must be 'bh' (Benjamini-Hochberg) or 'holm', not {correction!r}"
        )


def _same_columns(reference: Sequence[Any], current: Sequence[Any]) -> list[Any]:
    missing = [str(c) for c in reference if c not in set(current)]
    extra = [str(c) for c in current if c not in set(reference)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"current lacks {missing}")
        if extra:
            parts.append(f"reference lacks {extra}")
        raise ValueError(
            f"reference and current must have the same columns ({'; '.join(parts)}); "
            "select the same columns on both sides"
        )
    if not reference:
        raise ValueError("reference and current have no columns to compare")
    return list(reference)


def _thresholds(
    min_effect: Mapping[str, float] | None, columns: Sequence[Any]
) -> tuple[dict[str, float], dict[str, float]]:
    by_kind = dict(DEFAULT_MIN_EFFECT)
    by_column: dict[str, float] = {}
    names = {str(c) for c in columns}
    for key, value in (min_effect or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(f"min_effect[{key!r}] must be a number >= 0, not {value!r}")
        if key in names:
            by_column[key] = number
        elif key in by_kind:
            by_kind[key] = number
        else:
            raise ValueError(
                f"min_effect key {key!r} is neither a kind ({', '.join(by_kind)}) nor a column"
            )
    return by_kind, by_column


def _kind_of_dtype(dtype: Any) -> Kind | None:
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return CATEGORICAL
    return None


def _frame_kinds(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[Any],
    kinds: Mapping[str, Kind] | None,
) -> dict[Any, Kind]:
    forced = _forced_kinds(kinds, columns)
    out: dict[Any, Kind] = {}
    for column in columns:
        if str(column) in forced:
            out[column] = forced[str(column)]
            continue
        found = {
            side: _kind_of_dtype(frame[column].dtype)
            for side, frame in (("reference", reference), ("current", current))
        }
        for side, kind in found.items():
            if kind is None:
                frame = reference if side == "reference" else current
                raise ValueError(
                    f"column {column!r} has dtype {frame[column].dtype} in the {side}, which is "
                    "neither numeric nor categorical; drop it or convert it (for example a "
                    "timestamp to its age in days)"
                )
        if found["reference"] != found["current"]:
            raise ValueError(
                f"column {column!r} is {found['reference']} in the reference but "
                f"{found['current']} in the current; cast one side, or pass kinds={{...}}"
            )
        out[column] = found["reference"]  # type: ignore[assignment]
    return out


def _forced_kinds(kinds: Mapping[str, Kind] | None, columns: Sequence[Any]) -> dict[str, Kind]:
    names = {str(c) for c in columns}
    for key, kind in (kinds or {}).items():
        if key not in names:
            raise ValueError(f"kinds names column {key!r}, which neither side has")
        if kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"kinds[{key!r}] must be 'numeric' or 'categorical', not {kind!r}")
    return dict(kinds or {})


# --------------------------------------------------------------------------------------------
# summaries: the pooled ECDF of a numeric column, the counts of a categorical one


@dataclass(frozen=True)
class _NumericSummary:
    values: np.ndarray  # distinct non-null values of both samples, ascending, float64
    cum_ref: np.ndarray  # reference values <= values[i], int64
    cum_cur: np.ndarray  # current values <= values[i], int64
    nulls_ref: int
    nulls_cur: int
    moments_ref: tuple[float, float]  # mean, standard deviation (n - 1)
    moments_cur: tuple[float, float]


@dataclass(frozen=True)
class _CategoricalSummary:
    labels: list[Any]
    count_ref: np.ndarray  # int64, per label
    count_cur: np.ndarray
    nulls_ref: int
    nulls_cur: int


@dataclass(frozen=True)
class _NumericStats:
    """What a numeric values row needs, however the pooled ECDF was walked."""

    n_ref: int
    n_cur: int
    nulls_ref: int
    nulls_cur: int
    d: float  # KS statistic
    w1: float  # Wasserstein-1 distance
    moments_ref: tuple[float, float]
    moments_cur: tuple[float, float]
    bins_ref: np.ndarray  # PSI bin counts (reference deciles)
    bins_cur: np.ndarray
    atoms: np.ndarray | None  # pooled ECDF below each distinct value, when the null is discrete


def _pandas_numeric(series: pd.Series, column: Any, side: str) -> tuple[np.ndarray, int]:
    """The non-null values of a numeric column (native dtype where numpy has one) and nulls."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return np.ascontiguousarray(series.to_numpy()), 0
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        values = series.to_numpy()
        if values.dtype == np.float16:
            values = values.astype(np.float32)
        missing = np.isnan(values)
        nulls = int(missing.sum())
        if nulls:
            values = values[~missing]
    else:
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            try:
                series = pd.to_numeric(series)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"column {column!r} is not numeric in the {side} ({exc}); "
                    "pass kinds={...: 'categorical'} or clean it"
                ) from None
        missing = series.isna().to_numpy(dtype=bool)
        nulls = int(missing.sum())
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)[~missing]
    if values.size and not np.isfinite(values).all():
        raise ValueError(
            f"column {column!r} has infinite values in the {side}; "
            "replace them (with NaN, or a cap) or drop the column"
        )
    # a frame built from a 2-D array holds strided columns: one copy beats a dozen strided passes
    return np.ascontiguousarray(values), nulls


def _numeric_summary(a: np.ndarray, nulls_a: int, b: np.ndarray, nulls_b: int) -> _NumericSummary:
    """The pooled ECDF: distinct values of both samples and cumulative counts on each side."""
    counted = _small_integer_range(a, b)
    if counted is not None:
        lo, size = counted
        ca = np.bincount(_offsets(a, lo), minlength=size)
        cb = np.bincount(_offsets(b, lo), minlength=size)
        present = np.flatnonzero(ca + cb)
        values = (present + lo).astype(np.float64)
        return _NumericSummary(
            values,
            np.cumsum(ca)[present],
            np.cumsum(cb)[present],
            nulls_a,
            nulls_b,
            _mean_std(values, ca[present]),
            _mean_std(values, cb[present]),
        )
    # one sort per side, then a merge: a stable argsort of two sorted runs is a linear merge
    sa, sb = np.sort(a), np.sort(b)
    merged = np.concatenate([sa, sb])
    order = np.argsort(merged, kind="stable")
    pooled = merged[order]
    cum_ref_all = np.cumsum(order < sa.size, dtype=np.int64)
    if pooled.size == 0:
        empty = np.empty(0, dtype=np.int64)
        nan = (math.nan, math.nan)
        return _NumericSummary(np.empty(0), empty, empty, nulls_a, nulls_b, nan, nan)
    steps = pooled[1:] != pooled[:-1]
    if steps.all():  # no ties (continuous data): every pooled value is its own step
        values, cum_ref = pooled.astype(np.float64, copy=False), cum_ref_all
        cum_cur = np.arange(1, pooled.size + 1) - cum_ref
    else:
        ends = np.append(np.flatnonzero(steps), pooled.size - 1)
        values, cum_ref = pooled[ends].astype(np.float64), cum_ref_all[ends]
        cum_cur = ends + 1 - cum_ref
    return _NumericSummary(
        values,
        cum_ref,
        cum_cur,
        nulls_a,
        nulls_b,
        _sample_mean_std(sa),
        _sample_mean_std(sb),
    )


_MOMENT_CHUNK = 1 << 15  # values per step of the standard deviation's sum (fits in L2)


def _sample_mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (n - 1) of a sample, in float64.

    The centred squares are summed a cache-sized chunk at a time into one reused buffer: on a
    million values, two 8 MB temporaries per call (fresh pages each time) cost three times the
    arithmetic."""
    if x.size == 0:
        return math.nan, math.nan
    mean = float(np.mean(x, dtype=np.float64))
    if x.size < 2:
        return mean, 0.0
    buffer = np.empty(min(x.size, _MOMENT_CHUNK))
    total = 0.0
    for start in range(0, x.size, _MOMENT_CHUNK):
        part = buffer[: min(_MOMENT_CHUNK, x.size - start)]
        np.subtract(x[start : start + _MOMENT_CHUNK], mean, out=part)
        total += float(np.einsum("i,i->", part, part))  # not np.dot: BLAS threads spin
    return mean, math.sqrt(total / (x.size - 1))


def _small_integer_range(a: np.ndarray, b: np.ndarray) -> tuple[int, int] | None:
    """(lowest value, range size) when both samples are integers in a range worth counting."""
    n = a.size + b.size
    if n == 0:
        return None
    for x in (a, b):
        if x.dtype.kind == "f" and x.size:
            head = x[:1024]  # most continuous columns fail here, before a full pass
            if not np.array_equal(head, np.trunc(head)) or not np.array_equal(x, np.trunc(x)):
                return None
        elif x.dtype.kind not in "iuf":
            return None
    lo = min(int(x.min()) for x in (a, b) if x.size)
    hi = max(int(x.max()) for x in (a, b) if x.size)
    if max(abs(lo), abs(hi)) > 2**53:
        return None
    size = hi - lo + 1
    if size > max(_BINCOUNT_MIN_RANGE, 2 * n):
        return None
    return lo, size


def _offsets(x: np.ndarray, lo: int) -> np.ndarray:
    if x.dtype.kind == "f":
        return (x - lo).astype(np.int64)
    return x.astype(np.int64) - lo


def _numeric_summary_from_counts(
    values_ref: np.ndarray,
    counts_ref: np.ndarray,
    values_cur: np.ndarray,
    counts_cur: np.ndarray,
    nulls_ref: int,
    nulls_cur: int,
) -> _NumericSummary:
    """The pooled ECDF from per-value counts of each side (integer values)."""
    values = np.union1d(values_ref, values_cur)
    ca = np.zeros(values.size, dtype=np.int64)
    cb = np.zeros(values.size, dtype=np.int64)
    ca[np.searchsorted(values, values_ref)] = counts_ref
    cb[np.searchsorted(values, values_cur)] = counts_cur
    values = values.astype(np.float64)
    return _NumericSummary(
        values,
        np.cumsum(ca),
        np.cumsum(cb),
        nulls_ref,
        nulls_cur,
        _mean_std(values, ca),
        _mean_std(values, cb),
    )


def _pandas_categorical(reference: pd.Series, current: pd.Series) -> _CategoricalSummary:
    """Counts per category on each side; categories only the current has are appended."""
    if isinstance(reference.dtype, pd.CategoricalDtype) and reference.dtype == current.dtype:
        # the same categories on both sides: count the codes, keep the categories seen
        size = len(reference.dtype.categories)
        codes = [np.asarray(s.cat.codes) for s in (reference, current)]
        ca, cb = (np.bincount(c[c >= 0], minlength=size) for c in codes)
        seen = np.flatnonzero(ca + cb)
        return _CategoricalSummary(
            _labels(reference.dtype.categories[seen]),
            ca[seen].astype(np.int64),
            cb[seen].astype(np.int64),
            int((codes[0] < 0).sum()),
            int((codes[1] < 0).sum()),
        )
    codes_ref, uniques_ref = pd.factorize(reference, use_na_sentinel=True)
    codes_cur, uniques_cur = pd.factorize(current, use_na_sentinel=True)
    labels_ref = _labels(uniques_ref)
    labels_cur = _labels(uniques_cur)
    count_ref = np.bincount(codes_ref[codes_ref >= 0], minlength=len(labels_ref))
    raw_cur = np.bincount(codes_cur[codes_cur >= 0], minlength=len(labels_cur))
    where = pd.Index(labels_ref, dtype=object).get_indexer(pd.Index(labels_cur, dtype=object))
    unseen = where < 0
    labels = labels_ref + [label for label, new in zip(labels_cur, unseen, strict=True) if new]
    where[unseen] = len(labels_ref) + np.arange(int(unseen.sum()))
    count_cur = np.zeros(len(labels), dtype=np.int64)
    count_cur[where] = raw_cur
    count_ref = np.concatenate([count_ref, np.zeros(int(unseen.sum()), dtype=np.int64)])
    return _CategoricalSummary(
        labels,
        count_ref.astype(np.int64),
        count_cur,
        int((codes_ref < 0).sum()),
        int((codes_cur < 0).sum()),
    )


def _labels(uniques: Any) -> list[Any]:
    if isinstance(uniques, pd.Categorical | pd.CategoricalIndex):
        uniques = np.asarray(uniques)
    return [_plain(v) for v in uniques]


def _plain(value: Any) -> Any:
    """A Python scalar for a numpy scalar (so labels compare and serialise alike)."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# DuckDB inputs


def _relation(
    con: duckdb.DuckDBPyConnection, source: str | duckdb.DuckDBPyRelation, side: str
) -> duckdb.DuckDBPyRelation:
    if isinstance(source, duckdb.DuckDBPyRelation):
        return source
    if not isinstance(source, str) or not source.strip():
        raise TypeError(f"{side} must be a table or view name, a query, or a DuckDB relation")
    try:
        return con.sql(source) if _QUERY.match(source) else con.table(source)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"{side} {source!r} cannot be read: {first}") from None


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


_DUCKDB_INTEGERS = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_DUCKDB_FLOATS = {"FLOAT", "DOUBLE", "REAL"}
_DUCKDB_CATEGORICAL = {"VARCHAR", "BOOLEAN", "UUID"}


def _duckdb_kind(type_name: str) -> Kind | None:
    if type_name in _DUCKDB_INTEGERS or type_name in _DUCKDB_FLOATS:
        return NUMERIC
    if type_name.startswith("DECIMAL"):
        return NUMERIC
    if type_name in _DUCKDB_CATEGORICAL or type_name.startswith(("ENUM", "VARCHAR")):
        return CATEGORICAL
    return None


def _duckdb_kinds(
    types: Mapping[str, Mapping[str, str]], columns: Sequence[str], kinds: Mapping[str, Kind] | None
) -> dict[str, Kind]:
    forced = _forced_kinds(kinds, columns)
    out: dict[str, Kind] = {}
    for column in columns:
        if column in forced:
            out[column] = forced[column]
            continue
        found = {side: _duckdb_kind(types[side][column]) for side in ("reference", "current")}
        for side, kind in found.items():
            if kind is None:
                raise ValueError(
                    f"column {column!r} has type {types[side][column]} in the {side}, which is "
                    "neither numeric nor categorical; leave it out of the query or cast it"
                )
        if found["reference"] != found["current"]:
            raise ValueError(
                f"column {column!r} is {found['reference']} in the reference but "
                f"{found['current']} in the current; cast one side, or pass kinds={{...}}"
            )
        out[column] = found["reference"]  # type: ignore[assignment]
    return out


def _duckdb_profile(
    rel: duckdb.DuckDBPyRelation,
    columns: Sequence[str],
    kind_of: Mapping[str, Kind],
    types: Mapping[str, str],
) -> dict[str, Any]:
    """Rows, and the range and non-null count of each integer column, in one scan (other
    columns get their nulls counted where they are read)."""
    exprs = ["count(*)"]
    names = ["__rows"]
    for column in columns:
        if kind_of[column] == NUMERIC and types[column] in _DUCKDB_INTEGERS:
            q = _quote(column)
            exprs += [f"min({q})::hugeint", f"max({q})::hugeint", f"count({q})"]
            names += [f"__min_{column}", f"__max_{column}", f"__n_{column}"]
    row = rel.aggregate(", ".join(exprs)).fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def _bincount_limit(profiles: Mapping[str, Mapping[str, Any]], column: str) -> bool:
    """True when an integer column's range is small enough for DuckDB to count its values."""
    ref, cur = profiles["reference"], profiles["current"]
    if f"__min_{column}" not in ref or f"__min_{column}" not in cur:
        return False
    lows = [p[f"__min_{column}"] for p in (ref, cur) if p[f"__min_{column}"] is not None]
    highs = [p[f"__max_{column}"] for p in (ref, cur) if p[f"__max_{column}"] is not None]
    if not lows:
        return False
    n = int(ref[f"__n_{column}"]) + int(cur[f"__n_{column}"])
    lo, hi = int(min(lows)), int(max(highs))
    return max(abs(lo), abs(hi)) <= 2**53 and hi - lo + 1 <= max(_BINCOUNT_MIN_RANGE, 2 * n)


def _duckdb_counted(
    ref: duckdb.DuckDBPyRelation, cur: duckdb.DuckDBPyRelation, column: str, nulls: tuple[int, int]
) -> _NumericSummary:
    q = _quote(column)
    sides = []
    for rel in (ref, cur):
        got = (
            rel.filter(f"{q} is not null")
            .aggregate(f"{q}::bigint as v, count(*) as n", q)
            .order("v")
            .fetchnumpy()
        )
        sides.append((np.asarray(got["v"], dtype=np.int64), np.asarray(got["n"], dtype=np.int64)))
    (va, ca), (vb, cb) = sides
    return _numeric_summary_from_counts(va, ca, vb, cb, *nulls)


def _duckdb_values(
    rel: duckdb.DuckDBPyRelation, column: str, type_name: str, side: str
) -> tuple[np.ndarray, int]:
    """The non-null values of a numeric column (NULL and NaN count as null) and the nulls.

    The whole column is fetched and filtered in numpy: a ``where`` in DuckDB costs several
    times the fetch."""
    q = _quote(column)
    native = type_name in _DUCKDB_FLOATS or type_name in _DUCKDB_INTEGERS
    expr = q if native else f"cast({q} as double)"  # decimals, and text forced to numeric
    try:
        got = rel.project(f"{expr} as v").fetchnumpy()["v"]
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"column {column!r} cannot be read as numbers: {first}") from None
    values = np.asarray(got.data if isinstance(got, np.ma.MaskedArray) else got)
    missing = np.ma.getmaskarray(got) if isinstance(got, np.ma.MaskedArray) else None
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        missing = nan if missing is None else missing | nan
    if missing is None or not missing.any():
        nulls = 0
    else:
        nulls = int(missing.sum())
        values = values[~missing]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(
            f"column {column!r} has infinite values in the {side}; "
            "replace them (with NULL, or a cap) or leave the column out"
        )
    return values, nulls


def _duckdb_categorical(
    ref: duckdb.DuckDBPyRelation, cur: duckdb.DuckDBPyRelation, column: str
) -> _CategoricalSummary:
    q = _quote(column)
    counts: list[dict[Any, int]] = []
    nulls: list[int] = []
    for rel in (ref, cur):
        got = dict(rel.aggregate(f"{q} as v, count(*) as n", q).fetchall())
        nulls.append(int(got.pop(None, 0)))
        counts.append({_plain(k): int(v) for k, v in got.items()})
    labels = list(counts[0]) + [k for k in counts[1] if k not in counts[0]]
    return _CategoricalSummary(
        labels,
        np.array([counts[0].get(k, 0) for k in labels], dtype=np.int64),
        np.array([counts[1].get(k, 0) for k in labels], dtype=np.int64),
        nulls[0],
        nulls[1],
    )


# --------------------------------------------------------------------------------------------
# statistics


def _rows(
    name: str, kind: Kind, summary: _NumericStats | _CategoricalSummary
) -> list[dict[str, Any]]:
    """The values row of one column, and its null-rate row when either side has a null."""
    if isinstance(summary, _NumericStats):
        n_ref, n_cur = summary.n_ref, summary.n_cur
        row = _numeric_row(summary)
    else:
        n_ref, n_cur = int(summary.count_ref.sum()), int(summary.count_cur.sum())
        row = _categorical_row(summary.labels, summary.count_ref, summary.count_cur)
    rows_ref, rows_cur = n_ref + summary.nulls_ref, n_cur + summary.nulls_cur
    shared = {
        "feature": name,
        "kind": kind,
        "n_reference": rows_ref,
        "n_current": rows_cur,
        "reference_null_rate": summary.nulls_ref / rows_ref if rows_ref else math.nan,
        "current_null_rate": summary.nulls_cur / rows_cur if rows_cur else math.nan,
    }
    row.update(shared, aspect=VALUES)
    row["n_reference"], row["n_current"] = n_ref, n_cur
    out = [row]
    if summary.nulls_ref or summary.nulls_cur:
        nulls = _categorical_row(
            [_NOT_NULL, _NULL],
            np.array([n_ref, summary.nulls_ref], dtype=np.int64),
            np.array([n_cur, summary.nulls_cur], dtype=np.int64),
        )
        nulls.update(shared, aspect=NULL_RATE)
        out.append(nulls)
    return out


def _blank(test: str, effect_name: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_COLUMNS, math.nan)
    row.update(test=test, effect_name=effect_name, note="")
    return row


def _numeric_row(st: _NumericStats) -> dict[str, Any]:
    row = _blank("ks", "wasserstein/std")
    if st.n_ref == 0 or st.n_cur == 0:
        side = "reference" if st.n_ref == 0 else "current"
        row["note"] = f"not tested: the {side} has no non-null values"
        return row
    (mean_ref, std_ref), (mean_cur, std_cur) = st.moments_ref, st.moments_cur
    scale, note = std_ref, ""
    if not scale > 0:
        scale = _pooled_std(st.n_ref, st.moments_ref, st.n_cur, st.moments_cur)
        note = "reference is constant: effect scaled by the pooled standard deviation"
    p_value, method = _ks_pvalue(st.d, st.atoms, st.n_ref, st.n_cur)
    row.update(
        statistic=st.d,
        p_value=p_value,
        effect=st.w1 / scale if scale > 0 else 0.0,
        psi=_psi(st.bins_ref, st.bins_cur),
        reference_mean=mean_ref,
        current_mean=mean_cur,
        reference_std=std_ref,
        current_std=std_cur,
        wasserstein=st.w1,
        note="; ".join(filter(None, [note, method])),
    )
    return row


def _pooled_std(n1: int, m1: tuple[float, float], n2: int, m2: tuple[float, float]) -> float:
    """The standard deviation (n - 1) of both samples together, from their moments."""
    n = n1 + n2
    if n < 2:
        return 0.0
    between = n1 * n2 / n * (m1[0] - m2[0]) ** 2
    return math.sqrt(((n1 - 1) * m1[1] ** 2 + (n2 - 1) * m2[1] ** 2 + between) / (n - 1))


def _numeric_stats(a: np.ndarray, nulls_a: int, b: np.ndarray, nulls_b: int) -> _NumericStats:
    """The statistics of one numeric column: bucketed for large continuous samples (no full
    sort), from the whole pooled ECDF otherwise. Both are exact; the tests hold them equal."""
    if (
        a.size + b.size >= _BUCKET_MIN_VALUES
        and a.size
        and b.size
        and a.dtype.kind == "f"
        and b.dtype.kind == "f"
        and _small_integer_range(a, b) is None
    ):
        stats = _bucketed_stats(a, nulls_a, b, nulls_b)
        if stats is not None:
            return stats
    return _ecdf_stats(_numeric_summary(a, nulls_a, b, nulls_b))


def _ecdf_stats(s: _NumericSummary) -> _NumericStats:
    """Statistics from the whole pooled ECDF (distinct values and cumulative counts)."""
    n_ref = int(s.cum_ref[-1]) if s.values.size else 0
    n_cur = int(s.cum_cur[-1]) if s.values.size else 0
    d = w1 = 0.0
    atoms = None
    empty = np.zeros(1, dtype=np.int64)
    bins_ref = bins_cur = empty
    if n_ref and n_cur:
        gap = s.cum_ref / n_ref - s.cum_cur / n_cur
        d = float(np.max(np.abs(gap)))
        w1 = float(np.sum(np.abs(gap[:-1]) * np.diff(s.values)))
        bins_ref, bins_cur = _numeric_bins(s.cum_ref, s.cum_cur, n_ref, n_cur)
        distinct = s.values.size
        if 2 <= distinct <= DISCRETE_MAX_VALUES and 2 * distinct <= n_ref + n_cur:
            atoms = (s.cum_ref[:-1] + s.cum_cur[:-1]) / (n_ref + n_cur)
    return _NumericStats(
        n_ref,
        n_cur,
        s.nulls_ref,
        s.nulls_cur,
        d,
        w1,
        s.moments_ref,
        s.moments_cur,
        bins_ref,
        bins_cur,
        atoms,
    )


def _mean_std(x: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    n = int(counts.sum())
    if n == 0:
        return math.nan, math.nan
    weights = counts.astype(np.float64)
    mean = float(np.sum(weights * x) / n)  # not np.dot: BLAS threads spin on a busy machine
    if n < 2:
        return mean, 0.0
    centred = x - mean
    return mean, math.sqrt(float(np.sum(weights * centred * centred)) / (n - 1))


@dataclass
class _Buckets:
    """One level of value buckets: [left, right] intervals with the counts before and in each."""

    left: np.ndarray
    right: np.ndarray
    before_a: np.ndarray  # reference values in earlier buckets (all levels), int64
    before_b: np.ndarray
    count_a: np.ndarray
    count_b: np.ndarray


def _bucketed_stats(
    a: np.ndarray, nulls_a: int, b: np.ndarray, nulls_b: int
) -> _NumericStats | None:
    """Exact KS statistic, W1 and PSI bins of two large continuous samples without sorting them.

    Values go into buckets (uniform between robust bounds from a sample, one bucket per tail);
    counts per bucket give F_ref - F_cur exactly at every bucket boundary. Inside a bucket the
    gap moves by at most its counts, so only buckets where it may change sign (for W1) or may
    exceed the largest boundary gap (for D) need the values' order: the others add
    |integral of the gap| from per-bucket sums, the tails and small buckets are sorted, larger
    ones are split again. Returns None when a sample of the values is discrete (at most
    `DISCRETE_MAX_VALUES` distinct values) or heavily tied (under half distinct), or the range
    is degenerate: the full ECDF is then as cheap, and gives the discrete null its atoms.
    """
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    n1, n2 = a.size, b.size
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    sample = np.sort(np.concatenate([a[:: max(1, n1 // 8192)], b[:: max(1, n2 // 8192)]]))
    if not (hi > lo and math.isfinite(hi - lo)):
        return None
    distinct = np.count_nonzero(sample[1:] != sample[:-1]) + 1
    if distinct <= DISCRETE_MAX_VALUES or 2 * distinct < sample.size:
        return None  # discrete, or so tied that buckets of equal values cannot be split
    inner_lo = float(sample[int(0.001 * (sample.size - 1))])
    inner_hi = float(sample[int(0.999 * (sample.size - 1))])
    if not inner_hi > inner_lo:
        inner_lo, inner_hi = lo, hi
    # level 0: bucket 0 is (lo, inner_lo), buckets 1..inner uniform, bucket inner + 1 the top tail
    inner = max((n1 + n2) // _BUCKET_SIZE, 1)
    total = inner + 2
    scale = inner / (inner_hi - inner_lo)
    ka, kb = _level0_bucket(a, inner_lo, scale, inner), _level0_bucket(b, inner_lo, scale, inner)
    left = np.empty(total)
    left[0] = lo
    left[1:] = inner_lo + np.arange(inner + 1) * ((inner_hi - inner_lo) / inner)
    left[-1] = inner_hi
    right = np.append(left[1:], hi)
    zero = np.zeros(1, dtype=np.int64)
    level0 = _bucket_counts(ka, kb, left, right, zero, zero, np.zeros(total, dtype=np.int64))
    d, w1 = 0.0, 0.0
    leaves: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Buckets]] = []
    xa, xb, level, ka0, kb0 = a, b, level0, ka, kb
    for depth in range(_BUCKET_DEPTH):
        after_a, after_b = level.before_a + level.count_a, level.before_b + level.count_b
        gap_end = after_a / n1 - after_b / n2
        d = max(d, float(np.max(np.abs(gap_end))))
        upper = (
            after_a / n1 - level.before_b / n2
        )  # the gap inside a bucket stays in [lower, upper]
        lower = level.before_a / n1 - after_b / n2
        occupied = (level.count_a + level.count_b) > 0
        exact = occupied & (((lower < 0) & (upper > 0)) | (upper > d) | (lower < -d))
        if depth == 0:  # the tails can span huge ranges, where sums would cancel: sort them
            exact[[0, -1]] |= occupied[[0, -1]]
        done = ~exact
        start = level.before_a / n1 - level.before_b / n2
        width = level.right - level.left
        sum_a = np.bincount(ka, weights=_minus(level.right[ka], xa), minlength=width.size)
        sum_b = np.bincount(kb, weights=_minus(level.right[kb], xb), minlength=width.size)
        integral = start[done] * width[done] + sum_a[done] / n1 - sum_b[done] / n2
        w1 += float(np.sum(np.abs(integral)))
        refine = exact & ((level.count_a + level.count_b) > _LEAF_SIZE)
        if depth == 0:
            refine[[0, -1]] = False
        if depth == _BUCKET_DEPTH - 1:
            refine[:] = False
        leaf = exact & ~refine
        if leaf.any():
            rank = np.cumsum(leaf) - 1
            ma, mb = leaf[ka], leaf[kb]
            leaves.append((xa[ma], rank[ka[ma]], xb[mb], rank[kb[mb]], _subset(level, leaf)))
        if not refine.any():
            break
        rank = np.cumsum(refine) - 1
        ma, mb = refine[ka], refine[kb]
        xa, xb = xa[ma], xb[mb]
        ka, kb, level = _split(xa, rank[ka[ma]], xb, rank[kb[mb]], _subset(level, refine))
    leaf_d, leaf_w1 = _leaf_stats(leaves, n1, n2)
    bins_ref, bins_cur = _bucketed_bins(a, ka0, b, kb0, level0, hi)
    return _NumericStats(
        n1,
        n2,
        nulls_a,
        nulls_b,
        max(d, leaf_d),
        w1 + leaf_w1,
        _sample_mean_std(a),
        _sample_mean_std(b),
        bins_ref,
        bins_cur,
        None,
    )


def _level0_bucket(x: np.ndarray, lo: float, scale: float, inner: int) -> np.ndarray:
    """clip(floor((x - lo) * scale) + 1, 0, inner + 1) as int64, in one float buffer (each
    fresh 8 MB temporary of a million values costs more than its arithmetic)."""
    out = np.subtract(x, lo)
    out *= scale
    np.floor(out, out=out)
    out += 1
    np.clip(out, 0, inner + 1, out=out)
    return out.astype(np.int64)


def _minus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x - y into x (a temporary of the caller's)."""
    x -= y
    return x


def _bucket_counts(
    ka: np.ndarray,
    kb: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    base_a: np.ndarray,
    base_b: np.ndarray,
    owner: np.ndarray,
) -> _Buckets:
    """Counts per bucket, and before each: the owner segment's base plus earlier siblings."""
    ca = np.bincount(ka, minlength=left.size)
    cb = np.bincount(kb, minlength=left.size)
    first = np.ones(left.size, dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    ea, eb = np.cumsum(ca) - ca, np.cumsum(cb) - cb
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, left.size))
    ea -= np.repeat(ea[starts], sizes)
    eb -= np.repeat(eb[starts], sizes)
    return _Buckets(left, right, base_a[owner] + ea, base_b[owner] + eb, ca, cb)


def _subset(level: _Buckets, keep: np.ndarray) -> _Buckets:
    return _Buckets(
        level.left[keep],
        level.right[keep],
        level.before_a[keep],
        level.before_b[keep],
        level.count_a[keep],
        level.count_b[keep],
    )


def _split(
    xa: np.ndarray, sa: np.ndarray, xb: np.ndarray, sb: np.ndarray, segments: _Buckets
) -> tuple[np.ndarray, np.ndarray, _Buckets]:
    """Split each segment uniformly into about count / _BUCKET_SIZE buckets."""
    parts = np.maximum((segments.count_a + segments.count_b) // _BUCKET_SIZE, 1)
    offset = np.cumsum(parts) - parts
    span = segments.right - segments.left
    scale = np.where(span > 0, parts / np.where(span > 0, span, 1.0), 0.0)

    def bucket(x: np.ndarray, seg: np.ndarray) -> np.ndarray:
        inside = np.floor((x - segments.left[seg]) * scale[seg]).astype(np.int64)
        return offset[seg] + np.clip(inside, 0, parts[seg] - 1)

    owner = np.repeat(np.arange(parts.size), parts)
    j = np.arange(owner.size) - offset[owner]
    left = segments.left[owner] + j * (span / parts)[owner]
    right = np.empty(owner.size)
    right[:-1] = left[1:]
    right[offset + parts - 1] = segments.right
    ka, kb = bucket(xa, sa), bucket(xb, sb)
    return ka, kb, _bucket_counts(ka, kb, left, right, segments.before_a, segments.before_b, owner)


def _leaf_stats(
    leaves: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Buckets]], n1: int, n2: int
) -> tuple[float, float]:
    """Largest gap and integral of |gap| inside the sorted buckets (merged values in order)."""
    if not leaves:
        return 0.0, 0.0
    buckets = [level for *_, level in leaves]
    offsets = np.cumsum([0] + [level.left.size for level in buckets])
    left = np.concatenate([b.left for b in buckets])
    right = np.concatenate([b.right for b in buckets])
    # number the leaves in value order (they are disjoint intervals from several levels);
    # bucket assignment is monotone in the value, so once the leaves are numbered in that
    # order, sorting values and leaf numbers separately keeps them aligned
    in_order = np.lexsort((right, left))
    number = np.empty(in_order.size, dtype=np.int64)
    number[in_order] = np.arange(in_order.size)
    left, right = left[in_order], right[in_order]
    base_a = np.concatenate([b.before_a for b in buckets])[in_order]
    base_b = np.concatenate([b.before_b for b in buckets])[in_order]
    va = np.sort(np.concatenate([va for va, *_ in leaves]))
    vb = np.sort(np.concatenate([vb for _, _, vb, *_ in leaves]))
    ia = np.sort(number[np.concatenate([x[1] + o for x, o in zip(leaves, offsets, strict=False)])])
    ib = np.sort(number[np.concatenate([x[3] + o for x, o in zip(leaves, offsets, strict=False)])])
    merged = np.concatenate([va, vb])
    order = np.argsort(merged, kind="stable")  # a merge of two sorted runs
    v, leaf, is_a = merged[order], np.concatenate([ia, ib])[order], order < va.size
    cum_a: np.ndarray = np.cumsum(is_a, dtype=np.int64)
    cum_b: np.ndarray = np.arange(1, v.size + 1) - cum_a
    first = np.ones(v.size, dtype=bool)
    first[1:] = leaf[1:] != leaf[:-1]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, v.size))
    in_a = cum_a - np.repeat(cum_a[starts] - is_a[starts], sizes)
    in_b = cum_b - np.repeat(cum_b[starts] - ~is_a[starts], sizes)
    gap = (base_a[leaf] + in_a) / n1 - (base_b[leaf] + in_b) / n2
    last = np.ones(v.size, dtype=bool)  # last of its ties (and of its bucket)
    last[:-1] = (v[1:] != v[:-1]) | (leaf[1:] != leaf[:-1])
    d = float(np.max(np.abs(gap[last])))
    following = np.append(v[1:], 0.0)
    ends = np.append(first[1:], True)
    following[ends] = right[leaf[ends]]
    lead = base_a[leaf[starts]] / n1 - base_b[leaf[starts]] / n2
    w1 = float(np.sum(np.abs(gap) * (following - v)))
    w1 += float(np.sum(np.abs(lead) * (v[starts] - left[leaf[starts]])))
    return d, w1


def _bucketed_bins(
    a: np.ndarray, ka: np.ndarray, b: np.ndarray, kb: np.ndarray, level0: _Buckets, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """PSI bin counts at the reference deciles, exactly as `_numeric_bins` cuts them."""
    n1, n2 = a.size, b.size
    after_a = level0.before_a + level0.count_a
    ranks = _decile_ranks(n1)
    holder = np.searchsorted(after_a, ranks, side="left")  # the bucket of each decile
    wanted = np.zeros(after_a.size, dtype=bool)
    wanted[holder] = True
    ma, mb = wanted[ka], wanted[kb]
    va, qa, vb, qb = a[ma], ka[ma], b[mb], kb[mb]
    edges: dict[float, int] = {}
    for rank, bucket in zip(ranks, holder, strict=True):
        inside = np.sort(va[qa == bucket])
        edges.setdefault(float(inside[rank - level0.before_a[bucket] - 1]), int(bucket))
    cuts = sorted(e for e in edges if e < hi)  # an edge at the largest value leaves an empty bin
    le_a = [level0.before_a[edges[e]] + np.count_nonzero(va[qa == edges[e]] <= e) for e in cuts]
    le_b = [level0.before_b[edges[e]] + np.count_nonzero(vb[qb == edges[e]] <= e) for e in cuts]
    return (
        np.diff(np.array([0, *le_a, n1], dtype=np.int64)),
        np.diff(np.array([0, *le_b, n2], dtype=np.int64)),
    )


def _ks_pvalue(d: float, atoms: np.ndarray | None, n_ref: int, n_cur: int) -> tuple[float, str]:
    """P(D >= d) under "same distribution", and a note when the discrete null was used."""
    if d <= 0:
        return 1.0, ""
    en = n_ref * n_cur / (n_ref + n_cur)
    if atoms is not None:
        note = f"p-value for a discrete null ({atoms.size + 1} distinct values)"
        return _bridge_sf(d * math.sqrt(en), atoms), note
    return float(special.kolmogorov(math.sqrt(en) * d)), ""


def _psi_phi(u: np.ndarray) -> np.ndarray:
    """The antiderivative of the standard normal CDF: u * Phi(u) + phi(u)."""
    return u * special.ndtr(u) + np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _bridge_sf_grid(z: float, t: np.ndarray, cells: int) -> float:
    """1 - P(|B(t_j)| < z for all j), the density carried on `cells` (even) cells of (-z, z)."""
    edges = np.linspace(-z, z, cells + 1)
    width = edges[1] - edges[0]
    half = cells // 2
    mass = np.diff(special.ndtr(edges / math.sqrt(t[0] * (1 - t[0]))))
    for ta, tb in itertools.pairwise(t):
        # B(tb) | B(ta) = x  ~  N(x (1 - tb) / (1 - ta), (tb - ta)(1 - tb) / (1 - ta)); mass is
        # spread uniformly within its cell, which the antiderivative of Phi integrates exactly.
        # The law is symmetric in x, so only the lower half of the cells is computed.
        shrink = (1 - tb) / (1 - ta)
        sd = math.sqrt((tb - ta) * shrink)
        big = _psi_phi((edges[: half + 1, None] - shrink * edges[None, :]) / sd)
        step = (sd / (shrink * width)) * (big[1:, :-1] - big[1:, 1:] - big[:-1, :-1] + big[:-1, 1:])
        lower = (step * mass).sum(axis=1)  # not @: BLAS threads spin on a busy machine
        mass = np.concatenate([lower, lower[::-1]])
    return 1.0 - float(mass.sum())


def _bridge_sf(z: float, t: np.ndarray) -> float:
    """P(max_j |B(t_j)| >= z) for a Brownian bridge B observed at times 0 < t_1 < ... < 1.

    This is the large-sample null distribution of sqrt(n m / (n + m)) * D when the pooled
    sample has atoms with cumulative proportions t (the KS statistic can only change there).
    The bridge is a Markov chain on those times: its density inside (-z, z) is carried on a grid
    of cells, and two grid sizes are combined by Richardson extrapolation (error ~ 1/cells**2);
    checked against Monte Carlo in the tests. Cost: well under a millisecond per atom.
    """
    if t.size == 0 or z <= 0:
        return 1.0
    cells = _BRIDGE_GRID if t.size > 24 else _BRIDGE_GRID // 2
    coarse = _bridge_sf_grid(z, t, cells)
    fine = _bridge_sf_grid(z, t, 2 * cells)
    return float(min(1.0, max(0.0, (4 * fine - coarse) / 3)))


def _numeric_bins(
    cum_ref: np.ndarray, cum_cur: np.ndarray, n_ref: int, n_cur: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts in bins cut at the reference deciles."""
    cuts = _decile_cuts(cum_ref, n_ref)
    ref = np.diff(np.concatenate([[0], cum_ref[cuts], [n_ref]]))
    cur = np.diff(np.concatenate([[0], cum_cur[cuts], [n_cur]]))
    return ref, cur


def _decile_cuts(cum_ref: np.ndarray, n_ref: int) -> np.ndarray:
    """Indices of the distinct values that close each PSI bin but the last (x <= edge)."""
    cuts = np.unique(np.searchsorted(cum_ref, _decile_ranks(n_ref), side="left"))
    return cuts[cuts < cum_ref.size - 1]


def _decile_ranks(n: int) -> np.ndarray:
    """The ranks (1-based) of the reference deciles: ceil(k n / PSI_BINS), k = 1 .. PSI_BINS - 1."""
    return (np.arange(1, PSI_BINS) * n + PSI_BINS - 1) // PSI_BINS


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    p = np.maximum(ref / max(int(ref.sum()), 1), PSI_FLOOR)
    q = np.maximum(cur / max(int(cur.sum()), 1), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _categorical_row(
    labels: list[Any], count_ref: np.ndarray, count_cur: np.ndarray
) -> dict[str, Any]:
    row = _blank("chi2", "js_distance")
    n_ref, n_cur = int(count_ref.sum()), int(count_cur.sum())
    if n_ref == 0 or n_cur == 0:
        side = "reference" if n_ref == 0 else "current"
        row["note"] = f"not tested: the {side} has no non-null values"
        return row
    # a fixed order (most frequent first, then by label) makes both input paths pool and sum
    # alike, whatever order the categories came in
    order = _by_count(labels, count_ref + count_cur)
    a, b = count_ref[order], count_cur[order]
    statistic, dof, pooled = _chi2(a, b)
    notes = []
    if pooled:
        notes.append(
            f"{pooled} categories with expected counts below {MIN_EXPECTED_COUNT:g} pooled"
        )
    unseen = int((a == 0).sum())
    if unseen:
        notes.append(f"{unseen} categories unseen in the reference")
    if dof == 0:
        notes.insert(0, "not tested: one category left after pooling")
        row.update(note="; ".join(notes), effect=_js_distance(a, b), psi=_categorical_psi(a, b))
        return row
    row.update(
        statistic=statistic,
        dof=float(dof),
        p_value=float(special.chdtrc(dof, statistic)),
        effect=_js_distance(a, b),
        psi=_categorical_psi(a, b),
        note="; ".join(notes),
    )
    return row


def _by_count(labels: list[Any], counts: np.ndarray) -> np.ndarray:
    """Indices by descending count, ties by the label's text."""
    text = np.array([str(label) for label in labels], dtype=str)
    return np.lexsort((text, -counts))


def _chi2(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Pearson's X^2 of the 2 x k table [a; b] (categories in descending pooled count) after
    pooling the sparse tail; returns (statistic, degrees of freedom, categories pooled)."""
    pooled = a + b
    total = int(pooled.sum())
    need = MIN_EXPECTED_COUNT * total / min(int(a.sum()), int(b.sum()))
    keep = int(np.searchsorted(-pooled, -need, side="right"))  # pooled[:keep] >= need
    other = int(pooled[keep:].sum())
    while other and other < need and keep:
        keep -= 1
        other += int(pooled[keep])
    merged = pooled.size - keep if other else 0
    if other:
        a = np.append(a[:keep], a[keep:].sum())
        b = np.append(b[:keep], b[keep:].sum())
    else:
        a, b = a[:keep], b[:keep]
    if a.size < 2:
        return math.nan, 0, merged
    observed = np.vstack([a, b]).astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, a.size - 1, merged


def _js_distance(a: np.ndarray, b: np.ndarray) -> float:
    p = a / a.sum()
    q = b / b.sum()
    m = (p + q) / 2
    divergence = (np.sum(special.rel_entr(p, m)) + np.sum(special.rel_entr(q, m))) / math.log(
        JS_LOG_BASE
    )
    return math.sqrt(max(float(divergence), 0.0) / 2)


def _categorical_psi(a: np.ndarray, b: np.ndarray) -> float:
    """PSI over the reference's categories plus one bin for categories it never saw."""
    seen = a > 0
    return _psi(np.append(a[seen], 0), np.append(b[seen], b[~seen].sum()))


# --------------------------------------------------------------------------------------------
# correction and verdict


def _adjust(p: np.ndarray, correction: Correction) -> np.ndarray:
    """Adjusted p-values: Benjamini-Hochberg step-up or Holm step-down."""
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if correction == "bh":
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _finish(
    rows: list[dict[str, Any]],
    alpha: float,
    correction: Correction,
    thresholds: Mapping[str, float],
    per_column: Mapping[str, float],
    n_reference: int,
    n_current: int,
) -> DriftReport:
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    frame["min_effect"] = [
        thresholds[NULL_RATE] if aspect == NULL_RATE else per_column.get(feature, thresholds[kind])
        for feature, aspect, kind in zip(
            frame["feature"], frame["aspect"], frame["kind"], strict=True
        )
    ]
    p = frame["p_value"].to_numpy(dtype=np.float64)
    tested = ~np.isnan(p)
    adjusted = np.full(p.size, np.nan)
    adjusted[tested] = _adjust(p[tested], correction)
    frame["p_adjusted"] = adjusted
    frame["significant"] = tested & (np.nan_to_num(adjusted, nan=1.0) <= alpha)
    frame["drifted"] = frame["significant"] & (
        frame["effect"].fillna(0.0).to_numpy() >= frame["min_effect"].to_numpy()
    )
    for column in ("n_reference", "n_current"):
        frame[column] = frame[column].astype(np.int64)
    frame["dof"] = frame["dof"].astype(np.float64)
    return DriftReport(
        features=frame,
        alpha=float(alpha),
        correction=correction,
        min_effect=MappingProxyType({**thresholds, **per_column}),
        n_reference=int(n_reference),
        n_current=int(n_current),
    )


# --------------------------------------------------------------------------------------------
# running columns on threads (numpy's sorts release the GIL)


def _workers(workers: int | None, values: int) -> int:
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        return workers
    return 1 if values < _PARALLEL_MIN_VALUES else min(os.cpu_count() or 1, 8)


def _run(
    one: Callable[[Any], list[dict[str, Any]]],
    columns: Sequence[Any],
    workers: int | None,
    values: int,
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    n = _workers(workers, values)
    rows: list[dict[str, Any]] = []

    def results() -> Iterator[list[dict[str, Any]]]:
        if n == 1:
            yield from map(one, columns)
            return
        with ThreadPoolExecutor(max_workers=n) as pool:
            yield from pool.map(one, columns)

    for got in results():
        rows.extend(got)
        if progress is not None:
            progress(1)
    return rows


# --------------------------------------------------------------------------------------------
# reference profile


def _quantile(s: _NumericSummary, n: int, level: float) -> float:
    """The lower quantile of the reference (the smallest x with F(x) >= level)."""
    if level <= 0:
        return float(s.values[0])
    index = int(np.searchsorted(s.cum_ref, level * n, side="left"))
    return float(s.values[min(index, s.values.size - 1)])


def _numeric_profile(
    s: _NumericSummary, m: int, alpha: float, z: float, effect: float
) -> dict[str, Any]:
    n = int(s.cum_ref[-1]) if s.values.size else 0
    entry: dict[str, Any] = {"kind": NUMERIC, "rows_non_null": n}
    if n == 0:
        return entry
    counts = np.diff(s.cum_ref, prepend=0)
    mean, sd = s.moments_ref
    spread = math.sqrt(1 / n + 1 / m)
    mad = float(np.sum(counts * np.abs(s.values - mean)) / n)
    kurtosis = float(np.sum(counts * (s.values - mean) ** 4) / n) / sd**4 if sd > 0 else 3.0
    mean_margin = max(z * sd * spread, effect * sd)
    std_margin = max(
        z * math.sqrt(max(kurtosis - 1, 0.0) / 4) * spread, effect * sd / mad if mad > 0 else 0.0
    )
    ks_distance = float(special.kolmogi(alpha)) * spread
    quantiles: dict[str, float] = {}
    bounds: dict[str, list[float]] = {}
    for level in PROFILE_QUANTILES:
        q = _quantile(s, n, level)
        lo = min(_quantile(s, n, level - ks_distance), q - effect * sd)
        hi = max(_quantile(s, n, min(level + ks_distance, 1.0)), q + effect * sd)
        quantiles[f"{level:g}"] = q
        bounds[f"{level:g}"] = [lo, hi]
    cuts = _decile_cuts(s.cum_ref, n)
    ref_bins = np.diff(np.concatenate([[0], s.cum_ref[cuts], [n]]))
    entry.update(
        mean=mean,
        std=sd,
        min=float(s.values[0]),
        max=float(s.values[-1]),
        mean_bounds=[mean - mean_margin, mean + mean_margin],
        std_bounds=[sd * max(1 - std_margin, 0.0), sd * (1 + std_margin)],
        quantiles=quantiles,
        quantile_bounds=bounds,
        psi_edges=[float(v) for v in s.values[cuts]],
        psi_proportions=[float(c) / n for c in ref_bins],
    )
    return entry


def _categorical_profile(
    s: _CategoricalSummary, m: int, alpha: float, z: float, effect: float
) -> dict[str, Any]:
    n = int(s.count_ref.sum())
    entry: dict[str, Any] = {"kind": CATEGORICAL, "rows_non_null": n}
    if n == 0:
        return entry
    order = _by_count(s.labels, s.count_ref)
    labels = [s.labels[i] for i in order if s.count_ref[i] > 0]
    shares = [float(s.count_ref[i]) / n for i in order if s.count_ref[i] > 0]
    spread = math.sqrt(1 / n + 1 / m)
    bounds = {}
    for label, p in zip(labels, shares, strict=True):
        margin = max(
            z * math.sqrt(p * (1 - p)) * spread, math.sqrt(8 * math.log(2) * p * (1 - p)) * effect
        )
        bounds[str(label)] = [max(p - margin, 0.0), min(p + margin, 1.0)]
    n_eff = 1 / (1 / n + 1 / m)
    dof = max(len(labels) - 1, 1)
    kl = max(float(special.chdtri(dof, alpha)) / (2 * n_eff), 4 * math.log(2) * effect**2)
    entry.update(
        categories=labels,
        proportions={str(k): v for k, v in zip(labels, shares, strict=True)},
        proportion_bounds=bounds,
        kl_threshold=kl,
        tail_weight_holdout=1 / (n + 1),
        unseen_share_max=_null_rate_max(0, n, m, z, effect),
    )
    return entry


def _binary_js(p: float, q: float) -> float:
    return _js_distance(np.array([1 - p, p]), np.array([1 - q, q]))


def _null_rate_max(nulls: int, n: int, m: int, z: float, effect: float) -> float:
    """The largest current null rate that is not both significant and large (see profile)."""
    p = nulls / n
    smoothed = (nulls + 0.5) / (n + 1)
    statistical = p + z * math.sqrt(smoothed * (1 - smoothed) * (1 / n + 1 / m))
    lo, hi = p, 1.0
    if _binary_js(p, hi) < effect:
        practical = 1.0
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _binary_js(p, mid) < effect else (lo, mid)
        practical = hi
    return min(1.0, max(statistical, practical))
