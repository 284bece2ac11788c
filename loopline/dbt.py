"""Run dbt in-process from the repo root, with the project's settings as its environment.

dbt's own console output never reaches the terminal (`--log-level none`): its per-node
lines go to ``<data>/dbt/logs/dbt.log`` (debug level, as plain dbt writes it), a bar counts
the nodes as they finish (from dbt's `NodeFinished` events), and a build ends with one
phase line (models, tests, passed, warned, failed, seconds) plus one line per failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loopline import progress
from loopline.paths import shown
from loopline.settings import Settings
from loopline.warehouse import reading, warehouse_writer, writing

# dbt's console output off; the log file keeps what plain dbt writes there by default,
# without colour codes (it is read with less or grep, not on a terminal)
QUIET_FLAGS = ("--log-level", "none", "--log-level-file", "debug", "--no-use-colors")
# commands that run nodes: they get a bar, a summary and the failures spelled out
RUNS_NODES = ("build", "run", "test", "seed", "snapshot")
# arguments that change what dbt parses: a manifest parsed without them cannot be reused
_PARSE_ARGS = ("--vars", "--target", "-t", "--profile", "--project-dir", "--profiles-dir")
PASSED = ("success", "pass")
FAILED = ("error", "fail", "runtime error")
TEST_TYPES = ("test", "unit_test")
PARTIAL_PARSE_FILE = "partial_parse.msgpack"  # dbt's, in its target folder
RELATION_TYPES = ("model", "seed", "snapshot")


class DbtError(RuntimeError):
    """dbt ran and reported failures: one line naming the first, all of them in `failures`."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@dataclass(frozen=True)
class NodeOutcome:
    """One node's result, as the summary needs it."""

    unique_id: str
    resource_type: str  # model | seed | snapshot | test | unit_test | operation | exposure ...
    name: str
    status: str  # success | pass | warn | fail | error | skipped | no-op ...
    message: str


@dataclass(frozen=True)
class DbtResult:
    command: list[str]
    success: bool
    results: list[tuple[str, str]]  # (node unique id, status)
    output: list[dict[str, str]] = field(default_factory=list)  # `dbt ls` rows
    processed: dict[str, int] = field(default_factory=dict)  # incremental model -> rows written
    nodes: list[NodeOutcome] = field(default_factory=list)
    seconds: float = 0.0
    log_file: Path | None = None
    error: str = ""  # why a command failed without node results (a parse error, say)
    manifest: Any = field(default=None, repr=False, compare=False)  # `dbt parse`

    def counts(self) -> dict[str, int]:
        """Models (seeds and snapshots included), tests, and how they ended."""
        ran = [n for n in self.nodes if n.resource_type in (*RELATION_TYPES, *TEST_TYPES)]
        return {
            "models": sum(n.resource_type in RELATION_TYPES for n in ran),
            "tests": sum(n.resource_type in TEST_TYPES for n in ran),
            "passed": sum(n.status in PASSED for n in ran),
            "warned": sum(n.status == "warn" for n in ran),
            "failed": sum(n.status in FAILED for n in ran),
            "skipped": sum(n.status == "skipped" for n in ran),
        }

    def summary(self) -> str:
        """One line: `33 models, 203 tests: 236 passed, 0 warned, 0 failed`."""
        c = self.counts()
        line = (
            f"{c['models']} models, {c['tests']} tests: {c['passed']} passed, "
            f"{c['warned']} warned, {c['failed']} failed"
        )
        return line + (f", {c['skipped']} skipped" if c["skipped"] else "")

    def failures(self) -> list[str]:
        """One line per failed or warning node: `<type> <name>: <what went wrong>`."""
        return [
            f"{'warning' if n.status == 'warn' else n.status}: {n.resource_type} {n.name}: "
            f"{one_line(n.message)}"
            for n in self.nodes
            if n.status in FAILED or n.status == "warn"
        ]


def project_dir(settings: Settings | None = None) -> Path:
    """The folder holding dbt_project.yml (the repo root unless settings say otherwise)."""
    if settings is not None and settings.dbt_project_dir is not None:
        return settings.dbt_project_dir
    here = Path(__file__).resolve().parent.parent
    for candidate in (here, Path.cwd()):
        if (candidate / "dbt_project.yml").exists():
            return candidate
    raise FileNotFoundError("dbt_project.yml not found: run loopline from the repository root")


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment variables profiles.yml reads, from the settings."""
    return {
        "LOOPLINE_DATA_DIR": str(settings.data_dir),
        "LOOPLINE_WAREHOUSE_PATH": str(settings.resolved_warehouse_path),
        "LOOPLINE_DUCKDB_THREADS": str(settings.duckdb_threads),
        "LOOPLINE_DBT_THREADS": str(settings.dbt_threads),
        "LOOPLINE_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit,
    }


def log_file(settings: Settings) -> Path:
    """Where dbt's per-node output goes (one file per warehouse, rotated by dbt)."""
    return settings.data_dir / "dbt" / "logs" / "dbt.log"


def run_dbt(
    settings: Settings,
    args: Sequence[str],
    raise_on_failure: bool = True,
    colour: str | None = None,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> DbtResult:
    """Run one dbt command (e.g. ["build"]) holding the warehouse writer lock.

    `colour` builds the models into `<schema>__<colour>` for write-audit-publish
    (loopline/publish.py); without it they land in the plain schemas. `callbacks` get every
    dbt event of the command itself (not of the preparatory parse and empty build): the
    flows report each node to Prefect through one (flows/dbt_nodes.py).

    Before the first build of a warehouse, the incremental models are created empty:
    dbt's unit tests of the incremental path (`input: this`) need the relation to exist.
    Once they exist this costs one query: the project is parsed once for both steps. A
    build that leaves the unit tests out (`--exclude-resource-type unit_test`, as the
    audited colour builds do) needs no such pass: a first build creates its tables directly.
    A colour build leaves empty stand-ins of any incremental model missing from the plain
    schemas (`plain_stand_ins`), so a plain `dbt build` from the repo root passes after it.
    A command that runs nodes reports one phase line and one line per failure.
    """
    started = time.perf_counter()
    building = bool(args) and args[0] in ("build", "run") and "--empty" not in args
    manifest = None
    incremental: list[str] = []
    if building:
        reusable = not any(a.split("=")[0] in _PARSE_ARGS for a in args)
        manifest = parse(settings, colour) if reusable else None
        if runs_unit_tests(args):
            incremental = ensure_incremental_relations(settings, manifest, colour)
        else:
            incremental = incremental_relations(settings, manifest, colour)
    shows = bool(args) and args[0] in RUNS_NODES and "--empty" not in args
    bar = f"dbt {args[0]}" if shows else None
    result = _invoke(settings, args, manifest=manifest, bar=bar, colour=colour, callbacks=callbacks)
    if building and colour is not None:  # a failed build too: it may have created some
        plain_stand_ins(settings, incremental, colour)
    if building and result.success:
        result.processed.update(_rows_written(settings, incremental))
    if shows:
        result = replace(result, seconds=time.perf_counter() - started)
        progress.phase(args[0], result.summary(), result.seconds, ok=result.success)
        for line in result.failures():
            progress.logger.info(line)
            progress.say(f"  {_escape(line)}")
        if not result.success:
            progress.say(f"  [dim]full log: {_escape(shown(log_file(settings)))}[/dim]")
    if raise_on_failure and not result.success:
        raise _error(args, result, settings)
    return result


def _error(args: Sequence[str], result: DbtResult, settings: Settings) -> DbtError:
    failures = result.failures()
    failed = [line for line in failures if not line.startswith("warning:")]
    where = f"see {shown(log_file(settings))}"
    if failed:  # each was reported on its own line already (terminal and logger)
        nodes = "1 node" if len(failed) == 1 else f"{len(failed)} nodes"
        return DbtError(f"dbt {args[0]} failed: {nodes} ({where}); first: {failed[0]}", failed)
    return DbtError(f"dbt {' '.join(args)} failed: {result.error or 'no reason given'} ({where})")


def one_line(message: str | None) -> str:
    """The informative line of a dbt message (`Runtime Error in model x` says little)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if len(lines) > 1 and re.match(r"^\w[\w ]* Error in ", lines[0]):
        lines = lines[1:]
    text = lines[0] if lines else "(no message)"
    return text if len(text) <= 300 else text[:299] + "…"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _rows_written(settings: Settings, relations: list[str]) -> dict[str, int]:
    """Rows each incremental model wrote in the last dbt run (from `_dbt_invocation_id`)."""
    results = settings.data_dir / "dbt" / "target" / "run_results.json"
    invocation = json.loads(results.read_text())["metadata"]["invocation_id"]
    out: dict[str, int] = {}
    with reading(settings) as con:  # called under the build's writer lock
        for relation in relations:
            schema, table = relation.split(".")
            columns = {
                c for (c,) in con.execute(
                    "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                    [schema, table],
                ).fetchall()
            }  # fmt: skip
            if "_dbt_invocation_id" in columns:
                (count,) = con.execute(
                    f"select count(*) from {relation} where _dbt_invocation_id = ?", [invocation]
                ).fetchone() or (0,)
                out[relation] = int(count)
    return out


def parse(settings: Settings, colour: str | None = None) -> Any:
    """The project's parsed manifest (dbt's partial parsing makes a repeat cheap)."""
    result = _invoke(settings, ["parse"], colour=colour)
    if not result.success:
        raise _error(["parse"], result, settings)
    return result.manifest


def incremental_relations(
    settings: Settings, manifest: Any = None, colour: str | None = None
) -> list[str]:
    """`schema.table` of every incremental model, from the parsed project (of `colour`)."""
    manifest = manifest if manifest is not None else parse(settings, colour)
    return sorted(
        f"{node.schema}.{node.alias}"
        for node in manifest.nodes.values()
        if node.resource_type == "model" and node.config.materialized == "incremental"
    )


def ensure_incremental_relations(
    settings: Settings, manifest: Any = None, colour: str | None = None
) -> list[str]:
    """Create missing incremental models empty (`dbt build --empty`); return all of them.

    dbt's unit tests of the incremental path (`input: this`) need the relation to exist.
    Pass a parsed `manifest` to skip parsing; with every relation there, this is one query.
    Only the missing relations are built, with those of their parents that are missing too:
    a relation that exists (a published view, say) is never replaced by an empty one.
    """
    manifest = manifest if manifest is not None else parse(settings, colour)
    wanted = {_schema_and_name(name) for name in incremental_relations(settings, manifest)}
    existing: set[tuple[str, str]] = set()
    if settings.resolved_warehouse_path.exists():
        # read-write: dbt-duckdb keeps its in-process instance open (see open_warehouse)
        with writing(settings) as con:
            existing = _relations(con)
    missing = sorted(f"{schema}.{alias}" for schema, alias in wanted - existing)
    if missing:
        # seeds and snapshots upstream of them must exist too, hence `build` without tests
        unbuilt = missing_upstream(manifest, wanted - existing, existing)
        args = ["build", "--empty", "--select", *unbuilt,
                "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]  # fmt: skip
        result = _invoke(settings, args, manifest=manifest, colour=colour)
        if not result.success:
            raise _error(args, result, settings)
    return sorted(f"{schema}.{alias}" for schema, alias in wanted)


def missing_upstream(
    manifest: Any, relations: set[tuple[str, str]], existing: set[tuple[str, str]]
) -> list[str]:
    """The names of the models, seeds and snapshots that make `relations` (schema, alias),
    and of every one upstream of them whose relation is not in `existing` (ephemeral models
    aside): what an empty build must select for `relations` to exist."""
    nodes = manifest.nodes
    relation_of = {
        uid: (node.schema, node.alias)
        for uid, node in nodes.items()
        if node.resource_type in RELATION_TYPES and node.config.materialized != "ephemeral"
    }
    todo = [uid for uid, relation in relation_of.items() if relation in relations]
    seen: set[str] = set()
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        parents = getattr(nodes[uid].depends_on, "nodes", ())  # a seed has none
        todo.extend(p for p in parents if p in nodes)
    return sorted(
        nodes[uid].name for uid in seen if uid in relation_of and relation_of[uid] not in existing
    )


def runs_unit_tests(args: Sequence[str]) -> bool:
    """Whether a dbt command's arguments leave its unit tests in (`build` and `test` run them
    unless `--exclude-resource-type unit_test` says otherwise)."""
    excluded: set[str] = set()
    for i, arg in enumerate(args):
        if arg == "--exclude-resource-type" and i + 1 < len(args):
            excluded.add(args[i + 1])
        elif arg.startswith("--exclude-resource-type="):
            excluded.add(arg.split("=", 1)[1])
    return "unit_test" not in excluded


def plain_stand_ins(settings: Settings, relations: Sequence[str], colour: str) -> list[str]:
    """Create, empty, the plain-schema relation of each of `colour`'s incremental `relations`
    (`schema__colour.table`) that is missing; return those created.

    A plain `dbt build` runs the unit tests of the incremental models, which need the
    relations to exist; a publication replaces the stand-ins with views of the live colour.
    Each is copied from its colour's table (same columns, no rows), so one the colour build
    did not create (it failed first) is left for a later build (or `loopline ingest`).
    """
    suffix = f"__{colour}"
    coloured = [
        (schema, table)
        for schema, table in map(_schema_and_name, relations)
        if schema.endswith(suffix)
    ]
    if not coloured or not settings.resolved_warehouse_path.exists():
        return []
    created: list[str] = []
    with writing(settings) as con:  # re-entrant: a build holds the writer lock already
        existing = _relations(con)
        for schema, table in coloured:
            plain = schema.removesuffix(suffix)
            if (plain, table) in existing or (schema, table) not in existing:
                continue
            con.execute(f'create schema if not exists "{plain}"')
            con.execute(
                f'create table "{plain}"."{table}" as select * from "{schema}"."{table}" limit 0'
            )
            created.append(f"{plain}.{table}")
    return created


def _schema_and_name(relation: str) -> tuple[str, str]:
    """`("staging", "t")` of `"staging.t"`."""
    schema, name = relation.split(".", 1)
    return schema, name


def _relations(con: Any) -> set[tuple[str, str]]:
    """(schema, name) of every table and view in the warehouse."""
    rows = con.execute("select table_schema, table_name from information_schema.tables")
    return {(schema, name) for schema, name in rows.fetchall()}


def _close_dbt_duckdb() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open between invocations.

    It outlives the invocation (a class-level environment), so without this the process
    would keep the warehouse file open after releasing the writer lock, and another process
    opening it would fail on DuckDB's own file lock.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if env is not None:
        with contextlib.suppress(Exception):  # closing must not hide the build's outcome
            env.close()


# what macros/features_as_of_days.sql logs as a feature mart starts each batch after its first
FEATURE_BATCH = " of as-of days, "


class _NodeCounter:
    """A dbt event callback that advances a bar as nodes finish (called from dbt's threads)."""

    def __init__(self, bar: progress.Tracker) -> None:
        self.bar = bar

    def __call__(self, msg: Any) -> None:
        try:
            name = msg.info.name
            if name == "LogStartLine" and self.bar.total is None:
                self.bar.set_total(msg.data.total)
            elif name == "NodeFinished":
                self.bar.advance()
            elif name == "JinjaLogInfo" and FEATURE_BATCH in msg.info.msg:
                self.bar.note(msg.info.msg)  # a feature mart's batch (features_as_of_days.sql)
        except Exception:  # a progress bar must never break a build
            return


@contextlib.contextmanager
def _partial_parse_of(target: Path, colour: str | None) -> Iterator[None]:
    """dbt's partial-parse state of `colour`'s builds in `target` for one invocation.

    dbt keeps one partial-parse file per target folder and reparses the whole project when
    the vars differ from the run that wrote it; write-audit-publish alternates the
    `wap_colour` var, so every build would reparse. Each colour keeps its own copy instead:
    it is put in place before the run and kept after it."""
    if colour is None:
        yield
        return
    current, kept = target / PARTIAL_PARSE_FILE, target / f"{colour}.{PARTIAL_PARSE_FILE}"
    if kept.exists():
        shutil.copyfile(kept, current)
    try:
        yield
    finally:
        if current.exists():
            shutil.copyfile(current, kept)


def _invoke(
    settings: Settings,
    args: Sequence[str],
    manifest: Any = None,
    bar: str | None = None,
    colour: str | None = None,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> DbtResult:
    """One dbt invocation, silent on the terminal; a bar over its nodes when `bar` names one.

    `callbacks` receive dbt's events (from dbt's threads) beside the bar's counter.
    """
    from dbt.cli.main import dbtRunner

    root = project_dir(settings)
    env = dbt_env(settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # artifacts and logs per warehouse, under its data folder: two runs against two
    # warehouses (a test and the demo, say) never overwrite each other's target/
    artifacts = settings.data_dir / "dbt"
    command = [
        *args,
        "--project-dir", str(root),
        "--profiles-dir", str(root),
        "--target-path", str(artifacts / "target"),
        "--log-path", str(artifacts / "logs"),
        *QUIET_FLAGS,
        *(["--vars", json.dumps({"wap_colour": colour})] if colour else []),
    ]  # fmt: skip
    try:
        # a run given a parsed manifest does not parse: no state to swap
        parsing_colour = colour if manifest is None else None
        with warehouse_writer(settings), _partial_parse_of(artifacts / "target", parsing_colour):
            try:
                if bar is None:
                    result = dbtRunner(manifest=manifest, callbacks=list(callbacks)).invoke(command)
                else:
                    with progress.track(bar, unit="nodes") as tracker:
                        counted: list[Callable[[Any], None]] = [_NodeCounter(tracker), *callbacks]
                        result = dbtRunner(manifest=manifest, callbacks=counted).invoke(command)
            finally:
                _close_dbt_duckdb()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nodes: list[NodeOutcome] = []
    output: list[dict[str, str]] = []
    res = result.result
    if res is not None and hasattr(res, "results"):
        nodes = [
            NodeOutcome(
                unique_id=r.node.unique_id,
                resource_type=str(r.node.resource_type),
                name=r.node.name,
                status=str(r.status),
                message=str(r.message or ""),
            )
            for r in res.results
        ]
    elif isinstance(res, list):  # `dbt ls --output json`
        output = [json.loads(line) for line in res]
    return DbtResult(
        command=command,
        success=result.success,
        results=[(n.unique_id, n.status) for n in nodes],
        output=output,
        nodes=nodes,
        log_file=log_file(settings),
        error=one_line(str(result.exception)) if result.exception else "",
        manifest=res if args and args[0] == "parse" else None,
    )
