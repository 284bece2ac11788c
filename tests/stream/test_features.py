"""Streaming features: the show watched last and the sessions of the last hour, per user."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from loopline.stream.features import (
    HISTORY_FEATURE_SET,
    STREAM_FEATURE_SET,
    STREAM_FEATURE_SET_VERSION,
    history_rows,
    streaming_features,
    write_features,
)
from ml.features.online import open_online_store
from tests.stream.conftest import event


def test_features_name_each_users_latest_show_and_count_sessions_of_the_last_hour():
    lines = [
        event(1, user=1, show="sh_a", session="s1", at="2026-03-01T09:00:00Z"),
        event(2, user=1, show="sh_b", session="s2", at="2026-03-01T09:40:00Z"),
        # a local-offset timestamp: 10:20 UTC, the latest of user 1
        event(3, user=1, show="sh_c", session="s3", at="2026-03-01T15:50:00.000+05:30"),
        event(4, user=2, show="sh_a", session="s9", at="2026-03-01T08:00:00Z"),
        '{"event_id": "e5", "user_id": 3, "sho',  # malformed: left to the warehouse
    ]
    window, frame = streaming_features({}, lines)
    rows = frame.set_index("user_id")
    assert sorted(rows.index) == ["1", "2"]
    assert rows.loc["1", "last_watched_show"] == "sh_c"
    assert rows.loc["1", "last_watched_at"] == pd.Timestamp("2026-03-01 10:20:00")
    assert rows.loc["1", "sessions_last_hour"] == 2  # s2 and s3; s1 is older than an hour
    assert rows.loc["2", "sessions_last_hour"] == 1
    assert (frame["feature_timestamp"] == frame["last_watched_at"]).all()
    assert set(window["1"]) == {"s2", "s3"}
    assert "2" not in window  # no session in the hour before the batch's newest event

    # the next batch counts the sessions the window still holds
    later = [event(6, user=1, show="sh_c", session="s4", at="2026-03-01T10:30:00Z")]
    window, frame = streaming_features(window, later)
    assert frame.loc[0, "sessions_last_hour"] == 3
    assert set(window["1"]) == {"s2", "s3", "s4"}

    # an hour later, the sessions before it are forgotten
    window, _ = streaming_features(
        window, [event(7, user=1, show="sh_c", session="s4", at="2026-03-01T11:00:00Z")]
    )
    assert set(window["1"]) == {"s3", "s4"}


def test_the_show_watched_last_goes_first_in_the_history_once():
    features = pd.DataFrame(
        {
            "user_id": ["1", "2"],
            "last_watched_show": ["sh_b", "sh_x"],
            "last_watched_at": pd.to_datetime(["2026-03-01 10:00", "2026-03-01 11:00"]),
        }
    )
    rows = history_rows(features, {"1": (["sh_a", "sh_b", "sh_c"], "v1")}).set_index("user_id")
    assert json.loads(rows.loc["1", "recent_shows"]) == ["sh_b", "sh_a", "sh_c"]
    assert rows.loc["1", "feature_set_version"] == "v1"
    assert json.loads(rows.loc["2", "recent_shows"]) == ["sh_x"]  # a user the batch never saw


def test_written_features_reach_the_online_store_the_api_reads(settings):
    with open_online_store(settings) as store:
        store.write(
            HISTORY_FEATURE_SET,
            pd.DataFrame(
                {
                    "user_id": ["1"],
                    "recent_shows": [json.dumps(["sh_a", "sh_b"])],
                    "last_show_id": ["sh_a"],
                    "feature_timestamp": [datetime(2026, 3, 1)],
                    "feature_set_version": ["hv1"],  # the version the API serves
                }
            ),
            ["user_id"],
        )
    _, frame = streaming_features(
        {}, [event(1, user=1, show="sh_b", session="s1", at="2026-03-01T10:00:00Z")]
    )
    with open_online_store(settings) as store:
        assert write_features(store, frame, "hv1") == 1
    with open_online_store(settings) as store:
        streamed = store.get_one(STREAM_FEATURE_SET, "1", STREAM_FEATURE_SET_VERSION)
        history = store.get_one(HISTORY_FEATURE_SET, "1", "hv1")
    assert streamed is not None and streamed.values["last_watched_show"] == "sh_b"
    assert streamed.values["sessions_last_hour"] == 1
    assert history is not None
    assert json.loads(str(history.values["recent_shows"])) == ["sh_b", "sh_a"]
    assert history.feature_timestamp == datetime(2026, 3, 1, 10)


def test_a_batch_read_in_one_go_gives_what_reading_it_line_by_line_gives():
    """The Arrow read of a clean batch and the per-line parser agree, ties and offsets too;
    a batch with a line Arrow would read differently is parsed line by line."""
    from loopline.stream.features import _line_by_line, _parse_batch

    lines = [
        event(1, user=1, show="sh_a", session="s1", at="2026-03-01T09:00:00Z"),
        event(2, user=1, show="sh_b", session="s1", at="2026-03-01T09:40:00.250Z"),
        event(3, user=1, show="sh_c", session="s2", at="2026-03-01T15:10:00.250+05:30"),
        event(4, user=2, show="sh_a", session="s9", at="2026-03-01T08:00:00"),
        event(5, user=2, show="sh_d", session="s9", at="2026-03-01T08:00:00"),  # a tie
        json.dumps(
            {
                "user_id": None,
                "session_id": "s",
                "show_id": "x",
                "occurred_at": "2026-03-01T08:00:00Z",
            }
        ),
        json.dumps({"event_id": "e7", "user_id": 7, "session_id": "s7", "show_id": "y"}),
    ]
    fast = _parse_batch(lines)
    assert fast is not None
    slow = _line_by_line(lines)
    assert sorted(fast[0]) == sorted(slow[0]) and fast[1] == slow[1]
    # 15:10:00.250+05:30 is 09:40:00.250 UTC: a tie with sh_b, and the later line wins
    assert fast[1]["1"] == (datetime(2026, 3, 1, 9, 40, 0, 250000), "sh_c")
    assert fast[1]["2"][1] == "sh_d"
    assert "7" not in fast[1] and set(fast[1]) == {"1", "2"}
    for odd in (
        json.dumps({"user_id": 1.5, "session_id": "s", "show_id": "x", "occurred_at": "2026"}),
        json.dumps({"user_id": 1, "session_id": "s", "show_id": "x", "occurred_at": "1 Mar"}),
        '{"event_id": "e5", "user_id": 3, "sho',
    ):
        assert _parse_batch([*lines, odd]) is None
    assert streaming_features({}, lines)[1].equals(streaming_features({}, [*lines, "{"])[1])
