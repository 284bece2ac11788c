"""The `loopline` command: one entry point for the line and the loop."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loopline.settings import Settings, get_settings

app = typer.Typer(
    name="loopline",
    help="The data line (extract, clean, load) and the ML loop (features, train, serve, monitor).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _prefect_home(settings: Settings) -> None:
    """Keep Prefect's own database beside the rest of the data unless told otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(settings.data_dir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no internet here
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
        str | None,
        typer.Option(help="small | demo | large (>10M events). Default: LOOPLINE_SIM_SCALE."),
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
    from loopline.simulate import (
        SimConfig,
        SimulationError,
        config_for_scale,
        load_state,
        reset_sources,
    )
    from loopline.simulate import (
        simulate as run,
    )

    settings = get_settings()
    if reset:
        reset_sources(settings)
    state = load_state(settings)
    options_given = (
        any(
            v is not None
            for v in (days, scale, users, seed, drift_start, concept_drift_start, spike_start)
        )
        or drift != "none"
    )
    config: SimConfig | None = None
    if state is None:
        try:
            config, default_days = config_for_scale(
                scale or settings.sim_scale,  # type: ignore[arg-type]
                seed=seed if seed is not None else settings.sim_seed,
                start=settings.sim_start,
                users=users,
                drift_kind=drift,
                drift_start=drift_start,
                concept_drift_start=concept_drift_start,
                spike_start=spike_start,
            )
        except (ValueError, KeyError) as exc:
            raise _fail(f"bad scenario options: {exc}") from exc
        until = until or config.date_of((days or default_days) - 1)
    else:
        if options_given and days is None:
            raise _fail(
                "a simulation exists already; continue it with --until only, or start over with --reset"
            )
        if until is None:
            if days is None:
                console.print(
                    f"already simulated through {state.config.date_of(state.last_day)}; "
                    "pass --until YYYY-MM-DD to continue"
                )
                return
            until = state.config.date_of(state.last_day + days)
    try:
        report = run(settings, until, config, progress=not quiet)
    except SimulationError as exc:
        raise _fail(str(exc)) from exc
    if report.days == 0:
        console.print(f"nothing to do: already simulated through {report.last_day}")
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
    from loopline.sources.catalogue_api import ApiBehaviour, serve_forever

    settings = get_settings()
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
        str | None, typer.Option(help="small | demo | large. Default: LOOPLINE_SIM_SCALE.")
    ] = None,
) -> None:
    """Run the whole loop as one Prefect flow on the embedded defaults, then say where to look."""
    settings = get_settings()
    _prefect_home(settings)
    from flows.demo import DemoParams, loopline_demo

    result = loopline_demo(DemoParams(scale=scale or settings.sim_scale))
    console.rule("where to look")
    for name, where in result.items():
        console.print(f"  {name:<22} {where}")


# -- later issues fill these in ----------------------------------------------------------------
def _not_yet(issue: int | None, what: str) -> None:
    where = f"tracked in issue #{issue}" if issue else "planned, no issue filed yet"
    raise _fail(f"`{what}` is not built yet ({where})")


@app.command()
def ingest(
    catalogue_url: Annotated[
        str | None,
        typer.Option(help="A running catalogue API; default: start the simulated one in-process."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Extract and load every source into the warehouse's raw layer (each file once)."""
    from loopline.ingest.run import IngestError
    from loopline.ingest.run import ingest as run

    settings = get_settings()
    try:
        report = run(settings, catalogue_url=catalogue_url, progress=not quiet)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"ingest batch {report.batch_id} in {report.seconds:.1f} s")
    console.print(f"  OLTP tables copied: {report.oltp_tables or 'none changed'}")
    console.print(f"  catalogue API pages landed: {report.catalogue_pages}")
    for source, files in sorted(report.files.files.items()):
        console.print(
            f"  {source:<10} {files:>6} new files  {report.files.records[source]:>10,} records"
        )
    if not report.files.files:
        console.print("  no new files")
    for rejected in report.files.rejected:
        console.print(f"  [yellow]rejected[/yellow] {rejected} (moved to landing/_rejected/)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(
    ctx: typer.Context,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")
    ] = False,
) -> None:
    """Run `dbt build` (warehouse and feature marts); extra arguments go to dbt (e.g. --select)."""
    from loopline.dbt import DbtError, run_dbt

    settings = get_settings()
    args = ["build", *(["--full-refresh"] if full_refresh else []), *ctx.args]
    try:
        result = run_dbt(settings, args)
    except DbtError as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"dbt build: {len(result.results)} nodes passed; warehouse {settings.resolved_warehouse_path}"
    )


@app.command()
def validate() -> None:
    """Run the Great Expectations suites."""
    _not_yet(None, "validate")


@app.command()
def train(
    model: Annotated[str, typer.Option(help="churn | recommender | all")] = "all",
) -> None:
    """Train, evaluate and register the models; promote a challenger that earns it."""
    from ml.config import ConfigError, load_ml_config
    from ml.registry import RegistryError

    settings = get_settings()
    if model not in ("churn", "recommender", "all"):
        raise _fail(f"--model {model!r}: choose churn, recommender or all")
    try:
        config = load_ml_config(settings.ml_config)
        if model in ("churn", "all"):
            from ml.churn import train_churn

            with console.status("training the churn model (grid search on time folds)"):
                outcome = train_churn(settings, config.churn)
            auc = outcome.metrics["holdout_roc_auc"]
            bayes = f", Bayes-optimal {outcome.bayes_auc:.3f}" if outcome.bayes_auc else ""
            console.print(
                f"churn v{outcome.version} ({outcome.kind}): holdout ROC AUC {auc:.3f}{bayes}"
            )
            console.print(f"  {outcome.decision.summary()}")
            console.print(f"  report: {outcome.report}")
        if model in ("recommender", "all"):
            from ml.recs import train_recommender

            with console.status("training the recommender"):
                recs = train_recommender(settings, config.recommender)
            console.print(
                f"recommender v{recs.version}: recall@{recs.k} {recs.metrics['recall_at_k']:.3f} "
                f"(popularity {recs.baseline['recall_at_k']:.3f}), "
                f"NDCG@{recs.k} {recs.metrics['ndcg_at_k']:.3f} "
                f"(popularity {recs.baseline['ndcg_at_k']:.3f})"
            )
            console.print(f"  {recs.decision.summary()}")
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
) -> None:
    """Batch-score every active user with @champion; write top-N recommendations for every user."""
    from ml.registry import RegistryError
    from ml.score import score_churn

    settings = get_settings()
    try:
        with console.status("scoring every active user with @champion") as status:
            done = 0

            def advance(rows: int) -> None:
                nonlocal done
                done += rows
                status.update(f"scoring every active user with @champion: {done:,} rows")

            report = score_churn(settings, as_of, progress=advance)
        console.print(
            f"churn v{report.model_version}: {report.rows:,} users scored as of {report.as_of} "
            f"-> {report.table} (replaced {report.replaced:,} earlier rows of this version and day)"
        )
        from ml.recs import recommend_all

        recs = recommend_all(settings, report.as_of, k)
        if recs is None:
            console.print("recommender: no @champion yet; skipped (run `loopline train`)")
        else:
            console.print(
                f"recommender v{recs.model_version}: top {k} for {recs.rows // k:,} users "
                f"-> {recs.table}"
            )
    except RegistryError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.", min=0, max=65535)] = 8000,
    alias: Annotated[str, typer.Option(help="Registry alias to serve and follow.")] = "champion",
    poll_seconds: Annotated[float, typer.Option(help="How often to check the alias.")] = 5.0,
) -> None:
    """Serve churn scores and recommendations over HTTP (FastAPI on uvicorn)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ml.serve import serve as run

    console.print(f"serving @{alias} on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    run(get_settings(), host, port, alias=alias, poll_seconds=poll_seconds)


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
    settings = get_settings()
    try:
        decision = do_rollback(configure(settings), names[model])
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    record_decision(settings, decision)
    console.print(f"{decision.summary()}; @champion is v{decision.version} again")


@app.command()
def monitor() -> None:
    """Check model performance rules and data drift."""
    _not_yet(None, "monitor")


@app.command()
def stream() -> None:
    """Consume viewing events from the broker as they happen."""
    _not_yet(None, "stream")


@app.command()
def up() -> None:
    """Start the local services (Prefect server, catalogue API, MLflow UI)."""
    _not_yet(None, "up")


@app.command()
def down() -> None:
    """Stop the local services started by `loopline up`."""
    _not_yet(None, "down")


def main() -> None:  # pragma: no cover - console entry point
    app()
