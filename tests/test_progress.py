"""Progress reporting: phase lines fit the terminal, steps log by quarters, `off` is silent."""

from __future__ import annotations

import logging

import pytest

from loopline import progress


@pytest.fixture
def records(monkeypatch):
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    progress.logger.addHandler(handler)
    yield seen
    progress.logger.removeHandler(handler)


def test_phase_line_keeps_its_timing_when_the_summary_is_cut(monkeypatch, capsys, records):
    monkeypatch.setenv("LOOPLINE_PROGRESS", "quiet")
    monkeypatch.setattr(progress, "_console", None)
    monkeypatch.setenv("COLUMNS", "60")
    progress.phase("simulate", "a very long summary " * 10, seconds=75.4)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("(1 m 15 s)")
    assert len(err[0]) <= 60
    assert records and records[0].startswith("simulate")


def test_log_mode_reports_each_quarter_and_the_end(monkeypatch, capsys, records):
    monkeypatch.setenv("LOOPLINE_PROGRESS", "log")
    monkeypatch.setattr(progress, "_console", None)
    with progress.track("loading files", total=8, unit="files") as bar:
        for _ in range(8):
            bar.advance()
    assert [r.split(": ", 1)[1] for r in records] == [
        "started (8 files)",
        "2/8 files (25%)",
        "4/8 files (50%)",
        "6/8 files (75%)",
        records[-1].split(": ", 1)[1],
    ]
    assert records[-1].startswith("loading files: done, 8 files in")
    assert len(capsys.readouterr().err.strip().splitlines()) == 5


def test_quiet_mode_logs_steps_but_prints_only_phases(monkeypatch, capsys, records):
    monkeypatch.setenv("LOOPLINE_PROGRESS", "quiet")
    monkeypatch.setattr(progress, "_console", None)
    assert list(progress.iterate([1, 2, 3, 4], "scoring", unit="batches")) == [1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    assert len(records) == 5


def test_off_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("LOOPLINE_PROGRESS", "off")
    progress.phase("ingest", "nothing new")
    with progress.track("x", 2) as bar:
        bar.advance(2)
    assert capsys.readouterr().err == ""
