"""The source-system simulator: a seeded, deterministic video-streaming company.

The demo's source, not a dependency: ingest, dbt, `ml/` and the line flow never import it.
They read what it writes as they would a real company's systems (a database, a catalogue
API at a URL, file drops), and training reads the churn reference from its truth files.
"""

from __future__ import annotations

import shutil

from loopline.settings import Settings
from loopline.simulate.config import Scenario, SimConfig, config_for_scale
from loopline.simulate.run import (
    SimReport,
    SimulationError,
    churn_reference_path,
    churn_truth,
    ensure_churn_reference,
    load_state,
    simulate,
    simulate_company,
)


def reset_sources(settings: Settings) -> None:
    """Delete everything the simulator wrote (sources, landing files, simulator state).

    A Postgres source loses the simulator's tables too.
    """
    if settings.source_db_url:
        import duckdb

        from loopline.simulate.writers.oltp import OLTP_TABLES
        from loopline.warehouse import attach_source

        con = duckdb.connect()
        attach_source(con, settings.source_db_url)
        for table in OLTP_TABLES:
            con.execute(f"drop table if exists src.{table}")
        con.close()
    for folder in (settings.sources_dir, settings.landing_dir, settings.sim_state_dir):
        if folder.exists():
            shutil.rmtree(folder)


__all__ = [
    "Scenario",
    "SimConfig",
    "SimReport",
    "SimulationError",
    "churn_reference_path",
    "churn_truth",
    "config_for_scale",
    "ensure_churn_reference",
    "load_state",
    "reset_sources",
    "simulate",
    "simulate_company",
]
