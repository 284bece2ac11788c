"""dbt in-process: nothing of dbt's own output on the terminal, one summary line per build that
agrees with run_results.json, every failure spelled out on one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loopline.dbt import DbtError, log_file, one_line, project_dir, run_dbt
from loopline.settings import Settings
from tests.conftest import copy_company

DBT_CONSOLE_MARKS = ("Running with dbt", "START sql", "OK created", "Finished running", "Done.")


def _project_with(tmp_path: Path, tests: dict[str, str]) -> Path:
    """A copy of the dbt project with extra singular tests in data-tests/."""
    root, project = project_dir(), tmp_path / "project"
    project.mkdir()
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(root / name, project / name)
    for folder in ("models", "macros", "seeds", "snapshots", "data-tests"):
        shutil.copytree(root / folder, project / folder)
    for name, sql in tests.items():
        (project / "data-tests" / f"{name}.sql").write_text(sql)
    return project


@pytest.fixture
def company(built_warehouse, tmp_path, monkeypatch) -> Settings:
    from loopline import progress

    monkeypatch.setenv("COLUMNS", "300")  # temporary paths are long: no line cut short
    monkeypatch.setattr(progress, "_console", None)
    return copy_company(built_warehouse[0], tmp_path / "data")


def test_a_build_prints_one_summary_line_that_matches_run_results(company, capfd):
    before = log_file(company).stat().st_size if log_file(company).exists() else 0
    capfd.readouterr()
    result = run_dbt(company, ["build", "--select", "stg_oltp__plans stg_oltp__plan_prices"])
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✓ build"), err
    assert not any(mark in err for mark in DBT_CONSOLE_MARKS)
    # dbt's per-node lines went to the log file instead, without colour codes
    with log_file(company).open() as handle:
        handle.seek(before)
        written = handle.read()
    created = [line for line in written.splitlines() if "OK created sql view model" in line]
    assert len(created) == 2 and "\x1b[" not in written
    results = json.loads((company.data_dir / "dbt" / "target" / "run_results.json").read_text())[
        "results"
    ]
    nodes = [r for r in results if r["unique_id"].split(".")[0] in ("model", "test", "unit_test")]
    kinds = [r["unique_id"].split(".")[0] for r in nodes]
    models, tests = kinds.count("model"), kinds.count("test") + kinds.count("unit_test")
    passed = sum(r["status"] in ("success", "pass") for r in nodes)  # hooks are no nodes
    assert models == 2 and tests > 2
    assert result.counts() == {
        "models": models, "tests": tests, "passed": passed, "warned": 0, "failed": 0, "skipped": 0,
    }  # fmt: skip
    assert f"{models} models, {tests} tests: {passed} passed, 0 warned, 0 failed" in lines[0]


def test_failures_and_warnings_are_spelled_out_one_line_each(company, tmp_path, capfd):
    project = _project_with(
        tmp_path,
        {
            "assert_plans_are_empty": "select * from {{ ref('stg_oltp__plans') }}",
            "assert_no_plan_is_named_basic": "{{ config(severity='warn') }}\n"
            "select * from {{ ref('stg_oltp__plans') }}",
        },
    )
    settings = company.model_copy(update={"dbt_project_dir": project})
    capfd.readouterr()
    with pytest.raises(DbtError) as raised:
        run_dbt(
            settings,
            ["build", "--select", "stg_oltp__plans assert_plans_are_empty "
             "assert_no_plan_is_named_basic"],
        )  # fmt: skip
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("! build") and "1 warned, 1 failed" in lines[0]
    fail = [line for line in lines if "assert_plans_are_empty" in line]
    warn = [line for line in lines if "assert_no_plan_is_named_basic" in line]
    assert fail == [fail[0]] and fail[0].strip().startswith(
        "fail: test assert_plans_are_empty: Got "
    )
    assert warn == [warn[0]] and warn[0].strip().startswith("warning: test assert_no_plan")
    assert "dbt/logs/dbt.log" in lines[-1]
    assert not any(mark in err for mark in DBT_CONSOLE_MARKS)
    # the exception says it in one line and carries every failure (not the warning)
    assert raised.value.failures == [fail[0].strip()]
    assert "\n" not in str(raised.value) and "1 node" in str(raised.value)
    assert "assert_no_plan_is_named_basic" not in str(raised.value)


def test_an_error_message_is_cut_to_its_informative_line():
    message = "Runtime Error in model x (models/x.sql)\n  Binder Error: column y not found\n\n"
    assert one_line(message) == "Binder Error: column y not found"
    assert one_line("Got 3 results, configured to fail if != 0") == (
        "Got 3 results, configured to fail if != 0"
    )


@pytest.fixture
def invocations(monkeypatch) -> list[list[str]]:
    """The arguments of every dbt invocation `loopline.dbt` makes in the test, in order."""
    import loopline.dbt as dbt

    calls: list[list[str]] = []
    real = dbt._invoke

    def spy(settings, args, **kwargs):
        calls.append(list(args))
        return real(settings, args, **kwargs)

    monkeypatch.setattr(dbt, "_invoke", spy)
    return calls


def test_the_empty_pre_pass_runs_only_while_relations_are_missing(company, invocations):
    """Once the incremental relations exist, a build runs dbt once (parse aside)."""
    calls = invocations
    run_dbt(company, ["build", "--select", "stg_oltp__plans"])
    assert [c[0] for c in calls] == ["parse", "build"]
    assert "--empty" not in calls[1]


def test_each_colour_keeps_its_partial_parse_so_alternate_builds_do_not_reparse(company):
    """Write-audit-publish alternates the `wap_colour` var; dbt reparses the whole project
    when the vars differ from the last parse, unless each colour keeps its own state."""
    from loopline.dbt import parse

    def reparsed(colour: str) -> bool:
        log = log_file(company)
        before = log.stat().st_size if log.exists() else 0
        parse(company, colour)
        with log.open() as text:
            text.seek(before)
            new = text.read()
        assert "parse` succeeded" in new
        return "Unable to do partial parsing" in new

    for colour in ("blue", "green"):  # the first parse of each colour reads every file
        reparsed(colour)
    for colour in ("blue", "green", "blue"):
        assert not reparsed(colour), colour


def test_unit_tests_run_unless_the_arguments_leave_them_out():
    from loopline.dbt import runs_unit_tests

    assert runs_unit_tests(["build"])
    assert runs_unit_tests(["build", "--exclude-resource-type", "test"])
    assert not runs_unit_tests(["build", "--exclude-resource-type", "unit_test"])
    assert not runs_unit_tests(["build", "--exclude-resource-type=unit_test"])


def test_a_colour_build_without_unit_tests_skips_the_empty_pass_and_leaves_plain_stand_ins(
    company, invocations
):
    """The audited colour build runs no unit test, so nothing needs its relations to exist
    first; it leaves an empty plain stand-in of each incremental model it built, so a plain
    `dbt build` (whose unit tests read `this`) passes next, as after `loopline ingest`."""
    import loopline.dbt as dbt
    from tests.conftest import query

    relation = "staging.base_events__viewing_events"
    query(company, f"drop table {relation}")
    calls = invocations
    only = ["--select", "+base_events__viewing_events"]
    only += ["--exclude-resource-type", "unit_test", "--exclude-resource-type", "test"]
    built = run_dbt(company, ["build", *only], colour="blue")
    assert [c[0] for c in calls] == ["parse", "build"]
    assert not any("--empty" in c for c in calls)
    blue = query(company, "select count(*) from staging__blue.base_events__viewing_events")
    assert blue[0][0] > 0 and built.processed["staging__blue.base_events__viewing_events"] > 0
    # the stand-in: the colour's columns, no rows; a plain relation that existed is untouched
    assert query(company, f"select count(*) from {relation}") == [(0,)]
    columns = (
        "select column_name, data_type from information_schema.columns where table_schema = "
        "'{}' and table_name = 'base_events__viewing_events' order by ordinal_position"
    )
    assert query(company, columns.format("staging")) == query(
        company, columns.format("staging__blue")
    )
    assert query(company, "select count(*) from staging.stg_oltp__plans")[0][0] > 0
    # a plain dbt build with the model's unit tests (raw dbt: no loopline pre-pass) passes
    calls.clear()
    plain = dbt._invoke(company, ["build", "--select", "base_events__viewing_events"])
    assert plain.success, plain.error
    assert {n.resource_type for n in plain.nodes} >= {"unit_test", "model"}


def test_creating_a_missing_incremental_model_leaves_the_existing_relations_alone(company):
    """`loopline ingest` on a warehouse whose plain schemas exist (published views, or a
    plain build's tables) and where one incremental model is new: only that one is created
    empty; its parents keep their rows (an empty build of them would have emptied them)."""
    from loopline.dbt import ensure_incremental_relations
    from tests.conftest import query

    parent = "select count(*) from staging.base_oltp__users"
    users = query(company, parent)[0][0]
    assert users > 0
    query(company, "drop table staging.base_events__viewing_events")
    ensure_incremental_relations(company)
    assert query(company, "select count(*) from staging.base_events__viewing_events") == [(0,)]
    assert query(company, parent) == [(users,)]
    assert query(company, "select count(*) from staging.stg_oltp__plans")[0][0] > 0
