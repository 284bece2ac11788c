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
from typing import TYPE_CHECKING, Any

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
    batch = list(lines)
    parsed = _parse_batch(batch)
    if parsed is None:
        session_times, latest = _line_by_line(batch)
    else:
        session_times, latest = parsed
    for user, session, at in session_times:
        sessions = updated.setdefault(user, {})
        sessions[session] = max(at, sessions.get(session, at))
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


# (user, session, the time of its latest event in the batch) and each user's latest (time, show)
_BatchSummary = tuple[list[tuple[str, str, datetime]], dict[str, tuple[datetime, str]]]


def _line_by_line(lines: Iterable[str]) -> _BatchSummary:
    """The batch summary, one `parse_event` per line (lines that do not parse left out)."""
    session_times: dict[tuple[str, str], datetime] = {}
    latest: dict[str, tuple[datetime, str]] = {}
    for line in lines:
        event = parse_event(line)
        if event is None:
            continue
        user, show, session = str(event["user_id"]), str(event["show_id"]), str(event["session_id"])
        at = event["at"]
        assert isinstance(at, datetime)
        key = (user, session)
        session_times[key] = max(at, session_times.get(key, at))
        if user not in latest or at >= latest[user][0]:  # a tie: the later line wins
            latest[user] = (at, show)
    return [(u, s, t) for (u, s), t in session_times.items()], latest


# the timestamps `datetime.fromisoformat` and pandas read alike (the producers' format)
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
_NO_OFFSET = r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?)$"


def _parse_batch(lines: list[str]) -> _BatchSummary | None:
    """The batch summary from one Arrow JSON read and group-bys: what `_line_by_line` gives,
    at a fraction of the cost per event (json.loads per line was 40% of the consumer's time;
    pandas, and iterating its Arrow-backed columns, most of the rest).

    None, so the caller parses line by line, whenever the batch holds anything that path
    would read differently: a line that is not a JSON object, an id that is not an integer or
    a string, a time not in the plain ISO 8601 form.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    needed = ("user_id", "show_id", "session_id", "occurred_at")
    options = pj.ParseOptions(explicit_schema=pa.schema([("occurred_at", pa.string())]))
    try:
        table = pj.read_json(
            pa.BufferReader("\n".join(lines).encode()),
            # one block, parsed on this thread: a hand-off to Arrow's pool only adds latency
            read_options=pj.ReadOptions(
                use_threads=False, block_size=max(1 << 20, sum(map(len, lines)) + 1)
            ),
            parse_options=options,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        return None
    if table.num_rows != len(lines) or any(name not in table.column_names for name in needed):
        return None
    columns = {}
    for name in needed[:3]:
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
            return None  # floats, booleans, objects: str() of them differs from Arrow's
        columns[name] = pc.cast(column, pa.string())
    times = table.column("occurred_at")
    plain = pc.match_substring_regex(pc.fill_null(times, ""), _ISO_TIME)
    if pc.any(pc.and_(pc.is_valid(times), pc.invert(plain))).as_py():
        return None
    # a time without an offset is UTC, as for `parse_event`
    zoned = pc.replace_substring_regex(times, _NO_OFFSET, r"\1Z")
    at = pc.cast(pc.cast(zoned, pa.timestamp("us", "UTC")), pa.timestamp("us"))  # naive UTC
    frame = pa.table(
        {"user": columns["user_id"], "show": columns["show_id"],
         "session": columns["session_id"], "at": at}
    ).drop_null()  # fmt: skip
    if frame.num_rows == 0:
        return [], {}
    # group-bys in Arrow, Python objects only for what comes out (a row per session, per user)
    per_session = frame.group_by(["user", "session"], use_threads=False).aggregate([("at", "max")])
    session_times = list(
        zip(
            per_session["user"].to_pylist(),
            per_session["session"].to_pylist(),
            _datetimes(per_session["at_max"]),
            strict=True,
        )
    )
    # each user's latest event; of events at the same time, the later line (a stable sort,
    # then the last of each group in that order)
    ordered = frame.take(pc.sort_indices(frame, [("at", "ascending")]))
    last = ordered.group_by("user", use_threads=False).aggregate([("at", "last"), ("show", "last")])
    found = dict(
        zip(
            last["user"].to_pylist(),
            zip(_datetimes(last["at_last"]), last["show_last"].to_pylist(), strict=True),
            strict=True,
        )
    )
    # first-seen order
    latest = {user: found[user] for user in pc.unique(frame["user"]).to_pylist()}
    return session_times, latest


def _datetimes(column: Any) -> list[datetime]:
    """A naive timestamp column without nulls as Python datetimes: through numpy, which
    builds them about 30 times faster than Arrow's `to_pylist` (the same values)."""
    values: list[datetime] = column.to_numpy().astype("datetime64[us]").tolist()
    return values


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
