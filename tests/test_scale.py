"""The large scale end to end: >10 million viewing events built on one 2-core machine.

Slow (about 25 minutes on 2 cores): `make test-slow`. It asserts completeness, not
speed; the times it takes are printed for the record.
"""

from __future__ import annotations

import time

import pytest

from loopline.dbt import run_dbt
from loopline.settings import Settings
from loopline.simulate import config_for_scale, simulate
from tests.conftest import ingest_simulated, query


@pytest.mark.slow
def test_large_scale_builds_within_the_machine(tmp_path):
    settings = Settings(data_dir=tmp_path)
    config, days = config_for_scale("large")
    started = time.perf_counter()
    report = simulate(settings, config.date_of(days - 1), config, progress=False)
    assert report.events_written > 10_000_000
    simulated = time.perf_counter()
    loaded = ingest_simulated(settings)
    assert loaded.files.records["events"] == report.events_written
    ingested = time.perf_counter()
    run_dbt(settings, ["build"])
    built = time.perf_counter()
    ((unaccounted,),) = query(
        settings, "select sum(unaccounted_records) from monitoring.fct_load_accounting"
    )
    assert unaccounted == 0
    print(
        f"simulate {simulated - started:.0f} s, ingest {ingested - simulated:.0f} s, build {built - ingested:.0f} s"
    )
