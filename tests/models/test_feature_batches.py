"""Feature marts built in batches of as-of days equal the same marts built in one query.

The session's warehouse was built with the project's default batch size; here the five
feature marts are rebuilt in full on a copy, once in one batch and once in batches of a few
days (every batch boundary a place a window could be cut short), and each table must hold
the same rows. The build's progress names every batch, so a long build shows how far it is.
"""

from __future__ import annotations

import json
import math

import pytest

from bench.dbt_build import fingerprints
from loopline.dbt import DbtError, run_dbt
from tests.conftest import copy_company, query

MARTS = [
    "fs_churn__user_daily",
    "fs_recs__co_watch",
    "fs_recs__show_popularity",
    "fs_recs__user_genre_affinity",
    "fs_recs__user_history",
]
RELATIONS = [f"features.{m}" for m in MARTS]


def rebuild(settings, batch_days: int) -> None:
    variables = json.dumps({"feature_batch_days": batch_days})
    run_dbt(settings, ["build", "--full-refresh", "--select", *MARTS, "--vars", variables])


def test_batches_of_a_few_days_give_the_rows_of_one_query(
    built_warehouse, tmp_path, monkeypatch, capsys
) -> None:
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    (first, last), (sessions_first, sessions_last) = (
        query(settings, f"select min({c}), max({c}) from {t}")[0]
        for t, c in (
            ("staging.stg_events__viewing_events", "event_date"),
            ("core.fct_viewing_sessions", "session_date"),
        )
    )
    rebuild(settings, 10_000)
    whole = fingerprints(settings.data_dir, RELATIONS)
    assert all(f["rows"] > 0 for f in whole.values()), whole

    monkeypatch.setenv("LOOPLINE_PROGRESS", "log")
    capsys.readouterr()
    rebuild(settings, 4)
    shown = capsys.readouterr().err
    assert fingerprints(settings.data_dir, RELATIONS) == whole

    # each mart showed every batch after the first on the terminal, the last one too
    for mart in MARTS:
        start, end = (
            (first, last) if mart.endswith(("user_daily", "user_history")) else
            (sessions_first, sessions_last)
        )  # fmt: skip
        batches = math.ceil(((end - start).days + 1) / 4)
        assert batches > 2
        for batch in range(2, batches + 1):
            assert f"dbt build: {mart}: batch {batch} of {batches} " in shown, (mart, shown)


def test_a_batch_size_below_one_day_is_refused_by_name(built_warehouse, tmp_path) -> None:
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    before = fingerprints(settings.data_dir, RELATIONS[:1])
    with pytest.raises(DbtError, match="feature_batch_days must be a whole number of days >= 1"):
        rebuild(settings, 0)
    assert fingerprints(settings.data_dir, RELATIONS[:1]) == before


def test_a_marts_tests_and_audit_read_the_days_written_since_its_last_publication(
    published_blue, tmp_path
) -> None:
    """An incremental build rewrites its last few days; its data tests and the audit before
    publication read those, as the days before were checked when they were written and
    publication vouched for them. Days a build wrote that were never published (its checks
    failed) are read again by the next build's checks, however few days that build
    rewrites; a mart with no build on record is read in full."""
    from expectations.run import validate
    from loopline.publish import audit_and_publish, audit_schemas

    settings = copy_company(published_blue, tmp_path / "data")  # blue is live
    name = "fs_churn__user_daily"
    mart = f"features__blue.{name}"

    def build(*args: str) -> None:
        run_dbt(settings, ["build", *args, "--select", name], colour="blue")

    def test() -> None:
        run_dbt(settings, ["test", "--select", name], colour="blue")

    def audit() -> tuple[bool, str]:
        report = validate(
            settings,
            [f"features.{name}"],
            schemas=audit_schemas(settings, "blue"),
            record=False,
            data_docs=False,
        )
        return report.critical_failed, report.suites[0].line()

    def duplicate_a_row_of(day) -> None:
        query(
            settings, f"insert into {mart} select * from {mart} where as_of_date = '{day}' limit 1"
        )

    def remove_duplicates_of(day) -> None:
        query(
            settings,
            f"create temp table d as select distinct * from {mart} where as_of_date = '{day}'; "
            f"delete from {mart} where as_of_date = '{day}'; insert into {mart} select * from d",
        )

    build()  # incremental: rewrites the last days only
    ((first_day, last_day),) = query(
        settings, f"select min(as_of_date), max(as_of_date) from {mart}"
    )
    ((rebuilt_from, unsettled_from),) = query(
        settings,
        "select rebuilt_from, unsettled_from from features__blue.feature_builds "
        f"where relation_name = '{name}'",
    )
    assert first_day < rebuilt_from == unsettled_from <= last_day

    duplicate_a_row_of(first_day)  # a published day this build did not write: not read again
    test()
    failed, line = audit()
    assert not failed and f"(as-of days from {rebuilt_from})" in line, line
    duplicate_a_row_of(rebuilt_from)  # a day it wrote
    with pytest.raises(DbtError, match="unique_combination"):
        test()
    failed, line = audit()
    assert failed and "unique" in line, line
    remove_duplicates_of(rebuilt_from)
    remove_duplicates_of(first_day)

    # a build that rewrote every day (a full refresh) left a defect in an early day and was
    # not published; the next incremental build rewrites its last days only, yet its checks
    # read every day written since the last publication, the early one too
    build("--full-refresh")
    duplicate_a_row_of(first_day)
    with pytest.raises(DbtError, match="unique_combination"):
        build()
    assert audit()[0]
    remove_duplicates_of(first_day)
    build()
    publication, _ = audit_and_publish(settings, "blue")  # vouches for every day again
    assert publication.colour == "blue"
    assert query(
        settings,
        f"select unsettled_from from features__blue.feature_builds where relation_name = '{name}'",
    ) == [(None,)]

    query(settings, "delete from features__blue.feature_builds")  # no record: every day is read
    duplicate_a_row_of(first_day)
    with pytest.raises(DbtError, match="unique_combination"):
        test()
    failed, line = audit()
    assert failed and "as-of days from" not in line, line
