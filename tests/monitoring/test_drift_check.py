"""Which rows and features the monitor compares: look-back windows that were still filling up."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from ml.monitoring.config import DriftConfig
from ml.monitoring.drift_check import compare, unfilled_windows

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
