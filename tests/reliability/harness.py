"""Fault injection: run a `loopline` stage as a process, SIGKILL it at a chosen point, rerun it,
and compare what it left with an uninterrupted run of the same stage from the same state.

- `run_stage` starts `python -m loopline.cli <stage>` in its own process group with
  ``LOOPLINE_PROGRESS=log`` (a line at the start, every quarter and the end of each step,
  and one per phase), timestamps every output line, and sends SIGKILL to the group at a
  `KillPoint`: a delay after the start, or after the first line containing some text.
- `snapshot` reads what a stage leaves: every warehouse relation (row count, an
  order-independent content hash without the run-specific columns and log rules of `RULES`, one
  hash per column to say which differ, and the keys that occur twice), and the online
  store's vectors.
- `kill_points` draws a trial's kill points from a seeded RNG over the reference run: half
  a delay in (5 %, 95 %) of its duration, half the moment one of its output lines appears,
  so early and late kills both happen.

Stages and their checks are in `tests/reliability/stages.py`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from loopline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
STAGE_TIMEOUT_S = 900.0  # a bound against a hung stage, never a timing assertion


@dataclass(frozen=True)
class Rule:
    """How one relation is compared with the uninterrupted run's.

    `ignore`: columns whose value is legitimately new in every run (a load or decision
    time, a random batch or run id), left out of the hashes. `normalise`: columns compared
    through an SQL expression that removes the run-specific part of the value. `latest`:
    the relation is a log of attempts (an audit, a publication), each a real event: only
    the rows of its latest attempt (`(id column, time column)`) are compared.
    `not_compared`: the rows are a log a rerun adds to, checked by the stage's own check
    (its keys must still be unique). Each entry says why.
    """

    ignore: Mapping[str, str] = field(default_factory=dict)
    normalise: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    latest: tuple[str, str] | None = None
    not_compared: str | None = None  # why the rows are checked otherwise (keys still are)


_LOADED = {"_batch_id": "the ingest's random batch id", "_loaded_at": "load time, now()"}
_PAGE = "catalogue pages are named and stamped by their extraction's random batch id"
_UNCOLOURED = ("regexp_replace({c}, '__(blue|green)\\b', '', 'g')", "the colour built into")

RULES: dict[str, Rule] = {
    "raw.file_manifest": Rule(
        ignore={"batch_id": _LOADED["_batch_id"], "loaded_at": _LOADED["_loaded_at"]},
        normalise={
            "file_path": ("regexp_replace({c}, 'batch=[^/]+', 'batch=*')", _PAGE),
            "sha256": ("case when source = 'catalogue' then null else {c} end", _PAGE),
            "mtime_ns": (
                "case when source = 'catalogue' then null else {c} end",
                "a catalogue page is written when it is fetched",
            ),
        },
    ),
    "raw.events_lines": Rule(ignore=_LOADED),
    "raw.tickets_lines": Rule(ignore=_LOADED),
    "raw.payments_rows": Rule(ignore=_LOADED),
    "raw.catalogue_items": Rule(
        ignore={
            **_LOADED,
            "_extract_batch_id": "the extraction's random batch id",
            "_extracted_at": "when the page was fetched: one fetched again after a kill is newer",
        },
        normalise={"_file": ("regexp_replace({c}, 'batch=[^/]+', 'batch=*')", _PAGE)},
    ),
    "raw.oltp_loads": Rule(
        ignore={"batch_id": _LOADED["_batch_id"], "loaded_at": _LOADED["_loaded_at"]}
    ),
    **{
        f"raw.oltp_{t}": Rule(ignore=_LOADED)
        for t in ("users", "plans", "plan_prices", "subscriptions")
    },
    "features.feature_sets": Rule(
        ignore={"created_at": "when the build registered the version, now()"},
        normalise={"relation_name": _UNCOLOURED},
    ),
    "features.feature_builds": Rule(
        not_compared="the days each mart's last build wrote: a rerun after a kill finds some "
        "marts built and rewrites only their last days"
    ),
    "staging.load_builds": Rule(
        not_compared="the load watermark each load-time model's builds started from: a rerun "
        "after a kill finds some lines built and starts from there"
    ),
    "monitoring.validation_results": Rule(
        ignore={"run_id": "the audit's random id", "validated_at": "now()"},
        normalise={"relation": _UNCOLOURED},
        latest=("run_id", "validated_at"),
    ),
    "monitoring.publications": Rule(
        ignore={
            "publication_id": "random id",
            "published_at": "now()",
            "validation_run_id": "the audit's random id",
            "colour": "a build killed after its publication is rebuilt into the other colour",
            "previous_colour": "the same as `colour`",
        },
        latest=("publication_id", "published_at"),
    ),
    "monitoring.publication_days": Rule(
        not_compared="the days each publication vouched for (random publication ids): a rerun "
        "after a kill finds some marts built and publishes fewer new days"
    ),
    "ml.model_decisions": Rule(
        not_compared="a rerun trains again and adds its own decisions (new versions); each "
        "decision the registry holds must be in it once, with the same action"
    ),
    "ml.churn_predictions": Rule(ignore={"scored_at": "the scoring run's start, now()"}),
    "ml.recommendations": Rule(ignore={"scored_at": "the scoring run's start, now()"}),
    # every incremental model stamps the dbt invocation that wrote a row
    "*": Rule(ignore={"_dbt_invocation_id": "the dbt invocation that wrote the row"}),
}


def rule_for(relation: str) -> Rule:
    rule, every = RULES.get(relation, Rule()), RULES["*"]
    return Rule(
        {**every.ignore, **rule.ignore},
        {**every.normalise, **rule.normalise},
        rule.latest,
        rule.not_compared,
    )


# Natural keys of the tables Python writes (dbt's relations: their `unique` and
# `unique_combination` tests from the manifest): no key may occur twice
PYTHON_KEYS: dict[str, tuple[str, ...]] = {
    "raw.file_manifest": ("file_path",),
    "raw.events_lines": ("_file", "_line_no"),
    "raw.tickets_lines": ("_file", "_line_no"),
    "raw.payments_rows": ("_file", "_line_no"),
    "raw.catalogue_items": ("_file", "_item_no"),
    "raw.oltp_loads": ("table_name",),
    "raw.oltp_users": ("user_id",),
    "raw.oltp_plans": ("plan_id",),
    "raw.oltp_subscriptions": ("subscription_id",),
    "ml.churn_predictions": ("user_id", "as_of_date", "model_version"),
    "ml.recommendations": ("user_id", "as_of_date", "model_version", "rank"),
    "ml.model_decisions": ("model_name", "version", "action"),
    "online.online_vectors": ("feature_set", "feature_set_version", "entity_key"),
}


# --------------------------------------------------------------------------------------------
# running a stage


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL `delay` seconds after the start, or after an output line appeared: the
    `line`-th non-empty one (an int), or the first containing `line` (a str)."""

    delay: float
    line: int | str | None = None

    def describe(self) -> str:
        if self.line is None:
            return f"{self.delay:.2f} s after the start"
        if isinstance(self.line, int):
            return f"{self.delay:.2f} s after output line {self.line}"
        return f"{self.delay:.2f} s after the line {self.line!r}"

    def matches(self, number: int, text: str) -> bool:
        if isinstance(self.line, int):
            return number == self.line
        return isinstance(self.line, str) and self.line in text


@dataclass
class StageRun:
    """One run of a stage: its exit (None when killed), duration and timestamped output."""

    args: list[str]
    returncode: int | None
    seconds: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    killed_at: float | None = None  # seconds after the start
    armed_by: str = ""  # the output line after which the kill was sent
    cpu_seconds: float = 0.0  # user + system time of the stage's processes

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def tail(self, n: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def cli_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage process: this data folder, progress as log lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_DATA_DIR=str(settings.data_dir),
        LOOPLINE_PROGRESS="log",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",  # phase lines are cut to the terminal's width
    )
    env.update(extra or {})
    return env


def run_stage(
    args: Sequence[str],
    env: Mapping[str, str],
    kill: KillPoint | None = None,
    log: Path | None = None,
) -> StageRun:
    """Run `loopline <args>` to its end, or until `kill` says to SIGKILL it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "loopline.cli", *args],
        cwd=REPO, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes any child with it
    )  # fmt: skip
    run = StageRun(list(args), None, 0.0)
    seen = threading.Event()  # the kill point's line appeared
    seen_at: list[float] = []
    count = [0]  # non-empty lines so far

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            at = time.monotonic() - started
            run.lines.append((at, line))
            if line.strip():
                count[0] += 1
                if kill is not None and not seen.is_set() and kill.matches(count[0], line):
                    run.armed_by = line.strip()
                    seen_at.append(at)
                    seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if kill is not None:
            if kill.line is None:
                deadline = started + kill.delay
            else:
                while not seen.wait(0.02) and process.poll() is None:
                    pass
                deadline = started + (seen_at[0] if seen_at else 0.0) + kill.delay
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(min(0.01, max(deadline - time.monotonic(), 0)))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                run.killed_at = time.monotonic() - started
        process.wait(timeout=STAGE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(timeout=30)
    run.returncode = None if run.killed_at is not None else process.returncode
    run.seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # its children, once reaped, too
    run.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if log is not None:
        with log.open("a") as out:
            how = (
                f"killed at {run.killed_at:.2f} s"
                if run.killed_at is not None
                else (f"exit {run.returncode}")
            )
            out.write(f"$ loopline {' '.join(args)}  ({how}, {run.seconds:.1f} s)\n")
            out.writelines(f"{at:8.2f}  {line}\n" for at, line in run.lines)
    return run


def kill_point(reference: StageRun, seed: int, by_line: bool) -> KillPoint:
    """A kill point drawn with `seed` over `reference`: a delay in (5 %, 95 %) of its
    duration, or (`by_line`) the appearance of one of its non-empty output lines but the
    last, plus up to the time to the next one. Trials alternate the two, so that early and
    late kills, and kills right after each kind of step, all occur."""
    rng = random.Random(seed)
    lines = [(at, text) for at, text in reference.lines if text.strip()]
    if not by_line or len(lines) < 2:
        return KillPoint(round(rng.uniform(0.05, 0.95) * reference.seconds, 2))
    index = rng.randrange(len(lines) - 1)
    at, _ = lines[index]
    gap = max(lines[index + 1][0] - at, 0.0)
    return KillPoint(round(rng.uniform(0.0, gap), 2), index + 1)


# --------------------------------------------------------------------------------------------
# what a stage leaves


@dataclass(frozen=True)
class TableState:
    rows: int
    digest: int  # order-independent: the sum of the rows' hashes
    columns: dict[str, int]  # column -> its own order-independent hash
    duplicate_keys: int  # keys occurring more than once (0 when the table has no known key)
    key: tuple[str, ...] = ()
    compared: bool = True  # False: only the keys are checked (`Rule.not_compared`)


def _normalised(column: str, kind: str, rule: Rule) -> str:
    quoted = '"' + column.replace('"', '""') + '"'
    if column in rule.normalise:
        return "(" + rule.normalise[column][0].format(c=quoted) + ")"
    kind = kind.upper()
    if kind in ("DOUBLE", "FLOAT", "REAL"):  # parallel aggregates differ in the last bits
        return f"round({quoted}, 9)"
    if kind in ("DOUBLE[]", "FLOAT[]"):
        return f"list_transform({quoted}, x -> round(x, 9))"
    return quoted


def declared_keys(settings: Settings) -> dict[str, tuple[str, ...]]:
    """`schema.table` -> its unique key, from the dbt manifest's `unique` and
    `unique_combination` tests (the published names), plus `PYTHON_KEYS`."""
    from expectations.declared import declared_relations, load_manifest

    keys = dict(PYTHON_KEYS)
    manifest = load_manifest(settings)
    for name, relation in declared_relations(manifest or {}).items():
        for test in relation.tests:
            if test.severity != "error":
                continue
            if test.name == "unique" and test.column:
                keys.setdefault(name, (str(test.column),))
            elif test.name == "unique_combination":
                columns = test.kwargs.get("combination_of_columns") or test.kwargs.get("columns")
                if columns:
                    keys.setdefault(name, tuple(str(c) for c in columns))
    return keys


def snapshot(
    settings: Settings, schemas: Callable[[str], bool] = lambda schema: True
) -> dict[str, TableState]:
    """Every relation of the warehouse in `schemas`, and the online store's vectors."""
    keys = declared_keys(settings)
    out: dict[str, TableState] = {}
    path = settings.resolved_warehouse_path
    if path.exists():
        con = duckdb.connect(str(path), read_only=True)
        try:
            relations = con.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_catalog = current_database() order by 1, 2"
            ).fetchall()
            for schema, name in relations:
                if schema in ("information_schema", "pg_catalog") or not schemas(schema):
                    continue
                relation = f"{schema}.{name}"
                out[relation] = _table_state(con, relation, keys.get(relation, ()))
        finally:
            con.close()
    store = settings.data_dir / "online" / "online_store.sqlite"
    if store.exists():
        out["online.online_vectors"] = _online_state(store)
    return out


def _table_state(con: duckdb.DuckDBPyConnection, relation: str, key: tuple[str, ...]) -> TableState:
    schema, name = relation.split(".", 1)
    rule = rule_for(relation)
    columns = [
        (c, t)
        for c, t in con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
        if c not in rule.ignore
    ]
    target = f'"{schema}"."{name}"'
    if rule.latest is not None:
        ident, at = rule.latest
        target = (
            f'(select * from {target} where "{ident}" = '
            f'(select "{ident}" from {target} order by "{at}" desc limit 1))'
        )
    exprs = [_normalised(c, t, rule) for c, t in columns]
    sums = ", ".join(f"coalesce(sum(hash({e})::hugeint), 0)" for e in exprs) or "0"
    row_hash = f"hash({', '.join(exprs)})" if exprs else "0"
    values = con.execute(
        f"select count(*), coalesce(sum({row_hash}::hugeint), 0), {sums} from {target}"
    ).fetchone()
    assert values is not None
    duplicates = 0
    names = {c for c, _ in columns}
    if key and not set(key) & set(rule.ignore):
        # a declared key is a column or an SQL expression over columns (dbt's `unique`)
        listed = ", ".join(f'"{k}"' if k in names else f"({k})" for k in key)
        (duplicates,) = con.execute(
            f"select count(*) from (select {listed} from {target} group by all having count(*) > 1)"
        ).fetchone() or (0,)
    return TableState(
        rows=int(values[0]),
        digest=int(values[1]),
        columns={c: int(v) for (c, _), v in zip(columns, values[2:], strict=True)},
        duplicate_keys=int(duplicates),
        key=key,
        compared=rule.not_compared is None,
    )


# the streaming consumer's session window lives in its memory: after a restart it counts only
# the sessions seen since (loopline/stream/features.py), so this value may differ after a kill
APPROXIMATE_AFTER_RESTART = {"user_streaming": ("sessions_last_hour",)}


def _online_state(path: Path) -> TableState:
    """The online store's vectors, as a table (`created_at_us` is when it was written)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "select feature_set, feature_set_version, entity_key, feature_timestamp_us, "
            "vector_json from online_vectors"
        ).fetchall()
    finally:
        con.close()
    digest = 0
    per_column = dict.fromkeys(
        ("feature_set", "feature_set_version", "entity_key", "feature_timestamp_us", "vector"), 0
    )
    seen: dict[tuple[str, str, str], int] = {}
    for feature_set, version, entity, ts, vector in rows:
        doc = json.loads(vector)
        for approximate in APPROXIMATE_AFTER_RESTART.get(feature_set, ()):
            doc.pop(approximate, None)
        values = (feature_set, version, entity, ts, json.dumps(doc, sort_keys=True))
        digest += hash(values)
        for column, value in zip(per_column, values, strict=True):
            per_column[column] += hash(value)
        seen[(feature_set, version, entity)] = seen.get((feature_set, version, entity), 0) + 1
    return TableState(
        rows=len(rows),
        digest=digest,
        columns=per_column,
        duplicate_keys=sum(1 for n in seen.values() if n > 1),
        key=PYTHON_KEYS["online.online_vectors"],
    )


def differences(reference: Mapping[str, TableState], trial: Mapping[str, TableState]) -> list[str]:
    """What the trial's relations have that the reference's do not: one line each."""
    out = []
    for relation in sorted(set(reference) | set(trial)):
        ref, got = reference.get(relation), trial.get(relation)
        if ref is None or got is None:
            out.append(f"{relation}: {'missing' if got is None else 'not in the reference'}")
            continue
        if got.duplicate_keys:
            out.append(f"{relation}: {got.duplicate_keys} keys {got.key} occur twice or more")
        if not got.compared:
            continue
        if got.rows != ref.rows:
            out.append(f"{relation}: {got.rows} rows, the reference has {ref.rows}")
        elif got.digest != ref.digest:
            changed = sorted(c for c in ref.columns if got.columns.get(c) != ref.columns[c])
            out.append(f"{relation}: same rows, other content in {', '.join(changed)}")
    return out


# --------------------------------------------------------------------------------------------
# the record of a trial


@dataclass
class Trial:
    """One fault-injection trial, as docs/reliability.md reports it."""

    stage: str
    seed: int
    kill: str  # KillPoint.describe()
    kill_delay_s: float  # seconds after the start at which the kill was sent
    killed: bool  # False: the stage had finished before the kill point
    rerun_exit: int | None
    outcome: str  # "same as the uninterrupted run" or what differed
    ok: bool
    problems: list[str] = field(default_factory=list)
    reference_seconds: float = 0.0
    fraction: float = 0.0  # kill time / the reference run's duration
    seconds: float = 0.0  # the killed run and the rerun, wall clock
    cpu_seconds: float = 0.0  # ... and their processes' CPU time (the machine may be busy)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
