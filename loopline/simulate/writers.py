"""Turn simulated days into the files and tables a real company would have.

- viewing events: NDJSON, one file per arrival hour, under landing/events/date=.../
- payments: the billing vendor's daily CSV export (its date format changes over time)
- support tickets: free text, one NDJSON file a day
- the catalogue: parquet files behind the vendor's HTTP API
- the OLTP database: users, plans, prices, subscriptions, updated in place

Every landing file is written once, atomically (temp file, then rename), and its lines
are sorted by a total order, so the same seed always gives the same bytes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline.simulate import model as m
from loopline.simulate.engine import S_DEFECTS, day_epoch, day_streams
from loopline.simulate.state import SimState

EVENT_DEFECTS = (
    "duplicate", "null_user_id", "malformed_json", "negative_position",
    "unparseable_timestamp", "orphan_show", "orphan_user",
)  # fmt: skip
PAYMENT_DEFECTS = ("duplicate", "null_amount", "unparseable_date", "orphan_customer")
TICKET_DEFECTS = ("orphan_requester",)
USER_DEFECTS = {1: "future_birth_date", 2: "null_country"}
PAYMENT_FORMATS = (  # the vendor changed its export format twice
    (0, "%d.%m.%Y %H:%M:%S"),
    (30, "%Y-%m-%dT%H:%M:%SZ"),
    (75, "%m/%d/%Y %I:%M:%S %p"),
)
CORRUPT_EVERY_DAYS = 45  # a partial upload the loader cannot parse at all
_FIRST = ("ava", "ben", "chloe", "dev", "elif", "farah", "gus", "hana", "ivo", "jun", "kofi", "lena",
          "mateo", "nia", "omar", "priya", "quinn", "rosa", "sven", "tara", "uma", "vik", "wen", "yara")  # fmt: skip
_LAST = ("adams", "berg", "costa", "dubois", "eze", "fischer", "garcia", "haddad", "ito", "jensen",
         "khan", "lopez", "moreau", "novak", "okafor", "park", "rossi", "silva", "tanaka", "weber")  # fmt: skip
_DOMAINS = ("example.com", "mail.example.org", "inbox.example.net", "example.co.uk")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def user_emails(state: SimState, idx: np.ndarray) -> np.ndarray:
    u = state.users
    return np.array(
        [
            f"{_FIRST[u['first_name'][i] % len(_FIRST)]}.{_LAST[u['last_name'][i] % len(_LAST)]}"
            f"{u['user_id'][i]}@{_DOMAINS[u['user_id'][i] % len(_DOMAINS)]}"
            for i in idx
        ],
        dtype=object,
    )


def _iso(epoch: np.ndarray) -> np.ndarray:
    return pd.to_datetime(epoch, unit="s").strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()


# -- viewing events ----------------------------------------------------------------------
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


# -- payments ---------------------------------------------------------------------------------
def payment_format(day: int) -> str:
    fmt = PAYMENT_FORMATS[0][1]
    for first_day, candidate in PAYMENT_FORMATS:
        if day >= first_day:
            fmt = candidate
    return fmt


def write_payments(
    state: SimState, landing: Path, day: int, pay: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """Write the vendor's CSV export of one day; return its injected defects and rows written."""
    cfg = state.config
    d = cfg.date_of(day)
    path = landing / "payments" / f"payments_{d:%Y%m%d}.csv"
    u = state.users
    idx = pay["user_idx"].to_numpy()
    r = np.random.default_rng([cfg.seed, day + 10_000, 7])
    k = len(pay)
    draw = r.random(k)
    aux = r.random(k)
    p = cfg.defect_rate * 2 / len(PAYMENT_DEFECTS)  # payments are few: defects a little likelier
    kind = np.where(
        draw < p * len(PAYMENT_DEFECTS),
        1 + np.minimum((draw / p).astype(np.int64), len(PAYMENT_DEFECTS) - 1),
        0,
    )
    currency = np.array([m.CURRENCY[c] for c in m.COUNTRIES])[u["country"][idx]]
    email = user_emails(state, idx)
    quirk = aux < 0.15  # the vendor upper-cases some addresses and pads others
    email = np.where(quirk, np.char.upper(email.astype(str)), email)
    email = np.where((aux > 0.95), np.char.add(email.astype(str), " "), email)
    created = (
        pd.to_datetime(pay["created_at"].to_numpy(), unit="s")
        .strftime(payment_format(day))
        .to_numpy()
    )
    frame = pd.DataFrame(
        {
            "payment_id": [f"py_{key:016x}" for key in pay["payment_key"].to_numpy()],
            "customer_ref": [
                f"cus_{(int(uid) * 2654435761) % 2**32:08x}" for uid in u["user_id"][idx]
            ],
            "customer_email": email,
            "type": pay["type"].to_numpy(),
            "status": pay["status"].to_numpy(),
            "amount_minor": pd.array(pay["amount_minor"].to_numpy(), dtype="Int64"),
            "currency": currency,
            "created": created,
            "failure_reason": pay["failure_reason"].to_numpy(),
        }
    )
    names = np.array(("", *PAYMENT_DEFECTS))[kind]
    frame.loc[names == "null_amount", "amount_minor"] = pd.NA
    frame.loc[names == "unparseable_date", "created"] = np.where(
        aux[names == "unparseable_date"] < 0.5, "31/02/2026 99:99", "N/A"
    )
    orphan = names == "orphan_customer"
    frame.loc[orphan, "customer_email"] = [
        f"ghost{i}@unknown.example" for i in np.flatnonzero(orphan)
    ]
    frame.loc[orphan, "customer_ref"] = [f"cus_ghost{i:04d}" for i in np.flatnonzero(orphan)]
    dup = names == "duplicate"
    out = pd.concat([frame, frame[dup]], ignore_index=True)  # the vendor re-sent these rows
    atomic_write(path, out.to_csv(index=False, lineterminator="\n").encode())
    defects = pd.DataFrame(
        {
            "source": "payments",
            "kind": names[kind > 0],
            "record_id": frame["payment_id"].to_numpy()[kind > 0],
            "file": str(path.relative_to(landing)),
        }
    )
    if day % CORRUPT_EVERY_DAYS == CORRUPT_EVERY_DAYS - 1:
        bad = path.with_name(f"payments_{d:%Y%m%d}_part2.csv")
        atomic_write(bad, np.random.default_rng([cfg.seed, day, 99]).bytes(2048))
        defects = pd.concat(
            [
                defects,
                pd.DataFrame(
                    {
                        "source": ["payments"],
                        "kind": ["unreadable_file"],
                        "record_id": [bad.name],
                        "file": [str(bad.relative_to(landing))],
                    }
                ),
            ],
            ignore_index=True,
        )
    return defects, len(out)


# -- tickets ------------------------------------------------------------------------------------
def write_tickets(state: SimState, landing: Path, day: int, tickets: pd.DataFrame) -> pd.DataFrame:
    """Write one day of support tickets (free text) as NDJSON; return injected defects."""
    cfg = state.config
    d = cfg.date_of(day)
    path = landing / "tickets" / f"tickets_{d:%Y%m%d}.ndjson"
    idx = tickets["user_idx"].to_numpy()
    r = np.random.default_rng([cfg.seed, day + 10_000, 8])
    orphan = r.random(len(tickets)) < cfg.defect_rate * 5
    email = user_emails(state, idx)
    shows = state.shows["title"].to_numpy()
    rows = []
    for i, t in enumerate(tickets.itertuples(index=False)):
        category = m.TICKET_CATEGORIES[t.category]
        template = m.TICKET_TEMPLATES[category][t.template]
        core = template.format(
            plan=m.PLANS[int(state.users["plan_id"][t.user_idx]) - 1][1],
            amount=f"{9 + t.template}.99",
            device=m.DEVICES[int(state.users["device"][t.user_idx])],
            show=shows[(t.ticket_key % len(shows))],
            genre=m.GENRES[t.ticket_key % len(m.GENRES)],
        )
        body = " ".join(
            x for x in (m.TICKET_OPENERS[t.opener], core, m.TICKET_CLOSERS[t.closer]) if x
        )
        rows.append(
            {
                "ticket_id": f"tk_{t.ticket_key:016x}",
                "requester_email": f"someone{i}@unknown.example" if orphan[i] else email[i],
                "created_at": _iso(np.array([t.created_at]))[0],
                "channel": ("email", "chat")[t.channel],
                "subject": " ".join(core.split()[:6]).rstrip(".,?!"),
                "body": body,
            }
        )
    frame = pd.DataFrame(
        rows, columns=["ticket_id", "requester_email", "created_at", "channel", "subject", "body"]
    )
    atomic_write(path, frame.to_json(orient="records", lines=True).encode() if len(frame) else b"")
    return pd.DataFrame(
        {
            "source": "tickets",
            "kind": "orphan_requester",
            "record_id": frame["ticket_id"].to_numpy()[orphan],
            "file": str(path.relative_to(landing)),
        }
    )


# -- catalogue ----------------------------------------------------------------------------------
def write_catalogue(state: SimState, folder: Path) -> None:
    """The vendor's catalogue database, as the parquet files its API serves."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    shows = state.shows
    table = pa.table(
        {
            "show_id": pa.array(shows["show_id"].tolist(), pa.string()),
            "title": pa.array(shows["title"].tolist(), pa.string()),
            "genres": pa.array([list(g) for g in shows["genres"]], pa.list_(pa.string())),
            "cast": pa.array(
                [[dict(c) for c in cast] for cast in shows["cast"]],
                pa.list_(
                    pa.struct(
                        [("name", pa.string()), ("role", pa.string()), ("character", pa.string())]
                    )
                ),
            ),
            "release_date": pa.array(
                pd.to_datetime(shows["release_date"]).dt.date.tolist(), pa.date32()
            ),
            "maturity_rating": pa.array(shows["maturity_rating"].tolist(), pa.string()),
            "language": pa.array(shows["language"].tolist(), pa.string()),
            "description": pa.array(shows["description"].tolist(), pa.string()),
            "updated_at": pa.array(
                shows["updated_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
        }
    )
    eps = state.episodes
    episodes = pa.table(
        {
            "episode_id": pa.array(eps["episode_id"].tolist(), pa.string()),
            "show_id": pa.array(eps["show_id"].tolist(), pa.string()),
            "season": pa.array(eps["season"].to_numpy(), pa.int32()),
            "episode_number": pa.array(eps["episode_number"].to_numpy(), pa.int32()),
            "title": pa.array(eps["title"].tolist(), pa.string()),
            "duration_s": pa.array(eps["duration_s"].to_numpy(), pa.int32()),
            "released_at": pa.array(
                eps["released_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "updated_at": pa.array(
                eps["updated_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
        }
    )
    for name, tab in (("shows.parquet", table), ("episodes.parquet", episodes)):
        tmp = folder / f".{name}.tmp"
        pq.write_table(tab, tmp)
        os.replace(tmp, folder / name)


# -- the OLTP database ------------------------------------------------------------------------
_DDL = {
    "users": """create table if not exists src.users (
        user_id bigint primary key, email varchar not null, signup_at timestamp not null,
        country varchar, birth_date date, acquisition_channel varchar, primary_device varchar,
        updated_at timestamp not null)""",
    "plans": """create table if not exists src.plans (
        plan_id integer primary key, name varchar not null, max_streams integer not null)""",
    "plan_prices": """create table if not exists src.plan_prices (
        plan_id integer not null, currency varchar not null, monthly_price_minor bigint not null,
        updated_at timestamp not null, primary key (plan_id, currency))""",
    "subscriptions": """create table if not exists src.subscriptions (
        subscription_id bigint primary key, user_id bigint not null, plan_id integer not null,
        status varchar not null, started_at timestamp not null, paused_at timestamp,
        resume_on date, cancelled_at timestamp, updated_at timestamp not null)""",
}


OLTP_TABLES = tuple(_DDL)


def write_oltp(state: SimState, url: str, since_epoch: int) -> None:
    """Upsert what changed since `since_epoch` into the OLTP database (SQLite or Postgres)."""
    from loopline.warehouse import attach_source

    u = state.users
    cfg = state.config
    con = duckdb.connect()
    attach_source(con, url)
    for ddl in _DDL.values():
        con.execute(ddl)
    # users: new sign-ups (a user row never changes after sign-up here)
    new = (
        np.flatnonzero(u["signup_at"] >= since_epoch)
        if since_epoch > 0
        else np.arange(state.n_users)
    )
    users = pd.DataFrame(
        {
            "user_id": u["user_id"][new],
            "email": user_emails(state, new),
            "signup_at": pd.to_datetime(u["signup_at"][new], unit="s"),
            "country": np.where(
                u["defect"][new] == 2, None, np.array(m.COUNTRIES, dtype=object)[u["country"][new]]
            ),
            "birth_date": pd.to_datetime(u["birth_date"][new].astype(np.int64), unit="D").date,
            "acquisition_channel": np.array(m.CHANNELS)[u["channel"][new]],
            "primary_device": np.array(m.DEVICES)[u["device"][new]],
            "updated_at": pd.to_datetime(u["signup_at"][new], unit="s"),
        }
    )
    changed = (
        np.flatnonzero((u["sub_updated_at"] >= since_epoch) | (u["signup_at"] >= since_epoch))
        if since_epoch > 0
        else np.arange(state.n_users)
    )
    status = np.array(["active", "paused", "cancelled"])[u["status"][changed]]
    subs = pd.DataFrame(
        {
            "subscription_id": 100_000 + u["user_id"][changed],
            "user_id": u["user_id"][changed],
            "plan_id": u["plan_id"][changed].astype(np.int32),
            "status": status,
            "started_at": pd.to_datetime(u["sub_started_at"][changed], unit="s"),
            "paused_at": pd.to_datetime(
                np.where(
                    u["paused_at"][changed] >= 0, u["paused_at"][changed], np.iinfo(np.int64).min
                ),
                unit="s",
                errors="coerce",
            ),
            "resume_on": [
                cfg.date_of(int(d)) if s == "paused" else None
                for d, s in zip(u["resume_day"][changed], status, strict=True)
            ],
            "cancelled_at": pd.to_datetime(
                np.where(
                    u["cancelled_at"][changed] >= 0,
                    u["cancelled_at"][changed],
                    np.iinfo(np.int64).min,
                ),
                unit="s",
                errors="coerce",
            ),
            "updated_at": pd.to_datetime(u["sub_updated_at"][changed], unit="s"),
        }
    )
    plans = pd.DataFrame(
        {
            "plan_id": [p[0] for p in m.PLANS],
            "name": [p[1] for p in m.PLANS],
            "max_streams": [p[3] for p in m.PLANS],
        }
    )
    prices = []
    for plan_id, _, usd, _ in m.PLANS:
        for cur in sorted(set(m.CURRENCY.values())):
            local = usd * state.plan_price_factor * m.FX_PER_USD[cur]
            minor = (
                int(round(local / 10) * 10)
                if m.MINOR_EXPONENT[cur] == 0
                else int(np.floor(local) * 100 + 99)
            )
            prices.append(
                (
                    plan_id,
                    cur,
                    minor,
                    pd.Timestamp(
                        state.plan_prices_updated_at or day_epoch(cfg, 0) - 86_400 * 800, unit="s"
                    ),
                )
            )
    plan_prices = pd.DataFrame(
        prices, columns=["plan_id", "currency", "monthly_price_minor", "updated_at"]
    )
    for table, frame, keys in (
        ("plans", plans, ["plan_id"]),
        ("plan_prices", plan_prices, ["plan_id", "currency"]),
        ("users", users, ["user_id"]),
        ("subscriptions", subs, ["subscription_id"]),
    ):
        con.register("incoming", frame)
        match = " and ".join(f"t.{k} = i.{k}" for k in keys)
        con.execute("begin")
        con.execute(
            f"delete from src.{table} t where exists (select 1 from incoming i where {match})"
        )
        con.execute(f"insert into src.{table} select * from incoming order by {', '.join(keys)}")
        con.execute("commit")
        con.unregister("incoming")
    con.close()
