"""ml.drift: equal to scipy on the same data, one report from pandas and DuckDB, and the
statistical targets of issue 11 with fixed seeds.

The false-alarm tests count raw rejections (p <= alpha, before the correction and the practical
threshold) over many independent columns at once. With T tests and a true rate of alpha = 0.05,
the accepted band [0.5 alpha, 1.5 alpha] lies 4.4 standard deviations away when T >= 1,500, so a
calibrated test fails it with probability below 2e-5; a test whose true rate is 0.3 alpha or
1.8 alpha fails it with probability above 0.98 (`test_harness_fails_a_conservative_test` shows
it failing for a real miscalibration). The fast suite runs n = 1,000 and 10,000; the slow one
(`make test-slow`) adds n = 100,000 and more trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

import ml.drift as drift
from ml.drift import (
    DEFAULT_MIN_EFFECT,
    DriftReport,
    detect_drift,
    detect_drift_duckdb,
    reference_profile,
)

ALPHA = 0.05
MIN_TESTS = 1_500
SHARES = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])  # a rare tail: sparse cells
LABELS = [f"cat_{i}" for i in range(SHARES.size)]
LABEL_ARRAY = np.array(LABELS, dtype=object)
CATEGORIES = pd.CategoricalDtype(LABELS)


def close(ours: float, theirs: float, tol: float = 1e-9) -> bool:
    return abs(ours - theirs) <= tol * max(1.0, abs(theirs))


def row(report: DriftReport, feature: str, aspect: str = "values") -> pd.Series:
    hit = report.features[(report.features.feature == feature) & (report.features.aspect == aspect)]
    assert len(hit) == 1, f"expected one {aspect} row for {feature}"
    return hit.iloc[0]


@pytest.fixture
def mixed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A drifted pair: continuous with nulls, integer counts, text with a new category."""
    rng = np.random.default_rng(11)
    n_ref, n_cur = 3_000, 2_000
    ref = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n_ref),
            "sessions": rng.poisson(3, n_ref),
            "plan": rng.choice(["basic", "standard", "premium"], n_ref, p=[0.5, 0.3, 0.2]),
            "score": rng.normal(0, 1, n_ref),
        }
    )
    cur = pd.DataFrame(
        {
            "amount": rng.lognormal(3.1, 1, n_cur),
            "sessions": rng.poisson(3.3, n_cur),
            "plan": rng.choice(
                ["basic", "standard", "premium", "family"], n_cur, p=[0.45, 0.3, 0.2, 0.05]
            ),
            "score": rng.normal(0, 1, n_cur),
        }
    )
    ref.loc[ref.index[::40], "amount"] = np.nan
    cur.loc[cur.index[::10], "amount"] = np.nan
    cur.loc[cur.index[::25], "plan"] = None
    return ref, cur


# --------------------------------------------------------------------------------------------
# the same numbers as scipy


def test_numeric_statistics_equal_scipy(mixed):
    ref, cur = mixed
    report = detect_drift(ref, cur)
    a, b = ref.amount.dropna().to_numpy(), cur.amount.dropna().to_numpy()
    got = row(report, "amount")
    ks = stats.ks_2samp(a, b)
    w1 = stats.wasserstein_distance(a, b)
    assert close(got.statistic, ks.statistic)
    assert close(got.wasserstein, w1)
    assert close(got.effect, w1 / np.std(a, ddof=1))
    assert close(got.reference_mean, a.mean()) and close(got.current_mean, b.mean())
    # Kolmogorov's limiting distribution, not scipy's exact lattice count: close (and on the
    # conservative side), not equal
    assert ks.pvalue <= got.p_value <= 1.1 * ks.pvalue
    assert (got.n_reference, got.n_current) == (a.size, b.size)


def test_integer_counts_get_the_discrete_null_and_scipy_statistics(mixed):
    """With ties the KS statistic is scipy's, but scipy's continuous p-value is conservative."""
    ref, cur = mixed
    got = row(detect_drift(ref, cur), "sessions")
    ks = stats.ks_2samp(ref.sessions, cur.sessions)
    assert close(got.statistic, ks.statistic)
    assert close(got.wasserstein, stats.wasserstein_distance(ref.sessions, cur.sessions))
    assert "discrete null" in got.note
    assert got.p_value < ks.pvalue


def test_categorical_statistics_equal_scipy_with_unseen_categories(mixed):
    ref, cur = mixed
    got = row(detect_drift(ref, cur), "plan")
    labels = ["basic", "standard", "premium", "family"]
    table = np.array(
        [[(ref.plan == k).sum() for k in labels], [(cur.plan == k).sum() for k in labels]]
    )
    assert table[0, 3] == 0 and table[1, 3] > 0  # "family" is new, and counted
    chi2 = stats.chi2_contingency(table, correction=False)
    assert close(got.statistic, chi2.statistic)
    assert close(got.p_value, chi2.pvalue)
    assert got.dof == chi2.dof == 3
    assert close(got.effect, jensenshannon(table[0], table[1], base=2))
    assert "1 categories unseen in the reference" in got.note


def frame_of_counts(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"c": [k for k, n in counts.items() for _ in range(n)]})


@pytest.mark.parametrize(
    ("ref", "cur", "columns"),
    [
        # pooled counts e=11, f=5, g=2 are below 5 * 700 / 300 = 11.7: they become one cell
        (
            {"a": 200, "b": 120, "c": 50, "d": 20, "e": 6, "f": 3, "g": 1},
            {"a": 150, "b": 90, "c": 40, "d": 12, "e": 5, "f": 2, "g": 1},
            [["a"], ["b"], ["c"], ["d"], ["e", "f", "g"]],
        ),
        # e, f, g together (8) are still too sparse: the next smallest, d, joins them
        (
            {"a": 200, "b": 120, "c": 50, "d": 20, "e": 3, "f": 1, "g": 1},
            {"a": 150, "b": 90, "c": 40, "d": 12, "e": 2, "f": 1},
            [["a"], ["b"], ["c"], ["d", "e", "f", "g"]],
        ),
    ],
)
def test_sparse_categories_are_pooled_before_the_chi_square(ref, cur, columns):
    table = np.array(
        [[sum(side.get(k, 0) for k in cell) for cell in columns] for side in (ref, cur)]
    )
    chi2 = stats.chi2_contingency(table, correction=False)
    got = row(detect_drift(frame_of_counts(ref), frame_of_counts(cur)), "c")
    assert close(got.statistic, chi2.statistic) and close(got.p_value, chi2.pvalue)
    assert got.dof == chi2.dof == len(columns) - 1
    assert f"{len(columns[-1])} categories with expected counts below 5 pooled" in got.note
    every = list(ref)
    counts = [[side.get(k, 0) for k in every] for side in (ref, cur)]
    assert close(got.effect, jensenshannon(*counts, base=2))  # on every category, unpooled


def test_null_rate_is_its_own_binary_feature(mixed):
    ref, cur = mixed
    report = detect_drift(ref, cur)
    got = row(report, "amount", "null_rate")
    table = np.array(
        [
            [ref.amount.notna().sum(), ref.amount.isna().sum()],
            [cur.amount.notna().sum(), cur.amount.isna().sum()],
        ]
    )
    chi2 = stats.chi2_contingency(table, correction=False)
    assert close(got.statistic, chi2.statistic) and close(got.p_value, chi2.pvalue)
    assert close(got.effect, jensenshannon(table[0], table[1], base=2))
    assert got.reference_null_rate == pytest.approx(1 / 40, abs=1e-3)
    assert got.current_null_rate == pytest.approx(1 / 10, abs=1e-3)
    assert got.drifted  # 2.5 % -> 10 % nulls
    assert set(report.features.loc[report.features.aspect == "null_rate", "feature"]) == {
        "amount",
        "plan",
    }
    assert not row(report, "score").drifted


def test_psi_uses_bins_fixed_from_the_reference():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=10_000), "c": rng.choice(["a", "b"], 10_000)})
    cur = pd.DataFrame({"x": rng.normal(0.5, 1, 10_000), "c": rng.choice(["a", "b", "z"], 10_000)})
    report = detect_drift(ref, cur)
    edges = np.quantile(ref.x, np.arange(1, 10) / 10, method="inverted_cdf")
    p = np.bincount(np.searchsorted(edges, ref.x, side="left"), minlength=10) / 10_000
    q = np.bincount(np.searchsorted(edges, cur.x, side="left"), minlength=10) / 10_000
    assert close(row(report, "x").psi, float(np.sum((q - p) * np.log(q / p))))
    p = np.array([(ref.c == "a").mean(), (ref.c == "b").mean(), drift.PSI_FLOOR])
    q = np.array([(cur.c == "a").mean(), (cur.c == "b").mean(), (cur.c == "z").mean()])
    assert close(row(report, "c").psi, float(np.sum((q - p) * np.log(q / p))))


# --------------------------------------------------------------------------------------------
# large continuous columns: buckets instead of full sorts, with the same exact statistics

DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=n),
    "lognormal": lambda rng, n: rng.lognormal(3, 1, n),
    "cauchy": lambda rng, n: rng.standard_cauchy(n),
    "outlier": lambda rng, n: np.append(rng.normal(size=n - 1), 1e9),
    "zero-inflated": lambda rng, n: np.where(rng.random(n) < 0.3, 0.0, rng.exponential(size=n)),
    "rounded": lambda rng, n: np.round(rng.normal(size=n), 3),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    distribution=st.sampled_from(sorted(DISTRIBUTIONS)),
    sizes=st.tuples(st.integers(300, 3_000), st.integers(300, 3_000)),
    shift=st.sampled_from([0.0, 0.01, 0.3]),
    tuning=st.sampled_from([(16, 256, 4), (2, 4, 4), (3, 1, 6), (4, 16, 2)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_buckets_give_the_exact_statistics_of_the_sorted_samples(
    distribution, sizes, shift, tuning, seed
):
    """The bucketed walk (forced here on small samples, with extreme bucket sizes) returns the
    KS statistic, W1, PSI bins and moments of the full pooled ECDF and of scipy."""
    rng = np.random.default_rng(seed)
    a = DISTRIBUTIONS[distribution](rng, sizes[0])
    b = DISTRIBUTIONS[distribution](rng, sizes[1]) + shift
    with pytest.MonkeyPatch.context() as patch:
        for name, value in zip(
            ("_BUCKET_SIZE", "_LEAF_SIZE", "_BUCKET_DEPTH"), tuning, strict=True
        ):
            patch.setattr(drift, name, value)
        bucketed = drift._bucketed_stats(a, 0, b, 0)
    assert bucketed is not None
    full = drift._ecdf_stats(drift._numeric_summary(a, 0, b, 0))
    assert close(bucketed.d, full.d, 1e-12) and close(bucketed.d, stats.ks_2samp(a, b).statistic)
    assert close(bucketed.w1, full.w1, 1e-12)
    assert close(bucketed.w1, stats.wasserstein_distance(a, b))
    np.testing.assert_array_equal(bucketed.bins_ref, full.bins_ref)
    np.testing.assert_array_equal(bucketed.bins_cur, full.bins_cur)
    np.testing.assert_allclose(bucketed.moments_ref, full.moments_ref, rtol=1e-12)


def test_discrete_or_heavily_tied_columns_keep_the_full_ecdf():
    rng = np.random.default_rng(12)
    assert (
        drift._bucketed_stats(rng.poisson(4, 5_000) * 0.5, 0, rng.poisson(4, 5_000) * 0.5, 0)
        is None
    )
    assert (
        drift._bucketed_stats(np.round(rng.normal(size=5_000), 1), 0, rng.normal(size=9), 0) is None
    )


def test_large_columns_take_the_bucketed_path_and_agree_with_scipy(monkeypatch):
    rng = np.random.default_rng(13)
    n = 150_000  # 300,000 values in all: above the bucketing threshold
    ref = pd.DataFrame({"x": rng.lognormal(0, 1, n)})
    cur = pd.DataFrame({"x": rng.lognormal(0.01, 1, n)})
    taken: list[bool] = []
    bucketed = drift._bucketed_stats
    monkeypatch.setattr(
        drift, "_bucketed_stats", lambda *args: taken.append(True) or bucketed(*args)
    )
    got = row(detect_drift(ref, cur), "x")
    assert taken == [True]
    assert close(got.statistic, stats.ks_2samp(ref.x, cur.x).statistic)
    assert close(got.wasserstein, stats.wasserstein_distance(ref.x, cur.x))


# --------------------------------------------------------------------------------------------
# DuckDB: the same report from the warehouse


@pytest.fixture
def warehouse(mixed, tmp_path) -> duckdb.DuckDBPyConnection:
    ref, cur = mixed
    con = duckdb.connect(str(tmp_path / "drift.duckdb"))
    con.execute("create schema features")
    for name, frame in (("reference", ref), ("current", cur)):
        con.register("frame", frame)
        con.execute(
            f"create table features.{name} as select amount, sessions::integer as sessions, "
            "plan, score from frame"
        )
        con.unregister("frame")
    yield con
    con.close()


def assert_same_report(ours: DriftReport, theirs: DriftReport) -> None:
    left, right = ours.features, theirs.features
    assert list(left.feature) == list(right.feature) and list(left.aspect) == list(right.aspect)
    for column in (
        "statistic",
        "p_value",
        "p_adjusted",
        "effect",
        "psi",
        "wasserstein",
        "reference_std",
    ):
        np.testing.assert_allclose(
            left[column], right[column], rtol=1e-12, atol=1e-15, err_msg=column
        )
    for column in ("n_reference", "n_current", "drifted", "dof", "note"):
        assert list(left[column].fillna(-1)) == list(right[column].fillna(-1)), column
    assert ours.drifted == theirs.drifted


@pytest.mark.parametrize("how", ["table", "query", "relation"])
def test_duckdb_report_equals_the_pandas_report(mixed, warehouse, how):
    ref, cur = mixed
    sources = {
        "table": ("features.reference", "features.current"),
        "query": ("select * from features.reference", "select * from features.current"),
        "relation": (warehouse.table("features.reference"), warehouse.table("features.current")),
    }[how]
    assert_same_report(detect_drift_duckdb(warehouse, *sources), detect_drift(ref, cur))


def test_duckdb_statistics_equal_scipy(mixed, warehouse):
    ref, cur = mixed
    report = detect_drift_duckdb(warehouse, "features.reference", "features.current")
    for column in ("amount", "sessions"):
        a, b = ref[column].dropna(), cur[column].dropna()
        got = row(report, column)
        assert close(got.statistic, stats.ks_2samp(a, b).statistic)
        assert close(got.wasserstein, stats.wasserstein_distance(a, b))
    table = pd.crosstab(
        np.repeat([0, 1], [len(ref), len(cur)]), pd.concat([ref.plan, cur.plan]).to_numpy()
    ).to_numpy()
    assert close(
        row(report, "plan").statistic, stats.chi2_contingency(table, correction=False).statistic
    )


def test_duckdb_handles_wide_integers_decimals_nan_and_booleans(tmp_path):
    """Integer columns too wide to count in SQL are fetched; NaN counts as null, as in pandas."""
    rng = np.random.default_rng(8)
    con = duckdb.connect()
    frames = []
    for name, shift in (("r", 0), ("c", 5_000)):
        n = 2_000
        frame = pd.DataFrame(
            {
                "wide": rng.integers(0, 10**9, n) + shift,
                "price": np.round(rng.uniform(1, 100, n), 2),
                "ratio": np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n)),
                "flag": rng.random(n) < 0.3,
            }
        )
        frames.append(frame)
        con.register("frame", frame)
        con.execute(
            f"create table {name} as select wide, price::decimal(10, 2) as price, ratio, flag from frame"
        )
        con.unregister("frame")
    got = detect_drift_duckdb(con, "r", "c")
    assert_same_report(got, detect_drift(*frames))
    assert row(got, "flag").kind == "categorical"
    assert row(got, "ratio", "null_rate").n_reference == 2_000


def test_duckdb_bad_inputs_get_one_line_errors():
    con = duckdb.connect()
    con.execute("create table r as select 1.0 as x, now() as ts")
    con.execute("create table c as select 2.0 as y")
    with pytest.raises(ValueError, match="cannot be read"):
        detect_drift_duckdb(con, "no_such_table", "c")
    with pytest.raises(ValueError, match="same columns"):
        detect_drift_duckdb(con, "r", "c")
    with pytest.raises(ValueError, match="neither numeric nor categorical"):
        detect_drift_duckdb(con, "select ts from r", "select ts from r")
    with pytest.raises(ValueError, match="no rows"):
        detect_drift_duckdb(con, "select x from r where false", "select x from r")
    con.execute("create table inf as select 'inf'::double as x")
    with pytest.raises(ValueError, match="infinite"):
        detect_drift_duckdb(con, "select x from r", "inf")


# --------------------------------------------------------------------------------------------
# the verdict: significant after the correction, and large enough


def test_a_huge_sample_does_not_flag_a_trivial_shift():
    rng = np.random.default_rng(2)
    n = 400_000
    ref = pd.DataFrame({"x": rng.normal(size=n)})
    cur = pd.DataFrame({"x": rng.normal(0.02, 1, n)})
    got = row(detect_drift(ref, cur), "x")
    assert got.p_value < 1e-6 and got.significant  # the test sees it ...
    assert got.effect < DEFAULT_MIN_EFFECT["numeric"] and not got.drifted  # ... nobody should care


def test_min_effect_by_kind_and_by_column():
    rng = np.random.default_rng(4)
    n = 50_000
    ref = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n)})
    cur = pd.DataFrame({"x": rng.normal(0.03, 1, n), "y": rng.normal(0.03, 1, n)})
    assert not detect_drift(ref, cur).drifted
    report = detect_drift(ref, cur, min_effect={"numeric": 0.01})
    assert report.drifted_features == ["x", "y"]
    report = detect_drift(ref, cur, min_effect={"numeric": 0.01, "y": 0.2})
    assert report.drifted_features == ["x"]
    assert report.min_effect["y"] == 0.2 and report.min_effect["numeric"] == 0.01
    assert row(report, "y").min_effect == 0.2


def brute_force_bh(p: np.ndarray) -> np.ndarray:
    """min over q >= p_i of m q / rank(q), where rank(q) counts the p-values <= q."""
    m = p.size
    return np.array([min(1.0, min(m * q / (p <= q).sum() for q in p if q >= pi)) for pi in p])


def brute_force_holm(p: np.ndarray) -> np.ndarray:
    m = p.size
    ranked = np.sort(p)
    return np.array(
        [min(1.0, max((m - j) * ranked[j] for j in range(int((ranked <= pi).sum())))) for pi in p]
    )


@pytest.mark.parametrize("correction", ["bh", "holm"])
def test_adjusted_p_values_follow_their_definitions(correction):
    rng = np.random.default_rng(6)
    n = 2_000
    shifts = [0, 0, 0.05, 0.08, 0.1, 0.15, 0, 0.12]
    ref = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(len(shifts))})
    cur = pd.DataFrame({f"f{i}": rng.normal(s, 1, n) for i, s in enumerate(shifts)})
    report = detect_drift(ref, cur, correction=correction, min_effect={"numeric": 0})
    p = report.features.p_value.to_numpy()
    expected = brute_force_bh(p) if correction == "bh" else brute_force_holm(p)
    np.testing.assert_allclose(report.features.p_adjusted, expected, rtol=1e-12)
    assert list(report.features.drifted) == list(expected <= ALPHA)
    assert report.correction == correction


def test_the_dataset_drifts_when_any_feature_does():
    rng = np.random.default_rng(7)
    n = 5_000
    ref = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["u", "v"], n)}
    )
    same = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["u", "v"], n)}
    )
    moved = same.assign(b=rng.normal(0.3, 1, n))
    assert not detect_drift(ref, same).drifted
    report = detect_drift(ref, moved)
    assert report.drifted and report.drifted_features == ["b"]
    frame = report.to_frame()
    assert frame.dataset_drifted.all() and (frame.alpha == ALPHA).all()
    assert report.summary().startswith("1 of 3 features drifted: b")


def test_untestable_rows_stay_out_of_the_correction():
    ref = pd.DataFrame({"x": [np.nan] * 50, "y": np.arange(50.0), "c": ["a"] * 50})
    cur = pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50.0) + 100, "c": ["a"] * 50})
    report = detect_drift(ref, cur)
    x = row(report, "x")
    assert math.isnan(x.p_value) and not x.drifted and "reference has no non-null values" in x.note
    assert math.isnan(row(report, "c").p_value) and "one category left" in row(report, "c").note
    y = row(report, "y")
    assert y.p_adjusted == pytest.approx(min(1, y.p_value * 2))  # y and x's null rate: m = 2
    assert row(report, "x", "null_rate").drifted and y.drifted


def test_kinds_can_be_forced_and_inputs_stay_untouched():
    rng = np.random.default_rng(9)
    ref = pd.DataFrame(
        {"plan_id": rng.integers(1, 4, 1_000), "code": rng.choice(["1", "2"], 1_000)}
    )
    cur = pd.DataFrame(
        {"plan_id": rng.integers(1, 4, 1_000), "code": rng.choice(["1", "2"], 1_000)}
    )
    before = (ref.copy(), cur.copy())
    report = detect_drift(ref, cur, kinds={"plan_id": "categorical", "code": "numeric"})
    assert row(report, "plan_id").test == "chi2" and row(report, "code").test == "ks"
    pd.testing.assert_frame_equal(ref, before[0])
    pd.testing.assert_frame_equal(cur, before[1])


def test_nullable_and_categorical_dtypes_read_like_plain_ones():
    rng = np.random.default_rng(10)
    ref = pd.DataFrame(
        {"n": rng.poisson(4, 3_000).astype(float), "c": rng.choice(list("abc"), 3_000)}
    )
    cur = pd.DataFrame(
        {"n": rng.poisson(4.4, 3_000).astype(float), "c": rng.choice(list("abcd"), 3_000)}
    )
    ref.loc[::7, "n"] = np.nan
    plain = detect_drift(ref, cur)
    typed = detect_drift(
        ref.astype({"n": "Int64", "c": "category"}), cur.astype({"n": "Float64", "c": "string"})
    )
    assert_same_report(typed, plain)


def test_threads_do_not_change_the_report(mixed):
    ref, cur = mixed
    seen: list[int] = []
    assert_same_report(
        detect_drift(ref, cur, workers=3, progress=seen.append), detect_drift(ref, cur, workers=1)
    )
    assert sum(seen) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, c: (r, c.drop(columns="x")), r"current lacks \['x'\]"),
        (lambda r, c: (r.iloc[:0], c), "reference has no rows"),
        (
            lambda r, c: (
                r.assign(t=pd.Timestamp("2026-01-01")),
                c.assign(t=pd.Timestamp("2026-01-01")),
            ),
            "neither numeric nor categorical",
        ),
        (lambda r, c: (r, c.assign(x=c.x.astype(str))), "numeric in the reference but categorical"),
        (lambda r, c: (r, c.assign(x=np.inf)), "infinite values in the current"),
    ],
)
def test_bad_frames_get_one_line_errors(change, message):
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    with pytest.raises(ValueError, match=message) as error:
        detect_drift(*change(ref, ref.copy()))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0}, "alpha must be"),
        ({"alpha": 1.5}, "alpha must be"),
        ({"correction": "bonferroni"}, "correction must be"),
        ({"min_effect": {"numerci": 0.1}}, "neither a kind"),
        ({"min_effect": {"numeric": -1}}, "must be a number >= 0"),
        ({"kinds": {"nope": "numeric"}}, "neither side has"),
        ({"kinds": {"x": "ordinal"}}, "must be 'numeric' or 'categorical'"),
        ({"workers": 0}, "workers must be at least 1"),
    ],
)
def test_bad_settings_get_one_line_errors(kwargs, message):
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=message):
        detect_drift(ref, ref, **kwargs)


# --------------------------------------------------------------------------------------------
# the discrete KS p-value


@pytest.mark.parametrize("atoms", [3, 10, 40])
def test_discrete_ks_p_value_matches_a_simulated_brownian_bridge(atoms):
    rng = np.random.default_rng(atoms)
    t = np.cumsum(rng.dirichlet(np.ones(atoms)))[:-1]
    paths = 200_000
    steps = np.diff(np.concatenate([[0.0], t, [1.0]]))
    walk = np.cumsum(rng.normal(size=(paths, atoms)) * np.sqrt(steps), axis=1)
    bridge = walk[:, :-1] - t * walk[:, -1:]
    peak = np.abs(bridge).max(axis=1)
    for z in (1.0, 1.36, 1.7):
        simulated = (peak >= z).mean()
        se = math.sqrt(simulated * (1 - simulated) / paths)
        assert abs(drift._bridge_sf(z, t) - simulated) <= 4 * se + 2e-4, (z, simulated)


# --------------------------------------------------------------------------------------------
# statistical targets (fixed seeds)

Maker = Callable[[np.random.Generator, int, int], pd.DataFrame]


def normal_frame(rng: np.random.Generator, n: int, columns: int) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(n, columns)), columns=[f"f{i}" for i in range(columns)])


def poisson_frame(lam: float) -> Maker:
    def make(rng: np.random.Generator, n: int, columns: int) -> pd.DataFrame:
        return pd.DataFrame(
            rng.poisson(lam, size=(n, columns)), columns=[f"f{i}" for i in range(columns)]
        )

    return make


def binary_frame(rng: np.random.Generator, n: int, columns: int) -> pd.DataFrame:
    return pd.DataFrame(
        rng.binomial(1, 0.1, size=(n, columns)), columns=[f"f{i}" for i in range(columns)]
    )


def categorical_frame(rng: np.random.Generator, n: int, columns: int) -> pd.DataFrame:
    """Columns drawn from SHARES: even ones as pandas categoricals, odd ones as plain strings."""
    codes = np.searchsorted(np.cumsum(SHARES), rng.random((n, columns)), side="right")
    codes = np.minimum(codes, SHARES.size - 1)
    return pd.DataFrame(
        {
            f"f{i}": pd.Categorical.from_codes(codes[:, i], dtype=CATEGORIES)
            if i % 2 == 0
            else LABEL_ARRAY[codes[:, i]]
            for i in range(columns)
        }
    )


def false_alarm_rate(
    make: Maker, n_ref: int, n_cur: int, columns: int, trials: int, seed: int
) -> tuple[float, int]:
    """Share of raw p-values <= alpha over trials x columns independent tests without drift."""
    rng = np.random.default_rng(seed)
    rejected = tests = 0
    for _ in range(trials):
        report = detect_drift(make(rng, n_ref, columns), make(rng, n_cur, columns), workers=1)
        p = report.features.loc[report.features.aspect == "values", "p_value"].to_numpy()
        rejected += int((p <= ALPHA).sum())
        tests += int((~np.isnan(p)).sum())
    assert tests >= MIN_TESTS, "too few tests for the binomial bound"
    print(f"false alarms: {rejected / tests:.4f} of {tests} tests (n={n_ref}/{n_cur})")
    return rejected / tests, tests


def assert_calibrated(rate: float, tests: int) -> None:
    assert 0.5 * ALPHA <= rate <= 1.5 * ALPHA, f"false-alarm rate {rate:.4f} over {tests} tests"


@pytest.mark.parametrize(
    ("n", "columns", "trials"), [(1_000, 50, 30), (10_000, 50, 30)], ids=["n=1k", "n=10k"]
)
def test_numeric_false_alarm_rate(n, columns, trials):
    assert_calibrated(*false_alarm_rate(normal_frame, n, n, columns, trials, seed=n))


@pytest.mark.parametrize(
    ("make", "n"),
    [
        (poisson_frame(2), 1_000),
        (poisson_frame(2), 10_000),
        (binary_frame, 1_000),
    ],
    ids=["poisson2-1k", "poisson2-10k", "binary-1k"],
)
def test_integer_false_alarm_rate(make, n):
    """Heavy ties: the discrete null keeps the rate near alpha where scipy's is far below."""
    assert_calibrated(*false_alarm_rate(make, n, n, 50, 30, seed=n + 1))


@pytest.mark.parametrize(
    ("n_ref", "ratio"), [(1_000, 0.1), (1_000, 1), (1_000, 10), (10_000, 0.1), (10_000, 1)]
)
def test_categorical_false_alarm_rate(n_ref, ratio):
    """Current/reference size ratios 0.1 to 10, with categories rare enough to need pooling."""
    rate = false_alarm_rate(categorical_frame, n_ref, int(n_ref * ratio), 50, 30, seed=n_ref)
    assert_calibrated(*rate)


def test_harness_fails_a_conservative_test(monkeypatch):
    """The same harness catches a miscalibrated test: the continuous KS p-value on ties."""
    monkeypatch.setattr(drift, "DISCRETE_MAX_VALUES", 0)
    rate, _ = false_alarm_rate(poisson_frame(2), 1_000, 1_000, 50, 30, seed=1_001)
    assert rate < 0.5 * ALPHA, f"continuous p-values on 10 atoms rejected {rate:.4f}"


def dataset_false_alarms(n: int, trials: int, seed: int) -> dict[str, float]:
    """Shares of trials without drift that flag the data set (20 independent features: 10
    numeric, 10 categorical): with the defaults, with the correction alone (no effect
    threshold: any significant row), and with neither (any raw p-value <= alpha)."""
    rng = np.random.default_rng(seed)
    flagged = {"defaults": 0, "correction only": 0, "uncorrected": 0}
    for _ in range(trials):
        ref, cur = (
            pd.concat(
                [normal_frame(rng, n, 10), categorical_frame(rng, n, 10).add_prefix("c")], axis=1
            )
            for _ in range(2)
        )
        report = detect_drift(ref, cur, workers=1)
        flagged["defaults"] += report.drifted
        flagged["correction only"] += bool(report.features.significant.any())
        flagged["uncorrected"] += bool((report.features.p_value <= ALPHA).any())
    rates = {k: v / trials for k, v in flagged.items()}
    print(f"data-set false alarms over {trials} trials at n={n}: {rates}")
    return rates


def assert_dataset_rate(rates: dict[str, float], trials: int) -> None:
    # at most alpha up to binomial noise: 3 standard deviations of a rate of exactly alpha
    # (a correction over 10 features instead of 20 would give about 2 alpha and fail)
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials)
    assert rates["defaults"] <= bound, rates
    assert rates["correction only"] <= bound, rates
    assert rates["uncorrected"] > 0.5, rates  # 1 - 0.95**20 = 64 % without the correction


def test_dataset_false_alarm_rate_with_20_features():
    assert_dataset_rate(dataset_false_alarms(1_000, 400, seed=20), 400)


def shift_trials(n: int, shift: float, columns: int, trials: int, seed: int) -> tuple[float, float]:
    """(share flagged as drifted, share with raw p <= alpha) for one column shifted by `shift`
    standard deviations beside `columns` - 1 unshifted ones."""
    rng = np.random.default_rng(seed)
    drifted = significant = 0
    for _ in range(trials):
        ref = normal_frame(rng, n, columns)
        cur = normal_frame(rng, n, columns)
        cur["f0"] += shift
        got = row(detect_drift(ref, cur), "f0")
        drifted += bool(got.drifted)
        significant += bool(got.p_value <= ALPHA)
    print(
        f"shift {shift} sd at n={n}: drifted {drifted / trials:.3f}, p <= alpha {significant / trials:.3f}"
    )
    return drifted / trials, significant / trials


def test_a_tenth_of_a_standard_deviation_is_found_at_n_10000():
    drifted, _ = shift_trials(10_000, 0.1, 5, 60, seed=30)
    assert drifted >= 0.95


def test_two_hundredths_of_a_standard_deviation_is_not_flagged_at_n_100000():
    drifted, significant = shift_trials(100_000, 0.02, 1, 40, seed=31)
    assert drifted <= 0.05
    assert significant >= 0.5  # the test alone would have flagged most of them


# the heavier versions: make test-slow


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "n", "n_cur"),
    [
        (normal_frame, 100_000, 100_000),
        (normal_frame, 1_000, 100),
        (normal_frame, 10_000, 100_000),
        (poisson_frame(2), 100_000, 100_000),
        (poisson_frame(30), 1_000, 1_000),
        (poisson_frame(30), 10_000, 10_000),
        (poisson_frame(30), 100_000, 100_000),
        (binary_frame, 10_000, 10_000),
        (binary_frame, 100_000, 100_000),
    ],
    ids=[
        "normal-100k",
        "normal-1k/100",
        "normal-10k/100k",
        "poisson2-100k",
        "poisson30-1k",
        "poisson30-10k",
        "poisson30-100k",
        "binary-10k",
        "binary-100k",
    ],
)
def test_numeric_false_alarm_rate_slow(make, n, n_cur):
    columns, trials = (20, 100) if max(n, n_cur) >= 100_000 else (50, 60)
    assert_calibrated(*false_alarm_rate(make, n, n_cur, columns, trials, seed=n + n_cur))


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [0.1, 0.3, 1, 3, 10])
@pytest.mark.parametrize("n_ref", [1_000, 10_000, 100_000])
def test_categorical_false_alarm_rate_slow(n_ref, ratio):
    columns, trials = (20, 100) if n_ref * max(ratio, 1) >= 100_000 else (50, 60)
    rate = false_alarm_rate(
        categorical_frame, n_ref, int(n_ref * ratio), columns, trials, seed=n_ref + 7
    )
    assert_calibrated(*rate)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_dataset_false_alarm_rate_with_20_features_slow(n):
    trials = 2_000 if n < 100_000 else 200
    assert_dataset_rate(dataset_false_alarms(n, trials, seed=n + 22), trials)


@pytest.mark.slow
def test_power_and_practical_threshold_slow():
    drifted, _ = shift_trials(10_000, 0.1, 20, 500, seed=32)
    assert drifted >= 0.95
    drifted, significant = shift_trials(100_000, 0.02, 5, 200, seed=33)
    assert drifted <= 0.05 and significant >= 0.5


# --------------------------------------------------------------------------------------------
# the reference profile (bounds for a Great Expectations suite)


def test_profile_bounds_hold_without_drift_and_break_with_it():
    rng = np.random.default_rng(40)
    n, m = 20_000, 5_000
    ref = pd.DataFrame(
        {"x": rng.normal(10, 2, n), "c": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])}
    )
    ref.loc[::50, "x"] = np.nan
    profile = reference_profile(ref, current_size=m)
    assert json.loads(json.dumps(profile)) == profile  # JSON types only

    def inside(frame: pd.DataFrame) -> dict[str, bool]:
        x, c = profile["columns"]["x"], profile["columns"]["c"]
        values = frame.x.dropna()
        quantiles = {
            k: float(np.quantile(values, float(k), method="inverted_cdf")) for k in x["quantiles"]
        }
        shares = frame.c.value_counts(normalize=True)
        return {
            "mean": x["mean_bounds"][0] <= values.mean() <= x["mean_bounds"][1],
            "std": x["std_bounds"][0] <= values.std() <= x["std_bounds"][1],
            "quantiles": all(
                lo <= quantiles[k] <= hi for k, (lo, hi) in x["quantile_bounds"].items()
            ),
            "nulls": frame.x.isna().mean() <= x["null_rate_max"],
            "shares": all(
                lo <= shares.get(k, 0.0) <= hi for k, (lo, hi) in c["proportion_bounds"].items()
            ),
            "kl": stats.entropy(
                shares.reindex(c["categories"]).fillna(0), list(c["proportions"].values())
            )
            <= c["kl_threshold"],
        }

    same = pd.DataFrame(
        {"x": rng.normal(10, 2, m), "c": rng.choice(["a", "b", "c"], m, p=[0.6, 0.3, 0.1])}
    )
    same.loc[::50, "x"] = np.nan
    assert all(inside(same).values()), inside(same)
    moved = pd.DataFrame(
        {"x": rng.normal(10.5, 2.6, m), "c": rng.choice(["a", "b", "c"], m, p=[0.45, 0.35, 0.2])}
    )
    moved.loc[::10, "x"] = np.nan
    assert not any(inside(moved).values()), inside(moved)
    assert detect_drift(ref, moved).drifted_features == ["x", "c"]


def test_profile_describes_categories_and_psi_bins():
    ref = pd.DataFrame({"c": ["a"] * 60 + ["b"] * 30 + ["c"] * 10, "k": list(range(10)) * 10})
    profile = reference_profile(ref)
    c, k = profile["columns"]["c"], profile["columns"]["k"]
    assert c["categories"] == ["a", "b", "c"]
    assert c["proportions"] == {"a": 0.6, "b": 0.3, "c": 0.1}
    assert c["tail_weight_holdout"] > 0 and c["null_rate"] == 0
    assert k["psi_edges"] == [float(v) for v in range(9)]
    assert k["psi_proportions"] == [0.1] * 10
    assert k["min"] == 0 and k["max"] == 9 and k["quantiles"]["0.5"] == 4
