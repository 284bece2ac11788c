"""The loop's batch-inference flow: churn scores and top-N recommendations for every user.

Each step reports one phase line; churn scoring shows a bar over the rows it scored.
"""

from __future__ import annotations

import time
from datetime import date

from prefect import flow, task
from pydantic import BaseModel, ConfigDict, Field

from flows.logs import run_logger
from flows.slots import each_write_takes_the_slot
from loopline import progress
from loopline.settings import get_settings


class ScoreFlowParams(BaseModel):
    """The day to score as of (default: the newest) and how many shows to recommend."""

    model_config = ConfigDict(extra="forbid")

    as_of: date | None = None
    k: int = Field(10, ge=1, le=100)


@task(name="score churn", retries=1, retry_delay_seconds=5)
def score_churn_task(as_of: date | None) -> dict[str, object]:
    """Score every active user with @champion (idempotent per day and version)."""
    from ml.churn.score import score_churn
    from ml.registry import CHAMPION, CHURN_MODEL, alias_version, configure

    settings = get_settings()
    started = time.perf_counter()
    if alias_version(configure(settings), CHURN_MODEL, CHAMPION) is None:
        # like the recommender below: nothing to score with is news, not a crash
        run_logger().warning("no churn @champion yet (no version passed the gate); skipped")
        progress.phase("score", "no churn @champion yet (none passed the gate): skipped", ok=False)
        return {"as_of": None, "rows": 0, "version": None}
    with progress.track("scoring users", unit="users") as bar:
        report = score_churn(settings, as_of, progress=bar.advance)
    progress.phase(
        "score",
        f"churn v{report.model_version}: {report.rows:,} users as of {report.as_of}",
        time.perf_counter() - started,
    )
    run_logger().info(
        "churn v%s: %s users as of %s -> %s", report.model_version, report.rows, report.as_of,
        report.table,
    )  # fmt: skip
    return {"as_of": report.as_of, "rows": report.rows, "version": report.model_version}


@task(name="recommend for every user", retries=1, retry_delay_seconds=5)
def recommend_task(as_of: date | None, k: int) -> dict[str, object]:
    """Top-k shows for every recent viewer, from their history in the feature store."""
    from ml.recommender.score import recommend_all

    started = time.perf_counter()
    report = recommend_all(get_settings(), as_of, k)
    if report is None:
        run_logger().warning("no recommender @champion yet; skipped")
        progress.phase("recommend", "no recommender @champion yet: skipped", ok=False)
        return {"rows": 0}
    progress.phase(
        "recommend",
        f"recommender v{report.model_version}: top {k} for {report.users:,} users",
        time.perf_counter() - started,
    )
    run_logger().info(
        "recommender v%s: %s rows -> %s", report.model_version, report.rows, report.table
    )
    return {"rows": report.rows, "version": report.model_version}


@flow(name="loopline-score", log_prints=True)
def batch_score(params: ScoreFlowParams | None = None) -> dict[str, object]:
    """Churn scores first (they fix the as-of day), then recommendations for the same day."""
    params = params or ScoreFlowParams()
    # each step holds the warehouse slot while it reads, scores and writes (flows/slots.py)
    with each_write_takes_the_slot():
        churn = score_churn_task(params.as_of)
        as_of = churn["as_of"]  # the day churn was scored for (None: no churn champion yet)
        recs = recommend_task(as_of if isinstance(as_of, date) else params.as_of, params.k)
    return {"churn": churn, "recommendations": recs}
