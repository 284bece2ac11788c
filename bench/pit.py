"""Point-in-time training sets against a hand-written ASOF JOIN and pandas (issue 14, row 2).

    python -m bench.pit              # 1M entity rows against 5M feature rows of 50k keys
    python -m bench.pit --quick      # 20,000 against 100,000 rows of 1,000 keys

loopline's side is `ml.features.pit.build_training_set` with a TTL and ``as_known_at=True``:
for each entity row (key, t) the feature row of that key with the latest
``feature_timestamp`` <= t that was already known at t (``created_at`` <= t), no older than
the TTL; ties on ``feature_timestamp`` go to the latest ``created_at``, then the latest
``feature_set_version``. The two alternatives implement the same rules:

- **DuckDB `ASOF JOIN`**, as one would write it by hand: a row can be used from its
  *knowledge time* ``greatest(feature_timestamp, created_at)`` on, so the key's rows are
  ranked in the rules' order, a running maximum of that rank in knowledge-time order gives
  the best row known at each instant, one ASOF JOIN on the knowledge time picks it, and the
  TTL is checked on the winner (if the best row known at t is too old, so is every other).
  (Carrying the whole winning row in a running ``arg_max`` of structs instead was about 3x
  slower.)
- **pandas `merge_asof`**: the same plan in pandas (the feature rows read from the warehouse
  into a frame, a running maximum per key with ``groupby().cummax()``, ``merge_asof`` with
  ``by=`` the key, then the TTL), from the same DuckDB file.

The data (seeded, made here, not in the repo): feature rows of 50k keys spread over a year,
with ``created_at`` a few hours after ``feature_timestamp`` (a tenth of them days late), 5% of
them restatements of an earlier row (same key and time, new values, created later), a few
with an unknown ``created_at``, two feature-set versions; entity rows at random instants, 5%
of them on keys without features. The rules' last tie-break (smallest feature values) never
applies to this data: the bench checks (key, feature_timestamp, created_at) is unique, so
the alternatives need not implement it. All three outputs must be identical (same rows, in
the entity rows' order, same values and NULLs) before a ratio is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from bench.fixture import bench_settings
from bench.memory import timed

TABLE = "features.fs_bench__pit"
KEY = "user_id"
FEATURES = ("spend_30d", "visits_30d", "score", "share", "sessions", "segment")
TTL = timedelta(days=5)
START = datetime(2025, 1, 1)
SPAN_S = 365 * 86_400
TARGET_ASOF = 1.5  # loopline at most 1.5x the ASOF JOIN's time
TARGET_PANDAS = 5.0  # loopline at least 5x faster than pandas
FULL = {"entity_rows": 1_000_000, "feature_rows": 5_000_000, "keys": 50_000}
QUICK = {"entity_rows": 20_000, "feature_rows": 100_000, "keys": 1_000}


# --------------------------------------------------------------------------------------------
# the data


def feature_rows(rows: int, keys: int, seed: int = 2) -> pd.DataFrame:
    """`rows` feature rows of `keys` keys (see the module docstring), deterministic."""
    rng = np.random.default_rng(seed)
    originals = rows - rows // 20
    key = rng.integers(0, keys, originals)
    ft_s = rng.integers(0, SPAN_S, originals)
    # restatements: the same key and feature_timestamp as an earlier row, created later
    again = rng.integers(0, originals, rows - originals)
    key = np.concatenate([key, key[again]])
    ft_s = np.concatenate([ft_s, ft_s[again]])
    lag_s = rng.exponential(3 * 3600, rows).astype(np.int64)
    late = rng.random(rows) < 0.1
    lag_s[late] += rng.integers(86_400, 10 * 86_400, int(late.sum()))
    lag_s[originals:] += rng.integers(3600, 20 * 86_400, rows - originals)
    ft = np.datetime64(START, "us") + ft_s.astype("timedelta64[s]").astype("timedelta64[us]")
    created = ft + (lag_s * 1_000_000 + rng.integers(0, 1_000_000, rows)).astype("timedelta64[us]")
    created_at = pd.Series(created)
    created_at[rng.random(rows) < 0.002] = pd.NaT  # unknown arrival: never known
    spend = np.round(rng.gamma(2.0, 20.0, rows), 2)
    share = rng.random(rows)
    share[rng.random(rows) < 0.03] = np.nan
    frame = pd.DataFrame(
        {
            KEY: key.astype(np.int64),
            "feature_timestamp": ft,
            "created_at": created_at,
            "feature_set_version": np.where(ft_s < SPAN_S // 2, "v1", "v2"),
            "spend_30d": spend,
            "visits_30d": rng.poisson(6.0, rows).astype(np.float64),
            "score": rng.normal(0.0, 1.0, rows),
            "share": share,
            "sessions": rng.poisson(12.0, rows).astype(np.int64),
            "segment": np.array(["new", "casual", "regular", "heavy"], dtype=object)[
                rng.integers(0, 4, rows)
            ],
        }
    )
    # the last tie-break (smallest feature values) is left out of the alternatives: make it moot
    return frame.drop_duplicates([KEY, "feature_timestamp", "created_at"], ignore_index=True)


def entity_rows(rows: int, keys: int, seed: int = 3) -> pd.DataFrame:
    """`rows` entity rows (key, event_timestamp, a label); 5% on keys without features."""
    rng = np.random.default_rng(seed)
    t = np.datetime64(START, "us") + rng.integers(0, SPAN_S * 1_000_000, rows).astype(
        "timedelta64[us]"
    )
    return pd.DataFrame(
        {
            KEY: rng.integers(0, keys + keys // 20, rows).astype(np.int64),
            "event_timestamp": t,
            "label": rng.random(rows) < 0.2,
        }
    )


def load(con: duckdb.DuckDBPyConnection, features: pd.DataFrame) -> None:
    """The feature rows as a warehouse table (what the PIT builder reads)."""
    con.execute("create schema if not exists features")
    con.register("bench_feature_rows", features)
    con.execute(f"create or replace table {TABLE} as select * from bench_feature_rows")
    con.unregister("bench_feature_rows")
    con.execute("checkpoint")
    (dupes,) = con.execute(
        f"select count(*) from (select 1 from {TABLE} group by {KEY}, feature_timestamp, "
        "created_at having count(*) > 1)"
    ).fetchone()
    if dupes:
        raise AssertionError(f"{dupes} (key, feature_timestamp, created_at) repeat in the data")


# --------------------------------------------------------------------------------------------
# the three sides


def side_loopline(con: duckdb.DuckDBPyConnection, entities: pd.DataFrame) -> pd.DataFrame:
    from ml.features.pit import FeatureRequest, build_training_set

    request = FeatureRequest(TABLE, (KEY,), FEATURES, TTL)
    return build_training_set(con, entities, [request], as_known_at=True).frame


ASOF_SQL = """
with
ranked as (
    -- a row can be used from the moment both its time and its arrival have passed (known_at);
    -- r ranks a key's rows by the rules' order: latest time, then arrival, then version
    select
        {key}, feature_timestamp, {features},
        greatest(feature_timestamp, created_at) as known_at,
        row_number() over (
            partition by {key} order by feature_timestamp, created_at, feature_set_version
        ) as r
    from {table}
    where {key} is not null and feature_timestamp is not null and created_at is not null
),
best_known as (
    -- the best rank known at each instant: a running maximum in knowledge-time order
    select {key}, known_at, max(max(r)) over (partition by {key} order by known_at) as best
    from ranked
    group by {key}, known_at
),
matched as (
    select e.rid, e.{key}, e.event_timestamp, e.label, k.best
    from bench_entities as e
    asof left join best_known as k on e.{key} = k.{key} and e.event_timestamp >= k.known_at
)
select m.{key}, m.event_timestamp, m.label, {picked}
from matched as m
left join ranked as f
    on f.{key} = m.{key} and f.r = m.best
    and f.feature_timestamp >= m.event_timestamp - interval {ttl_s} seconds
order by m.rid
"""


def side_asof(con: duckdb.DuckDBPyConnection, entities: pd.DataFrame) -> pd.DataFrame:
    """The hand-written ASOF JOIN (module docstring), entity rows staged in a temp table."""
    sql = ASOF_SQL.format(
        key=KEY,
        table=TABLE,
        features=", ".join(FEATURES),
        picked=", ".join(f"f.{f}" for f in FEATURES),
        ttl_s=int(TTL.total_seconds()),
    )
    con.register("bench_entity_frame", entities)
    try:
        con.execute(
            "create or replace temp table bench_entities as "
            "select row_number() over () as rid, * from bench_entity_frame"
        )
    finally:
        con.unregister("bench_entity_frame")
    try:
        return con.sql(sql).df()
    finally:
        con.execute("drop table if exists bench_entities")


def side_pandas(con: duckdb.DuckDBPyConnection, entities: pd.DataFrame) -> pd.DataFrame:
    """The same plan with pandas: read the feature rows, running best per key, merge_asof."""
    rows = con.table(TABLE).df()
    rows = rows[rows[KEY].notna() & rows["feature_timestamp"].notna() & rows["created_at"].notna()]
    # rank the rows of a key by (time, arrival, version): the winner has the highest rank
    rows = rows.sort_values([KEY, "feature_timestamp", "created_at", "feature_set_version"])
    rows = rows.reset_index(drop=True)
    ranked = pd.DataFrame(
        {
            KEY: rows[KEY].to_numpy(),
            "known_at": np.maximum(rows["feature_timestamp"], rows["created_at"]).to_numpy(),
            "rank": np.arange(len(rows)),
        }
    ).sort_values(["known_at", "rank"], kind="stable")
    ranked["best"] = ranked.groupby(KEY)["rank"].cummax()
    left = entities.assign(rid=np.arange(len(entities))).sort_values(
        "event_timestamp", kind="stable"
    )
    matched = pd.merge_asof(
        left,
        ranked[["known_at", KEY, "best"]],
        left_on="event_timestamp",
        right_on="known_at",
        by=KEY,
        direction="backward",
    ).sort_values("rid", kind="stable")
    best = matched["best"].to_numpy()
    found = ~np.isnan(best)
    picked = rows.iloc[best[found].astype(np.int64)]
    fresh = np.zeros(len(matched), dtype=bool)
    fresh[found] = picked["feature_timestamp"].to_numpy() >= (
        matched["event_timestamp"].to_numpy()[found] - np.timedelta64(TTL)
    )
    out = matched[[KEY, "event_timestamp", "label"]].reset_index(drop=True)
    use = fresh[found]
    for feature in FEATURES:
        values = picked[feature].to_numpy()
        column = pd.Series([None] * len(out), dtype=object if values.dtype == object else float)
        column.iloc[np.flatnonzero(found)[use]] = values[use]
        out[feature] = column
    return out


# --------------------------------------------------------------------------------------------
# equal outputs


def _canonical(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each column as floats (NaN for NULL), int64 times, or objects (None for NULL)."""
    out: dict[str, np.ndarray] = {}
    for column in (KEY, "event_timestamp", "label", *FEATURES):
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[column] = series.astype("datetime64[us]").to_numpy().astype(np.int64)
        elif pd.api.types.is_bool_dtype(series):
            out[column] = series.to_numpy(dtype=bool)
        elif pd.api.types.is_numeric_dtype(series):
            out[column] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[column] = np.array([None if pd.isna(v) else str(v) for v in series], dtype=object)
    return out


def same_rows(name: str, ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Raise AssertionError naming the first column that differs."""
    if len(ours) != len(theirs):
        raise AssertionError(f"{name}: {len(theirs):,} rows, loopline {len(ours):,}")
    a, b = _canonical(ours), _canonical(theirs)
    for column in a:
        x, y = a[column], b[column]
        equal = (
            np.array_equal(x, y, equal_nan=True) if x.dtype == np.float64 else np.array_equal(x, y)
        )
        if not equal:
            raise AssertionError(f"{name}: column {column} differs from loopline's")


# --------------------------------------------------------------------------------------------
# timing


SIDES: dict[str, Callable[[duckdb.DuckDBPyConnection, pd.DataFrame], pd.DataFrame]] = {
    "loopline": side_loopline,
    "asof": side_asof,
    "pandas": side_pandas,
}


def run_pit(
    entity_count: int, feature_count: int, keys: int, runs: int, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Check the three outputs equal, then `runs` interleaved timed runs of each side."""
    from loopline.warehouse import connect

    features = feature_rows(feature_count, keys)
    entities = entity_rows(entity_count, keys)
    with tempfile.TemporaryDirectory(prefix="bench-pit-") as work:
        con = connect(Path(work) / "pit.duckdb", bench_settings(Path(work)))
        try:
            load(con, features)
            stored = len(features)
            del features
            say(f"pit: {entity_count:,} entity rows, {stored:,} feature rows; checking outputs")
            # the first run of each side is the warm-up and gives the outputs to compare
            outputs = {side: call(con, entities) for side, call in SIDES.items()}
            same_rows("ASOF JOIN", outputs["loopline"], outputs["asof"])
            same_rows("pandas merge_asof", outputs["loopline"], outputs["pandas"])
            matched = int(outputs["loopline"]["spend_30d"].notna().sum())
            del outputs
            measured: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
            for i in range(runs):
                for side, call in SIDES.items():
                    _, seconds, mb = timed(lambda call=call: call(con, entities))
                    measured[side].append((seconds, mb))
                say(
                    f"pit: run {i + 1}/{runs}: "
                    + ", ".join(f"{s} {m[-1][0]:.2f} s" for s, m in measured.items())
                )
        finally:
            con.close()
    medians = {
        side: {
            "median_s": statistics.median(s for s, _ in values),
            "runs_s": [round(s, 3) for s, _ in values],
            "peak_rss_added_mb": max(mb for _, mb in values),
        }
        for side, values in measured.items()
    }
    ours = medians["loopline"]["median_s"]
    return {
        "entity_rows": entity_count,
        "feature_rows": stored,
        "keys": keys,
        "ttl_days": TTL.days,
        "runs": runs,
        "matched_rows": matched,
        "verification": {"rows": entity_count, "columns": 3 + len(FEATURES), "identical": True},
        **medians,
        "ratio_vs_asof": ours / medians["asof"]["median_s"],
        "speedup_vs_pandas": medians["pandas"]["median_s"] / ours,
        "target_vs_asof": TARGET_ASOF,
        "target_vs_pandas": TARGET_PANDAS,
    }


def pit_body(d: dict[str, Any]) -> list[str]:
    """The row's section of the results file (below its targets table)."""
    asof = d["asof"]["median_s"]
    lines = [
        "",
        f"{d['entity_rows']:,} entity rows against {d['feature_rows']:,} feature rows of "
        f"{d['keys']:,} keys (seeded synthetic data made by bench/pit.py: late arrivals, "
        f"restatements, unknown arrival times), TTL {d['ttl_days']} days, as-known-at; "
        f"{d['matched_rows']:,} entity rows get features. All three outputs identical (every "
        "row in the entity rows' order, every value and NULL) before any ratio. A warm-up of "
        f"each side, then the median of {d['runs']} interleaved runs in one process on one "
        "DuckDB connection (2 threads).",
        "",
        "| side | median | runs | vs ASOF JOIN | peak RSS added |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("loopline", "`build_training_set(..., as_known_at=True)` (ml/features/pit.py)"),
        ("asof", "hand-written DuckDB ASOF JOIN on the knowledge time"),
        ("pandas", "pandas `merge_asof` (feature rows read into pandas)"),
    ):
        side = d[key]
        lines.append(
            f"| {label} | {side['median_s']:.2f} s | "
            + ", ".join(f"{s:.2f}" for s in side["runs_s"])
            + f" | {side['median_s'] / asof:.2f}x | {side['peak_rss_added_mb']:,.0f} MB |"
        )
    lines += [
        "",
        "Peak RSS added: above the process's RSS before the call (DuckDB keeps the table's "
        "blocks cached between calls, so compare it loosely).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 vs 100,000 rows, one run")
    parser.add_argument("--entity-rows", type=int)
    parser.add_argument("--feature-rows", type=int)
    parser.add_argument("--keys", type=int)
    parser.add_argument("--runs", type=int)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    result = run_pit(
        args.entity_rows or size["entity_rows"],
        args.feature_rows or size["feature_rows"],
        args.keys or size["keys"],
        args.runs or (1 if args.quick else 5),
    )
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
