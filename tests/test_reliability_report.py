"""docs/reliability.md's generated blocks: filled from the recorded runs, prose kept."""

from __future__ import annotations

import json

from loopline.reliability import BLOCKS, DOC, main, render
from tests.conftest import ReliabilityRecord, reliability_report_folder

DOC_TEXT = """# Reliability

Prose a person wrote.

<!-- generated: faults (python -m loopline.reliability) -->
old numbers
<!-- end generated: faults -->

More prose.

<!-- generated: api-fuzz (python -m loopline.reliability) -->
old fuzz numbers
<!-- end generated: api-fuzz -->
"""


def _trial(stage: str, seed: int, ok: bool, killed: bool = True) -> dict:
    return {
        "stage": stage, "seed": seed, "kill": "1.00 s after the start", "kill_delay_s": 1.0 + seed,
        "killed": killed, "rerun_exit": 0, "ok": ok, "problems": [],
        "outcome": "same as the uninterrupted run" if ok else "raw.events_lines: 10 rows, the reference has 5",
        "reference_seconds": 10.0, "fraction": (1.0 + seed) / 10.0,
    }  # fmt: skip


def _records(tmp_path) -> ReliabilityRecord:
    record = ReliabilityRecord()
    record.add("faults_slow_ingest", _trial("ingest", 1, True))
    record.add("faults_slow_ingest", _trial("ingest", 2, False))
    record.add("faults_slow_score", _trial("score", 3, True, killed=False))
    return record


def test_the_blocks_are_refilled_and_the_prose_and_unrecorded_blocks_stay(tmp_path):
    folder = tmp_path / "reports"
    _records(tmp_path).write(folder)
    doc = tmp_path / "reliability.md"
    doc.write_text(DOC_TEXT)

    assert main(["--reports", str(folder), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "Prose a person wrote." in text and "More prose." in text
    assert "old numbers" not in text
    assert "old fuzz numbers" in text  # nothing recorded for it: left as it was
    ingest = next(line for line in text.splitlines() if line.startswith("| `loopline ingest`"))
    # 2 trials, both killed, kill times 2 and 3 s (20 % and 30 % of the reference), 1 differed
    assert [cell.strip() for cell in ingest.strip("|").split("|")] == [
        "`loopline ingest`", "2", "2", "2.0 to 3.0 s", "20% to 30%", "10 s", "1", "1",
    ]  # fmt: skip
    score = next(line for line in text.splitlines() if line.startswith("| `loopline score`"))
    assert "| 1 | 0 |" in score  # the run finished before its kill point: not counted as killed
    assert "- ingest, seed 2, 1.00 s after the start: raw.events_lines: 10 rows" in text
    assert main(["--reports", str(folder), "--doc", str(doc), "--check"]) == 0
    doc.write_text(DOC_TEXT)
    assert main(["--reports", str(folder), "--doc", str(doc), "--check"]) == 1


def test_the_record_goes_to_the_data_folder_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LOOPLINE_RELIABILITY_REPORT", raising=False)
    assert reliability_report_folder() is None
    monkeypatch.setenv("LOOPLINE_RELIABILITY_REPORT", "1")
    assert reliability_report_folder() == tmp_path / "data" / "reports" / "reliability"
    monkeypatch.setenv("LOOPLINE_RELIABILITY_REPORT", str(tmp_path / "elsewhere"))
    assert reliability_report_folder() == tmp_path / "elsewhere"

    written = _records(tmp_path).write(tmp_path / "elsewhere")
    assert [p.name for p in written] == ["faults_slow_ingest.json", "faults_slow_score.json"]
    document = json.loads(written[0].read_text())
    assert document["kind"] == "faults_slow_ingest" and len(document["entries"]) == 2


def test_the_project_document_has_every_generated_block():
    text = DOC.read_text()
    for name in BLOCKS:
        assert f"<!-- generated: {name} " in text and f"<!-- end generated: {name} -->" in text
    assert sorted(render(text, {})[1]) == sorted(BLOCKS)  # nothing recorded: all kept
