"""Which rows and features the monitor compares: look-back windows that were still filling up,
and a reference drawn the way the current window is."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from ml.monitoring.config import DriftConfig
from ml.monitoring.drift_check import compare, reference_rows, unfilled_windows

PATTERN = DriftConfig().window_pattern


def _counts(days: pd.DatetimeIndex, window: int, rng: np.random.Generator) -> np.ndarray:
    """Event counts over `window` days for users seen from 2026-01-01: a window reaching
    before the data's first day covers fewer days, so it counts less."""
    covered = np.minimum((days - pd.Timestamp("2026-01-01")).days + 1, window)
    return rng.poisson(0.5 * covered).astype(float)


def test_a_window_still_filling_on_the_reference_days_is_shown_but_never_confirms() -> None:
    rng = np.random.default_rng(0)
    reference_days = pd.to_datetime(rng.choice(pd.date_range("2026-01-31", "2026-02-13"), 3000))
    current_days = pd.DatetimeIndex([pd.Timestamp("2026-05-20")] * 3000)
    reference = pd.DataFrame(
        {"as_of_date": reference_days, "sessions_30d": _counts(reference_days, 30, rng),
         "refunds_90d": _counts(reference_days, 90, rng)}
    )  # fmt: skip
    current = pd.DataFrame(
        {"as_of_date": current_days, "sessions_30d": _counts(current_days, 30, rng),
         "refunds_90d": _counts(current_days, 90, rng)}
    )  # fmt: skip
    columns = ["sessions_30d", "refunds_90d"]
    unfilled = unfilled_windows(reference, "as_of_date", date(2026, 1, 1), columns, PATTERN)
    assert unfilled == ["refunds_90d"]  # 30 days after the start a 30-day window is full

    check = compare(reference, current, columns, DriftConfig(), unfilled)
    rows = check.rows.set_index("feature")
    assert bool(rows.loc["refunds_90d", "drifted"].any())  # the test sees the difference
    assert bool(rows.loc["refunds_90d", "is_ignored"].all())
    assert check.confirmed == [] and not check.drifted  # but it is not drift
    # a reference drawn once the 90-day window is full compares it like any other feature
    late = reference.assign(as_of_date=reference["as_of_date"] + pd.Timedelta(days=60))
    assert unfilled_windows(late, "as_of_date", date(2026, 1, 1), columns, PATTERN) == []


def _calm_company(rng: np.random.Generator, days: pd.DatetimeIndex) -> pd.DataFrame:
    """Daily feature rows of a stationary company: 1,500 loyal users who watch ~24 sessions a
    month, and at any time 300 users on their way out (~12 sessions) who each stay 6 days
    before they leave and are replaced. Every day looks like every other day."""
    frames = []
    for i, day in enumerate(days):
        leaving = 1_000_000 + np.arange(300) + 300 * ((i + np.arange(300)) // 6)
        users = np.concatenate([np.arange(1500), leaving])
        sessions = np.concatenate([rng.normal(24, 4, 1500), rng.normal(12, 4, 300)])
        frames.append(pd.DataFrame({"user_id": users, "as_of_date": day, "sessions_30d": sessions}))
    return pd.concat(frames, ignore_index=True)


def test_the_reference_is_drawn_like_the_current_window_so_a_calm_company_shows_no_drift() -> None:
    """Over the champion's 60 training days many more departing users pass through than are
    in any one week: one row per user of all 60 days would count every one of them, and the
    same calm company would look drifted against its latest week. The reference is an
    average weekly snapshot instead: same mean as the current window, no drift."""
    rng = np.random.default_rng(3)
    config = DriftConfig(warmup_days=0)
    training = _calm_company(rng, pd.date_range("2026-02-01", periods=60))
    later = _calm_company(rng, pd.date_range("2026-05-01", periods=21))
    # the current window as the monitor takes it: each user's newest row of the last 7 days
    week = later[later["as_of_date"] > later["as_of_date"].max() - pd.Timedelta(days=7)]
    current = week.sort_values("as_of_date").drop_duplicates("user_id", keep="last")
    reference = reference_rows(training, "as_of_date", None, ["sessions_30d"], config)

    assert reference["user_id"].is_unique
    assert abs(reference["sessions_30d"].mean() - current["sessions_30d"].mean()) < 0.5
    assert not compare(reference, current, ["sessions_30d"], config, []).drifted
    # one row of every user the 60 days held: the departing ones weigh far more
    everyone = training.sample(frac=1.0, random_state=0).drop_duplicates("user_id")
    assert current["sessions_30d"].mean() - everyone["sessions_30d"].mean() > 2.0
    assert compare(everyone, current, ["sessions_30d"], config, []).drifted
