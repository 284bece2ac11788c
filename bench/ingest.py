"""Ingest of landed files against DuckDB's own readers (issue 14, row 4b).

    python -m bench.ingest                 # demo-scale company, 5 runs of each side
    python -m bench.ingest --quick         # small company, 1 run of each side

loopline's side is `load_files` over the events, payments and tickets files (manifest rows,
exactly-once, rejects and all) into a fresh warehouse file. DuckDB's side is one statement
per source over the same files (`read_json` for the NDJSON drops, `read_csv` for the billing
CSVs; the files loopline rejected are left out, DuckDB would fail on them) into a fresh
file. Each run is a separate process (the peak RSS of its tree is sampled: `ru_maxrss` of a
child starts from its parent's at the fork); both sides must produce the
same number of rows per source before a ratio is reported. Target: loopline >= 0.5x
DuckDB's rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fixture import REPO
from bench.memory import run_sampled

SOURCES = ("events", "payments", "tickets")
TARGET = 0.5


def company(data_dir: Path, scale: str) -> Path:
    """The landing folder of a simulated company at `scale` (simulated once, then reused)."""
    from loopline.settings import Settings
    from loopline.simulate import config_for_scale, simulate

    settings = Settings(data_dir=data_dir, source_db_url=None, warehouse_path=None)
    if not (settings.sim_state_dir).exists():
        config, days = config_for_scale(scale, seed=42, start=settings.sim_start)  # type: ignore[arg-type]
        simulate(settings, config.date_of(days - 1), config, progress=False)
    return settings.landing_dir


def _copy(landing: Path, work: Path) -> Path:
    """Hard-linked copy of the landing folder: rejects moved in it stay in the original."""
    target = work / "landing"
    for source in SOURCES:
        if (landing / source).exists():
            shutil.copytree(landing / source, target / source, copy_function=os.link)
    return target


def side_loopline(landing: Path, work: Path) -> dict[str, Any]:
    import duckdb

    from loopline.ingest.files import SOURCES as FILE_SOURCES
    from loopline.ingest.files import load_files

    copy = _copy(landing, work)
    con = duckdb.connect(str(work / "loopline.duckdb"))
    con.execute("set threads = 2")
    chosen = [s for s in FILE_SOURCES if s.name in SOURCES]
    started = time.perf_counter()
    cpu = time.process_time()
    report = load_files(con, copy, "bench", chosen, show_progress=False)
    con.execute("checkpoint")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    loaded = {
        source: sorted(
            str(landing / rel)
            for (rel,) in con.execute(
                "select file_path from raw.file_manifest where source = ? and status = 'loaded'",
                [source],
            ).fetchall()
        )
        for source in SOURCES
    }
    con.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": {s: report.records.get(s, 0) for s in SOURCES},
        "files": loaded,
        "rejected": len(report.rejected),
    }


def side_duckdb(files: dict[str, list[str]], work: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(work / "duckdb.duckdb"))
    con.execute("set threads = 2")
    statements = {
        "events": "create table events as select * from read_json($files, "
        "format = 'newline_delimited', ignore_errors = true)",
        "tickets": "create table tickets as select * from read_json($files, "
        "format = 'newline_delimited', ignore_errors = true)",
        "payments": "create table payments as select * from read_csv($files, header = true, "
        "all_varchar = true)",
    }
    started = time.perf_counter()
    cpu = time.process_time()
    for source, sql in statements.items():
        con.execute(sql, {"files": files[source]})
    con.execute("checkpoint")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = {s: con.execute(f"select count(*) from {s}").fetchone()[0] for s in SOURCES}  # type: ignore[index]
    con.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows}


def _in_process(side: str, landing: Path, files: dict[str, list[str]] | None) -> dict[str, Any]:
    """Run one side in a fresh process; add its peak RSS."""
    with tempfile.TemporaryDirectory(prefix=f"bench-ingest-{side}-") as work:
        spec = Path(work) / "spec.json"
        spec.write_text(
            json.dumps({"side": side, "landing": str(landing), "work": work, "files": files})
        )
        out = run_sampled([sys.executable, "-m", "bench.ingest", "--child", str(spec)], cwd=REPO)
    result: dict[str, Any] = json.loads(out.check().stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = out.peak_rss_mb
    return result


def _child(spec: dict[str, Any]) -> None:
    landing, work = Path(spec["landing"]), Path(spec["work"])
    if spec["side"] == "loopline":
        result = side_loopline(landing, work)
    else:
        result = side_duckdb(spec["files"], work)
    print(json.dumps(result))


def run(data_dir: Path, scale: str, runs: int) -> dict[str, Any]:
    """Warm-up, then `runs` alternating runs of each side; medians and the ratio."""
    landing = company(data_dir, scale)
    warm = _in_process("loopline", landing, None)  # also finds which files load
    files = warm.pop("files")
    _in_process("duckdb", landing, files)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(_in_process("loopline", landing, None))
        theirs.append(_in_process("duckdb", landing, files))
    for a, b in zip(ours, theirs, strict=True):
        if a["rows"] != b["rows"]:
            raise AssertionError(f"different rows: loopline {a['rows']} vs DuckDB {b['rows']}")
    rows = sum(ours[0]["rows"].values())
    ours_s = statistics.median(r["seconds"] for r in ours)
    theirs_s = statistics.median(r["seconds"] for r in theirs)
    return {
        "scale": scale,
        "runs": runs,
        "rows": ours[0]["rows"],
        "rejected_files": ours[0]["rejected"],
        "loopline": {
            "median_s": ours_s,
            "rows_per_s": rows / ours_s,
            "median_cpu_s": statistics.median(r["cpu_seconds"] for r in ours),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
        },
        "duckdb": {
            "median_s": theirs_s,
            "rows_per_s": rows / theirs_s,
            "median_cpu_s": statistics.median(r["cpu_seconds"] for r in theirs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in theirs),
        },
        "ratio": theirs_s / ours_s,
        "target": TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small company, one run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(Path(args.child).read_text()))
        return
    scale = "small" if args.quick else "demo"
    data_dir = args.data_dir or REPO / "data" / "bench" / f"ingest-{scale}"
    result = run(data_dir, scale, 1 if args.quick else args.runs)
    ours, theirs = result["loopline"], result["duckdb"]
    print(
        f"ingest ({scale}, {sum(result['rows'].values()):,} rows, median of {result['runs']}): "
        f"loopline {ours['median_s']:.1f} s ({ours['rows_per_s']:,.0f} rows/s, "
        f"{ours['peak_rss_mb']:.0f} MB), DuckDB read_json/read_csv {theirs['median_s']:.1f} s "
        f"({theirs['rows_per_s']:,.0f} rows/s, {theirs['peak_rss_mb']:.0f} MB): "
        f"{result['ratio']:.2f}x (target >= {TARGET}x)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
