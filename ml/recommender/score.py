"""Batch recommendations: every recent viewer's top-k from ``@champion``, into the warehouse.

Histories come from the dbt feature set ``recs_user_history`` (`ml.features.definitions`),
the version the champion was tagged with at training (the newest for older versions). A run
is idempotent per (as-of day, model version): it replaces that slice in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from loopline.settings import Settings
from loopline.warehouse import RECOMMENDATIONS_TABLE
from ml.features.definitions import USER_HISTORY, resolve_version
from ml.recommender.interactions import last_day
from ml.recommender.model import batch_recommend
from ml.recommender.persistence import load_recommender
from ml.registry import CHAMPION, RECS_MODEL


@dataclass(frozen=True)
class RecsScoreReport:
    """What one batch-recommendation run wrote."""

    model_version: str
    as_of: date
    rows: int
    users: int
    table: str


def user_histories(con: Any, as_of: date, version: str) -> pd.DataFrame:
    """Return the ``recs_user_history`` rows of one version as of ``as_of`` (one per viewer).

    The rows of the latest built day at or before ``as_of``: a day after the last viewing
    event has no rows of its own, and its histories are that day's.
    """
    frame: pd.DataFrame = con.execute(
        f"""
        select user_id, recent_shows, last_show_id
        from {USER_HISTORY.relation}
        where feature_set_version = $version
            and as_of_date = (
                select max(as_of_date) from {USER_HISTORY.relation}
                where feature_set_version = $version and as_of_date <= $as_of
            )
        order by user_id
        """,
        {"as_of": as_of, "version": version},
    ).df()
    return frame


def bigint_user_ids(con: Any) -> None:
    """Migrate a warehouse whose ``ml.recommendations.user_id`` is still varchar to bigint."""
    schema, table = RECOMMENDATIONS_TABLE.split(".")
    row = con.execute(
        "select data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = 'user_id'",
        [schema, table],
    ).fetchone()
    if row is not None and row[0] != "BIGINT":
        con.execute(f"alter table {RECOMMENDATIONS_TABLE} alter user_id type bigint")


def recommend_all(settings: Settings, as_of: date | None, k: int) -> RecsScoreReport | None:
    """Top-k for every user who watched in the history window, into the warehouse.

    Returns None when no recommender is registered yet.
    """
    from loopline.warehouse import ensure, writing

    loaded = load_recommender(settings, CHAMPION)
    if loaded is None:
        return None
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    with writing(settings) as con:
        as_of = as_of or last_day(con)
        version = resolve_version(con, USER_HISTORY, loaded.history_version)
        histories = user_histories(con, as_of, version)
        recs = batch_recommend(loaded.model, histories, k)
        n = len(recs)
        table_ = pa.table(
            {
                "user_id": pa.array(recs["user_id"].to_numpy(), pa.int64()),
                "as_of_date": pa.array([as_of] * n, pa.date32()),
                "rank": pa.array(recs["rank"].to_numpy(), pa.int32()),
                "show_id": pa.array(recs["show_id"].astype(str).tolist(), pa.string()),
                "score": pa.array(recs["score"].to_numpy(), pa.float64()),
                "model_name": pa.array([RECS_MODEL] * n, pa.string()),
                "model_version": pa.array([loaded.version] * n, pa.string()),
                "scored_at": pa.array([scored_at] * n, pa.timestamp("us")),
            }
        )
        ensure(con, RECOMMENDATIONS_TABLE)
        bigint_user_ids(con)
        con.register("_recs", table_)
        con.execute("begin transaction")
        con.execute(
            f"delete from {RECOMMENDATIONS_TABLE} where as_of_date = ? and model_version = ?",
            [as_of, loaded.version],
        )
        con.execute(f"insert into {RECOMMENDATIONS_TABLE} select * from _recs")
        con.execute("commit")
        con.unregister("_recs")
    return RecsScoreReport(
        loaded.version, as_of, n, histories["user_id"].nunique(), RECOMMENDATIONS_TABLE
    )
