"""A monitoring run's id names its Data Docs page: GX must be able to title it."""

from __future__ import annotations

from datetime import datetime

import pytest
from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer

from ml.monitoring.run import monitoring_run_id


@pytest.mark.parametrize("suffix", ["4240", "0000", "a2c3", "9999"])
def test_gx_can_title_the_data_docs_page_of_any_monitoring_run(suffix):
    started = datetime(2026, 11, 26, 9, 31, 58)
    run_id = monitoring_run_id(started, suffix)
    assert run_id.startswith("mon-20261126-093158") and run_id.endswith(suffix)
    # GX reads the run name with dateutil; the old `-4240` became a UTC offset of -42:40 and
    # the page failed to render ("offset must be a timedelta strictly between ...")
    title = ValidationResultsPageRenderer()._determine_page_title(
        run_id, "2026-11-26T09:31:58+00:00", "monitoring.fs_churn__user_daily", "monitoring"
    )
    assert "monitoring" in title
