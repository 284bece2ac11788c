"""The bench company: a small simulated company, ingested, built, served and trained.

Everything lives under one data folder (default ``data/bench/``). A folder that already holds
a churn ``@champion``, a warehouse and a filled online store is reused as it is, so reruns skip
the minutes of simulation, dbt build and training.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from loopline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO / "data" / "bench"
UNTIL = date(2026, 2, 14)  # 45 days from the simulator's default start (the "small" scale)
USERS = 300


def bench_settings(data_dir: Path = DEFAULT_DATA_DIR) -> Settings:
    """Settings for the bench folder, with nothing taken from the caller's environment."""
    return Settings(
        data_dir=data_dir,
        warehouse_path=None,
        mlflow_tracking_uri=None,
        online_store_url=None,
        source_db_url=None,
        dbt_project_dir=REPO,
        ml_config=None,
    )


def champion_version(settings: Settings) -> str | None:
    """The churn @champion's version, or None if the folder holds none (or no registry)."""
    if not (settings.data_dir / "mlflow" / "mlflow.db").exists():
        return None
    from ml.registry import CHAMPION, CHURN_MODEL, alias_version, configure

    try:
        return alias_version(configure(settings), CHURN_MODEL, CHAMPION)
    except Exception:
        return None


def _online_rows(settings: Settings) -> int:
    """Churn vectors in the (SQLite) online store; 0 if there is no store yet."""
    import sqlite3

    from ml.features.definitions import CHURN

    path = settings.data_dir / "online" / "online_store.sqlite"
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (rows,) = con.execute(
            "select count(*) from online_vectors where feature_set = ?", [CHURN.name]
        ).fetchone()
        return int(rows)
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def is_ready(settings: Settings) -> bool:
    """The folder holds a warehouse, a filled online store and a churn champion."""
    return (
        settings.resolved_warehouse_path.exists()
        and _online_rows(settings) > 0
        and champion_version(settings) is not None
    )


#: what the other rows keep in the bench folder between runs (results, and companies that
#: take long to make): a rebuild of the scoring company leaves them alone
KEPT = ("results", "learning", "dbt-large")


def clear_for_rebuild(data_dir: Path) -> None:
    """Remove the scoring company from `data_dir` (the folder is its data folder), keeping
    the results of earlier runs and the other rows' kept companies (`KEPT`)."""
    if not data_dir.exists():
        return
    for child in data_dir.iterdir():
        if child.name.startswith(KEPT):
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def ensure_company(
    data_dir: Path = DEFAULT_DATA_DIR,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
) -> Settings:
    """Build the bench company in `data_dir` unless a complete one is already there."""
    settings = bench_settings(data_dir)
    if not rebuild and is_ready(settings):
        say(f"fixture: reusing {data_dir} (churn @champion v{champion_version(settings)})")
        return settings
    clear_for_rebuild(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="loopline-bench-prefect-"))

    from loopline.dbt import run_dbt
    from loopline.ingest.run import ingest
    from loopline.simulate import SimConfig, simulate
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer
    from ml.churn.train import train_churn
    from ml.config import load_ml_config
    from ml.features.materialize import refresh_online_store

    t0 = time.perf_counter()
    say(f"fixture: simulating {USERS} users up to {UNTIL} in {data_dir}")
    simulate(settings, UNTIL, SimConfig.model_validate({"users": USERS}), progress=False)
    say("fixture: ingesting")
    with CatalogueServer(catalogue_dir(settings)) as vendor:  # the demo's source, as it wires it
        ingest(settings, catalogue_url=vendor.url, progress=False)
    say("fixture: dbt build")
    run_dbt(settings, ["build"])
    say("fixture: materializing the online store")
    refresh_online_store(settings)
    say("fixture: training the churn model")
    # the bench measures speed, not quality: the small company is too small for the default
    # user-disjoint holdout to pass the gate, so train on a time-only split (same model kind)
    config = load_ml_config().churn
    config = config.model_copy(update={"train": config.train.model_copy(update={"entity": None})})
    outcome = train_churn(settings, config)
    say(
        f"fixture: churn v{outcome.version} ({outcome.kind}) {outcome.decision.action}; "
        f"built in {time.perf_counter() - t0:.0f} s"
    )
    if champion_version(settings) is None:
        raise RuntimeError(f"the bench company in {data_dir} has no churn @champion after training")
    return settings
