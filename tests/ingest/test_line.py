"""The line end to end: simulate -> ingest -> dbt build, on real DuckDB, SQLite and HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pytest

from loopline.dbt import run_dbt
from loopline.ingest.oltp import load_oltp
from loopline.ingest.run import IngestReport
from loopline.settings import Settings
from loopline.simulate import simulate
from loopline.warehouse import connect
from tests.conftest import SMALL_UNTIL, copy_company, ingest_simulated, query

SCHEMAS = ("staging", "quarantine", "intermediate", "core", "monitoring", "features", "snapshots")


@dataclass
class Built:
    settings: Settings
    first: IngestReport


def build(settings: Settings, *extra: str) -> list[tuple[str, str]]:
    return run_dbt(settings, ["build", *extra]).results


@pytest.fixture(scope="module")
def built(built_warehouse) -> Built:
    """The session's ingested and built warehouse."""
    return Built(*built_warehouse)


def manifest(settings: Settings) -> dict:
    return json.loads((settings.sources_dir / "_manifest" / "defects.json").read_text())


def table_fingerprints(settings: Settings) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent content hash of every built table and view."""
    con = duckdb.connect(str(settings.resolved_warehouse_path))  # same config as dbt in-process
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in {SCHEMAS} order by 1, 2"
        ).fetchall()
        # feature_builds and load_builds record what the last build started from: *when*,
        # like the columns below
        tables = [(s, t) for s, t in tables if t not in ("feature_builds", "load_builds")]
        out = {}
        for schema, table in tables:
            # load-time stamps and batch ids say *when*, not *what*: leave them out
            columns = [
                c
                for (c,) in con.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [schema, table],
                ).fetchall()
                if c
                not in (
                    "_loaded_at",
                    "_batch_id",
                    "_dbt_invocation_id",
                    "dbt_updated_at",
                    "dbt_valid_from",
                    "dbt_scd_id",
                )
            ]
            select = ", ".join(f'"{c}"' for c in columns)
            n, digest = con.execute(
                f"select count(*), coalesce(sum(hash({select})::hugeint), 0) from {schema}.{table}"
            ).fetchone()
            out[f"{schema}.{table}"] = (n, str(digest))
        return out
    finally:
        con.close()


# -- ingest ----------------------------------------------------------------------------------
def test_ingest_loads_every_landed_record_once(built):
    m = manifest(built.settings)["records_written"]
    assert built.first.files.records["events"] == m["events"]
    assert built.first.files.records["payments"] == m["payments"]
    assert built.first.files.records["tickets"] == m["tickets"]
    assert built.first.oltp_tables["users"] == m["users"]


def test_unreadable_file_is_moved_aside_and_recorded(built):
    expected = manifest(built.settings)["defects"]["payments"]["unreadable_file"]
    rows = query(
        built.settings, "select file_path, reason from raw.file_manifest where status = 'rejected'"
    )
    assert len(rows) == expected == len(built.first.files.rejected)
    for path, reason in rows:
        assert (built.settings.landing_dir / "_rejected" / path).exists()
        assert not (built.settings.landing_dir / path).exists()
        assert reason


def test_oltp_loads_from_postgres_too(tmp_path, postgres_url):
    settings = Settings(data_dir=tmp_path, source_db_url=postgres_url)
    simulate(settings, date(2026, 1, 5), progress=False)
    con = connect(tmp_path / "wh.duckdb", settings)
    copied = load_oltp(con, postgres_url, "b1")
    assert copied["users"] == con.execute("select count(*) from raw.oltp_users").fetchone()[0] > 0
    assert load_oltp(con, postgres_url, "b2") == {}  # unchanged source: nothing copied
    con.close()


# -- quarantine and accounting ------------------------------------------------------------------
QUARANTINE = {
    "events": "quarantine.quarantine_events__viewing_events",
    "payments": "quarantine.quarantine_billing__payments",
    "tickets": "quarantine.quarantine_support__tickets",
    "users": "quarantine.quarantine_oltp__users",
}


@pytest.mark.parametrize("source", sorted(QUARANTINE))
def test_every_injected_defect_is_quarantined_with_its_reason(built, source):
    expected = {
        kind: n
        for kind, n in manifest(built.settings)["defects"].get(source, {}).items()
        if kind != "unreadable_file"
    }
    found = dict(
        query(
            built.settings,
            f"select quarantine_reason, count(*) from {QUARANTINE[source]} group by 1",
        )
    )
    assert found == expected


def test_every_landed_record_is_accounted_for(built):
    rows = query(
        built.settings,
        "select source_name, sum(landed_records), sum(loaded_records), sum(quarantined_records), "
        "sum(unaccounted_records) from monitoring.fct_load_accounting group by 1 order by 1",
    )
    assert {r[0] for r in rows} == {"events", "payments", "tickets", "users"}
    for source, landed, loaded, quarantined, unaccounted in rows:
        assert unaccounted == 0, source
        assert landed == loaded + quarantined > 0


# -- marts --------------------------------------------------------------------------------------------
def test_marts_are_populated_and_consistent(built):
    (users,) = query(built.settings, "select count(*) from core.dim_users")[0:1]
    assert users[0] > 300
    sessions, events_in_sessions = query(
        built.settings, "select count(*), sum(events) from core.fct_viewing_sessions"
    )[0]
    (events,) = query(built.settings, "select count(*) from staging.stg_events__viewing_events")[0]
    assert events_in_sessions == events  # every clean event belongs to exactly one session
    assert 0 < sessions < events
    (orphans,) = query(
        built.settings,
        "select count(*) from core.fct_viewing_sessions s left join core.dim_shows d "
        "on s.first_show_id = d.show_id where d.show_id is null",
    )[0]
    assert orphans == 0


def test_subscription_history_has_one_current_period_per_subscription(built):
    rows = query(
        built.settings,
        "select count(*), count(distinct subscription_id) from core.fct_subscriptions where is_current",
    )
    assert rows[0][0] == rows[0][1] > 0


def test_docs_generate_works(built):
    result = run_dbt(built.settings, ["docs", "generate"])
    assert result.success
    assert (built.settings.data_dir / "dbt" / "target" / "catalog.json").exists()


# -- reruns and increments ----------------------------------------------------------------------------
def test_rerunning_ingest_and_build_with_no_new_data_changes_nothing(built):
    before = table_fingerprints(built.settings)
    again = ingest_simulated(built.settings)
    assert again.files.files == {} and again.oltp_tables == {} and again.catalogue_pages == 0
    build(built.settings)
    assert table_fingerprints(built.settings) == before


def test_one_more_day_builds_incrementally_and_equals_a_full_refresh(built, tmp_path):
    settings = copy_company(built.settings, tmp_path / "data")
    simulate(settings, date.fromordinal(SMALL_UNTIL.toordinal() + 1), progress=False)
    report = ingest_simulated(settings)
    assert report.files.files["events"] <= 24 + 1  # one day of hourly files (+ a retry file)
    result = run_dbt(settings, ["build"])
    assert result.success
    new_day = date.fromordinal(SMALL_UNTIL.toordinal() + 1)
    # rows processed are reported (every new line is classified once), and only the new
    # day plus the lookback was rebuilt
    (new_lines, new_clean) = query(
        settings,
        "select count(*), count(*) filter (where quarantine_reason is null) "
        f"from staging.base_events__viewing_events where _batch_id = '{report.batch_id}'",
    )[0]
    assert result.processed["staging.base_events__viewing_events"] == new_lines
    assert new_lines >= new_clean > 0
    (staged,) = query(
        settings,
        f"select count(*) from staging.stg_events__viewing_events where _batch_id = '{report.batch_id}'",
    )[0]
    assert staged == new_clean
    sessions_written = result.processed["intermediate.int_viewing_events_sessionized"]
    (total_sessions, oldest) = query(
        settings,
        "select count(*), min(session_date) filter (where _dbt_invocation_id = "
        "(select max_by(_dbt_invocation_id, _loaded_at) from intermediate.int_viewing_events_sessionized)) "
        "from intermediate.int_viewing_events_sessionized",
    )[0]
    assert 0 < sessions_written < total_sessions / 3
    # rebuilt: from the last day built before (SMALL_UNTIL) minus events_lookback_days (5)
    assert oldest == date.fromordinal(SMALL_UNTIL.toordinal() - 5)
    # the new files carry late events from earlier days: they land in the day they happened
    (late,) = query(
        settings,
        f"select count(*) from staging.stg_events__viewing_events where _batch_id = '{report.batch_id}' "
        f"and event_date < '{new_day}'",
    )[0]
    assert late > 0
    incremental = table_fingerprints(settings)
    run_dbt(settings, ["build", "--full-refresh"])
    full = table_fingerprints(settings)
    for name in ("staging.base_events__viewing_events", "staging.stg_events__viewing_events",
                 "quarantine.quarantine_events__viewing_events",
                 "intermediate.int_viewing_events_sessionized", "core.fct_viewing_sessions",
                 "monitoring.fct_load_accounting", "features.fs_churn__user_daily",
                 "features.fs_recs__show_popularity", "features.fs_recs__co_watch",
                 "features.fs_recs__user_genre_affinity", "features.fs_recs__user_history"):  # fmt: skip
        assert incremental[name] == full[name], name


def test_a_shows_new_genre_reaches_its_sessions_on_every_day_in_an_incremental_build(
    built, tmp_path
):
    """fct_viewing_sessions is incremental by day, and the genre of a session's first show comes
    from the catalogue: a vendor's later edit of a show's genres must reach its sessions on
    days long before the ones the build rewrites for late events."""
    settings = copy_company(built.settings, tmp_path / "data")
    (show, old_genre, new_genre, first_day) = query(
        settings,
        "with watched as (select first_show_id, first_show_genre, min(session_date) as first_day, "
        "count(*) as n from core.fct_viewing_sessions group by all) "
        "select w.first_show_id, w.first_show_genre, "
        "(select min(primary_genre) from staging.stg_catalogue__shows "
        " where primary_genre <> w.first_show_genre), w.first_day "
        "from watched w order by w.n desc limit 1",
    )[0]
    assert first_day < SMALL_UNTIL - timedelta(days=30)  # far outside the late-data lookback
    con = connect(settings.resolved_warehouse_path, settings)
    try:  # the vendor serves the show again, edited: the new primary genre first
        con.execute(
            "insert into raw.catalogue_items select * replace ("
            "  json_merge_patch(item, json_object('genres', ?::varchar[], 'updated_at', "
            "    strftime(now()::timestamp, '%Y-%m-%dT%H:%M:%SZ'))) as item, "
            "  now()::timestamp as _extracted_at) "
            "from raw.catalogue_items where entity = 'shows' and (item ->> '$.show_id') = ? "
            "order by _extracted_at desc limit 1",
            [[new_genre, old_genre], show],
        )
    finally:
        con.close()
    assert run_dbt(settings, ["build", "--select", "fct_viewing_sessions"]).success
    ((sessions, days, stale),) = query(
        settings,
        "select count(*), count(distinct session_date), "
        f"count(*) filter (where first_show_genre is distinct from '{new_genre}') "
        f"from core.fct_viewing_sessions where first_show_id = '{show}'",
    )
    assert sessions > 0 and days > 1 and stale == 0
    # and the table is what a full rebuild gives: every session once, every genre current
    ((rows, upstream, wrong),) = query(
        settings,
        "select count(*), (select count(*) from intermediate.int_viewing_events_sessionized), "
        "count(*) filter (where f.first_show_genre is distinct from s.primary_genre) "
        "from core.fct_viewing_sessions f "
        "left join staging.stg_catalogue__shows s on f.first_show_id = s.show_id",
    )
    assert rows == upstream and wrong == 0


def test_redelivered_tickets_are_quarantined_as_duplicates_and_counted(built, tmp_path):
    """Three tickets delivered again in a new file: the build passes, the copies are set aside."""
    settings = copy_company(built.settings, tmp_path / "data")
    tickets = settings.landing_dir / "tickets"
    delivered = query(  # three clean tickets and the files they first came in
        settings,
        "select ticket_id, _file, _line_no from staging.stg_support__tickets order by _file, _line_no limit 3",
    )
    lines = {
        (file, number): line
        for file in {file for _, file, _ in delivered}
        for number, line in enumerate((settings.landing_dir / file).read_text().splitlines(True), 1)
    }
    resent = [lines[(file, number)] for _, file, number in delivered]
    ids = sorted(ticket for ticket, _, _ in delivered)
    (tickets / "tickets_29991231_redelivery.ndjson").write_text("".join(resent))
    report = ingest_simulated(settings)
    assert report.files.records["tickets"] == 3
    run_dbt(settings, ["build"])  # raises if a test (unique ticket_id) fails
    in_list = ", ".join(f"'{i}'" for i in ids)
    staged = query(
        settings,
        f"select ticket_id, _file from staging.stg_support__tickets where ticket_id in ({in_list})",
    )
    assert sorted(ticket for ticket, _ in staged) == ids  # each ticket once, its first copy
    assert {file for _, file in staged} == {file for _, file, _ in delivered}
    duplicates = query(
        settings,
        "select ticket_id from quarantine.quarantine_support__tickets "
        f"where quarantine_reason = 'duplicate' and _batch_id = '{report.batch_id}'",
    )
    assert sorted(ticket for (ticket,) in duplicates) == ids
    ((landed, loaded, quarantined, unaccounted),) = query(
        settings,
        "select landed_records, loaded_records, quarantined_records, unaccounted_records "
        f"from monitoring.fct_load_accounting where source_name = 'tickets' "
        f"and _batch_id = '{report.batch_id}'",
    )
    assert (landed, loaded, quarantined, unaccounted) == (3, 0, 3, 0)


def test_rejects_are_counted_in_the_warehouse_after_the_build(built):
    """The line's report of expected rejects: every quarantined record and unreadable file."""
    from loopline.ingest.run import rejects

    found = rejects(built.settings, built.first.batch_id)
    defects = manifest(built.settings)["defects"]
    expected = sum(
        n
        for source in QUARANTINE
        for kind, n in defects.get(source, {}).items()
        if kind != "unreadable_file"
    )
    assert found.quarantined_records == expected > 0
    assert found.rejected_files == len(built.first.files.rejected) == 1
    assert found.summary() == (
        f"quarantined {expected:,} records, rejected 1 file "
        f"(see {built.settings.landing_dir / '_rejected'})"
    )
