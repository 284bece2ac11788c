"""The `loopline` command: one entry point for the line and the loop."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer._click import exceptions as click_errors  # typer's own copy of click's errors
from typer.core import TyperGroup

from loopline.settings import Settings, describe_error, get_settings


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, say) as one line naming the option, not a box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **kwargs
            )
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            result = 0
        except click_errors.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "loopline"
            message = exc.format_message().replace("Value error, ", "")
            typer.echo(f"error: {message} (see `{command} --help`)", err=True)
            result = exc.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            result = 1
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="loopline",
    cls=_OneLineErrors,
    help="The data line (extract, clean, load) and the ML loop (features, train, serve, monitor).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


class ScaleChoice(StrEnum):
    """The simulated company's size (as LOOPLINE_SIM_SCALE)."""

    small = "small"
    demo = "demo"
    large = "large"


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


def _settings() -> Settings:
    """The settings, or one line naming the bad environment variable and what it accepts."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise _fail(describe_error(exc)) from None


def _prefect_home(settings: Settings) -> None:
    """Prefect's environment for this process (a caller's own values win).

    Its database lives beside the rest of the data; the terminal shows no Prefect INFO
    lines (run logs still reach the API and the UI at INFO), and `loopline.progress`
    messages reach the flow-run logs.
    """
    from loopline.services import prefect_environment

    for key, value in prefect_environment(settings).items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # Prefect does not create missing parents of its home (a fresh clone has no data/)
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


# -- the simulated source systems ----------------------------------------------------------
@app.command()
def simulate(
    until: Annotated[
        date | None,
        typer.Option(
            help="Simulate up to and including this day (continues a previous run).",
            formats=["%Y-%m-%d"],
        ),
    ] = None,
    days: Annotated[
        int | None, typer.Option(help="Days from the start (first run only); default from --scale.")
    ] = None,
    scale: Annotated[
        ScaleChoice | None,
        typer.Option(help="large: >10M events. Default: LOOPLINE_SIM_SCALE (demo)."),
    ] = None,
    users: Annotated[
        int | None, typer.Option(help="Users on the start date (overrides the scale).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed. Default: LOOPLINE_SIM_SEED.")
    ] = None,
    drift: Annotated[
        str, typer.Option(help="Covariate shift: none | device_mix | price_rise.")
    ] = "none",
    drift_start: Annotated[
        date | None, typer.Option(help="First day of the covariate shift.", formats=["%Y-%m-%d"])
    ] = None,
    concept_drift_start: Annotated[
        date | None,
        typer.Option(help="First day the churn relation changes.", formats=["%Y-%m-%d"]),
    ] = None,
    spike_start: Annotated[
        date | None, typer.Option(help="First day of a viewing-volume spike.", formats=["%Y-%m-%d"])
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the simulated sources and landing files first.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Generate (or continue) the streaming company's source data: OLTP DB, API, file drops."""
    from loopline.simulate import Scenario, SimulationError, load_state, reset_sources
    from loopline.simulate import simulate_company as run

    settings = _settings()
    if reset:
        reset_sources(settings)
    scenario = Scenario(
        scale=scale.value if scale else None,
        seed=seed,
        users=users,
        drift_kind=drift,
        drift_start=drift_start,
        concept_drift_start=concept_drift_start,
        spike_start=spike_start,
    )
    if not scenario.is_default() and load_state(settings) is not None:
        raise _fail(
            "a simulation exists already; continue it with --until only, or start over with --reset"
        )
    try:
        report = run(settings, scenario, until=until, days=days, progress=not quiet)
    except SimulationError as exc:
        raise _fail(str(exc)) from exc
    if report.days == 0:
        more = "" if until else "; pass --until YYYY-MM-DD to continue"
        console.print(f"nothing to do: already simulated through {report.last_day}{more}")
        return
    console.print(
        f"simulated {report.first_day} .. {report.last_day} ({report.days} days) in {report.seconds:.1f} s: "
        f"{report.events_written:,} events ({report.events_per_second:,.0f}/s), "
        f"{report.payments_written:,} payments, {report.tickets_written:,} tickets, {report.users:,} users"
    )
    if report.bayes_auc is not None:
        console.print(
            f"reference (Bayes) churn ROC AUC on the truth so far: {report.bayes_auc:.3f}"
        )
    console.print(f"sources: {settings.sources_dir}  landing: {settings.landing_dir}")


@app.command("catalogue-api")
def catalogue_api(
    port: Annotated[
        int | None, typer.Option(help="Port (default LOOPLINE_CATALOGUE_PORT).")
    ] = None,
    failure_rate: Annotated[
        float, typer.Option(help="Share of data requests answered 500/503.")
    ] = 0.02,
    rate_limit: Annotated[float, typer.Option(help="Requests per second before 429s.")] = 50.0,
) -> None:
    """Serve the simulated vendor's catalogue API in the foreground (Ctrl-C stops it)."""
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import ApiBehaviour, serve_forever

    settings = _settings()
    behaviour = ApiBehaviour(rate_limit_per_s=rate_limit, failure_rate=failure_rate)
    console.print(
        f"catalogue API on http://{settings.catalogue_host}:{port or settings.catalogue_port}/v1/shows"
    )
    serve_forever(
        catalogue_dir(settings), settings.catalogue_host, port or settings.catalogue_port, behaviour
    )


# -- the whole loop ------------------------------------------------------------------------------
@app.command()
def demo(
    scale: Annotated[
        ScaleChoice | None,
        typer.Option(help="The simulated company's size. Default: LOOPLINE_SIM_SCALE (demo)."),
    ] = None,
) -> None:
    """Run the whole loop as one Prefect flow on the embedded defaults, then say where to look."""
    from loopline.dbt import DbtError
    from loopline.services import ServiceError, prefect_api
    from ml.registry import RegistryError

    settings = _settings()
    _prefect_home(settings)
    given = os.environ.get("PREFECT_API_URL")

    def point_prefect_at(url: str) -> None:
        # before Prefect is first imported (it reads its settings then); the flows import
        # while the server starts
        os.environ["PREFECT_API_URL"] = url
        import flows.demo  # noqa: F401

    started = time.monotonic()
    try:
        with prefect_api(settings, while_starting=point_prefect_at) as api:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from flows.demo import DemoParams, loopline_demo
            from loopline.progress import phase

            phase("prefect", api.source, time.monotonic() - started)  # its log: data/logs/
            with temporary_settings(updates={PREFECT_API_URL: api.url}):
                try:
                    result = loopline_demo(
                        DemoParams(scale=scale.value if scale else settings.sim_scale)
                    )
                finally:
                    _send_prefect_backlog()
    except (ServiceError, RegistryError, DbtError) as exc:  # said once, without a traceback
        raise _fail(str(exc)) from None
    finally:
        if given is None:
            os.environ.pop("PREFECT_API_URL", None)
    console.rule("where to look")
    width = max(map(len, result))
    for name, where in result.items():  # one line each: cut, never wrapped mid-phrase
        console.print(
            f"  {name:<{width}}  {where}", no_wrap=True, overflow="ellipsis", markup=False
        )


def _send_prefect_backlog(timeout_s: float = 30.0) -> None:
    """Send the run's queued logs and events before a temporary server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


# -- the line: each command runs the line flow's own step (flows/line.py) ------------------------
@app.command()
def ingest(
    catalogue_url: Annotated[
        str | None,
        typer.Option(help="The catalogue API to extract; default LOOPLINE_CATALOGUE_URL."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    quarantine_batch: Annotated[
        str | None,
        typer.Option(
            help="Set every landed record of this ingest batch aside (stubs the next build "
            "quarantines), then stop: for a batch that breaks the build.",
        ),
    ] = None,
    replay_batch: Annotated[
        str | None,
        typer.Option(help="Forget this ingest batch's landed files, then ingest: they load again."),
    ] = None,
) -> None:
    """Extract and load every source into the warehouse's raw layer (each file once)."""
    from flows.line import ingest_sources
    from loopline.ingest import poison
    from loopline.ingest.catalogue import ExtractError
    from loopline.ingest.run import IngestError, SourceFailedError

    settings = _settings()
    try:
        if quarantine_batch:
            stubbed = sum(poison.quarantine_batch_in(settings, quarantine_batch).values())
            console.print(
                f"set {stubbed:,} records of batch {quarantine_batch} aside: `loopline build` "
                f"quarantines them (reason {poison.QUARANTINED_BATCH}); "
                f"`loopline ingest --replay-batch {quarantine_batch}` loads them again"
            )
            return
        if replay_batch:
            released = poison.release_batch_in(settings, replay_batch)
            console.print(
                f"released {released.files} files of batch {replay_batch} "
                f"({released.records:,} raw records, {released.moved_back} moved back from "
                "landing/_rejected/): loading them again; then run `loopline build --full-refresh`"
            )
    except poison.BatchError as exc:
        raise _fail(str(exc)) from None
    try:
        report = ingest_sources.fn(catalogue_url, show_progress=not quiet)
    except SourceFailedError as exc:  # the rest was loaded (its phase line says what)
        for rejected in exc.report.files.rejected:
            console.print(f"  [yellow]rejected[/yellow] {rejected} (moved to landing/_rejected/)")
        raise _fail(str(exc)) from None
    except (IngestError, ExtractError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"ingest batch {report['batch_id']} in {report['seconds']:.1f} s")
    console.print(f"  OLTP tables copied: {report['oltp_tables'] or 'none changed'}")
    console.print(f"  catalogue API pages landed: {report['catalogue_pages']}")
    for source, count in sorted(report["files"].items()):
        records = report["records"][source]
        console.print(f"  {source:<10} {count:>6} new files  {records:>10,} records")
    if not report["files"]:
        console.print("  no new files")
    for rejected in report["rejected"]:
        console.print(f"  [yellow]rejected[/yellow] {rejected} (moved to landing/_rejected/)")
    console.print(f"warehouse: {settings.resolved_warehouse_path}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(
    ctx: typer.Context,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")
    ] = False,
) -> None:
    """`dbt build` (warehouse and feature marts), audit and publish, then refresh the online
    features, as the line flow does; extra arguments (e.g. --select) make a developer's
    partial build in place, unaudited."""
    from flows.line import audit_and_publish_build, dbt_build, materialize_online_features
    from loopline.dbt import DbtError
    from loopline.publish import PublicationBlockedError

    settings = _settings()
    if not _ingested(settings):
        raise _fail(
            f"nothing ingested into {settings.resolved_warehouse_path} yet: "
            "run `loopline ingest` first"
        )
    try:
        built = dbt_build.fn(full_refresh, tuple(ctx.args))
        audit_and_publish_build.fn(built["colour"])
    except (DbtError, PublicationBlockedError) as exc:
        raise _fail(str(exc)) from exc
    materialize_online_features.fn()
    console.print(
        f"dbt build: {sum(built['statuses'].values())} nodes passed; "
        f"warehouse {settings.resolved_warehouse_path}"
    )


def _ingested(settings: Settings) -> bool:
    """Whether an ingest has created the raw layer dbt builds from."""
    from loopline.warehouse import reading

    if not settings.resolved_warehouse_path.exists():
        return False
    with reading(settings) as con:
        (found,) = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'raw' and table_name = 'file_manifest'"
        ).fetchone() or (0,)
    return bool(found)


@app.command()
def docs(
    port: Annotated[
        int | None, typer.Option(help="Port (default LOOPLINE_DOCS_PORT).", min=0, max=65535)
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="Run `dbt docs generate` first (under the writer lock).")
    ] = True,
) -> None:
    """Generate the dbt docs site (models, columns, lineage) and serve it on 127.0.0.1."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from loopline.dbt import DbtError, run_dbt

    settings = _settings()
    target = settings.data_dir / "dbt" / "target"  # where `loopline build` writes artifacts
    target.mkdir(parents=True, exist_ok=True)
    port = settings.docs_port if port is None else port
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(target))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise _fail(f"cannot serve on 127.0.0.1:{port} ({exc.strerror}): set --port") from None
    # serve at once (a previous site, if any) while dbt generates the new one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        if generate:
            console.print(f"generating the dbt docs site in {target} ...")
            try:
                run_dbt(settings, ["docs", "generate"])
            except DbtError as exc:
                if not (target / "index.html").exists():
                    raise _fail(str(exc)) from exc
                console.print(f"[yellow]{escape(str(exc))}: serving the previous site[/yellow]")
        if not (target / "index.html").exists():
            raise _fail(f"no docs site in {target}: run `loopline docs` without --no-generate")
        console.print(f"dbt docs on {url}  (Ctrl-C stops it)")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


@app.command()
def validate(
    asset: Annotated[
        list[str] | None,
        typer.Option(
            "--asset",
            help="An asset to validate (schema.table, a table name or a layer such as "
            "features); repeat for several. Default: every asset.",
        ),
    ] = None,
) -> None:
    """Run the Great Expectations suites; exit 1 when a critical expectation fails."""
    from expectations.run import ValidationError
    from expectations.run import validate as run

    settings = _settings()
    try:
        report = run(settings, asset or None)
    except ValidationError as exc:
        raise _fail(str(exc)) from exc
    failed = report.failed_suites()
    warned = sum(1 for s in report.suites if not s.success and not s.critical_failed)
    console.print(
        f"{len(report.suites)} suites: {len(report.suites) - len(failed) - warned} passed, "
        f"{warned} warned, {len(failed)} failed a critical expectation"
    )
    console.print(f"results:   monitoring.validation_results ({report.recorded} rows)")
    if report.data_docs is not None:
        console.print(f"Data Docs: {report.data_docs}")
    if report.critical_failed:
        console.print(f"[red]critical expectations failed:[/red] {', '.join(failed)}")
        raise typer.Exit(code=1)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="churn | recommender | all")] = "all",
) -> None:
    """Train, evaluate and register the models; promote a challenger that earns it.

    Runs the training flow's steps (flows/train.py), as the weekly deployment does."""
    from flows.train import train_churn_model, train_recommender_model
    from ml.config import ConfigError
    from ml.registry import RegistryError

    _settings()
    if model not in ("churn", "recommender", "all"):
        raise _fail(f"--model {model!r}: choose churn, recommender or all")
    try:
        if model in ("churn", "all"):
            churn = train_churn_model.fn()
            console.print(f"  report: {churn['report']}")
        if model in ("recommender", "all"):
            train_recommender_model.fn()
    except (ConfigError, RegistryError, ValueError) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def score(
    as_of: Annotated[
        date | None,
        typer.Option(
            help="Score users as of this day (default: the newest).", formats=["%Y-%m-%d"]
        ),
    ] = None,
    k: Annotated[int, typer.Option(help="Recommendations per user.", min=1, max=100)] = 10,
    partitions: Annotated[
        int,
        typer.Option(
            help="Score churn in this many partitions of users on Dask (1: in this process; "
            "more: a temporary LocalCluster unless --dask-address is given).",
            min=1,
            max=1024,
        ),
    ] = 1,
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="A running Dask scheduler (tcp://host:8786) to score churn on "
            "(default LOOPLINE_DASK_ADDRESS)."
        ),
    ] = None,
) -> None:
    """Batch-score every active user with @champion; write top-N recommendations for every user.

    Runs the scoring flow's steps (flows/score.py), as the daily deployment does.

    On Dask, churn scoring is a Prefect flow run (one task run per partition): it uses the Prefect server of `loopline up`, or starts a temporary one."""
    from flows.score import recommend_task, score_churn_step
    from ml.registry import RegistryError

    _settings()
    try:
        churn = score_churn_step(as_of, partitions, dask_address)
        scored = churn["as_of"]
        recommend_task.fn(scored if isinstance(scored, date) else as_of, k)
        if churn["version"] is None:
            raise _fail("no @champion yet for the churn model: run `loopline train` first")
    except RegistryError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port (default LOOPLINE_API_PORT).", min=0, max=65535)
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to serve and follow.")] = "champion",
    poll_seconds: Annotated[float, typer.Option(help="How often to check the alias.")] = 5.0,
) -> None:
    """Serve churn scores and recommendations over HTTP (FastAPI on uvicorn)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = _settings()
    from ml.serving.app import serve as run

    port = settings.api_port if port is None else port
    console.print(f"serving @{alias} on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    run(settings, host, port, alias=alias, poll_seconds=poll_seconds)


@app.command()
def promote(
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Restore the previous champion.")
    ] = False,
    model: Annotated[str, typer.Option(help="churn | recommender")] = "churn",
) -> None:
    """Move @champion by hand: `--rollback` restores the previous champion."""
    from ml.registry import CHURN_MODEL, RECS_MODEL, RegistryError, configure, record_decision
    from ml.registry import rollback as do_rollback

    if not rollback:
        raise _fail("nothing to do: promotion is decided by `loopline train`; pass --rollback")
    names = {"churn": CHURN_MODEL, "recommender": RECS_MODEL}
    if model not in names:
        raise _fail(f"--model {model!r}: choose churn or recommender")
    settings = _settings()
    try:
        decision = do_rollback(configure(settings), names[model])
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    # the alias has moved (serving follows at once); say so before the record, which may
    # wait for the warehouse writer lock (a note names its holder while it waits)
    console.print(f"{decision.summary()}; @champion is v{decision.version} again")
    record_decision(settings, decision)
    console.print("recorded in ml.model_decisions")


@app.command()
def monitor(
    retrain: Annotated[
        bool,
        typer.Option(
            help="Retrain when a rule fails or drift is confirmed (conf/monitoring.yaml)."
        ),
    ] = True,
) -> None:
    """Check drift, performance rules and data quality; retrain the churn model if they say so."""
    from loopline.progress import phase
    from ml.monitoring.config import MonitoringConfigError, load_monitoring_config
    from ml.monitoring.run import monitor as run_monitor

    settings = _settings()
    started = time.perf_counter()
    try:
        config = load_monitoring_config(settings.monitoring_config)
        outcome = run_monitor(settings, config, retrain=retrain)
    except (MonitoringConfigError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    result = outcome.result
    phase("monitor", result.summary(), time.perf_counter() - started, ok=result.trigger is None)
    for reason in result.trigger.reasons if result.trigger else []:
        console.print(f"  {reason}")
    if outcome.retrained is not None:
        console.print(f"  retrained: {outcome.retrained.decision.summary()}")
    console.print("results:   monitoring.monitor_runs, feature_drift, model_performance")
    console.print(f"report:    {_shown(result.report)}")


StreamKey = Annotated[str, typer.Option(help="The Redis stream's key (with LOOPLINE_STREAM_URL).")]


@app.command()
def stream(
    key: StreamKey = "loopline:viewing-events",
    consumer: Annotated[
        str, typer.Option(help="This consumer's name in its group (letters, digits, _).")
    ] = "landing",
    report_every: Annotated[
        float, typer.Option(help="Seconds between the lag/throughput lines.", min=0.1)
    ] = 10.0,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Exit once the stream has been drained for this many seconds."),
    ] = None,
    features: Annotated[
        bool, typer.Option(help="Update the streaming features in the online store.")
    ] = True,
) -> None:
    """Consume viewing events as they happen: micro-batches land as files the ingest loads.

    From the Redis stream LOOPLINE_STREAM_URL names (a consumer group), else from the
    embedded spool file; lag and throughput go to data/stream/metrics.json. Runs until
    Ctrl-C or SIGTERM, landing what it has batched first.
    """
    import signal
    import threading

    from loopline.stream.consumer import Consumer, metrics_path
    from loopline.stream.sources import StreamError, open_source

    settings = _settings()
    try:
        source = open_source(settings, key, consumer)
    except StreamError as exc:
        raise _fail(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    where = settings.stream_url or str(settings.resolved_stream_spool_path)
    console.print(
        f"consuming {where} into {_shown(settings.landing_dir / 'events')}/ "
        f"(metrics {_shown(metrics_path(settings))})",
        soft_wrap=True,
    )
    try:
        running = Consumer(settings, source, features, report_every, settle_heap=True)
        running.run(stop, idle_exit)
    except KeyboardInterrupt:
        pass
    except StreamError as exc:
        raise _fail(str(exc)) from None
    finally:
        source.close()


@app.command()
def produce(
    rate: Annotated[float, typer.Option(help="Events per second.", min=0.1)] = 100.0,
    events: Annotated[int | None, typer.Option(help="Stop after this many events.", min=1)] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after this long.", min=0.1)] = None,
    spike_factor: Annotated[
        float, typer.Option(help="The rate is multiplied by this during the spike.", min=1.0)
    ] = 1.0,
    spike_after: Annotated[float, typer.Option(help="Seconds before the spike starts.")] = 10.0,
    spike_seconds: Annotated[float, typer.Option(help="How long the spike lasts.")] = 10.0,
    key: StreamKey = "loopline:viewing-events",
) -> None:
    """Publish the simulator's next viewing events to the stream `loopline stream` reads."""
    from loopline.stream.producer import NothingSimulatedError, publish, simulated_lines
    from loopline.stream.sources import StreamError, open_target

    settings = _settings()
    try:
        target = open_target(settings, key)
    except StreamError as exc:
        raise _fail(str(exc)) from None
    spike = f", x{spike_factor:g} after {spike_after:g} s for {spike_seconds:g} s"
    console.print(
        f"publishing {rate:g} events/s{spike if spike_factor > 1 else ''} to "
        f"{settings.stream_url or _shown(settings.resolved_stream_spool_path)}",
        soft_wrap=True,
    )
    try:
        sent = publish(
            target, simulated_lines(settings), rate, events, seconds,
            spike_factor, spike_after, spike_seconds,
        )  # fmt: skip
    except NothingSimulatedError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        return
    finally:
        target.close()
    console.print(f"published {sent.events:,} events in {sent.seconds:.1f} s")


Names = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services (default all; stream only with LOOPLINE_STREAM_URL): prefect, "
        "catalogue, deployments, mlflow, docs, api, stream.",
        show_default=False,
    ),
]


def _shown(path: str | Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def up(names: Names = None) -> None:
    """Start the local services on 127.0.0.1 (each once); print where each is and its log."""
    from loopline import services

    settings = _settings()
    _prefect_home(settings)
    try:
        wanted = services.resolve(names, settings)
    except services.ServiceError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"starting {', '.join(wanted)} (logs in {_shown(services.log_dir(settings))}/) ..."
    )

    def report(outcome: services.Outcome) -> None:
        running = outcome.running
        where = (running.url if running else None) or ""
        log = f"  log {_shown(running.log)}" if running else ""
        if outcome.ok:
            took = f" in {outcome.seconds:.0f} s" if outcome.seconds is not None else ""
            state = f"[green]{outcome.action}{took}[/green]"
            console.print(f"  {outcome.name:<12} {where:<34} {state}{log}", soft_wrap=True)
        else:
            console.print(
                f"  {outcome.name:<12} [red]{outcome.action}[/red]: {escape(outcome.detail)}{log}",
                soft_wrap=True,
            )

    outcomes = services.up(settings, wanted, on_outcome=report)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(code=1)
    console.print("stop them with `loopline down` (or `make down`); `loopline status` shows them")


@app.command()
def down(names: Names = None) -> None:
    """Stop the local services `loopline up` started (and nothing else)."""
    from loopline import services

    settings = _settings()
    try:
        stopped = services.down(settings, names)
    except services.ServiceError as exc:
        raise _fail(str(exc)) from None
    for name, was_running in stopped:
        console.print(f"  {name:<12} {'stopped' if was_running else 'was not running'}")


@app.command()
def status() -> None:
    """Show which local services run, on which port, and each deployment's last run."""
    from loopline import services

    settings = _settings()
    rows = services.status(settings)
    for row in rows:
        if row.running is None:
            state, where = "stopped ", ""
        else:
            state = "[green]ready[/green]   " if row.ready else "[yellow]starting[/yellow]"
            where = f"{row.running.url or ''}  pid {row.running.pid}"
        port = str(row.port) if row.port else "-"
        console.print(f"  {row.name:<12} {state}  port {port:<6} {where}")
    logs = [_shown(r.running.log) for r in rows if r.running is not None]
    if logs:
        console.print(f"logs: {_shown(services.log_dir(settings))}/<service>.log")
    stream = next((r for r in rows if r.name == "stream"), None)
    _stream_status(settings, running=stream is not None and stream.running is not None)
    prefect = next(r for r in rows if r.name == "prefect")
    api_url = os.environ.get("PREFECT_API_URL") or services.prefect_api_url(settings)
    if prefect.ready or os.environ.get("PREFECT_API_URL"):
        try:
            runs = services.deployment_runs(api_url)
        except Exception as exc:  # the server is optional here: say so and carry on
            console.print(f"deployments: {api_url} did not answer ({type(exc).__name__})")
            return
        console.print(f"deployments on {api_url}:")
        for run in runs:
            last = f"{run.last_state} at {run.last_time}" if run.last_state else "no run yet"
            upcoming = f", next {run.next_time}" if run.next_time else ""
            console.print(
                f"  {run.name:<24} {run.schedule:<14} {run.runs_on:<14} last: {last}{upcoming}"
            )


def _stream_status(settings: Settings, *, running: bool) -> None:
    """The stream consumer's lag and throughput, from the metrics file it rewrites as it runs."""
    from loopline.stream.consumer import metrics_path, read_metrics

    metrics = read_metrics(settings)
    if metrics is None:
        return
    when = "" if running else " (its last report: the consumer is not running)"

    def number(key: str) -> float:
        value = metrics.get(key) if metrics else None
        return float(value) if isinstance(value, int | float) else 0.0

    console.print(
        f"stream consumer ({metrics.get('source')}): lag {number('lag_events'):,.0f} events, "
        f"{number('events_per_second'):,.0f} events/s, {number('events_total'):,.0f} landed in "
        f"{number('batches_total'):,.0f} batches; updated {metrics.get('updated_at')}{when}; "
        f"metrics in {escape(_shown(metrics_path(settings)))}",
        soft_wrap=True,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m loopline.cli` (used by `loopline up`)
    main()
