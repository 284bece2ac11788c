"""The scoring flow before any model passed its gate: a phase line saying so, no crash."""

from __future__ import annotations

from flows.score import ScoreFlowParams, batch_score
from loopline.settings import get_settings


def test_scoring_without_a_champion_is_skipped_with_a_line(
    prefect_harness, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    capfd.readouterr()
    try:
        result = batch_score(ScoreFlowParams())
    finally:
        get_settings.cache_clear()
    err = capfd.readouterr().err
    assert result == {
        "churn": {"as_of": None, "rows": 0, "version": None},
        "recommendations": {"rows": 0},
    }
    assert "! score      no churn @champion yet" in err
    assert "! recommend  no recommender @champion yet: skipped" in err
    assert "Traceback" not in err
