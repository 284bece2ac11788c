"""Viewing interactions for the recommender: distinct user x show pairs, and the time split.

**Interactions** (`load_interactions`) are distinct user × show pairs from the per-event
viewing log (``staging.stg_events__viewing_events``), which sees every show of a session, not
only the first and last one the sessions mart keeps: first and last watch time and seconds of
playback progress (positive position deltas within one player session, as the sessions mart
counts them). `split_by_time` cuts them for the offline "next new show" task.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd

EVENTS_RELATION = "staging.stg_events__viewing_events"
_INTERACTION_COLUMNS = [
    "user_id",
    "show_id",
    "first_watched_at",
    "last_watched_at",
    "watched_seconds",
]


def last_day(con: Any) -> date:
    """Return the newest day with viewing events (the default as-of day)."""
    (last,) = con.execute(f"select max(event_date) from {EVENTS_RELATION}").fetchone() or (None,)
    if last is None:
        raise ValueError("no viewing events in the warehouse yet; run the line first")
    day: date = last
    return day


def load_interactions(
    con: Any, start: date | None, end: date, relation: str = EVENTS_RELATION
) -> pd.DataFrame:
    """Return distinct user × show pairs watched on days in [start, end] (start None: all).

    Columns: user_id (str), show_id (str), first_watched_at and last_watched_at (timestamps),
    watched_seconds (float: positive playback progress within player sessions).
    """
    sql = f"""
        with events as (
            select
                user_id,
                show_id,
                occurred_at,
                position_ms - lag(position_ms) over (
                    partition by session_id order by occurred_at, event_id
                ) as delta_ms
            from {relation}
            where
                event_date <= $end
                and ($start is null or event_date >= $start)
                and user_id is not null
                and show_id is not null
        )
        select
            user_id::varchar as user_id,
            show_id::varchar as show_id,
            min(occurred_at)::timestamp as first_watched_at,
            max(occurred_at)::timestamp as last_watched_at,
            (coalesce(sum(greatest(delta_ms, 0)), 0) / 1000.0)::double as watched_seconds
        from events
        group by all
        order by user_id, first_watched_at, show_id
    """
    frame: pd.DataFrame = con.execute(sql, {"start": start, "end": end}).fetchdf()
    return typed_interactions(frame)


def typed_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Return interactions with the expected column types and order (a new frame)."""
    out = frame.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["show_id"] = out["show_id"].astype(str)
    out["first_watched_at"] = pd.to_datetime(out["first_watched_at"])
    if "last_watched_at" not in out:
        out["last_watched_at"] = out["first_watched_at"]
    out["last_watched_at"] = pd.to_datetime(out["last_watched_at"])
    out["watched_seconds"] = out["watched_seconds"].astype(float)
    extra = [c for c in out.columns if c not in _INTERACTION_COLUMNS]
    return out[_INTERACTION_COLUMNS + extra].reset_index(drop=True)


def split_by_time(interactions: pd.DataFrame, cut: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, test): pairs first watched before ``cut``, and new pairs from ``cut`` on.

    Train rows are clipped to what was known before the cut (``last_watched_at`` at most the
    first watch before it; ``watched_seconds`` is kept, a small look-ahead in a weight only).
    Test holds the user × show pairs first watched on or after the cut; a pair's first watch
    is its earliest, so none of them was watched by that user before the cut.
    """
    frame = typed_interactions(interactions)
    cut_ts = pd.Timestamp(cut)
    before = frame["first_watched_at"] < cut_ts
    train = frame[before].copy()
    clipped = train["last_watched_at"] >= cut_ts
    train.loc[clipped, "last_watched_at"] = train.loc[clipped, "first_watched_at"]
    test = frame[~before].copy()
    return train.reset_index(drop=True), test.reset_index(drop=True)


def default_cut(interactions: pd.DataFrame, holdout_days: int = 14) -> date:
    """Return the first day of the last ``holdout_days`` days of the interactions."""
    if interactions.empty:
        raise ValueError("no interactions: cannot place a time split")
    last = pd.Timestamp(interactions["last_watched_at"].max()).date()
    return last - timedelta(days=holdout_days - 1)


def histories_from(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Return each user's shows, most recently watched first."""
    frame = typed_interactions(interactions).sort_values(
        ["user_id", "last_watched_at", "show_id"], ascending=[True, False, True]
    )
    return {str(u): list(g) for u, g in frame.groupby("user_id", sort=False)["show_id"]}
