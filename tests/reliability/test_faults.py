"""Fault injection as tests: `kill -9` a stage, rerun it, and it leaves what an uninterrupted
run leaves (issue 13).

A trial runs `loopline <stage>` as a process on a private copy of a state, SIGKILLs it (its
process group) at a kill point, runs it again to completion, then compares with the
stage's uninterrupted reference run (`tests/reliability/stages.py`): every warehouse table
and view readers use has the same rows and content (order-independent hashes, without the
columns that are new in every run, `harness.RULES`), no key occurs twice, the online store
holds the same vectors; after training every alias points at a version that loads and
predicts what the reference's champion predicts; after the stream consumer every event
landed once.

`make test` runs a deterministic handful (fixed kill points on the cheapest stages); the slow
suite (`-m slow`) runs `LOOPLINE_FAULT_TRIALS` (10) trials per stage at kill points drawn
from `LOOPLINE_FAULT_SEED` over the reference run: alternately a delay into it and the
appearance of one of its output lines. Each trial is recorded (stage, seed, kill point,
outcome) for docs/reliability.md (`tests/conftest.py`, `python -m loopline.reliability`).
"""

from __future__ import annotations

import os

import pytest

from tests.reliability.harness import STAGE_TIMEOUT_S, KillPoint, kill_point, snapshot
from tests.reliability.stages import STAGES, Reference, run_trial

SEED = int(os.environ.get("LOOPLINE_FAULT_SEED", "13"))
TRIALS = int(os.environ.get("LOOPLINE_FAULT_TRIALS", "10"))


def _raw(schema: str) -> bool:
    return schema == "raw"


def test_an_ingest_killed_while_it_loads_files_then_rerun_loads_each_file_once(
    small_sim, built_warehouse, tmp_path, reliability_record
):
    """Killed inside the transaction that loads the landed files (the catalogue's pages
    extracted, the OLTP tables copied); the rerun's raw layer is the uninterrupted ingest's:
    the session's shared warehouse, ingested from the same company."""
    ingested = built_warehouse[0]  # read only
    reference = Reference(
        STAGES["ingest"], small_sim[0], ingested, None, snapshot(ingested, _raw), _raw
    )
    trial = run_trial(reference, KillPoint(0.3, "loading files: started"), 0, tmp_path / "t")
    reliability_record.add("faults_fast", trial.as_dict())
    assert trial.killed, trial
    assert trial.ok, trial.outcome


def test_a_stream_consumer_killed_after_its_first_batch_then_restarted_lands_each_event_once(
    references, tmp_path, reliability_record
):
    reference = references.get("stream")
    trial = run_trial(reference, KillPoint(0.0, "events in 1 file"), 0, tmp_path / "t")
    reliability_record.add("faults_fast", trial.as_dict())
    assert trial.killed, trial
    assert trial.ok, trial.outcome


@pytest.mark.slow
@pytest.mark.timeout((2 * TRIALS + 4) * STAGE_TIMEOUT_S)  # each run has its own bound
@pytest.mark.parametrize("stage", ["ingest", "build", "train", "score", "stream"])
def test_a_stage_killed_at_random_points_then_rerun_leaves_what_an_uninterrupted_run_leaves(
    stage, references, tmp_path, reliability_record
):
    reference = references.get(stage)
    assert reference.run is not None
    trials = []
    for i in range(TRIALS):
        seed = SEED * 1000 + i
        kill = kill_point(reference.run, seed, by_line=i % 2 == 1)
        trial = run_trial(reference, kill, seed, tmp_path / f"trial-{i}")
        reliability_record.add(f"faults_slow_{stage}", trial.as_dict())  # a file per stage
        trials.append(trial)
    failed = [f"seed {t.seed}, {t.kill}: {t.outcome}" for t in trials if not t.ok]
    assert not failed, "\n".join(failed)
    # the kill points were real: at least the kills on an output line landed before the
    # stage finished (a delay may outlast a run faster than the reference's)
    assert sum(t.killed for t in trials) >= TRIALS // 2, [t.kill for t in trials]
