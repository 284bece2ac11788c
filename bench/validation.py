"""Data validation of a 5-million-row feature table (issue 14, row 1).

    python -m bench.validation            # 50,000 users x 100 days of features.fs_churn__user_daily
    python -m bench.validation --quick    # 500 users x 20 days
    python -m bench.run --only validation # the same at full size, rewriting its RESULTS.md section

loopline's side is the command a user runs, `loopline validate --asset
features.fs_churn__user_daily`: the table's suite derived from its dbt declaration
(expectations/suites/features.py), validated through GX's SQL datasource on DuckDB
(expectations/gx_duckdb.py), Data Docs written, results appended to
``monitoring.validation_results``. The alternatives:

- **one hand-written DuckDB SQL pass** computing the same checks (row count, columns and
  types, nulls, ranges, registered versions, duplicated keys) in one statement;
- **GX's pandas route**: the table read into a pandas frame, the same suite (types named as
  pandas dtypes) validated on a pandas batch.

Each side is a fresh process (the peak RSS of its process tree is sampled, bench/memory.py);
after a warm-up run of each, the runs alternate. Before any ratio, the three must agree on
every check: the verdict, and the observed values (row count, null counts, counts outside a
range or a value set, duplicated keys and the rows carrying them). Type checks compare the
verdict only (GX reports the type in each engine's own names).

The table (seeded, made here, not in the repo): one row per user and day in the contract's
35 columns, two registered feature-set versions, and a bad day's faults so that both
verdicts occur: three duplicated rows (both uniqueness checks fail), five shares above 1 (a
range fails), and a quarter of the users inactive, so the per-session columns are null more
often than the null-rate policy allows (warnings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.fixture import REPO, bench_settings
from bench.memory import clean_env, run_sampled

ASSET = "features.fs_churn__user_daily"
VERSIONS = ("5f1c0a9e2b7d", "8d3e6b1f4a20")  # as dbt's hash would name them
START = date(2025, 6, 1)
TARGET_TIME = 2.0  # loopline validate at most 2x the SQL pass's time
TARGET_MEMORY = 1.5  # and at most 1.5x its peak memory
FULL = {"users": 50_000, "days": 100}
QUICK = {"users": 500, "days": 20}
PLANS = {"basic": 7.99, "standard": 12.99, "premium": 19.99}
TYPES = {  # the contract (models/marts/features/_features__models.yml)
    "user_id": "bigint",
    "as_of_date": "date",
    "feature_timestamp": "timestamp",
    "created_at": "timestamp",
    "feature_set_version": "varchar",
    "watch_minutes_7d": "double",
    "watch_minutes_14d": "double",
    "watch_minutes_30d": "double",
    "sessions_7d": "bigint",
    "sessions_14d": "bigint",
    "sessions_30d": "bigint",
    "active_days_30d": "bigint",
    "log_session_rate_7d": "double",
    "log_session_rate_30d": "double",
    "log_session_rate_90d": "double",
    "log_session_rate_to_date": "double",
    "session_trend_7d_90d": "double",
    "days_since_last_view": "integer",
    "watch_trend_7d": "double",
    "minutes_per_session_30d": "double",
    "genre_days_30d": "bigint",
    "mobile_share_30d": "double",
    "failed_payments_30d": "bigint",
    "has_failed_payment_30d": "integer",
    "failed_payments_90d": "bigint",
    "refunds_90d": "bigint",
    "tickets_30d": "bigint",
    "has_ticket_30d": "integer",
    "billing_tickets_30d": "bigint",
    "cancellation_tickets_30d": "bigint",
    "playback_tickets_30d": "bigint",
    "plan_name": "varchar",
    "plan_price_usd": "double",
    "tenure_days": "integer",
    "log_tenure_months": "double",
    "age_band": "varchar",
    "country": "varchar",
    "acquisition_channel": "varchar",
}


# --------------------------------------------------------------------------------------------
# the table


def feature_table(users: int, days: int, seed: int = 1) -> dict[str, np.ndarray]:
    """One row per user and day (days outer, as daily builds append), deterministic."""
    rng = np.random.default_rng(seed)
    rows = users * days
    day = np.repeat(np.arange(days), users)
    user = np.tile(np.arange(1, users + 1), days)
    active = np.tile(rng.random(users) >= 0.28, days)  # inactive users: no sessions at all
    as_of = np.datetime64(START) + day.astype("timedelta64[D]")
    end_of_day = as_of.astype("datetime64[us]") + np.timedelta64(86_400_000_000 - 1, "us")
    lag = rng.integers(60_000_000, 6 * 3_600_000_000, rows).astype("timedelta64[us]")
    sessions_30 = np.where(active, rng.poisson(14.0, rows), 0)
    sessions_7 = np.minimum(np.where(active, rng.poisson(3.5, rows), 0), sessions_30)
    sessions_14 = np.minimum(sessions_7 + np.where(active, rng.poisson(3.5, rows), 0), sessions_30)
    rate_7 = np.log((sessions_7 + 0.5) / 7)
    rate_30 = np.log((sessions_30 + 0.5) / 30)
    rate_90 = np.log((sessions_30 * rng.uniform(2.5, 3.5, rows) + 0.5) / 90)
    minutes_30 = np.where(sessions_30 > 0, rng.gamma(2.0, 22.0, rows) * sessions_30, 0.0)
    minutes_14 = minutes_30 * rng.uniform(0.3, 0.6, rows)
    minutes_7 = minutes_14 * rng.uniform(0.3, 0.7, rows)
    before = minutes_14 - minutes_7
    per_session = np.where(sessions_30 > 0, minutes_30 / np.maximum(sessions_30, 1), np.nan)
    mobile = np.where(sessions_30 > 0, rng.random(rows), np.nan)
    signup = rng.integers(30, 900, users)
    failed_90 = rng.poisson(0.2, rows)
    failed_30 = np.minimum(failed_90, rng.poisson(0.1, rows))
    tickets = rng.poisson(0.3, rows)
    billing = rng.binomial(tickets, 0.4)
    cancel = rng.binomial(tickets - billing, 0.3)
    plan = np.tile(rng.choice(np.array(list(PLANS), dtype=object), users), days)
    columns: dict[str, np.ndarray] = {
        "user_id": user,
        "as_of_date": as_of,
        "feature_timestamp": end_of_day,
        "created_at": end_of_day + lag,
        "feature_set_version": np.where(day < days // 2, VERSIONS[0], VERSIONS[1]).astype(object),
        "watch_minutes_7d": minutes_7,
        "watch_minutes_14d": minutes_14,
        "watch_minutes_30d": minutes_30,
        "sessions_7d": sessions_7,
        "sessions_14d": sessions_14,
        "sessions_30d": sessions_30,
        "active_days_30d": np.minimum(sessions_30, rng.integers(0, 31, rows)),
        "log_session_rate_7d": rate_7,
        "log_session_rate_30d": rate_30,
        "log_session_rate_90d": rate_90,
        "log_session_rate_to_date": rate_90 + rng.normal(0.0, 0.1, rows),
        "session_trend_7d_90d": rate_7 - rate_90,
        "days_since_last_view": np.where(
            active, rng.integers(0, 8, rows), rng.integers(8, 90, rows)
        ),
        "watch_trend_7d": (minutes_7 - before) / (minutes_7 + before + 1.0),
        "minutes_per_session_30d": per_session,
        "genre_days_30d": np.where(active, rng.poisson(9.0, rows), 0),
        "mobile_share_30d": mobile,
        "failed_payments_30d": failed_30,
        "has_failed_payment_30d": (failed_30 > 0).astype(np.int64),
        "failed_payments_90d": failed_90,
        "refunds_90d": rng.poisson(0.05, rows),
        "tickets_30d": tickets,
        "has_ticket_30d": (tickets > 0).astype(np.int64),
        "billing_tickets_30d": billing,
        "cancellation_tickets_30d": cancel,
        "playback_tickets_30d": tickets - billing - cancel,
        "plan_name": plan,
        "plan_price_usd": np.vectorize(PLANS.get, otypes=[float])(plan),
        "tenure_days": np.tile(signup, days) + day,
        "log_tenure_months": np.log1p((np.tile(signup, days) + day) / 30),
        "age_band": np.tile(
            rng.choice(np.array(["18-24", "25-34", "35-49", "50+"], dtype=object), users), days
        ),
        "country": np.tile(
            rng.choice(np.array(["US", "GB", "DE", "FR", "BR", "IN"], dtype=object), users), days
        ),
        "acquisition_channel": np.tile(
            rng.choice(np.array(["organic", "paid", "referral"], dtype=object), users), days
        ),
    }
    # the bad day: shares above 1 (a critical range) and three rows written twice
    columns["mobile_share_30d"][rng.choice(np.flatnonzero(active), 5, replace=False)] = 1.25
    again = rng.choice(rows, 3, replace=False)
    return {name: np.concatenate([values, values[again]]) for name, values in columns.items()}


def make_warehouse(settings: Any, users: int, days: int) -> int:
    """The table and the feature-set registry in a fresh warehouse; returns its rows."""
    import pandas as pd

    from loopline.warehouse import connect

    frame = pd.DataFrame(feature_table(users, days))
    con = connect(settings.resolved_warehouse_path, settings)
    try:
        con.execute("create schema if not exists features")
        con.register("bench_rows", frame)
        casts = ", ".join(f"{c}::{t} as {c}" for c, t in TYPES.items())
        con.execute(f"create table {ASSET} as select {casts} from bench_rows")
        con.unregister("bench_rows")
        con.execute(
            """
            create table features.feature_sets (
                feature_set_name varchar not null,
                feature_set_version varchar not null,
                definition_hash varchar not null,
                relation_name varchar not null,
                columns_json varchar not null,
                created_at timestamp not null
            )
            """
        )
        columns = json.dumps([{"name": c, "type": t.upper()} for c, t in TYPES.items()])
        for version in VERSIONS:
            con.execute(
                "insert into features.feature_sets values (?, ?, ?, ?, ?, ?)",
                [
                    "churn_user_daily",
                    version,
                    version * 2,
                    f'"loopline"."features"."{ASSET.split(".")[1]}"',
                    columns,
                    datetime(2025, 6, 1),
                ],
            )
        con.execute("checkpoint")
        (rows,) = con.execute(f"select count(*) from {ASSET}").fetchone()
    finally:
        con.close()
    return int(rows)


# --------------------------------------------------------------------------------------------
# the suite, and what each side must report for it


def suite(settings: Any) -> list[Any]:
    """The asset's expectations, built as the runner builds them."""
    from expectations.declared import declared_relations, describe, load_manifest
    from expectations.suites import BuildContext, discover
    from loopline.warehouse import connect

    declared = declared_relations(load_manifest(settings) or {})
    asset = discover(declared)[ASSET]
    con = connect(settings.resolved_warehouse_path, settings, read_only=True)
    try:
        return asset.build(describe(con, ASSET, declared), BuildContext(con=con, physical=ASSET))
    finally:
        con.close()


def label(expectation_type: str, kwargs: dict[str, Any]) -> str:
    from expectations.run import _label

    return _label(expectation_type, kwargs)


# the result fields each kind of check is compared on (types: the verdict only)
COMPARED = {
    "expect_table_row_count_to_be_between": ("success", "observed"),
    "expect_table_columns_to_match_set": ("success",),
    "expect_column_values_to_be_of_type": ("success",),
    "expect_column_values_to_not_be_null": ("success", "unexpected"),
    "expect_column_values_to_be_between": ("success", "unexpected"),
    "expect_column_values_to_be_in_set": ("success", "unexpected"),
    "expect_compound_key_to_be_unique": ("success", "observed", "unexpected"),
}
KINDS = {
    "expect_table_row_count_to_be_between": "row count",
    "expect_table_columns_to_match_set": "columns",
    "expect_column_values_to_be_of_type": "types",
    "expect_column_values_to_not_be_null": "nulls",
    "expect_column_values_to_be_between": "ranges",
    "expect_column_values_to_be_in_set": "value set",
    "expect_compound_key_to_be_unique": "unique keys",
}


def compare(name: str, ours: dict[str, dict], theirs: dict[str, dict]) -> int:
    """Raise AssertionError on the first check the two report differently; return checks."""
    if set(ours) != set(theirs):
        missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        raise AssertionError(f"{name} computes other checks: missing {missing}, extra {extra}")
    for key, mine in ours.items():
        kind = key.split("(", 1)[0]
        if kind not in COMPARED:
            raise AssertionError(f"{name}: no comparison rule for {kind}")
        for field in COMPARED[kind]:
            if mine.get(field) != theirs[key].get(field):
                raise AssertionError(
                    f"{name}: {key} {field} is {theirs[key].get(field)!r}, loopline "
                    f"{mine.get(field)!r}"
                )
    return len(ours)


def loopline_results(settings: Any) -> dict[str, dict]:
    """The last `loopline validate` run's results, from monitoring.validation_results."""
    from loopline.warehouse import connect

    con = connect(settings.resolved_warehouse_path, settings, read_only=True)
    try:
        rows = con.execute(
            """
            select expectation, success, observed_value, unexpected_count
            from monitoring.validation_results
            where run_id = (
                select run_id from monitoring.validation_results
                order by validated_at desc limit 1
            )
            """
        ).fetchall()
    finally:
        con.close()
    out = {}
    for expectation, success, observed, unexpected in rows:
        out[expectation] = {
            "success": bool(success),
            "observed": None if observed is None else json.loads(observed),
            "unexpected": unexpected,
        }
    return out


# --------------------------------------------------------------------------------------------
# the SQL pass (a fresh process: python -m bench.validation sql <warehouse> <checks.json>)

NOT_NULL = ("user_id", "feature_timestamp", "created_at", "feature_set_version")
NON_NEGATIVE = (
    "watch_minutes_7d",
    "watch_minutes_14d",
    "watch_minutes_30d",
    "sessions_7d",
    "sessions_14d",
    "sessions_30d",
    "failed_payments_30d",
    "failed_payments_90d",
    "refunds_90d",
    "tickets_30d",
    "billing_tickets_30d",
    "cancellation_tickets_30d",
    "playback_tickets_30d",
    "days_since_last_view",
    "minutes_per_session_30d",
    "genre_days_30d",
    "plan_price_usd",
    "tenure_days",
    "log_tenure_months",
)
RANGES = {
    "active_days_30d": (0, 30),
    "has_failed_payment_30d": (0, 1),
    "has_ticket_30d": (0, 1),
    "mobile_share_30d": (0, 1),
    "watch_trend_7d": (-1, 1),
}
KEYS = (
    ("user_id", "as_of_date", "feature_set_version"),
    ("user_id", "feature_timestamp", "feature_set_version"),
)
MAX_NULL_FRACTION = 0.25
SCHEMA, TABLE = ASSET.split(".")

SQL_PASS = """
with
columns as (
    select list(column_name order by ordinal_position) as names,
        map(list(column_name), list(data_type)) as types
    from information_schema.columns
    where table_schema = '{schema}' and table_name = '{table}'
),
registered as (
    select list(distinct feature_set_version) as versions
    from features.feature_sets where relation_name like '%"{table}"'
),
duplicates_0 as ({duplicates_0}),
duplicates_1 as ({duplicates_1}),
stats as (
    select count(*) as row_count,
        {nulls},
        {below_zero},
        {outside},
        count_if(not list_contains((select versions from registered), feature_set_version))
            as unregistered
    from {schema}.{table}
)
select * from stats, columns, registered, duplicates_0, duplicates_1
"""


def _duplicates(columns: tuple[str, ...], i: int) -> str:
    return (
        f"select count(*) as keys_{i}, coalesce(sum(n), 0)::bigint as rows_{i} from "
        f"(select count(*) as n from {SCHEMA}.{TABLE} group by {', '.join(columns)} "
        "having count(*) > 1)"
    )


def sql_pass_query() -> str:
    return SQL_PASS.format(
        schema=SCHEMA,
        table=TABLE,
        duplicates_0=_duplicates(KEYS[0], 0),
        duplicates_1=_duplicates(KEYS[1], 1),
        nulls=", ".join(f"count(*) - count({c}) as null_{c}" for c in TYPES),
        below_zero=", ".join(f"count_if({c} < 0) as below_{c}" for c in NON_NEGATIVE),
        outside=", ".join(
            f"count_if({c} < {low} or {c} > {high}) as outside_{c}"
            for c, (low, high) in RANGES.items()
        ),
    )


# what the SQL pass's process runs: nothing but DuckDB (no loopline, no GX imported)
SQL_RUNNER = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("set threads = 2")
con.execute("set enable_progress_bar = false")
cursor = con.execute(open(sys.argv[2]).read())
names = [d[0] for d in cursor.description]
print(json.dumps(dict(zip(names, cursor.fetchone())), default=str))
"""


def sql_checks(row: dict[str, Any]) -> dict[str, dict]:
    """The SQL pass's one row as checks, keyed like loopline's results."""
    n = row["row_count"]
    types = row["types"]
    out: dict[str, dict] = {}

    def put(kind: str, kwargs: dict[str, Any], success: bool, **values: Any) -> None:
        out[label(kind, kwargs)] = {"success": success, **values}

    put("expect_table_row_count_to_be_between", {"min_value": 1}, n >= 1, observed=n)
    put(
        "expect_table_columns_to_match_set",
        {"column_set": list(TYPES), "exact_match": True},
        row["names"] == list(TYPES),
    )
    for column, declared in TYPES.items():
        expected = declared.upper()
        put(
            "expect_column_values_to_be_of_type",
            {"column": column, "type_": expected},
            types.get(column) == expected,
        )
    for column in NOT_NULL:
        nulls = row[f"null_{column}"]
        put("expect_column_values_to_not_be_null", {"column": column}, nulls == 0, unexpected=nulls)
    keyed = {c for key in KEYS for c in key}
    for column in TYPES:
        if column in keyed or column in ("as_of_date", "created_at"):
            continue
        nulls = row[f"null_{column}"]
        mostly = 1.0 - MAX_NULL_FRACTION
        put(
            "expect_column_values_to_not_be_null",
            {"column": column, "mostly": mostly},
            (n - nulls) / n >= mostly if n else True,
            unexpected=nulls,
        )
    for column in NON_NEGATIVE:
        below = row[f"below_{column}"]
        put(
            "expect_column_values_to_be_between",
            {"column": column, "min_value": 0.0},
            below == 0,
            unexpected=below,
        )
    for column, (low, high) in RANGES.items():
        outside = row[f"outside_{column}"]
        put(
            "expect_column_values_to_be_between",
            {"column": column, "min_value": float(low), "max_value": float(high)},
            outside == 0,
            unexpected=outside,
        )
    put(
        "expect_column_values_to_be_in_set",
        {"column": "feature_set_version", "value_set": sorted(row["versions"])},
        row["unregistered"] == 0,
        unexpected=row["unregistered"],
    )
    for i, key in enumerate(KEYS):
        put(
            "expect_compound_key_to_be_unique",
            {"column_list": list(key)},
            row[f"rows_{i}"] == 0,
            observed=row[f"keys_{i}"],
            unexpected=row[f"rows_{i}"],
        )
    return out


# --------------------------------------------------------------------------------------------
# GX's pandas route (a fresh process: python -m bench.validation gx-pandas <data dir>)

PANDAS_TYPES = {  # what the warehouse's types become in the frame DuckDB hands to pandas
    "BIGINT": "int64",
    "INTEGER": "int32",
    "DOUBLE": "float64",
    "DATE": "datetime64[us]",
    "TIMESTAMP": "datetime64[us]",
    "VARCHAR": "str",
}


def gx_pandas(data_dir: str) -> dict[str, dict]:
    """The suite on a pandas batch of the whole table, keyed like loopline's results."""
    import great_expectations as gx

    from expectations.run import _plain, _quiet_gx
    from loopline.warehouse import connect

    _quiet_gx()
    settings = bench_settings(Path(data_dir))
    expectations = suite(settings)
    # type checks name pandas dtypes here; the results keep the warehouse type's label
    original: dict[str, str] = {}
    for expectation in expectations:
        config = expectation.configuration
        before = label(config.type, dict(config.kwargs))
        if config.type == "expect_column_values_to_be_of_type":
            expectation.type_ = PANDAS_TYPES[str(expectation.type_)]
            config = expectation.configuration
        original[label(config.type, dict(config.kwargs))] = before
    con = connect(settings.resolved_warehouse_path, settings, read_only=True)
    try:
        frame = con.table(ASSET).df()
    finally:
        con.close()
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("bench")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(
        gx.ExpectationSuite(name=ASSET, expectations=expectations),
        result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
    )
    out = {}
    for r in result.results:
        config = r.expectation_config
        name = original[label(config.type, dict(config.kwargs))]
        if (r.exception_info or {}).get("raised_exception"):
            raise RuntimeError(f"GX-pandas: {name} raised {r.exception_info['exception_message']}")
        res = _plain(dict(r.result or {}))
        out[name] = {
            "success": bool(r.success),
            "observed": res.get("observed_value"),
            "unexpected": res.get("unexpected_count"),
        }
    return out


# --------------------------------------------------------------------------------------------
# measuring


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.validation", *args]


def _loopline() -> list[str]:
    return [str(Path(sys.executable).parent / "loopline"), "validate", "--asset", ASSET]


def run_validation(
    users: int, days: int, runs: int, work: Path, say: Any = print, warmup: bool = True
) -> dict[str, Any]:
    """Make the table, check the three sides agree, then time `runs` alternating runs.

    Without `warmup` (the quick mode) the first run of each side is also its timed run.
    """
    from loopline.dbt import run_dbt

    folder = work / "validation"
    if folder.exists():
        shutil.rmtree(folder)
    settings = bench_settings(folder)
    say(f"validation: {users:,} users x {days} days into {folder}; dbt parse for the manifest")
    run_dbt(settings, ["parse"])
    rows = make_warehouse(settings, users, days)
    env = clean_env(folder, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    warehouse = str(settings.resolved_warehouse_path)
    sql_file = work / "sql_pass.sql"
    sql_file.write_text(sql_pass_query())
    commands = {
        "loopline": _loopline(),
        "sql": [sys.executable, "-c", SQL_RUNNER, warehouse, str(sql_file)],
        "gx_pandas": _python("gx-pandas", str(folder)),
        # the fixed start-up cost inside loopline's time: a process importing what it imports
        "startup": [
            sys.executable,
            "-c",
            "import loopline.cli, expectations.run, expectations.suites",
        ],
    }
    outputs: dict[str, dict[str, dict]] = {}
    measured: dict[str, list[tuple[float, float]]] = {side: [] for side in commands}
    first = 1 if warmup else 0
    for i in range(first + runs):  # run 0 gives the outputs to compare (and warms up)
        for side, command in commands.items():
            done = run_sampled(command, env=env, cwd=REPO)
            if side == "loopline":
                if done.returncode not in (0, 1):  # 1: a critical expectation failed
                    done.check()
                if i == 0:
                    outputs[side] = loopline_results(settings)
            else:
                done.check()
                if i == 0 and side != "startup":
                    answer = json.loads(done.stdout)
                    outputs[side] = sql_checks(answer) if side == "sql" else answer
            if i >= first:
                measured[side].append((done.seconds, done.peak_rss_mb))
        if i == 0:
            checks = compare("the SQL pass", outputs["loopline"], outputs["sql"])
            compare("GX-pandas", outputs["loopline"], outputs["gx_pandas"])
            say(f"validation: {checks} checks agree on all three sides; timing {runs} run(s)")
        if i >= first:
            say(
                f"validation: run {i - first + 1}/{runs}: "
                + ", ".join(f"{s} {m[-1][0]:.1f} s {m[-1][1]:,.0f} MB" for s, m in measured.items())
            )
    verdicts = outputs["loopline"]
    medians = {
        side: {
            "median_s": statistics.median(s for s, _ in values),
            "runs_s": [round(s, 2) for s, _ in values],
            "peak_rss_mb": statistics.median(mb for _, mb in values),
            "peak_rss_max_mb": max(mb for _, mb in values),
        }
        for side, values in measured.items()
    }
    return {
        "asset": ASSET,
        "rows": rows,
        "columns": len(TYPES),
        "users": users,
        "days": days,
        "runs": runs,
        "warmup": warmup,
        "checks": len(verdicts),
        "checks_by_kind": {
            name: sum(1 for k in verdicts if k.split("(", 1)[0] == kind)
            for kind, name in KINDS.items()
        },
        "failed_checks": sorted(k for k, v in verdicts.items() if not v["success"]),
        **medians,
        "time_ratio": medians["loopline"]["median_s"] / medians["sql"]["median_s"],
        "time_ratio_without_startup": (
            medians["loopline"]["median_s"] - medians["startup"]["median_s"]
        )
        / medians["sql"]["median_s"],
        "memory_ratio": medians["loopline"]["peak_rss_mb"] / medians["sql"]["peak_rss_mb"],
        "target_time": TARGET_TIME,
        "target_memory": TARGET_MEMORY,
    }


def validation_body(d: dict[str, Any]) -> list[str]:
    """The row's section of the results file (below its targets table)."""
    kinds = ", ".join(f"{n} {name}" for name, n in d["checks_by_kind"].items() if n)
    ours, sql, gx_pandas = d["loopline"], d["sql"], d["gx_pandas"]
    lines = [
        "",
        f"`{d['asset']}`: {d['rows']:,} rows x {d['columns']} columns ({d['users']:,} users x "
        f"{d['days']} days, seeded synthetic data made by bench/validation.py, with a bad day's "
        f"faults). Its suite: {d['checks']} checks ({kinds}); "
        f"{len(d['failed_checks'])} fail on this data: "
        + ", ".join(f"`{k}`" for k in d["failed_checks"])
        + ". All three sides agree on every verdict and observed value (row count, null "
        "counts, counts outside a range or value set, duplicated keys and their rows; types: "
        "the verdict) before any ratio.",
        "",
        "Each run is a fresh process; peak RSS is the process tree's (sampled every 0.1 s). "
        + (
            f"A warm-up of each side, then the median of {d['runs']} alternating runs."
            if d.get("warmup", True)
            else f"{d['runs']} run(s) of each side, no warm-up (quick)."
        ),
        "",
        "| side | median | runs | peak RSS (median) | vs the SQL pass (time / memory) |",
        "|---|---|---|---|---|",
    ]
    for label_, side in (
        ("`loopline validate --asset ...` (GX on DuckDB, Data Docs, results table)", ours),
        ("one hand-written DuckDB SQL pass (python + duckdb)", sql),
        ("GX pandas route (read into pandas, same suite)", gx_pandas),
    ):
        lines.append(
            f"| {label_} | {side['median_s']:.1f} s | "
            + ", ".join(f"{s:.1f}" for s in side["runs_s"])
            + f" | {side['peak_rss_mb']:,.0f} MB | {side['median_s'] / sql['median_s']:.2f}x / "
            f"{side['peak_rss_mb'] / sql['peak_rss_mb']:.2f}x |"
        )
    startup = d["startup"]
    lines += [
        "",
        f"Inside loopline's time is a fixed start-up: a process importing what `loopline "
        f"validate` imports (Great Expectations pulls in pandas, SQLAlchemy, scipy, altair) "
        f"takes {startup['median_s']:.1f} s ({startup['peak_rss_mb']:,.0f} MB) on its own. "
        f"Without it loopline takes {d['time_ratio_without_startup']:.2f}x the SQL pass's time.",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    pandas_route = sub.add_parser("gx-pandas", help="GX's pandas route (prints JSON)")
    pandas_route.add_argument("data_dir")
    parser.add_argument("--quick", action="store_true", help="500 users x 20 days, one run")
    parser.add_argument("--users", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--runs", type=int)
    args = parser.parse_args(argv)
    if args.command == "gx-pandas":
        print(json.dumps(gx_pandas(args.data_dir)))
        return
    size = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as work:
        result = run_validation(
            args.users or size["users"],
            args.days or size["days"],
            args.runs or (1 if args.quick else 5),
            Path(work),
        )
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
