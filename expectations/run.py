"""Run the suites: ``validate(settings, assets) -> ValidationReport``.

For each asset the runner derives its suite (``expectations.suites``), validates the
relation where it lives in the warehouse through GX's SQL datasource (``gx_duckdb``: every
metric is a query DuckDB answers, so memory stays bounded whatever the table's size), keeps
the results as GX Data Docs under ``<data_dir>/gx/``, appends one row per expectation to
``monitoring.validation_results`` and prints one line per suite.

Write-audit-publish: ``relations={"core.dim_users": "core__audit.dim_users"}`` validates a
staged copy under the published asset's suite; ``record=False`` leaves the warehouse
untouched (the caller appends ``report.rows`` with :func:`expectations.results.append`
where it holds the lock). See docs/validation.md.

Suites run with ``batch.validate`` rather than a Checkpoint: a Checkpoint fails to store
results that hold numpy booleans (quantile expectations, see shared STACK.md); results are
converted to plain JSON values here before they are stored and rendered.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from expectations.declared import (
    DeclaredRelation,
    declared_relations,
    describe,
    load_manifest,
    manifest_path,
)
from expectations.results import ResultRow, append
from expectations.suites import Asset, BuildContext, Policy, discover, is_critical
from loopline import warehouse as warehouse_mod
from loopline.progress import phase
from loopline.publish import FEATURE_BUILDS, LOAD_BUILDS
from loopline.settings import Settings

# failed expectations are validated a second time with this many sample values for Data
# Docs; the first pass asks for none, so a passing map expectation costs no extra scan
SAMPLES = 20
DATASOURCE = "warehouse"
# where a feature mart's unsettled days (or a load-time model's unsettled lines) are judged,
# as a view, while its suite runs
WINDOWS_SCHEMA = "loopline_audit"
# the stored validation results GX's store keeps (the newest; about seven audits of every
# suite): each Data Docs build lists the store's keys five times, parsing every key's run
# time, and reads back every result its index lists, so an unbounded store made each audit
# slower than the last (5,000 results, about a week of hourly builds, cost 6 s a build).
# Older results are moved to gx/archive/validations/ (the same layout: nothing is lost),
# and every row of every run stays in monitoring.validation_results.
DATA_DOCS_RESULTS = 300
# a dbt test's `where` placeholder: the load watermark of a model's unpublished lines
# (macros/loads_unsettled.sql, filled for dbt by macros/tests_rebuilt_days.sql)
_UNSETTLED_LOADS = re.compile(r"__unsettled_loads__\((\w+)\)")


class ValidationError(ValueError):
    """Bad input to the runner (unknown asset, no warehouse, no manifest)."""


@dataclass(frozen=True)
class SuiteResult:
    """One suite's outcome (or why it did not run)."""

    asset: str
    suite: str
    relation: str
    layer: str
    evaluated: int = 0
    passed: int = 0
    failed_critical: tuple[str, ...] = ()
    failed_warning: tuple[str, ...] = ()
    seconds: float = 0.0
    skipped: str | None = None  # why the suite did not run (relation not there yet)
    from_day: str | None = None  # judged the as-of days from this one on (the unsettled ones)
    # judged the lines loaded after this time, and the rows holding their keys (the unsettled ones)
    loaded_after: str | None = None

    @property
    def critical_failed(self) -> bool:
        return bool(self.failed_critical)

    @property
    def success(self) -> bool:
        return not self.failed_critical and not self.failed_warning

    def line(self) -> str:
        """The suite's one line for the terminal."""
        if self.skipped:
            return f"{self.asset}: skipped ({self.skipped})"
        where = "" if self.relation == self.asset else f" (in {self.relation})"
        if self.from_day:
            where += f" (as-of days from {self.from_day})"
        if self.loaded_after:
            where += f" (lines loaded after {self.loaded_after})"
        text = f"{self.asset}{where}: {self.passed}/{self.evaluated} passed"
        if self.failed_critical:
            text += f"; CRITICAL failed: {', '.join(self.failed_critical)}"
        if self.failed_warning:
            text += f"; warnings: {', '.join(self.failed_warning)}"
        return text


@dataclass
class ValidationReport:
    """Everything ``loopline validate`` prints or decides on."""

    run_id: str
    validated_at: datetime
    suites: list[SuiteResult] = field(default_factory=list)
    rows: list[ResultRow] = field(default_factory=list)
    data_docs: Path | None = None  # index.html of the Data Docs site
    recorded: int = 0  # rows appended to monitoring.validation_results

    @property
    def critical_failed(self) -> bool:
        """True when any critical expectation failed: do not publish, exit status 1."""
        return any(s.critical_failed for s in self.suites)

    @property
    def success(self) -> bool:
        return all(s.success for s in self.suites)

    def lines(self) -> list[str]:
        return [s.line() for s in self.suites]

    def failed_suites(self) -> list[str]:
        return [s.asset for s in self.suites if s.critical_failed]


def gx_root(settings: Settings) -> Path:
    """The GX project folder (suites, stored results, Data Docs), under the data folder."""
    return settings.data_dir / "gx"


def data_docs_index(settings: Settings) -> Path:
    return gx_root(settings) / "data_docs" / "index.html"


def validate(
    settings: Settings,
    assets: Sequence[str] | None = None,
    *,
    relations: Mapping[str, str] | None = None,
    schemas: Mapping[str, str] | None = None,
    record: bool = True,
    data_docs: bool = True,
    policy: Policy | None = None,
    run_id: str | None = None,
    lines: str = "all",
) -> ValidationReport:
    """Validate `assets` (all when None) of the warehouse in `settings`.

    `lines` says which suites get a phase line on the terminal: "all", or "problems" (the
    suites that failed or warned: a caller that prints its own summary, like publication).

    `assets` takes ``schema.table`` names, bare table names, or a layer/schema name
    (``features``) for all of its assets. `relations` maps an asset to the relation that
    holds the data to judge (a staged copy awaiting publication); `schemas` does the same
    for every asset of a schema (``{"core": "core__green"}``). Results name both.
    """
    _quiet_gx()
    warehouse = settings.resolved_warehouse_path
    if not warehouse.exists():
        raise ValidationError(
            f"no warehouse at {warehouse}: run `loopline ingest` and `loopline build` first"
        )
    manifest = load_manifest(settings)
    if manifest is None:
        from loopline.dbt import run_dbt

        run_dbt(settings, ["parse"])  # writes the manifest the suites are derived from
        manifest = load_manifest(settings)
        if manifest is None:
            raise ValidationError(f"dbt parse wrote no manifest at {manifest_path(settings)}")
    declared = declared_relations(manifest)
    catalogue = discover(declared)
    chosen = select(catalogue, assets)
    physical = staged_relations(chosen, relations, schemas)

    report = ValidationReport(
        run_id=run_id or f"validate-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        validated_at=datetime.now(UTC).replace(tzinfo=None),
    )
    with warehouse_mod.warehouse_writer(settings):
        # one connection for the whole run: it sets threads and memory for the database
        # instance GX's own connections share, and it writes the results at the end
        con = warehouse_mod.connect(warehouse, settings)
        try:
            context = _context(settings)
            datasource = _datasource(context, warehouse)
            keys: list[Any] = []

            def model_schema(model: str) -> str | None:
                return _model_schema(declared, model, relations, schemas)

            try:
                for asset in chosen:
                    result, rows, key = _run_suite(
                        context,
                        datasource,
                        con,
                        asset,
                        describe(con, asset.name, declared, physical[asset.name]),
                        physical[asset.name],
                        policy or Policy(),
                        report,
                        model_schema,
                    )
                    report.suites.append(result)
                    report.rows.extend(rows)
                    if key is not None:
                        keys.append(key)
                    if lines == "all" or not (result.success or result.skipped):
                        _print(result)
            finally:
                _close(datasource)
                # the views of unsettled days, a crashed run's too
                con.execute(f'drop schema if exists "{WINDOWS_SCHEMA}" cascade')
            if data_docs and keys:
                _build_data_docs(settings, context, keys)
                report.data_docs = data_docs_index(settings)
            if record:
                report.recorded = append(con, report.rows)
        finally:
            con.close()
    return report


def validate_frame(
    settings: Settings,
    asset: str,
    frame: Any,
    expectations: Sequence[Any],
    *,
    relation: str,
    layer: str = "monitoring",
    record: bool = True,
    data_docs: bool = True,
    run_id: str | None = None,
) -> ValidationReport:
    """Validate a pandas data frame with `expectations` as suite `asset`, like `validate` does
    a warehouse relation: Data Docs in the same site, rows for ``monitoring.validation_results``
    (appended when `record`). `relation` says where the frame's rows came from.

    For frames a caller already holds (the monitor's current window and the suite
    ``expectations.suites.monitoring`` derives from its reference); no terminal line.
    """
    _quiet_gx()
    report = ValidationReport(
        run_id=run_id or f"validate-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        validated_at=datetime.now(UTC).replace(tzinfo=None),
    )
    started = time.monotonic()
    context = _context(settings)
    batch = (
        context.data_sources.add_pandas(name="frames")
        .add_dataframe_asset(name=asset)
        .add_batch_definition_whole_dataframe("frame")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    base = SuiteResult(asset=asset, suite=asset, relation=relation, layer=layer)
    result, rows, key = _judge(context, batch, list(expectations), base, report, started)
    report.suites.append(result)
    report.rows.extend(rows)
    if data_docs:
        _build_data_docs(settings, context, [key])
        report.data_docs = data_docs_index(settings)
    if record:
        with warehouse_mod.writing(settings) as con:
            report.recorded = append(con, report.rows)
    return report


def staged_relations(
    assets: Sequence[Asset],
    relations: Mapping[str, str] | None = None,
    schemas: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Asset -> the relation to validate: `relations` first, then `schemas`, else itself."""
    return {asset.name: _staged(asset.name, relations, schemas) for asset in assets}


def _staged(
    name: str, relations: Mapping[str, str] | None, schemas: Mapping[str, str] | None
) -> str:
    """Where published relation `name` is judged: `relations` first, then `schemas`, else itself."""
    schema, table = name.split(".", 1)
    if relations and name in relations:
        return relations[name]
    if schemas and schema in schemas:
        return f"{schemas[schema]}.{table}"
    return name


def _model_schema(
    declared: Mapping[str, DeclaredRelation],
    model: str,
    relations: Mapping[str, str] | None,
    schemas: Mapping[str, str] | None,
) -> str | None:
    """The schema dbt model `model` is judged in (as `staged_relations` maps it), or None."""
    for name, relation in declared.items():
        if relation.kind == "model" and relation.name == model:
            return _staged(name, relations, schemas).split(".", 1)[0]
    return None


def select(catalogue: Mapping[str, Asset], wanted: Sequence[str] | None) -> list[Asset]:
    """The assets `wanted` names, with a one-line error for a name that matches none."""
    if not wanted:
        return list(catalogue.values())
    out: dict[str, Asset] = {}
    for name in wanted:
        matches = [
            a
            for a in catalogue.values()
            if name in (a.name, a.name.split(".", 1)[1], a.layer, a.name.split(".", 1)[0])
        ]
        if not matches:
            known = ", ".join(sorted({a.layer for a in catalogue.values()}))
            raise ValidationError(
                f"unknown asset {name!r}: name a relation (schema.table, e.g. "
                f"{next(iter(catalogue), 'core.dim_users')}) or a layer ({known})"
            )
        out.update((a.name, a) for a in matches)
    return list(out.values())


# -- one suite ---------------------------------------------------------------------------------


def _run_suite(
    context: Any,
    datasource: Any,
    con: Any,
    asset: Asset,
    relation: DeclaredRelation,
    physical: str,
    policy: Policy,
    report: ValidationReport,
    model_schema: Callable[[str], str | None] = lambda model: None,
) -> tuple[SuiteResult, list[ResultRow], Any]:
    started = time.monotonic()
    suite_name = asset.name
    base = SuiteResult(asset=asset.name, suite=suite_name, relation=physical, layer=asset.layer)
    if not relation.exists:
        if not asset.required:
            return (
                SuiteResult(**{**base.__dict__, "skipped": f"{physical} not there yet"}),
                [],
                None,
            )
        missing = f"relation {physical} exists"
        row = _row(
            report,
            base,
            missing,
            "relation_exists",
            None,
            True,
            False,
            None,
            None,
            None,
            f"{physical} is missing from the warehouse",
        )
        return (
            SuiteResult(**{**base.__dict__, "evaluated": 1, "failed_critical": (missing,)}),
            [row],
            None,
        )

    ctx = BuildContext(con=con, physical=physical, policy=policy)
    expectations = asset.build(relation, ctx)
    schema, table = physical.split(".", 1)
    unsettled = unsettled_from(con, schema, table) if "as_of_date" in relation.columns() else None
    lines = (
        None if unsettled is not None else unsettled_lines(con, relation, physical, model_schema)
    )
    window = None
    if unsettled is not None:
        # the days written since the colour was last published: the days before were
        # audited when they were written, and publication vouched for them
        base = SuiteResult(**{**base.__dict__, "from_day": unsettled.isoformat()})
        window = f"as_of_date >= date '{unsettled.isoformat()}'"
    elif lines is not None:
        # the lines loaded since the colour was last published, as the dbt tests read them
        base = SuiteResult(**{**base.__dict__, "loaded_after": lines[0]})
        window = lines[1]
    if window is not None:
        # GX judges a view of them (its column types read like a table's, which a query
        # asset's are not)
        con.execute(f'create schema if not exists "{WINDOWS_SCHEMA}"')
        source = f'"{schema}"."{table}"'
        schema, table = WINDOWS_SCHEMA, f"{schema}__{table}"
        con.execute(
            f'create or replace view "{schema}"."{table}" as select * from {source} where {window}'
        )
    try:
        table_asset = datasource.add_table_asset(
            name=physical, table_name=table, schema_name=schema
        )
        batch = table_asset.add_batch_definition_whole_table("whole table").get_batch()
        return _judge(context, batch, expectations, base, report, started)
    finally:
        if window is not None:
            con.execute(f'drop view if exists "{schema}"."{table}"')


def unsettled_from(con: Any, schema: str, table: str) -> date | None:
    """The first as-of day a feature mart's builds wrote since its colour was last published
    (``feature_builds`` beside it, macros/features_versioning.sql); None when publication
    vouched for every day, or the relation has no build on record (judge it whole)."""
    return _unsettled(con, schema, FEATURE_BUILDS, "unsettled_from", table)


def unsettled_lines(
    con: Any,
    relation: DeclaredRelation,
    physical: str,
    model_schema: Callable[[str], str | None],
) -> tuple[str, str] | None:
    """(watermark, filter) of the rows a load-time relation's suite judges, or None (whole).

    A relation whose dbt tests all read the lines a load-time model took in since its colour
    was last published (each test's `where` names ``__unsettled_loads__(model)``,
    macros/loads_unsettled.sql) is judged on the rows any of those tests reads: the tests'
    `where`s joined with ``or``, filled as the project's ``get_where_subquery`` fills them
    (``__relation__``: the relation judged). A key's test reads every row holding a key those
    lines carry, so a new line repeating an old key still fails its suite. A test reading the
    whole relation, or no watermark on record (a full refresh, a first build, a published
    colour) means the whole relation.
    """
    wheres = {test.where for test in relation.tests}
    if not wheres or any(w is None or not _UNSETTLED_LOADS.search(w) for w in wheres):
        return None
    watermarks: dict[str, datetime] = {}
    for where in wheres:
        for model in _UNSETTLED_LOADS.findall(where or ""):
            watermark = _load_watermark(con, model_schema(model), model)
            if watermark is None:
                return None
            watermarks[model] = watermark
    schema, table = physical.split(".", 1)
    quoted = f'"{schema}"."{table}"'
    filled = []
    for where in sorted(w for w in wheres if w):
        for model, watermark in watermarks.items():
            where = where.replace(f"__unsettled_loads__({model})", f"timestamp '{watermark}'")
        filled.append(f"({where.replace('__relation__', quoted)})")
    return str(min(watermarks.values())), " or ".join(filled)


def _load_watermark(con: Any, schema: str | None, model: str) -> datetime | None:
    """The load watermark of `model`'s unpublished lines in `schema`'s ``load_builds``; None
    when every line is to be judged (settled, no record, or the first-build sentinel)."""
    if schema is None:
        return None
    watermark = _unsettled(con, schema, LOAD_BUILDS, "unsettled_after", model)
    return None if watermark is None or watermark.year <= 1900 else watermark


def _unsettled(con: Any, schema: str, registry: str, column: str, relation: str) -> Any:
    """`relation`'s unsettled mark in the build registry `schema.registry`; None when the
    registry or its column is not there (builds from before it) or holds no such row."""
    has = con.execute(
        "select count(*) from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, registry, column],
    ).fetchone()
    if not has or not has[0]:
        return None
    row = con.execute(
        f'select max("{column}") from "{schema}"."{registry}" where relation_name = ?',
        [relation],
    ).fetchone()
    return row[0] if row else None


def _judge(
    context: Any,
    batch: Any,
    expectations: list[Any],
    base: SuiteResult,
    report: ValidationReport,
    started: float,
) -> tuple[SuiteResult, list[ResultRow], Any]:
    """Validate `batch` with `expectations` as suite ``base.suite``; store the result for Data
    Docs; return the suite's outcome, its rows and the stored result's key."""
    import great_expectations as gx

    suite = context.suites.add(gx.ExpectationSuite(name=base.suite, expectations=expectations))
    result = batch.validate(
        suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0}
    )
    # a second pass over the failed ones only, for sample values in Data Docs; only map
    # expectations (value by value) have samples: a failed table-level one (row count,
    # uniqueness) would compute the same result again (on 5M rows: two more GROUP BYs)
    failed = [
        r
        for r in result.results
        if not r.success
        and not r.exception_info.get("raised_exception")
        and "partial_unexpected_list" in (r.result or {})
    ]
    if failed:
        retry = gx.ExpectationSuite(
            name=f"{base.suite}.samples",
            expectations=[copy.copy(r.expectation_config.to_domain_obj()) for r in failed],
        )
        sampled = batch.validate(
            retry, result_format={"result_format": "BASIC", "partial_unexpected_count": SAMPLES}
        )
        by_key = {_key(r): r for r in sampled.results}
        result.results = [by_key.get(_key(r), r) if not r.success else r for r in result.results]
    _plain_results(result)
    key = _store(context, suite, batch, result, report)

    rows: list[ResultRow] = []
    failed_critical: list[str] = []
    failed_warning: list[str] = []
    for r in result.results:
        cfg = r.expectation_config
        critical = is_critical(cfg.meta, getattr(cfg, "severity", None))
        label = _label(cfg.type, cfg.kwargs)
        exception = (r.exception_info or {}).get("exception_message") if _raised(r) else None
        res = r.result or {}
        rows.append(
            _row(
                report,
                base,
                label,
                cfg.type,
                cfg.kwargs.get("column"),
                critical,
                bool(r.success),
                res.get("observed_value"),
                res.get("unexpected_count"),
                res.get("element_count"),
                exception,
            )
        )
        if not r.success:
            (failed_critical if critical else failed_warning).append(label)
    return (
        SuiteResult(
            **{
                **base.__dict__,
                "evaluated": len(result.results),
                "passed": sum(1 for r in result.results if r.success),
                "failed_critical": tuple(failed_critical),
                "failed_warning": tuple(failed_warning),
                "seconds": time.monotonic() - started,
            }
        ),
        rows,
        key,
    )


def _row(
    report: ValidationReport,
    suite: SuiteResult,
    label: str,
    kind: str,
    column: Any,
    critical: bool,
    success: bool,
    observed: Any,
    unexpected: Any,
    elements: Any,
    exception: str | None,
) -> ResultRow:
    return ResultRow(
        run_id=report.run_id,
        validated_at=report.validated_at,
        asset=suite.asset,
        relation=suite.relation,
        suite=suite.suite,
        expectation=label,
        expectation_type=kind,
        column_name=str(column) if column is not None else None,
        critical=critical,
        success=success,
        observed_value=None if observed is None else json.dumps(_plain(observed), default=str),
        unexpected_count=None if unexpected is None else int(unexpected),
        element_count=None if elements is None else int(elements),
        exception=exception,
    )


def _label(kind: str, kwargs: Mapping[str, Any]) -> str:
    """``expect_x(column=a, ...)`` with the arguments that identify the check."""
    shown = []
    for name in (
        "column",
        "column_list",
        "column_A",
        "column_B",
        "min_value",
        "max_value",
        "type_",
        "mostly",
        "threshold",
        "value_set",
        "column_set",
    ):
        if kwargs.get(name) is not None:
            value = kwargs[name]
            if isinstance(value, list) and len(value) > 6:
                value = f"[{len(value)} values]"
            shown.append(f"{name}={value}")
    return f"{kind}({', '.join(shown)})"


def _key(result: Any) -> str:
    cfg = result.expectation_config
    return cfg.type + json.dumps(_plain(dict(cfg.kwargs)), sort_keys=True, default=str)


def _raised(result: Any) -> bool:
    return bool((result.exception_info or {}).get("raised_exception"))


# -- GX plumbing -------------------------------------------------------------------------------


def _quiet_gx() -> None:
    # GX logs every metric it cannot bundle and draws tqdm bars; the runner prints one line
    # per suite through loopline.progress instead
    logging.getLogger("great_expectations").setLevel(logging.ERROR)


def _context(settings: Settings) -> Any:
    """A GX context whose suites live in memory (they are code) and whose results and Data
    Docs live under ``<data_dir>/gx``: validations/ (JSON, the newest results: older ones
    are archived, `archive_old_results`) and data_docs/ (the HTML site)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    import expectations.gx_duckdb  # noqa: F401  (registers the DuckDB datasource type)

    root = gx_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults())
    config.stores["validation_results_store"] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(root / "validations"),
        },
    }
    config.data_docs_sites = {
        "local_site": {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(root / "data_docs"),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    }
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _build_data_docs(settings: Settings, context: Any, keys: list[Any]) -> None:
    """Archive the oldest results, then build the site's pages for `keys` and its index, one
    process at a time: two at once (the line's audit beside a monitor run, say) would move
    and delete the same files."""
    from loopline.locks import exclusive_file

    with exclusive_file(gx_root(settings) / ".data_docs.lock", "the Data Docs site"):
        archive_old_results(settings)
        context.build_data_docs(resource_identifiers=keys)


def archive_old_results(settings: Settings) -> None:
    """Move the stored results beyond the newest `DATA_DOCS_RESULTS` from GX's store to
    ``gx/archive/validations/``, same paths.

    A result's path is ``<suite>/<run name>/<run time>/<batch>.json`` and the run time
    (``20261127T235902.045146Z``) sorts as text. GX drops an archived result's page from
    the site on its next build; its JSON stays in the archive.
    """
    store = gx_root(settings) / "validations"
    if not store.exists():
        return
    stored = sorted(store.rglob("*.json"), key=lambda p: (p.parent.name, str(p)), reverse=True)
    archive = gx_root(settings) / "archive" / "validations"
    for path in stored[DATA_DOCS_RESULTS:]:
        target = archive / path.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.replace(target)
        except FileNotFoundError:  # archived by another process meanwhile
            continue
        for folder in path.parents:  # the key's folders, once empty
            if folder == store or any(folder.iterdir()):
                break
            try:
                folder.rmdir()
            except OSError:  # another run stored a result there meanwhile
                break


def _datasource(context: Any, warehouse: Path) -> Any:
    from expectations.gx_duckdb import add_duckdb_datasource

    return add_duckdb_datasource(context, DATASOURCE, str(warehouse))


def _close(datasource: Any) -> None:
    """Release GX's pooled DuckDB connections (the file must be free for other writers)."""
    engine = getattr(datasource, "_engine", None)
    if engine is not None:
        engine.dispose()
    execution_engine = getattr(datasource, "_execution_engine", None)
    if execution_engine is not None:
        execution_engine.engine.dispose()


def _store(context: Any, suite: Any, batch: Any, result: Any, report: ValidationReport) -> Any:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    run = RunIdentifier(run_name=report.run_id, run_time=report.validated_at)
    result.meta["run_id"] = run  # batch.validate leaves it out; Data Docs shows it
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
        run_id=run,
        batch_identifier=batch.id,
    )
    context.validation_results_store.set(key, result)
    return key


def _plain(value: Any) -> Any:
    """`value` with numpy scalars turned into Python ones (JSON-serialisable)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _plain_results(result: Any) -> None:
    for r in result.results:
        r.success = bool(r.success)
        if r.result:
            r.result = _plain(dict(r.result))
    result.success = bool(result.success)


def _print(result: SuiteResult) -> None:
    ok = result.success or bool(result.skipped)
    phase("validate", result.line(), None if result.skipped else result.seconds, ok=ok)
