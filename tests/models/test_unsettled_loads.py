"""The event tables' data tests and GX suites read the lines loaded since the last publication.

`base_events__viewing_events` appends the raw lines loaded since its last build; its tests
and those of its views (staging, quarantine) read the lines loaded since the colour was last
published (macros/loads_unsettled.sql), and a key's test reads every row holding a key those
lines carry. The lines before were tested when they were loaded, and publication vouched for
them.
"""

from __future__ import annotations

import pytest

from expectations.run import SuiteResult, validate
from loopline.dbt import DbtError, run_dbt
from loopline.publish import audit_schemas
from tests.conftest import copy_company, query

BASE = "staging__blue.base_events__viewing_events"
VIEWS = ["base_events__viewing_events", "stg_events__viewing_events",
         "quarantine_events__viewing_events"]  # fmt: skip
# the GX suites publication runs on them (the quarantine view has none)
ASSETS = [("staging", "base_events__viewing_events"), ("staging", "stg_events__viewing_events")]


def test_the_event_tables_tests_read_the_lines_loaded_since_the_last_publication(
    published_blue, tmp_path
) -> None:
    from loopline.publish import audit_and_publish

    settings = copy_company(published_blue, tmp_path / "data")

    def record() -> tuple:
        return query(
            settings,
            "select loaded_after, unsettled_after from staging__blue.load_builds "
            "where relation_name = 'base_events__viewing_events'",
        )[0]

    def build() -> None:
        run_dbt(
            settings,
            ["build", "--indirect-selection", "cautious", "--select", *VIEWS],
            colour="blue",
        )

    def test() -> None:
        run_dbt(
            settings,
            ["test", "--indirect-selection", "cautious", "--select", *VIEWS],
            colour="blue",
        )

    def failures(run) -> str:
        with pytest.raises(DbtError) as failed:
            run()
        return "\n".join(failed.value.failures)

    def defect(where: str, **replace: str) -> None:
        """A copy of one row of the base table, changed; tagged to be removed again."""
        changes = ", ".join(f"{value} as {column}" for column, value in replace.items())
        query(
            settings,
            f"insert into {BASE} select * replace ({changes}, 'defect' as _batch_id) "
            f"from {BASE} where {where} order by _file, _line_no limit 1",
        )

    def mend() -> None:
        query(settings, f"delete from {BASE} where _batch_id = 'defect'")

    def audit() -> dict[str, SuiteResult]:
        """The GX suites of the event tables on blue, as publication runs them."""
        report = validate(
            settings,
            [f"{schema}.{name}" for schema, name in ASSETS],
            schemas=audit_schemas(settings, "blue"),
            record=False,
            data_docs=False,
            lines="problems",
        )
        return {suite.asset: suite for suite in report.suites}

    assert record()[1] is None  # the publication vouched for every line
    ((published_through, lines),) = query(settings, f"select max(_loaded_at), count(*) from {BASE}")

    def load(name: str) -> None:
        """A later load: the first file's lines again as a new file, with new event ids."""
        query(
            settings,
            "insert into raw.events_lines select * replace ("
            f"'{name}.ndjson' as _file, now()::timestamp as _loaded_at, '{name}' as _batch_id, "
            f'replace(line, \'"event_id":"\', \'"event_id":"{name}-\') as line) '
            "from raw.events_lines where _file = (select min(_file) from raw.events_lines)",
        )

    load("late")
    build()
    assert record() == (published_through, published_through)
    (new_lines,) = query(settings, f"select count(*) from {BASE} where _file = 'late.ndjson'")[0]
    assert (
        new_lines > 0 and query(settings, f"select count(*) from {BASE}")[0][0] == lines + new_lines
    )

    old = "_batch_id <> 'late' and quarantine_reason is null"
    new = "_batch_id = 'late' and quarantine_reason is null"
    # defects among published lines are not read again: a second copy of an old event, an
    # old line with no user, an unknown event type
    defect(old, _file="'old-copy.ndjson'")
    defect(old, _file="'old-null.ndjson'", event_id="'old-null'", user_id="null")
    defect(old, _file="'old-type.ndjson'", event_id="'old-type'", event_type="'skip'")
    test()
    # and so do the GX suites publication runs: each judges those lines (and the rows holding
    # their keys), not the whole table
    judged = audit()
    assert len(judged) == len(ASSETS) and not any(s.critical_failed for s in judged.values())
    assert {s.loaded_after for s in judged.values()} == {str(published_through)}

    # the same among the new lines fail: a new line repeating an old event's id is read
    # with the old row that holds the id
    for changes, failing, suite in [
        (dict(event_id=f"(select min(event_id) from {BASE} where {old})"), "unique_stg_events__viewing_events_event_id", "staging.stg_events__viewing_events"),
        (dict(user_id="null", event_id="'new-null'"), "not_null_stg_events__viewing_events_user_id", "staging.stg_events__viewing_events"),
        (dict(event_type="'skip'", event_id="'new-type'"), "accepted_values_stg_events__viewing_events_event_type", "staging.stg_events__viewing_events"),
        (dict(quarantine_reason="'made_up'"), "accepted_values_base_events", "staging.base_events__viewing_events"),
    ]:  # fmt: skip
        defect(new, _line_no="-1", _loaded_at="now()::timestamp", **changes)
        assert failing in failures(test)
        assert audit()[suite].critical_failed, suite
        mend()
        defect(old, _file="'old-copy.ndjson'")  # mend removed the old defects too
        defect(old, _file="'old-null.ndjson'", event_id="'old-null'", user_id="null")
        defect(old, _file="'old-type.ndjson'", event_id="'old-type'", event_type="'skip'")

    # a build whose tests failed is not published; the next build, with no new line, still
    # tests the lines of the one before
    defect(new, _file="'late.ndjson'", _line_no="-1", user_id="null", event_id="'new-null'")
    assert "not_null_stg_events__viewing_events_user_id" in failures(build)
    assert record()[1] == published_through
    mend()
    build()
    audit_and_publish(settings, "blue")
    assert record()[1] is None  # vouched for again

    # tested on its own, a published relation is read in full, the old lines too
    defect(old, _file="'old-copy.ndjson'")
    assert "unique_stg_events__viewing_events_event_id" in failures(test)
    judged = audit()["staging.stg_events__viewing_events"]
    assert judged.critical_failed and judged.loaded_after is None
    load("later")  # the next build's tests read its lines only again
    build()
    assert record()[1] > published_through
    query(settings, "delete from staging__blue.load_builds")  # no record: every line is read
    assert "unique_stg_events__viewing_events_event_id" in failures(test)
