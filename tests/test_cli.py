"""The `loopline` command line: help everywhere, clear errors, simulate end to end."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.settings import get_settings

runner = CliRunner()
COMMANDS = ["simulate", "catalogue-api", "ingest", "build", "validate", "train", "score",
            "serve", "promote", "monitor", "stream", "up", "down", "demo"]  # fmt: skip


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


def test_unbuilt_command_says_so(data_dir):
    result = runner.invoke(app, ["monitor"])
    assert result.exit_code == 2
    assert "not built yet" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "churn"], "loopline build"),
        (["train", "--model", "everything"], "choose churn, recommender or all"),
        (["score"], "no @champion yet"),
        (["promote"], "pass --rollback"),
        (["promote", "--rollback"], "no previous champion"),
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
    from loopline.settings import Settings

    monkeypatch.delenv("PREFECT_HOME", raising=False)
    _prefect_home(Settings(data_dir=tmp_path / "fresh" / "data"))
    assert (tmp_path / "fresh" / "data" / "prefect").is_dir()
