"""The `loopline` command line: help everywhere, clear errors, simulate end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.settings import get_settings

runner = CliRunner()
COMMANDS = ["simulate", "catalogue-api", "ingest", "build", "docs", "validate", "train", "score",
            "serve", "promote", "monitor", "stream", "produce", "up", "down", "status", "demo"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_top_level_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_simulate_then_continue_then_refuse_conflicting_options(data_dir):
    first = runner.invoke(app, ["simulate", "--scale", "small", "--days", "3", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "2026-01-01 .. 2026-01-03" in first.output
    again = runner.invoke(app, ["simulate", "--quiet"])
    assert again.exit_code == 0 and "already simulated through 2026-01-03" in again.output
    more = runner.invoke(app, ["simulate", "--until", "2026-01-05", "--quiet"])
    assert more.exit_code == 0 and "2026-01-04 .. 2026-01-05" in more.output
    clash = runner.invoke(app, ["simulate", "--seed", "9", "--until", "2026-01-06"])
    assert clash.exit_code == 2 and "--reset" in clash.output
    reset = runner.invoke(
        app, ["simulate", "--reset", "--scale", "small", "--days", "2", "--quiet"]
    )
    assert reset.exit_code == 0 and "2026-01-01 .. 2026-01-02" in reset.output


def test_bad_scenario_option_is_a_clear_error(data_dir):
    result = runner.invoke(app, ["simulate", "--scale", "small", "--drift", "price_rise"])
    assert result.exit_code == 2
    assert "drift_start" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "churn"], "loopline build"),
        (["train", "--model", "everything"], "choose churn, recommender or all"),
        (["score"], "no @champion yet"),
        (["promote"], "pass --rollback"),
        (["promote", "--rollback"], "no previous champion"),
        (["monitor"], "loopline build"),
    ],
)
def test_loop_commands_explain_what_is_missing(data_dir, args, message):
    """On an empty data folder each ML command says what to run first, not a traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_prefect_home_is_created_in_a_fresh_checkout(tmp_path, monkeypatch):
    """Prefect cannot create missing parents of its home; a fresh clone has no data/ yet."""
    from loopline.cli import _prefect_home
    from loopline.services import prefect_environment
    from loopline.settings import Settings

    settings = Settings(data_dir=tmp_path / "fresh" / "data")
    for key in [*prefect_environment(settings), "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"]:
        monkeypatch.delenv(key, raising=False)  # restored (or removed) after the test
    _prefect_home(settings)
    assert (tmp_path / "fresh" / "data" / "prefect").is_dir()


def one_line(output: str) -> str:
    """The output's only line (fails if there is more than one)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("LOOPLINE_SIM_SCALE", "huge", "'small', 'demo' or 'large'"),
        ("LOOPLINE_DUCKDB_THREADS", "abc", "a valid integer"),
        ("LOOPLINE_DUCKDB_THREADS", "0", "greater than or equal to 1"),
        ("LOOPLINE_DBT_THREADS", "0", "greater than or equal to 1"),
        ("LOOPLINE_API_PORT", "99999", "less than or equal to 65535"),
        ("LOOPLINE_SERVICE_START_TIMEOUT", "soon", "a valid number"),
    ],
)
@pytest.mark.parametrize("command", [["demo"], ["ingest"], ["build"], ["up"], ["simulate"]])
def test_a_bad_setting_is_one_line_naming_the_variable(
    data_dir, monkeypatch, command, variable, value, accepted
):
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert f"{variable}={value!r}" in line and accepted in line, line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_scale_offers_its_three_choices(command):
    help_text = runner.invoke(app, [command, "--help"]).output
    assert "small|demo|large" in help_text, help_text
    result = runner.invoke(app, [command, "--scale", "nonsense"])
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert "--scale" in line and "'nonsense'" in line, line
    assert "'small', 'demo', 'large'" in line, line


def test_ingest_without_a_source_database_says_where_it_looked(data_dir):
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert "no source database at sqlite:///" in line and "LOOPLINE_SOURCE_DB_URL" in line, line


def test_ingest_names_a_catalogue_url_that_does_not_answer(data_dir, monkeypatch):
    """The ingest never starts the simulated vendor itself: it says where it looked, after
    loading every other source."""
    from loopline.services import free_port

    simulated = runner.invoke(app, ["simulate", "--scale", "small", "--days", "2", "--quiet"])
    assert simulated.exit_code == 0, simulated.output
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LOOPLINE_CATALOGUE_URL", url)
    get_settings.cache_clear()
    result = runner.invoke(app, ["ingest", "--quiet"])
    assert result.exit_code == 2, result.output
    line = one_line("\n".join(s for s in result.output.splitlines() if s.startswith("error:")))
    assert f"no catalogue API answers at {url}" in line and "LOOPLINE_CATALOGUE_URL" in line, line
    assert "the other sources were loaded in batch" in line, line
    assert "Traceback" not in result.output
    con = duckdb.connect(str(get_settings().resolved_warehouse_path), read_only=True)
    try:
        (files,) = con.execute(
            "select count(*) from raw.file_manifest where source = 'events'"
        ).fetchone()
        (tables,) = con.execute("select count(*) from raw.oltp_loads").fetchone()
    finally:
        con.close()
    assert files > 0 and tables == 4


def test_build_before_any_ingest_says_to_ingest_first(data_dir):
    result = runner.invoke(app, ["build"])
    assert result.exit_code == 2, result.output
    assert "run `loopline ingest` first" in one_line(result.output)


def test_build_on_a_warehouse_without_raw_tables_says_to_ingest_first(data_dir):
    """A warehouse file can exist before any ingest (`loopline docs` opens one, say)."""
    import duckdb

    path = get_settings().resolved_warehouse_path
    path.parent.mkdir(parents=True)
    duckdb.connect(str(path)).close()
    result = runner.invoke(app, ["build"])
    assert result.exit_code == 2, result.output
    assert "run `loopline ingest` first" in one_line(result.output)


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh process (what a person types)."""
    return subprocess.run(
        [sys.executable, "-m", "loopline.cli", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))}
    return {**env, "LOOPLINE_DATA_DIR": str(tmp_path / "data")}


def test_demo_names_a_prefect_api_url_that_does_not_answer(cli_env):
    from loopline.services import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    done = run_cli(["demo", "--scale", "small"], {**cli_env, "PREFECT_API_URL": url})
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done.stdout + done.stderr)
    assert f"PREFECT_API_URL={url} does not answer" in line, line


def test_demo_says_in_one_line_when_its_prefect_server_does_not_start_in_time(cli_env, tmp_path):
    import psutil

    done = run_cli(["demo"], {**cli_env, "LOOPLINE_SERVICE_START_TIMEOUT": "0.5"})
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done.stdout + done.stderr)
    assert "the Prefect server for this run did not answer within 0.5 s" in line, line
    assert "make up" in line and "LOOPLINE_SERVICE_START_TIMEOUT" in line, line
    log = tmp_path / "data" / "logs" / "prefect-temporary.log"
    assert str(log) in line
    # the server it started is stopped again: nothing runs on its port
    port = log.read_text().split("--port ")[1].split()[0]
    assert not any(
        "--port" in (cmd := p.info["cmdline"] or []) and port in cmd and "server" in cmd
        for p in psutil.process_iter(["cmdline"])
    )
    assert not (tmp_path / "data" / "sources").exists()  # no work was started
