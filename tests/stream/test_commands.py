"""`loopline produce` and `loopline stream`: the simulator's events through the spool."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.settings import get_settings
from tests.conftest import copy_company
from tests.stream.conftest import landed_ids

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOPLINE_STREAM_BATCH_SECONDS", "0.2")
    monkeypatch.delenv("LOOPLINE_STREAM_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_produce_then_stream_lands_the_simulated_events(small_sim, data_dir):
    copy_company(small_sim[0], data_dir)
    produced = runner.invoke(app, ["produce", "--rate", "2000", "--events", "300"])
    assert produced.exit_code == 0, produced.output
    assert "published 300 events" in produced.output
    consumed = runner.invoke(app, ["stream", "--idle-exit", "0.5", "--report-every", "1"])
    assert consumed.exit_code == 0, consumed.output
    assert "metrics.json" in consumed.output
    ids = landed_ids(get_settings().landing_dir)
    assert len(ids) == len(set(ids)) == 300


def test_produce_before_any_simulation_says_to_simulate(data_dir):
    result = runner.invoke(app, ["produce", "--events", "1"])
    assert result.exit_code == 2 and "loopline simulate" in result.output


def test_stream_names_a_redis_it_cannot_reach(data_dir, monkeypatch):
    monkeypatch.setenv("LOOPLINE_STREAM_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    result = runner.invoke(app, ["stream", "--idle-exit", "0.1"])
    assert result.exit_code == 2
    assert "unreachable" in result.output and "LOOPLINE_STREAM_URL" in result.output
