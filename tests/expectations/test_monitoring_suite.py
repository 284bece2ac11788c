"""The monitoring suite: drift bounds from a reference, run by the real GX runner."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from expectations.results import TABLE
from expectations.run import validate_frame
from expectations.suites.monitoring import (
    asset_name,
    kl_threshold,
    monitoring_suite,
    numeric_partition,
)
from loopline.settings import Settings
from ml.monitoring.run import data_quality_summary
from tests.conftest import query

ASSET = asset_name("features.fs_churn__user_daily")
MIN_EFFECT = {"numeric": 0.1, "categorical": 0.1, "null_rate": 0.1}  # conf/monitoring.yaml
N_REFERENCE, N_CURRENT = 5_000, 2_000
EXPECTATIONS = 4 * 4 + 2 * 3  # numeric: nulls, mean, quantiles, KL; categorical: nulls, set, KL
MEAN_QUANTILE_KL = {
    "expect_column_mean_to_be_between",
    "expect_column_quantile_values_to_be_between",
    "expect_column_kl_divergence_to_be_less_than",
}


def features(n: int, seed: int, *, shift: float = 0.0, price_rise: float = 1.0) -> pd.DataFrame:
    """Churn-like features: a continuous one, minutes with zeros, counts with nulls, the plan
    price (three plans), a device category and a flag. `shift` moves ``engagement`` by that
    many standard deviations; `price_rise` multiplies every price."""
    rng = np.random.default_rng(seed)
    minutes = rng.lognormal(3, 1, n)
    minutes[rng.random(n) < 0.2] = 0.0
    sessions = rng.poisson(2, n).astype(float)
    sessions[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame(
        {
            "engagement": rng.normal(10, 2, n) + 2 * shift,
            "watch_minutes_30d": minutes,
            "sessions_7d": sessions,
            "plan_price_usd": rng.choice([7.99, 12.99, 17.99], n, p=[0.35, 0.45, 0.2]) * price_rise,
            "device": rng.choice(["mobile", "tv", "web"], n, p=[0.5, 0.3, 0.2]).astype(object),
            "is_annual": (rng.random(n) < 0.1).astype(object),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return features(N_REFERENCE, seed=1)


def run(settings: Settings, reference: pd.DataFrame, current: pd.DataFrame, **kwargs):
    suite = monitoring_suite(reference, current_size=len(current), min_effect=MIN_EFFECT)
    return validate_frame(
        settings, ASSET, current, suite, relation="features.fs_churn__user_daily", **kwargs
    )


def failures(report) -> set[tuple[str, str]]:
    return {(r.expectation_type, str(r.column_name)) for r in report.rows if not r.success}


def test_every_column_gets_warnings_with_bounds_from_the_reference(reference):
    suite = monitoring_suite(reference, current_size=N_CURRENT, min_effect=MIN_EFFECT)
    kinds: dict[str, set[str]] = {}
    for exp in suite:
        kinds.setdefault(exp.configuration.kwargs["column"], set()).add(exp.expectation_type)
        assert exp.meta["critical"] is False and str(exp.severity.value) == "warning"
    numeric = {*MEAN_QUANTILE_KL, "expect_column_values_to_not_be_null"}
    categorical = {
        "expect_column_values_to_be_in_set",
        "expect_column_kl_divergence_to_be_less_than",
        "expect_column_values_to_not_be_null",
    }
    assert kinds == {
        "engagement": numeric,
        "watch_minutes_30d": numeric,
        "sessions_7d": numeric,
        "plan_price_usd": numeric,
        "device": categorical,
        "is_annual": categorical,
    }
    [mean] = [
        e
        for e in suite
        if e.expectation_type == "expect_column_mean_to_be_between"
        and e.configuration.kwargs["column"] == "engagement"
    ]
    ref = reference["engagement"]
    low, high = mean.configuration.kwargs["min_value"], mean.configuration.kwargs["max_value"]
    # the practical band (0.1 sd) is wider than the statistical one at these sizes
    assert low == pytest.approx(ref.mean() - 0.1 * ref.std(), rel=1e-6)
    assert high == pytest.approx(ref.mean() + 0.1 * ref.std(), rel=1e-6)
    # a smaller window widens the band to the sampling error
    small = monitoring_suite(reference, current_size=100, min_effect=MIN_EFFECT)
    [small_mean] = [
        e
        for e in small
        if e.expectation_type == "expect_column_mean_to_be_between"
        and e.configuration.kwargs["column"] == "engagement"
    ]
    assert small_mean.configuration.kwargs["max_value"] - ref.mean() > 0.3 * ref.std()


def test_partitions_follow_the_reference():
    prices = np.array([7.99] * 35 + [12.99] * 45 + [17.99] * 20)
    plan = numeric_partition(prices)
    assert plan is not None and plan["weights"] == pytest.approx([0.35, 0.45, 0.2])
    inf = float("inf")
    assert plan["bins"] == pytest.approx([-inf, 10.49, 15.49, inf])
    spread = numeric_partition(np.arange(1000.0))
    assert spread is not None and len(spread["weights"]) == 10
    assert spread["weights"] == pytest.approx([0.1] * 10, abs=0.002)  # deciles
    assert numeric_partition(np.full(10, 3.0)) is None
    # rare count values share a bin, so each bin expects 5 rows of a 100-row window
    counts = np.array([0] * 500 + [1] * 300 + [2] * 150 + [3] * 40 + [7] * 2 + [9])
    pooled = numeric_partition(counts.astype(float), current_size=100)
    assert pooled is not None and pooled["bins"] == [-inf, 0.5, 1.5, inf]
    assert pooled["weights"] == pytest.approx([500 / 993, 300 / 993, 193 / 993])
    # statistical threshold for a small window, practical (4 ln2 * 0.1^2) for a large one
    assert kl_threshold(10, 300, 300, 0.001, 0.1) > 0.05
    assert kl_threshold(10, 100_000, 100_000, 0.001, 0.1) == pytest.approx(0.0277, abs=1e-4)


@pytest.mark.parametrize(("seed", "rows"), [(2, N_CURRENT), (3, 300)])
def test_a_window_without_drift_passes_every_expectation(tmp_path, reference, seed, rows):
    report = run(
        Settings(data_dir=tmp_path), reference, features(rows, seed), record=False, data_docs=False
    )
    [suite] = report.suites
    assert suite.evaluated == EXPECTATIONS and suite.success, suite.line()


@pytest.mark.parametrize(
    ("column", "moved"),
    [
        ("engagement", {"shift": 0.3}),  # a 0.3 sd mean shift
        ("plan_price_usd", {"price_rise": 1.2}),  # the simulator's price-rise scenario
    ],
)
def test_a_shift_fails_mean_quantile_and_kl_of_that_feature_only(
    tmp_path, reference, column, moved
):
    current = features(N_CURRENT, seed=4, **moved)
    report = run(Settings(data_dir=tmp_path), reference, current, record=False, data_docs=False)
    failed = failures(report)
    assert {(kind, column) for kind in MEAN_QUANTILE_KL} <= failed
    assert {c for _, c in failed} == {column}
    assert not report.critical_failed  # warnings only: publication is never blocked


def test_results_reach_data_docs_and_validation_results(tmp_path, reference):
    settings = Settings(data_dir=tmp_path / "data")
    report = run(settings, reference, features(N_CURRENT, seed=5, shift=0.5), run_id="mon-test")
    assert report.recorded == len(report.rows) == EXPECTATIONS
    rows = query(
        settings,
        f"select asset, relation, suite, expectation_type, column_name, critical, success, "
        f"observed_value from {TABLE} where run_id = 'mon-test'",
    )
    assert (
        len(rows) == EXPECTATIONS
        and {r[0] for r in rows} == {ASSET}
        and {r[2] for r in rows} == {ASSET}
    )
    assert not any(r[5] for r in rows)  # all warnings
    failed = {(r[3], r[4]) for r in rows if not r[6]}
    assert {(kind, "engagement") for kind in MEAN_QUANTILE_KL} <= failed
    [kl] = [
        r
        for r in rows
        if r[3] == "expect_column_kl_divergence_to_be_less_than" and r[4] == "engagement"
    ]
    assert json.loads(kl[7]) > 0.1  # the observed KL divergence, in nats

    assert report.data_docs is not None and ASSET in report.data_docs.read_text()
    pages = list(report.data_docs.parent.glob("validations/**/*.html"))
    [page] = [p.read_text() for p in pages if "fs_churn__user_daily" in str(p)]
    assert "Kullback-Leibler (KL) divergence" in page and "quantile" in page
    assert "engagement" in page and "plan_price_usd" in page


def test_the_monitor_summarises_the_last_validation_run_not_its_own_suite(tmp_path, reference):
    settings = Settings(data_dir=tmp_path / "data")
    path: Path = settings.resolved_warehouse_path
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    con.execute("create schema monitoring")
    con.execute(
        f"create table {TABLE} (run_id varchar, validated_at timestamp, asset varchar, "
        "critical boolean, success boolean)"
    )
    con.execute(
        f"insert into {TABLE} values "
        "('validate-1', '2026-02-14 06:00', 'core.dim_users', true, true), "
        "('mon-1', '2026-02-14 07:00', 'monitoring.fs_churn__user_daily', false, false)"
    )
    summary = data_quality_summary(con)
    con.close()
    assert summary[["run_id", "asset", "warnings"]].values.tolist() == [
        ["validate-1", "core.dim_users", 0]
    ]
