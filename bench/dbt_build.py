"""dbt incremental build vs full refresh (issue 14, row 4).

    python -m bench.run --skip-... --dbt-scale large   # or demo, or both (the default)

At the demo scale the folder is the one the demo row filled. At `--scale large` (25,000 users,
180 days, > 10 million events: the scale the target is set at) the folder is prepared by
`prepare_company`: simulated, ingested and built once (minutes), and kept under the bench's
data folder for later runs (`--rebuild` starts it again).

One more simulated day is simulated and ingested into the folder; then `loopline build` runs on
it (a subprocess: wall time, peak RSS of its tree), the rows of every incremental model are
fingerprinted, and `loopline build --full-refresh` runs on the same folder, in place (no copy:
a warehouse of many GB at the large scale). Before the ratio is reported both builds must have
left the same rows in every incremental model (row count and an order-independent checksum of
the rows, dbt's own bookkeeping columns left out and doubles rounded to 9 decimals: the sums
inside may be added in another order). dbt's fixed start-up cost is measured on its own:
`loopline build` selecting no node (process start, parse, the incremental-relations check and
an empty dbt invocation). Target: incremental <= 0.1x full.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.demo import loopline_command, parse_phases
from bench.fixture import REPO, bench_settings
from bench.memory import Finished, clean_env, run_sampled

TARGET = 0.1
# what the builds write: the room check counts their size
_BUILT = ("warehouse", "dbt")
# a selector no node matches: the build does everything but run a node
_NOTHING = ["--select", "tag:bench_selects_nothing"]


def prepare_company(folder: Path, scale: str, rebuild: bool, say: Any) -> dict[str, Any]:
    """A data folder holding a simulated, ingested and built company of `scale`.

    Kept between runs (each run of the row adds one day to it); the seconds each step took
    the first time are returned (empty when the folder was reused).
    """
    marker = folder / "bench-prepared.json"
    if marker.exists() and not rebuild:
        say(f"dbt: reusing the {scale} company in {folder}")
        return dict(json.loads(marker.read_text()), reused=True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    steps: dict[str, float] = {}
    simulated = ""
    for step, args in (
        ("simulate", ("simulate", "--scale", scale, "--quiet")),
        ("ingest", ()),
        ("build", ("build",)),
    ):
        say(f"dbt: {step} the {scale} company in {folder}")
        finished = _ingest(folder) if step == "ingest" else _loopline(folder, *args)
        steps[step] = finished.seconds
        if step == "simulate" and finished.stdout.strip():
            simulated = finished.stdout.strip().splitlines()[0]
    prepared = {"scale": scale, "steps_s": steps, "simulated": simulated}
    marker.write_text(json.dumps(prepared))
    return dict(prepared, reused=False)


def _loopline(data_dir: Path, *args: str) -> Finished:
    return run_sampled([loopline_command(), *args], env=clean_env(data_dir), cwd=REPO).check()


def _ingest(data_dir: Path) -> Finished:
    """`loopline ingest` with the simulated catalogue vendor answering, as the demo wires it."""
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer

    with CatalogueServer(catalogue_dir(bench_settings(data_dir))) as vendor:
        return _loopline(data_dir, "ingest", "--quiet", "--catalogue-url", vendor.url)


# the full refresh writes a whole colour beside the live one (write-audit-publish) and the
# tables it replaces stay in the file until DuckDB reuses their blocks; the big marts spill:
# about the size of the warehouse and dbt state again. (With a copy per side, as this row
# once ran, --scale large needed 2.5x its 25 GB and a run with 47 GB free ran out of disk.)
ROOM_FACTOR = 1.0


def check_room(data_dir: Path, factor: float = ROOM_FACTOR) -> None:
    """Refuse, before building anything, when the folder's disk cannot hold a full refresh."""
    size = sum(
        f.stat().st_size
        for name in _BUILT
        if (data_dir / name).exists()
        for f in (data_dir / name).rglob("*")
        if f.is_file()
    )
    need, free = factor * size, shutil.disk_usage(data_dir).free
    if free < need:
        raise RuntimeError(
            f"the dbt row's full refresh needs about {need / 1e9:.1f} GB free on {data_dir} "
            f"({factor}x the {size / 1e9:.1f} GB warehouse and dbt state it rewrites), "
            f"{free / 1e9:.1f} GB found: free some space or run --dbt-scale demo"
        )


def incremental_models(data_dir: Path) -> list[str]:
    """`schema.alias` of every incremental model in the folder's last dbt manifest."""
    manifest = json.loads((data_dir / "dbt" / "target" / "manifest.json").read_text())
    return sorted(
        f"{node['schema']}.{node['alias']}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"]["materialized"] == "incremental"
    )


def fingerprints(data_dir: Path, relations: list[str]) -> dict[str, dict[str, Any]]:
    """Row count and an order-independent checksum of each relation in the folder's warehouse."""
    from loopline.warehouse import reading

    out: dict[str, dict[str, Any]] = {}
    with reading(bench_settings(data_dir)) as con:
        for relation in relations:
            schema, table = relation.split(".")
            columns = con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, table],
            ).fetchall()
            exprs = [
                f'round("{name}", 9)' if kind in ("DOUBLE", "FLOAT") else f'"{name}"'
                for name, kind in columns
                if not name.startswith("_dbt")
            ]
            rows, checksum = con.execute(
                f"select count(*), coalesce(sum(hash({', '.join(exprs)})::hugeint), 0)::varchar "
                f'from "{schema}"."{table}"'
            ).fetchone()  # type: ignore[misc]
            out[relation] = {"rows": int(rows), "checksum": checksum}
    return out


def run_dbt_build(data_dir: Path, noop_runs: int) -> dict[str, Any]:
    """One more day into `data_dir`, then the incremental build and a full refresh, in place.

    Builds write the colour that is not live (write-audit-publish, loopline/publish.py): a
    demo folder has one colour built, so one `loopline build` first builds the other;
    after the extra day the measured build goes to the first colour, which holds
    everything but that day, as an incremental build in steady state does. The full refresh
    then rebuilds the other colour from the sources alone.
    """
    check_room(data_dir)
    _loopline(data_dir, "build")  # both colours exist before the measured day
    simulated = _loopline(data_dir, "simulate", "--days", "1", "--quiet")
    ingested = _ingest(data_dir)

    noop = [_loopline(data_dir, "build", *_NOTHING) for _ in range(noop_runs)]
    incremental = _loopline(data_dir, "build")
    models = incremental_models(data_dir)
    ours = fingerprints(data_dir, models)
    incremental_nodes = _node_seconds(data_dir)
    full = _loopline(data_dir, "build", "--full-refresh")
    theirs = fingerprints(data_dir, models)
    different = {
        m: {"incremental": ours[m], "full": theirs[m]} for m in models if ours[m] != theirs[m]
    }
    noop_s = statistics.median(f.seconds for f in noop)
    result: dict[str, Any] = {
        "one_more_day": simulated.stdout.strip().splitlines()[0] if simulated.stdout else "",
        "ingest_s": ingested.seconds,
        "noop": {
            "runs": noop_runs,
            "median_s": noop_s,
            "peak_rss_mb": max(f.peak_rss_mb for f in noop),
        },
        "incremental": {
            "seconds": incremental.seconds,
            "peak_rss_mb": incremental.peak_rss_mb,
            "phases": _phases(incremental),
        },
        "full_refresh": {
            "seconds": full.seconds,
            "peak_rss_mb": full.peak_rss_mb,
            "phases": _phases(full),
        },
        "models": {m: ours[m] for m in models},
        "equal": not different,
        "different": different,
        "target": TARGET,
        "node_seconds": {
            "incremental": incremental_nodes,
            "full_refresh": _node_seconds(data_dir),
        },
    }
    if different:  # no ratio over different outputs
        return result
    result["ratio"] = incremental.seconds / full.seconds
    result["ratio_without_startup"] = max(incremental.seconds - noop_s, 0.0) / max(
        full.seconds - noop_s, 1e-9
    )
    return result


def _phases(finished: Finished) -> list[tuple[str, float | None]]:
    """(phase, seconds) of a build's phase lines: where its wall time went after dbt."""
    return [(p["phase"], p["seconds"]) for p in parse_phases(finished.stderr)]


def _node_seconds(data_dir: Path, top: int = 5) -> list[tuple[str, float]]:
    """The slowest nodes of the folder's last dbt run (from run_results.json)."""
    results = json.loads((data_dir / "dbt" / "target" / "run_results.json").read_text())
    timed = [(r["unique_id"], float(r["execution_time"])) for r in results["results"]]
    return sorted(timed, key=lambda item: -item[1])[:top]
