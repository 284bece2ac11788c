"""The stages fault injection kills, the state each starts from, and what each must leave.

A stage's *reference* is one uninterrupted run from a saved state (`Reference`); a *trial*
copies the same state, runs the stage with a `KillPoint`, reruns it to completion and
compares what it left with the reference (`run_trial`):

- every warehouse relation readers use (all schemas but the write-audit-publish colours,
  `published`) has the reference's rows and content (`harness.snapshot`, without the
  run-specific columns of `harness.RULES`), and no key occurs twice;
- the online store's vectors are the reference's;
- the stage's own check: for training, every alias points at a version that loads and
  predicts what the reference's champion predicts; for the stream consumer, every event
  landed once.

The colour schemas (`<schema>__blue`, `<schema>__green`) are left out: a build killed after
its publication is rebuilt into the other colour, so which colour holds what differs from
the reference while the published views readers query do not.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from loopline.settings import Settings
from tests.conftest import copy_company
from tests.reliability.harness import (
    KillPoint,
    StageRun,
    TableState,
    Trial,
    cli_env,
    differences,
    run_stage,
    snapshot,
)

ML_CONFIG = Path(__file__).with_name("ml.yaml")
STREAM_EVENTS = 6000  # events in the spool the stream stage consumes


def published(schema: str) -> bool:
    """Schemas readers see: all but the write-audit-publish colours (see the module doc)."""
    return not schema.endswith(("__blue", "__green"))


Check = Callable[[Settings, Settings], list[str]]  # (trial, reference) -> problems


@dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    catalogue: bool = False  # serve the company's catalogue API while the stage runs
    check: Check | None = None


@contextmanager
def _catalogue(settings: Settings) -> Iterator[str]:
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer

    with CatalogueServer(catalogue_dir(settings)) as vendor:
        yield vendor.url


def run(stage: Stage, settings: Settings, kill: KillPoint | None = None, log: Path | None = None):
    """One run of `stage` on `settings`' data folder (see `harness.run_stage`)."""
    serving = _catalogue(settings) if stage.catalogue else nullcontext("")
    with serving as url:
        args = [*stage.args, *(["--catalogue-url", url] if url else [])]
        return run_stage(args, cli_env(settings, stage.env), kill, log)


@dataclass
class Reference:
    """An uninterrupted run of `stage` from the state in `before` (never modified); trials
    compare the relations in `schemas` with it."""

    stage: Stage
    before: Settings
    after: Settings
    run: StageRun | None  # None: a run made elsewhere (no output or duration to draw from)
    snapshot: dict[str, TableState]
    schemas: Callable[[str], bool] = published


def make_reference(stage: Stage, before: Settings, folder: Path) -> Reference:
    """Run `stage` once, uninterrupted, on a copy of `before`."""
    after = copy_company(before, folder / "data")
    done = run(stage, after, log=folder / "stage.log")
    assert done.returncode == 0, f"the reference {stage.name} failed:\n{done.tail()}"
    return Reference(stage, before, after, done, snapshot(after, published))


def run_trial(reference: Reference, kill: KillPoint, seed: int, folder: Path) -> Trial:
    """Kill the stage at `kill` on a copy of the reference's starting state, rerun it, compare.

    The copy is deleted when the trial passes, kept (with its log) when it does not.
    """
    stage = reference.stage
    settings = copy_company(reference.before, folder / "data")
    log = folder / "stage.log"
    killed = run(stage, settings, kill, log)
    rerun = run(stage, settings, log=log)
    problems: list[str] = []
    if rerun.returncode != 0:
        problems.append(f"the rerun exited {rerun.returncode}: {rerun.tail(3)}")
    else:
        problems += differences(reference.snapshot, snapshot(settings, reference.schemas))
        if stage.check is not None:
            problems += stage.check(settings, reference.after)
    at = killed.killed_at if killed.killed_at is not None else killed.seconds
    took = reference.run.seconds if reference.run is not None else 0.0
    trial = Trial(
        stage=stage.name,
        seed=seed,
        kill=kill.describe()
        + (f" ({killed.armed_by[:70]!r})" if isinstance(kill.line, int) else ""),
        kill_delay_s=round(at, 2),
        killed=killed.killed_at is not None,
        rerun_exit=rerun.returncode,
        outcome="; ".join(problems) if problems else "same as the uninterrupted run",
        ok=not problems,
        problems=problems,
        reference_seconds=round(took, 2),
        seconds=round(killed.seconds + rerun.seconds, 1),
        cpu_seconds=round(killed.cpu_seconds + rerun.cpu_seconds, 1),
        fraction=round(at / took, 3) if took else 0.0,
    )
    if trial.ok:
        shutil.rmtree(folder / "data", ignore_errors=True)
    return trial


# --------------------------------------------------------------------------------------------
# the stages' own checks


def _models_agree(trial: Settings, reference: Settings) -> list[str]:
    """Every alias of both models points at a version that loads; the champions predict what
    the reference's champions predict (training is seeded: same data, same model); every
    decision the registry holds is recorded in the warehouse once (`_decisions_recorded`)."""
    from ml.registry import CHALLENGER, CHAMPION, CHURN_MODEL, RECS_MODEL, alias_version, configure

    problems = []
    found: dict[str, dict[str, Any]] = {}
    for settings, which in ((reference, "reference"), (trial, "trial")):
        client = configure(settings)
        found[which] = {}
        for model in (CHURN_MODEL, RECS_MODEL):
            for alias in (CHAMPION, CHALLENGER):
                version = alias_version(client, model, alias)
                if version is None:
                    found[which][f"{model}@{alias}"] = None
                    continue
                try:
                    found[which][f"{model}@{alias}"] = _predict(settings, model, alias)
                except Exception as exc:  # an alias on a version that does not load
                    problems.append(f"{which}: {model}@{alias} (v{version}) does not load: {exc}")
    for key in found["reference"]:
        ref, got = found["reference"][key], found["trial"].get(key)
        if key.endswith("@champion") and (ref is None) != (got is None):
            problems.append(f"{key}: {'none' if got is None else 'set'} (reference: the opposite)")
        elif key.endswith("@champion") and ref is not None and got != ref:
            problems.append(f"{key} predicts otherwise than the reference's champion")
    return problems + _decisions_recorded(trial)


def _decisions_recorded(settings: Settings) -> list[str]:
    """Each version the registry holds a decision for (its `decision.*` tags) has exactly
    one row in `ml.model_decisions`, with the same action, and each row names a version.

    A rerun trains again, so the log holds the killed run's decisions and the rerun's: it
    is compared with the registry, not with the uninterrupted run's log."""
    import duckdb

    from ml.registry import CHURN_MODEL, RECS_MODEL, configure

    client = configure(settings)
    tagged = {
        (model, str(v.version)): v.tags.get("decision.action")
        for model in (CHURN_MODEL, RECS_MODEL)
        for v in client.search_model_versions(f"name = '{model}'")
    }
    con = duckdb.connect(str(settings.resolved_warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "select model_name, version, action from ml.model_decisions where action != 'rollback'"
        ).fetchall()
    finally:
        con.close()
    recorded = Counter((model, str(version)) for model, version, _ in rows)
    problems = [
        f"{model} v{version}: decided {action!r} in the registry, "
        f"{recorded[(model, version)]} rows in ml.model_decisions"
        for (model, version), action in sorted(tagged.items())
        if action is not None and recorded[(model, version)] != 1
    ]
    problems += [
        f"{model} v{version}: {action} in ml.model_decisions, {tagged.get((model, version))!r} "
        "in the registry"
        for model, version, action in rows
        if tagged.get((model, str(version))) != action
    ]
    return problems


def _predict(settings: Settings, model: str, alias: str) -> Any:
    """What the version under `alias` predicts for a fixed sample of the warehouse's users."""
    from ml.registry import CHURN_MODEL

    if model == CHURN_MODEL:
        import duckdb

        from ml.churn.model import as_model_input
        from ml.churn.score import load_churn_model

        champion = load_churn_model(settings, alias)
        con = duckdb.connect(str(settings.resolved_warehouse_path), read_only=True)
        try:
            frame = con.execute(
                "select * from features.fs_churn__user_daily where feature_set_version = ? "
                "order by as_of_date desc, user_id limit 200",
                [champion.feature_set_version],
            ).df()
        finally:
            con.close()
        proba = champion.model.predict_proba(as_model_input(frame)[champion.feature_columns])
        return [round(float(p), 9) for p in proba[:, 1]]
    from ml.recommender.persistence import load_recommender

    loaded = load_recommender(settings, alias)
    assert loaded is not None
    shows = sorted(loaded.model.show_ids)[:20]  # histories of two shows
    return [loaded.model.recommend([a, b], 5) for a, b in pairwise(shows)]


def landed_events(settings: Settings) -> Counter[str]:
    """Every line of every file the stream landed (repeats counted)."""
    lines: Counter[str] = Counter()
    for path in settings.landing_dir.glob("events/date=*/events_*_stream-*.ndjson"):
        lines.update(path.read_text().splitlines())
    return lines


def _events_once(trial: Settings, reference: Settings) -> list[str]:
    got, ref = landed_events(trial), landed_events(reference)
    problems = []
    twice = sum(1 for n in got.values() if n > 1)
    if twice:
        problems.append(f"{twice} events landed twice or more")
    missing = sum((ref - got).values())
    extra = sum((got - ref).values())
    if missing or extra:
        problems.append(f"landed events: {missing} missing, {extra} not in the reference")
    ids = Counter(json.loads(line)["event_id"] for line in got)
    if any(n > 1 for n in ids.values()):
        problems.append("an event id landed twice")
    return problems


STAGES: dict[str, Stage] = {
    "ingest": Stage("ingest", ("ingest",), catalogue=True),
    "build": Stage("build", ("build",)),
    "train": Stage(
        "train", ("train",), {"LOOPLINE_ML_CONFIG": str(ML_CONFIG)}, check=_models_agree
    ),
    "score": Stage("score", ("score",), {"LOOPLINE_ML_CONFIG": str(ML_CONFIG)}),
    "stream": Stage(
        "stream",
        ("stream", "--idle-exit", "1", "--report-every", "1"),
        {"LOOPLINE_STREAM_BATCH_EVENTS": "300", "LOOPLINE_STREAM_BATCH_SECONDS": "0.5"},
        check=_events_once,
    ),
}


def stream_ready(company: Settings, folder: Path) -> Settings:
    """A copy of the company with `STREAM_EVENTS` of its next day's events in the spool."""
    from itertools import islice

    from loopline.stream.producer import simulated_lines
    from loopline.stream.sources import SpoolTarget

    settings = copy_company(company, folder / "data")
    target = SpoolTarget(settings.resolved_stream_spool_path)
    target.publish(list(islice(simulated_lines(settings), STREAM_EVENTS)))
    target.close()
    return settings
