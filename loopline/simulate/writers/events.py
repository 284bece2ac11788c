"""Viewing events: NDJSON, one file per arrival hour, under landing/events/date=.../.

Late arrivals (up to 4 days), a field added and a field renamed by a new app version,
UTC and local-offset timestamps, and injected defects listed in the manifest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline.simulate import model as m
from loopline.simulate.engine import S_DEFECTS, day_streams
from loopline.simulate.state import SimState
from loopline.simulate.writers.common import atomic_write

EVENT_DEFECTS = (
    "duplicate", "null_user_id", "malformed_json", "negative_position",
    "unparseable_timestamp", "orphan_show", "orphan_user",
)  # fmt: skip


def expand_events(state: SimState, sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per event of the given sessions (play, heartbeats, pause/resume, stop)."""
    hb = state.config.heartbeat_s
    length = sessions["length"].to_numpy()
    n_hb = np.maximum(0, (length - 1) // hb)
    base_n = 2 + n_hb
    s = len(sessions)
    sess_a = np.repeat(np.arange(s), base_n)
    first = np.repeat(np.cumsum(base_n) - base_n, base_n)
    j = np.arange(len(sess_a)) - first
    last = j == base_n[sess_a] - 1
    pos_a = np.where(j == 0, 0, np.where(last, length[sess_a], j * hb))
    type_a = np.where(j == 0, 0, np.where(last, 3, 2))  # 0 play, 1 pause, 2 heartbeat, 3 stop
    order_a = np.where(last, 3, 0)
    paused = np.flatnonzero(sessions["has_pause"].to_numpy())
    pause_at = sessions["pause_at"].to_numpy()
    sess_b = np.repeat(paused, 2)
    pos_b = pause_at[sess_b]
    type_b = np.tile([1, 0], len(paused))
    order_b = np.tile([1, 2], len(paused))
    sess = np.concatenate([sess_a, sess_b])
    pos = np.concatenate([pos_a, pos_b])
    etype = np.concatenate([type_a, type_b])
    order = np.concatenate([order_a, order_b])
    sort = np.lexsort((order, pos, sess))
    sess, pos, etype, order = sess[sort], pos[sort], etype[sort], order[sort]
    seq = np.arange(len(sess)) - np.repeat(
        np.cumsum(np.bincount(sess, minlength=s)) - np.bincount(sess, minlength=s),
        np.bincount(sess, minlength=s),
    )
    has_pause = sessions["has_pause"].to_numpy()[sess]
    after_pause = has_pause & ((pos > pause_at[sess]) | ((pos == pause_at[sess]) & (order == 2)))
    wall = (
        sessions["start"].to_numpy()[sess]
        + pos
        + np.where(after_pause, sessions["pause_gap"].to_numpy()[sess], 0)
    )
    return pd.DataFrame(
        {
            "sess": sess,
            "seq": seq,
            "etype": etype,
            "position_s": pos,
            "wall": wall,
            "day": sessions["day"].to_numpy()[sess],
        }
    )


def event_lines(state: SimState, sessions: pd.DataFrame) -> pa.Table:
    """The NDJSON lines of the sessions' events, with arrival times and injected defects."""
    cfg = state.config
    ev = expand_events(state, sessions)
    if ev.empty:
        return empty_lines()
    sess = ev["sess"].to_numpy()
    u = state.users
    uidx = sessions["user_idx"].to_numpy()[sess]
    # per-day random draws, so defects do not depend on how days are grouped into runs
    n = len(ev)
    kind = np.zeros(n, dtype=np.int64)
    aux = np.zeros(n)
    delay = np.zeros(n)
    millis = np.zeros(n, dtype=np.int64)
    days = ev["day"].to_numpy()
    for day in np.unique(days):
        sel = np.flatnonzero(days == day)
        r = day_streams(cfg, int(day))[S_DEFECTS]
        k = len(sel)
        draw = r.random(k)
        p = cfg.defect_rate / len(EVENT_DEFECTS)
        kind[sel] = np.where(
            draw < cfg.defect_rate,
            1 + np.minimum((draw / p).astype(np.int64), len(EVENT_DEFECTS) - 1),
            0,
        )
        aux[sel] = r.random(k)
        late = r.random(k) < cfg.late_rate
        delay[sel] = np.where(late, r.uniform(3600, 4 * 86_400, k), r.exponential(45.0, k))
        millis[sel] = r.integers(0, 1000, k)
    # small integer codes, turned into text by the SQL below: no Python string per event
    device = sessions["device"].to_numpy()[sess]
    os_names = [m.OS_BY_DEVICE[d][i % len(m.OS_BY_DEVICE[d])] for d in m.DEVICES for i in range(3)]
    new_app = sessions["new_app"].to_numpy()[sess]
    added_day = cfg.day_index(cfg.field_added_on) if cfg.field_added_on else 10**6
    bitrate = sessions["bitrate"].to_numpy()[sess] + (aux * 300).astype(np.int64) - 150
    offsets = np.array([m.UTC_OFFSET_MIN[c] for c in m.COUNTRIES])
    frame = pa.table(
        {
            "session_key": sessions["session_key"].to_numpy()[sess],
            "seq": ev["seq"].to_numpy(),
            "event_type": ev["etype"].to_numpy(),
            "user_id": u["user_id"][uidx],
            "show_idx": sessions["show_idx"].to_numpy()[sess],
            "episode_pos": sessions["episode_pos"].to_numpy()[sess],
            "wall_ms": ev["wall"].to_numpy() * 1000 + millis,
            "offset_min": offsets[u["country"][uidx]],
            "device": device,
            "position_ms": ev["position_s"].to_numpy() * 1000,
            "bitrate_kbps": bitrate,
            "os": device * 3 + sessions["os_pick"].to_numpy()[sess],
            "network": sessions["network"].to_numpy()[sess],
            "country": u["country"][uidx],
            "new_app": new_app,
            "has_quality": days >= added_day,
            "defect": kind,
            "aux": aux,
            "arrival_ms": (ev["wall"].to_numpy() + delay).astype(np.int64) * 1000 + millis,
        }
    )
    names = {
        "event_types": ["play", "pause", "heartbeat", "stop"],
        "show_ids": [str(x) for x in state.shows["show_id"].to_numpy()],
        "episode_ids": [str(x) for x in state.episodes["episode_id"].to_numpy()],
        "devices": list(m.DEVICES),
        "os_names": os_names,
        "networks": list(m.NETWORKS),
        "countries": list(m.COUNTRIES),
    }
    con = duckdb.connect()
    con.execute("set threads = 2")
    con.register("codes", frame)
    lines = con.execute(_EVENT_SQL, names).to_arrow_table().cast(LINES_SCHEMA)
    con.close()
    return lines


def _offset_sql(col: str) -> str:
    return (
        f"(case when {col} < 0 then '-' else '+' end) || lpad((abs({col}) // 60)::varchar, 2, '0')"
        f" || ':' || lpad((abs({col}) % 60)::varchar, 2, '0')"
    )


# defect codes follow EVENT_DEFECTS (1-based): 1 duplicate, 2 null_user_id, 3 malformed_json,
# 4 negative_position, 5 unparseable_timestamp, 6 orphan_show, 7 orphan_user
_EVENT_SQL = f"""
with ev as (
    select
        session_key, seq, $event_types[event_type + 1] as event_type, user_id,
        $show_ids[show_idx + 1] as show_id, $episode_ids[episode_pos + 1] as episode_id, wall_ms,
        offset_min, $devices[device + 1] as device, position_ms, bitrate_kbps,
        case when new_app then '5.0.2' else '4.8.1' end as app_version, $os_names[os + 1] as os,
        $networks[network + 1] as network, $countries[country + 1] as country, new_app,
        has_quality, defect, aux, arrival_ms
    from codes
),
base as (
    select
        *,
        'ev_' || substr(md5(session_key::varchar || ':' || seq::varchar), 1, 20) as event_id,
        'ss_' || substr(md5(session_key::varchar), 1, 16) as session_id,
        make_timestamp(wall_ms * 1000) as occurred_utc
    from ev
),
fields as (
    select
        event_id, session_id, event_type, device, app_version, os, network, country,
        new_app, has_quality, defect, aux, arrival_ms,
        case when defect = 2 then null when defect = 7 then 90000000 + (aux * 100000)::bigint
             else user_id end as user_id,
        case when defect = 6 then 'sh_9' || lpad(((aux * 9999)::bigint)::varchar, 4, '0')
             else show_id end as show_id,
        episode_id,
        case
            when defect = 5 then ['2026-02-30T25:61:00Z', 'not-a-date', '', '13/45/2026 10:00']
                [1 + (aux * 4)::bigint % 4]
            when new_app then strftime(occurred_utc + to_minutes(offset_min), '%Y-%m-%dT%H:%M:%S.%g')
                || {_offset_sql("offset_min")}
            else strftime(occurred_utc, '%Y-%m-%dT%H:%M:%S.%gZ')
        end as occurred_at,
        case when defect = 4 then -position_ms - 1000 else position_ms end as position_ms,
        bitrate_kbps,
        case when bitrate_kbps >= 6000 then '4K' when bitrate_kbps >= 3000 then 'HD' else 'SD' end as quality
    from base
),
json as (
    select
        event_id, defect, aux, arrival_ms,
        case
            when not has_quality and not new_app then to_json({{
                'event_id': event_id, 'event_type': event_type, 'user_id': user_id,
                'session_id': session_id, 'show_id': show_id, 'episode_id': episode_id,
                'occurred_at': occurred_at, 'device': device, 'position_ms': position_ms,
                'bitrate_kbps': bitrate_kbps,
                'context': {{'app_version': app_version, 'os': os, 'network': network, 'country': country}}}})
            when has_quality and not new_app then to_json({{
                'event_id': event_id, 'event_type': event_type, 'user_id': user_id,
                'session_id': session_id, 'show_id': show_id, 'episode_id': episode_id,
                'occurred_at': occurred_at, 'device': device, 'position_ms': position_ms,
                'bitrate_kbps': bitrate_kbps, 'quality': quality,
                'context': {{'app_version': app_version, 'os': os, 'network': network, 'country': country}}}})
            when not has_quality and new_app then to_json({{
                'event_id': event_id, 'event_type': event_type, 'user_id': user_id,
                'session_id': session_id, 'show_id': show_id, 'episode_id': episode_id,
                'occurred_at': occurred_at, 'device': device, 'playhead_ms': position_ms,
                'bitrate_kbps': bitrate_kbps,
                'context': {{'app_version': app_version, 'os': os, 'network': network, 'country': country}}}})
            else to_json({{
                'event_id': event_id, 'event_type': event_type, 'user_id': user_id,
                'session_id': session_id, 'show_id': show_id, 'episode_id': episode_id,
                'occurred_at': occurred_at, 'device': device, 'playhead_ms': position_ms,
                'bitrate_kbps': bitrate_kbps, 'quality': quality,
                'context': {{'app_version': app_version, 'os': os, 'network': network, 'country': country}}}})
        end::varchar as line
    from fields
),
copies as (
    select event_id, 0 as copy, arrival_ms, defect, aux, line from json
    union all
    -- a re-sent event: the same line again, up to two hours later
    select event_id, 1 as copy, arrival_ms + (aux * 7200000)::bigint, defect, aux, line
    from json where defect = 1
)
select
    arrival_ms,
    event_id,
    copy,
    case when defect = 1 and copy = 0 then 0 else defect end as defect,
    case when defect = 3 then left(line, (length(line) * (0.3 + 0.5 * aux))::bigint) else line end as line
from copies
"""


LINES_SCHEMA = pa.schema(
    [
        ("arrival_ms", pa.int64()),
        ("event_id", pa.string()),
        ("copy", pa.int32()),
        ("defect", pa.int64()),
        ("line", pa.string()),
    ]
)


def empty_lines() -> pa.Table:
    """An empty table of event lines (the shape `event_lines` returns)."""
    return LINES_SCHEMA.empty_table()


def lines_table(frame: pd.DataFrame | None) -> pa.Table:
    """Event lines kept as a frame (the simulator's saved state) as a table."""
    if frame is None or not len(frame):
        return empty_lines()
    return pa.Table.from_pandas(frame, preserve_index=False).cast(LINES_SCHEMA)


def event_file(landing: Path, arrival_hour_ms: int) -> Path:
    stamp = datetime.fromtimestamp(arrival_hour_ms / 1000, tz=UTC)
    return landing / "events" / f"date={stamp:%Y-%m-%d}" / f"events_{stamp:%Y%m%dT%H}.ndjson"


def write_event_files(
    landing: Path, lines: pa.Table, until_ms: int
) -> tuple[pa.Table, pd.DataFrame, int]:
    """Write every hour file whose hour ended by `until_ms`; return (pending, defects, lines written).

    A file's bytes are cut straight out of the sorted lines' Arrow buffer (each line with
    its newline): no Python string per line.
    """
    arrival = lines.column("arrival_ms").to_numpy()
    pending = lines.filter(pa.array(arrival >= until_ms))
    due = lines.filter(pa.array(arrival < until_ms)).sort_by(
        [("arrival_ms", "ascending"), ("event_id", "ascending"), ("copy", "ascending")]
    )
    n = due.num_rows
    hour = (due.column("arrival_ms").to_numpy() // 3_600_000) * 3_600_000
    cuts = np.flatnonzero(np.diff(hour)) + 1
    starts = np.concatenate([[0], cuts]).astype(np.int64) if n else np.array([], dtype=np.int64)
    ends = np.concatenate([cuts, [n]]).astype(np.int64) if n else np.array([], dtype=np.int64)
    text = pc.binary_join_element_wise(due.column("line"), "", "\n").combine_chunks()
    if n:
        data = text.buffers()[2]
        bounds = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset :][: n + 1]
    files = np.empty(n, dtype=object)
    for a, b in zip(starts, ends, strict=True):
        path = event_file(landing, int(hour[a]))
        atomic_write(path, data[int(bounds[a]) : int(bounds[b])].to_pybytes())
        files[a:b] = str(path.relative_to(landing))
    defect = due.column("defect").to_numpy()
    bad = defect > 0
    defects = pd.DataFrame(
        {
            "source": "events",
            "kind": np.array(EVENT_DEFECTS)[defect[bad] - 1],
            "record_id": due.column("event_id").to_numpy(zero_copy_only=False)[bad],
            "file": files[bad],
        }
    )
    return pending, defects, n
