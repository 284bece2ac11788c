"""Streaming features: per user, the show watched last and the sessions in the last hour.

`streaming_features` is pure: a micro-batch's events and the sessions seen in the last hour
(a `SessionWindow`) in, the new window and one feature row per user of the batch out.
`write_features` stores the rows in the online store (feature set ``user_streaming``) and
puts the show watched last first in the user's ``recs_user_history`` vector, which is what
``GET /v1/recommendations/{user_id}`` reads: the next request reflects what the user just
watched, without a batch run. Both writes are newer-wins on the event time, so a batch
materialisation of a later day replaces them and an older event never does.

The window lives in the consumer's memory: after a restart, `sessions_last_hour` counts
only sessions seen since (it is back to exact an hour later).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from loopline.settings import Settings
    from ml.features.online import OnlineStore

STREAM_FEATURE_SET = "user_streaming"
STREAM_FEATURE_SET_VERSION = "stream-v1"
HISTORY_FEATURE_SET = "recs_user_history"  # ml.features.definitions.USER_HISTORY
HISTORY_LENGTH = 20  # the most shows a history keeps once the stream prepends one
WINDOW = timedelta(hours=1)

# user id -> session id -> the time of the session's latest event (naive UTC)
SessionWindow = Mapping[str, Mapping[str, datetime]]

COLUMNS = ["user_id", "last_watched_show", "last_watched_at", "sessions_last_hour"]


def parse_event(line: str) -> dict[str, object] | None:
    """The fields features need from one NDJSON line, or None if the line lacks them."""
    try:
        doc = json.loads(line)
        user, show, session = doc["user_id"], doc["show_id"], doc["session_id"]
        at = datetime.fromisoformat(str(doc["occurred_at"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None
    if user is None or show is None or session is None:
        return None
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return {"user_id": str(user), "show_id": str(show), "session_id": str(session), "at": at}


def streaming_features(
    window: SessionWindow, lines: Iterable[str]
) -> tuple[dict[str, dict[str, datetime]], pd.DataFrame]:
    """Return the new session window and one feature row per user seen in `lines`.

    A user's row: the show of their latest event, its time (the row's feature timestamp)
    and how many of their sessions had an event in the hour up to it. Lines that do not
    parse (malformed, missing ids or time) are left out; the warehouse quarantines them.
    """
    updated = {user: dict(sessions) for user, sessions in window.items()}
    latest: dict[str, tuple[datetime, str]] = {}
    for line in lines:
        event = parse_event(line)
        if event is None:
            continue
        user, show, session = str(event["user_id"]), str(event["show_id"]), str(event["session_id"])
        at = event["at"]
        assert isinstance(at, datetime)
        sessions = updated.setdefault(user, {})
        sessions[session] = max(at, sessions.get(session, at))
        if user not in latest or at >= latest[user][0]:
            latest[user] = (at, show)
    rows = []
    for user, (at, show) in latest.items():
        recent = {s: t for s, t in updated[user].items() if t > at - WINDOW}
        updated[user] = recent
        rows.append([user, show, at, len(recent)])
    if latest:  # forget users with no session in the hour before the newest event
        horizon = max(at for at, _ in latest.values()) - WINDOW
        updated = {
            user: sessions
            for user, sessions in updated.items()
            if any(t > horizon for t in sessions.values())
        }
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["sessions_last_hour"] = frame["sessions_last_hour"].astype("int64")
    frame["last_watched_at"] = pd.to_datetime(frame["last_watched_at"])
    frame["feature_timestamp"] = frame["last_watched_at"]
    frame["feature_set_version"] = STREAM_FEATURE_SET_VERSION
    return updated, frame


def history_rows(
    features: pd.DataFrame, stored: Mapping[str, tuple[list[str], str | None]]
) -> pd.DataFrame:
    """``recs_user_history`` rows with each user's show watched last moved to the front.

    `stored` holds each known user's history and its feature-set version (kept as is).
    """
    rows = []
    columns = ["user_id", "last_watched_show", "last_watched_at"]
    for user, show, at in features[columns].itertuples(index=False):
        history, version = stored.get(user, ([], None))
        shows = [show, *(s for s in history if s != show)][:HISTORY_LENGTH]
        rows.append([user, json.dumps(shows), show, at, version])
    frame = pd.DataFrame(
        rows,
        columns=[
            "user_id",
            "recent_shows",
            "last_show_id",
            "feature_timestamp",
            "feature_set_version",
        ],
    )
    frame["feature_timestamp"] = pd.to_datetime(frame["feature_timestamp"])
    return frame


def open_store(settings: Settings) -> OnlineStore:
    """The online store the serving API reads (as `loopline build` materialises it)."""
    from ml.features.online import open_online_store

    return open_online_store(settings)


def serving_history_version(settings: Settings) -> str | None:
    """The user-history version the API serves: the recommender @champion's lineage tag.

    None without a champion (or before histories were versioned): then only the
    streaming feature set is written.
    """
    from ml.registry import CHAMPION, RECS_MODEL, alias_version, configure, version_tags

    client = configure(settings)
    version = alias_version(client, RECS_MODEL, CHAMPION)
    if version is None:
        return None
    return version_tags(client, RECS_MODEL, version).get("history_feature_set_version")


def write_features(
    store: OnlineStore, features: pd.DataFrame, history_version: str | None = None
) -> int:
    """Store `features`, and the users' updated histories in `history_version` (the one the
    API serves; skipped when None), in `store`; return how many users."""
    if features.empty:
        return 0
    store.write(STREAM_FEATURE_SET, features, ["user_id"])
    if history_version is None:
        return len(features)
    users = features["user_id"].tolist()
    stored: dict[str, tuple[list[str], str | None]] = {}
    found = store.get(HISTORY_FEATURE_SET, users, history_version)
    for user, vector in zip(users, found, strict=True):
        if vector is not None:
            shows = json.loads(str(vector.values.get("recent_shows") or "[]"))
            stored[user] = (shows, vector.feature_set_version)
    rows = history_rows(features, stored).assign(feature_set_version=history_version)
    store.write(HISTORY_FEATURE_SET, rows, ["user_id"])
    return len(features)
