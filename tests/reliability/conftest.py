"""The uninterrupted runs fault-injection trials compare with, made once per session.

They chain as the loop does: the ingest's reference starts from the simulated company, the
build's from the ingest's result, training's from the build's, scoring's from training's;
the stream consumer's from the company with a spool of events. Each is made when a test
first asks for it, and its duration and output are what kill points are drawn over.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from loopline.settings import Settings
from tests.reliability.harness import RULES
from tests.reliability.stages import STAGES, Reference, make_reference, stream_ready

CHAIN = {"build": "ingest", "train": "build", "score": "train"}  # stage -> the one before


class References:
    """`get(stage)`: the stage's reference run (and those before it in the chain)."""

    def __init__(self, company: Settings, folder: Path) -> None:
        self.company = company
        self.folder = folder
        self.made: dict[str, Reference] = {}

    def get(self, name: str) -> Reference:
        if name not in self.made:
            if name == "stream":
                before = stream_ready(self.company, self.folder / "stream-before")
            elif name in CHAIN:
                before = self.get(CHAIN[name]).after
            else:
                before = self.company
            self.made[name] = make_reference(STAGES[name], before, self.folder / name)
        return self.made[name]


@pytest.fixture(scope="session")
def references(small_sim, tmp_path_factory, reliability_record) -> References:
    # how tables are compared goes into the record with the trials (docs/reliability.md)
    reliability_record.add(
        "fault_rules",
        {relation: asdict(rule) for relation, rule in sorted(RULES.items())},
    )
    return References(small_sim[0], tmp_path_factory.mktemp("fault-references"))
