"""Run the benchmarks of issue 14 and write the results (``make bench``).

    python -m bench.run            # every row at full size; also refreshes bench/RESULTS.md
    python -m bench.run --quick    # a shorter smoke run (results under data/bench/ only)
    python -m bench.run --skip-serving --skip-batch   # only the rows after scoring
    python -m bench.run --only validation             # one row (its section of RESULTS.md)

Rows: serving and batch scoring (bench/serving.py, bench/batch.py, on the bench company of
bench/fixture.py), validation (bench/validation.py), the point-in-time builder
(bench/pit.py), drift (bench/drift.py), ingest (bench/ingest.py), streaming from Redis
(bench/stream.py; needs the Redis at 127.0.0.1:6379, db 11), the whole loop
(`loopline demo`, bench/demo.py) and, on the folder the demo filled, dbt's incremental build
against a full refresh (bench/dbt_build.py), and the churn model's learning curve against
the simulator's truth (bench/learning.py). Numbers are measured, never asserted: each
target is reported as a ratio and pass/fail in ``data/bench/results.json`` and
``data/bench/results.md``. A full (not ``--quick``) run rewrites bench/RESULTS.md; the
sections of rows it skipped are kept from the previous file, each with its own date line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.fixture import DEFAULT_DATA_DIR, REPO
from bench.learning import learning_body
from bench.pit import pit_body
from bench.serving import serving_lines
from bench.stream import stream_body, stream_checks
from bench.validation import validation_body

console = Console()

PACKAGES = ("mlflow", "scikit-learn", "fastapi", "uvicorn", "duckdb", "pyarrow", "numpy", "pandas")


@dataclass(frozen=True)
class Check:
    """One target: the measured value, the bound, and which side of it passes."""

    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool
    row: str = "scoring"

    @property
    def ratio(self) -> float:
        """How far inside the target (> 1 passes) whichever way the bound points."""
        if self.higher_is_better:
            return self.measured / self.target if self.target else float("inf")
        return self.target / self.measured if self.measured else float("inf")

    @property
    def passed(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "target": self.target,
            "unit": self.unit,
            "bound": ">=" if self.higher_is_better else "<=",
            "ratio_vs_target": self.ratio,
            "passed": self.passed,
            "row": self.row,
        }


def checks(results: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    serving = results.get("serving")
    if serving:
        lat, tp = serving["ours_latency"], serving
        out.append(Check("online p50 latency (ours, c=1)", lat["p50_ms"], 1.5, "ms", False))
        out.append(Check("online p99 latency (ours, c=1)", lat["p99_ms"], 5.0, "ms", False))
        ratio = tp["ours_throughput"]["rps"] / tp["mlflow_throughput"]["rps"]
        out.append(Check("throughput ours / mlflow serve", ratio, 10.0, "x", True))
        for c, trivial in serving.get("throughput", {}).get("trivial", {}).items():
            ratio = serving["throughput"]["ours"][c] / trivial
            out.append(Check(f"churn / constant endpoint req/s (c={c})", ratio, 0.5, "x", True))
    batch = results.get("batch")
    if batch:
        # the target's baseline: one predict_proba call over all the rows, already in memory
        baseline = batch.get("raw_whole_rows_per_s", batch["raw_rows_per_s"])
        ratio = batch["score_churn_rows_per_s"] / baseline
        out.append(Check("score_churn / raw predict_proba", ratio, 0.9, "x", True))
    validation = results.get("validation")
    if validation:
        out.append(
            Check(
                "validation: loopline validate / SQL pass, time",
                validation["time_ratio"],
                validation["target_time"],
                "x",
                False,
                "validation",
            )
        )
        out.append(
            Check(
                "validation: loopline validate / SQL pass, peak RSS",
                validation["memory_ratio"],
                validation["target_memory"],
                "x",
                False,
                "validation",
            )
        )
    pit = results.get("pit")
    if pit:
        ratio, target = pit["ratio_vs_asof"], pit["target_vs_asof"]
        out.append(Check("PIT: loopline / ASOF JOIN", ratio, target, "x", False, "pit"))
        speedup, target = pit["speedup_vs_pandas"], pit["target_vs_pandas"]
        out.append(Check("PIT: speed-up over pandas merge_asof", speedup, target, "x", True, "pit"))
    drift = results.get("drift")
    if drift:
        out.append(
            Check(
                "drift: detect_drift speed-up over scipy", drift["ratio"], 3.0, "x", True, "drift"
            )
        )
        out.append(
            Check(
                "drift: detect_drift_duckdb speed-up over scipy",
                drift["ratio_duckdb"],
                3.0,
                "x",
                True,
                "drift",
            )
        )
        wide = drift.get("wide")
        if wide:
            out.append(
                Check(
                    f"drift: {wide['features']:,} features x {wide['rows']:,} rows",
                    wide["seconds"],
                    wide["target_s"],
                    "s",
                    False,
                    "drift",
                )
            )
    ingest = results.get("ingest")
    if ingest:
        out.append(
            Check("ingest: loopline / DuckDB rows/s", ingest["ratio"], 0.5, "x", True, "ingest")
        )
    for key in ("dbt", "dbt_large"):
        dbt = results.get(key)
        if not dbt:
            continue
        scale = dbt.get("scale", "demo")
        if "ratio" in dbt:
            # the target is set at --scale large; a smaller scale is judged only when it is
            # the one measured (a run without the large company)
            if key == "dbt" and results.get("dbt_large"):
                continue
            name = f"dbt: incremental / full refresh ({scale})"
            out.append(Check(name, dbt["ratio"], 0.1, "x", False, "dbt"))
        else:
            out.append(
                Check(
                    f"dbt: incremental models differing from the full refresh ({scale})",
                    len(dbt["different"]),
                    0,
                    "models",
                    False,
                    "dbt",
                )
            )
    stream = results.get("stream")
    if stream:
        out += stream_checks(stream)
    learning = results.get("learning")
    if learning:
        largest = learning["points"][-1]
        ratio = largest["after"]["ratio"]
        if ratio is not None:
            name = f"churn ROC AUC / Bayes at {largest['users']:,} users"
            out.append(Check(name, ratio, learning["target_ratio"], "x", True, "learning"))
    demo = results.get("demo")
    if demo:
        scale = demo["scale"]
        out.append(Check(f"demo ({scale}) wall", demo["wall_s"], 180.0, "s", False, "demo"))
        out.append(
            Check(f"demo ({scale}) peak RSS", demo["peak_rss_mb"], 4096.0, "MB", False, "demo")
        )
    return out


# --------------------------------------------------------------------------------------------
# the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" or "unknown"
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": _git_commit(),
    }


# --------------------------------------------------------------------------------------------
# reporting


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "x":
        return f"{value:.3f}x" if value < 10 else f"{value:.1f}x"
    if unit == "s":
        return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"
    return f"{value:,.0f} {unit}"


#: the rows in the order the results show them, with their section titles
ROWS = {
    "scoring": "Rows 0 and batch: serving and batch scoring",
    "validation": "Row 1: validating a 5-million-row feature table vs one SQL pass and GX-pandas",
    "pit": "Row 2: point-in-time training set vs DuckDB ASOF JOIN and pandas merge_asof",
    "drift": "Row 3: drift, `detect_drift` vs scipy per column",
    "ingest": "Row 4b: ingest of landed files vs DuckDB's own readers",
    "dbt": "Row 4: dbt incremental build vs full refresh",
    "stream": "Row 5: streaming, `loopline stream` from Redis Streams vs the file-drop path",
    "demo": "Row 6: the whole loop, `loopline demo`",
    "learning": "Row 7: churn model quality against the truth, a learning curve",
}
_ROW_KEYS = {"scoring": ("serving", "batch"), "dbt": ("dbt", "dbt_large")}
_BEGIN = "<!-- bench row: {} -->"
_END = "<!-- end of bench row: {} -->"


def measured_rows(results: dict[str, Any]) -> list[str]:
    """The rows this run measured (scoring when it measured serving or batch)."""
    return [row for row in ROWS if any(results.get(k) for k in _ROW_KEYS.get(row, (row,)))]


def sections_of(text: str) -> dict[str, str]:
    """The row sections of an earlier results file, by row, markers included."""
    found: dict[str, str] = {}
    for row in ROWS:
        begin, end = re.escape(_BEGIN.format(row)), re.escape(_END.format(row))
        hit = re.search(f"{begin}.*?{end}", text, flags=re.DOTALL)
        if hit:
            found[row] = hit.group(0)
    return found


def markdown(results: dict[str, Any], carried: dict[str, str] | None = None) -> str:
    """The results file: this run's rows, and `carried` sections for the rows it skipped."""
    carried = carried or {}
    lines = [
        "# Benchmark results",
        "",
        "Regenerated by `make bench` (`python -m bench.run`). Each section is one row of "
        "issue 14 with the date, machine and command of the run that measured it (a run that "
        "skips a row keeps the row's previous section). Numbers are measured, not asserted; "
        "the machine has 2 cores shared with other work, so expect noise: compare the ratios, "
        "which both sides of a row share.",
    ]
    for row, error in results.get("failed", {}).items():
        lines += ["", f"**{ROWS[row].split(':')[0]} failed on {results['date']}**: {error}"]
    sections = {row: _section(results, row) for row in measured_rows(results)}
    for row in ROWS:
        text = sections.get(row) or carried.get(row)
        if text:
            lines += ["", text]
    lines.append("")
    return "\n".join(lines)


def _section(results: dict[str, Any], row: str) -> str:
    m = results["machine"]
    load = results.get("loadavg", {}).get(row)
    lines = [
        _BEGIN.format(row),
        f"## {ROWS[row]}",
        "",
        f"- date: {results['date']} ({'quick' if results['quick'] else 'full'} run); "
        f"command: `{results.get('command', 'python -m bench.run')}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}; "
        f"git {m['git_commit']}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in m['packages'].items())}",
    ]
    if load:
        lines.append(
            f"- load average before / after this row: {load[0]} / {load[1]} "
            "(the machine is shared: expect noise)"
        )
    else:
        lines.append(
            f"- load average before / after: {results['loadavg_before']} / "
            f"{results['loadavg_after']} (the machine is shared: expect noise)"
        )
    lines += [
        "",
        "| target | measured | bound | ratio vs target | result |",
        "|---|---|---|---|---|",
    ]
    for c in results["checks"]:
        if c.get("row", "scoring") != row:
            continue
        unit = c["unit"]
        lines.append(
            f"| {c['name']} | {_fmt(c['measured'], unit)} | {c['bound']} "
            f"{_fmt(c['target'], unit)} | {c['ratio_vs_target']:.2f} | "
            f"{'PASS' if c['passed'] else 'FAIL'} |"
        )
    lines += SECTION_BODIES[row](results)
    lines.append(_END.format(row))
    return "\n".join(lines)


def _scoring_body(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    model = results.get("serving") or {}
    if model:
        lines += [
            "",
            f"Model: loopline-churn v{model['model_version']} ({model['estimator']}), "
            "served as `models:/loopline-churn@champion`.",
        ]
    serving = results.get("serving")
    if serving:
        lines += serving_lines(serving)
    batch = results.get("batch")
    if batch:
        cpu_ratio = batch["score_churn_rows_per_cpu_s"] / batch["raw_rows_per_cpu_s"]
        lines += [
            "",
            "### Batch: `ml.churn.score.score_churn` vs raw `predict_proba`",
            "",
            f"{batch['rows']:,} feature rows of one day ({batch['as_of']}), chunks of "
            f"{batch['chunk_rows']:,}; best of {batch['repeats']} interleaved runs. "
            "`score_churn` is end to end (DuckDB -> Arrow -> predict_proba -> DuckDB, commit) "
            "with the champion loaded once beforehand, as by a worker scoring many days; "
            f"loading it from the registry takes {batch['load_churn_model_s']:.2f} s on its "
            "own. The baseline is one `predict_proba` call on the same rows already "
            "in memory as an `as_model_input` frame; the same call on score_churn's chunks "
            "separates chunking from I/O. Stored probabilities checked equal to the chunked "
            f"baseline's (max difference "
            f"{batch['verification']['max_abs_probability_difference']:.1e}).",
            "",
            "| measurement | rows/s (best) | rows/s (median) | rows per CPU-second (best) |",
            "|---|---|---|---|",
            f"| raw predict_proba, one call over all rows (target baseline) | "
            f"{batch.get('raw_whole_rows_per_s', float('nan')):,.0f} | "
            f"{batch.get('raw_whole_rows_per_s_median', float('nan')):,.0f} | |",
            f"| raw predict_proba, in score_churn's chunks | {batch['raw_rows_per_s']:,.0f} | "
            f"{batch['raw_rows_per_s_median']:,.0f} | {batch['raw_rows_per_cpu_s']:,.0f} |",
            f"| score_churn end to end | {batch['score_churn_rows_per_s']:,.0f} | "
            f"{batch['score_churn_rows_per_s_median']:,.0f} | "
            f"{batch['score_churn_rows_per_cpu_s']:,.0f} |",
            f"| score_churn plus a registry load ({batch['load_churn_model_s']:.2f} s) | "
            f"{batch['score_churn_plus_model_load_rows_per_s']:,.0f} | | |",
        ]
        lines += [
            "",
            f"score_churn / raw in the same chunks (the DuckDB and Arrow overhead alone): "
            f"{batch['score_churn_rows_per_s'] / batch['raw_rows_per_s']:.3f}x wall, "
            f"{cpu_ratio:.3f}x CPU time; the rest of the gap to one call is the cost of many "
            "smaller predict_proba calls. Thread pools: "
            + ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in batch["thread_pools"])
            + ".",
        ]
    return lines


def _drift_body(results: dict[str, Any]) -> list[str]:
    d = results["drift"]
    v = d["verification"]
    lines = [
        "",
        f"{d['numeric']} numeric (80 normal, 20 Poisson counts with ties) + {d['categorical']} "
        f"categorical (8 string levels, a sparse tail) columns x {d['rows']:,} rows a side, "
        "a tenth of each kind drifted a little "
        f"({len(d['drifted_features'])} flagged). Warm-up on a small sample, then median of "
        f"{d['runs']} interleaved runs of each side. scipy: `ks_2samp` per numeric column and "
        "`chi2_contingency(correction=False)` on the value counts per categorical column, "
        "on the same pandas frames; `detect_drift_duckdb` reads the same data from two tables "
        "of a DuckDB file (the path for warehouse tables).",
        "",
        f"Checked before the ratio (relative, tolerance {1e-9:g}): KS statistic gap "
        f"{v['ks_statistic_gap']:.1e}, chi-square statistic / dof / p-value gap "
        f"{v['chi2_gap']:.1e}, pandas vs DuckDB report gap {v['pandas_vs_duckdb_gap']:.1e}. "
        "KS p-values differ by design (Kolmogorov's limiting law, and a discrete null for the "
        f"tied counts, where scipy's is conservative): largest gap {v['ks_p_value_gap']:.2f}.",
        "",
        "| side | median | speed-up over scipy | peak RSS added |",
        "|---|---|---|---|",
    ]
    scipy_s = d["scipy"]["median_s"]
    for key, label in (
        ("pandas", "`detect_drift` (pandas frames)"),
        ("duckdb", "`detect_drift_duckdb` (DuckDB tables)"),
        ("scipy", "scipy per column"),
    ):
        side = d[key]
        lines.append(
            f"| {label} | {side['median_s']:.1f} s | {scipy_s / side['median_s']:.2f}x | "
            f"{side['peak_rss_added_mb']:,.0f} MB |"
        )
    lines += [
        "",
        "Peak RSS added: above the process's RSS before the call (the frames are already in "
        "memory; memory an earlier call freed and the allocator kept hides part of a later "
        "call's peak, so compare it loosely).",
    ]
    wide = d.get("wide")
    if wide:
        lines += [
            "",
            f"On its own: `detect_drift_duckdb` over {wide['features']:,} normal features x "
            f"{wide['rows']:,} rows a side, two tables of a DuckDB file on disk "
            f"({wide.get('file_gb', 0):.1f} GB; made first in row blocks, "
            f"{wide.get('generate_s', 0):.0f} s, not timed), took {wide['seconds']:.1f} s "
            f"(one run; peak RSS {wide.get('peak_rss_mb', 0):,.0f} MB, "
            f"{wide['peak_rss_added_mb']:,.0f} MB above the process before the call). "
            f"The first {wide.get('checked_columns', 0)} columns' KS statistics equal scipy's "
            f"(gap {wide.get('ks_statistic_gap', 0):.1e})."
            + (
                f" The target is at {wide['target_rows']:,} rows a side; this run measured "
                f"fewer ({wide['rows']:,}), so it is not the target's size."
                if wide["rows"] < wide["target_rows"]
                else ""
            ),
        ]
    return lines


def _ingest_body(results: dict[str, Any]) -> list[str]:
    d = results["ingest"]
    ours, theirs = d["loopline"], d["duckdb"]
    rows = sum(d["rows"].values())
    return [
        "",
        f"The events, payments and tickets files of a `--scale {d['scale']}` company "
        f"({rows:,} rows: "
        + ", ".join(f"{k} {v:,}" for k, v in d["rows"].items())
        + f"; {d['rejected_files']} file(s) rejected by loopline and left out of DuckDB's "
        "side). loopline: `load_files` (manifest, exactly-once, rejects) into a fresh "
        "warehouse file; DuckDB: one `read_json` / `read_csv` statement per source over the "
        "same files into a fresh file. Each run a fresh process; a warm-up of each side, "
        f"then median of {d['runs']} alternating runs. Rows per source checked equal first.",
        "",
        "| side | median | rows/s | CPU s | peak RSS |",
        "|---|---|---|---|---|",
        f"| `loopline ingest` (load_files) | {ours['median_s']:.1f} s | "
        f"{ours['rows_per_s']:,.0f} | {ours['median_cpu_s']:.1f} | {ours['peak_rss_mb']:,.0f} MB |",
        f"| DuckDB read_json / read_csv | {theirs['median_s']:.1f} s | "
        f"{theirs['rows_per_s']:,.0f} | {theirs['median_cpu_s']:.1f} | "
        f"{theirs['peak_rss_mb']:,.0f} MB |",
    ]


def _dbt_body(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key in ("dbt_large", "dbt"):
        if results.get(key):
            lines += _dbt_scale_body(results[key])
    return lines


def _dbt_scale_body(d: dict[str, Any]) -> list[str]:
    inc, full, noop = d["incremental"], d["full_refresh"], d["noop"]
    scale = d.get("scale", "demo")
    prepared = d.get("prepared")
    if prepared:
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in prepared.get("steps_s", {}).items())
        where = (
            f"On a `--scale {scale}` company kept by the bench ({prepared.get('simulated', '')}"
            + (f"; prepared in {steps}" if steps else "")
            + (", reused from an earlier run" if prepared.get("reused") else "")
            + ")"
        )
    else:
        where = f"On the folder the demo row filled (`--scale {scale}`)"
    lines = [
        "",
        f"### At `--scale {scale}`",
        "",
        f"{where}: one more simulated day ({d['one_more_day']}), "
        f"ingested ({d['ingest_s']:.0f} s), then `loopline build` (the incremental build "
        "of that day), the rows of every incremental model fingerprinted, and `loopline build "
        "--full-refresh` on the same folder (it rebuilds the other colour from the sources), "
        "each once (each takes minutes, and a second incremental run would have nothing new). "
        "dbt's fixed start-up cost: `loopline build --select <nothing>` (process start, "
        f"parse, the incremental-relations check, an empty run), median of {noop['runs']}.",
        "",
        "| build | wall | peak RSS of the tree |",
        "|---|---|---|",
        f"| incremental (`loopline build`) | {inc['seconds']:.1f} s | "
        f"{inc['peak_rss_mb']:,.0f} MB |",
        f"| full refresh (`loopline build --full-refresh`) | {full['seconds']:.1f} s | "
        f"{full['peak_rss_mb']:,.0f} MB |",
        f"| no-op (start-up cost) | {noop['median_s']:.1f} s | {noop['peak_rss_mb']:,.0f} MB |",
        "",
    ]
    if d["equal"]:
        lines.append(
            f"All {len(d['models'])} incremental models hold the same rows after both builds "
            "(row count and a checksum of the rows without dbt's columns, doubles rounded to "
            "9 decimals): "
            + ", ".join(f"`{m}` {v['rows']:,}" for m, v in d["models"].items())
            + f". Ratio without the start-up cost on both sides: "
            f"{d['ratio_without_startup']:.2f}x."
        )
    else:
        lines.append(
            "**The outputs differ, so no ratio is reported**: "
            + "; ".join(
                f"`{m}` incremental {v['incremental']['rows']:,} rows vs full "
                f"{v['full']['rows']:,} (checksums "
                f"{'equal' if v['incremental']['checksum'] == v['full']['checksum'] else 'differ'})"
                for m, v in d["different"].items()
            )
            + "."
        )
    for side in ("incremental", "full_refresh"):
        slow = d["node_seconds"][side]
        lines += [
            "",
            f"Slowest nodes, {side.replace('_', ' ')}: "
            + ", ".join(f"`{n.split('.')[-1]}` {s:.1f} s" for n, s in slow)
            + ".",
        ]
        phases = d[side].get("phases")  # results from before the phases were kept lack them
        if phases:
            lines[-1] += (
                " Its phase lines: "
                + ", ".join(f"{name} {'?' if s is None else f'{s:.1f}'} s" for name, s in phases)
                + "; the rest of its wall time is the process's start and exit."
            )
    return lines


def _demo_body(results: dict[str, Any]) -> list[str]:
    d = results["demo"]
    lines = [
        "",
        f"`loopline demo --scale {d['scale']}` as a subprocess in a fresh temporary "
        f"LOOPLINE_DATA_DIR, one run (it takes minutes). Wall {d['wall_s']:.0f} s, peak RSS "
        f"of the process tree {d['peak_rss_mb']:,.0f} MB (sampled every 0.1 s: a lower "
        "bound). The phases, from its phase lines (the Prefect server starts first and "
        "stays up for the run):",
        "",
        "| phase | seconds | what it said |",
        "|---|---|---|",
    ]
    for p in d["phases"]:
        seconds = "" if p["seconds"] is None else f"{p['seconds']:.1f}"
        mark = "" if p["ok"] else " (warning)"
        summary = p["summary"].replace("|", "/")
        lines.append(f"| {p['phase']}{mark} | {seconds} | {summary} |")
    return lines


SECTION_BODIES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "scoring": _scoring_body,
    "validation": lambda results: validation_body(results["validation"]),
    "pit": lambda results: pit_body(results["pit"]),
    "drift": _drift_body,
    "ingest": _ingest_body,
    "dbt": _dbt_body,
    "stream": lambda results: stream_body(results["stream"]),
    "demo": _demo_body,
    "learning": lambda results: learning_body(results["learning"]),
}


def summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="loopline benchmarks")
    for column in ("target", "measured", "bound", "ratio", "result"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for c in results["checks"]:
        unit = c["unit"]
        table.add_row(
            c["name"],
            _fmt(c["measured"], unit),
            f"{c['bound']} {_fmt(c['target'], unit)}",
            f"{c['ratio_vs_target']:.2f}",
            "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]",
        )
    return table


# --------------------------------------------------------------------------------------------
# entry point

SKIPPABLE = (
    "serving",
    "batch",
    "validation",
    "pit",
    "drift",
    "ingest",
    "dbt",
    "demo",
    "stream",
    "learning",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--only ROW`` sets the ``--skip-`` flag of every other row."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke check)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the bench company")
    for row in SKIPPABLE:
        parser.add_argument(f"--skip-{row}", action="store_true")
    parser.add_argument(
        "--only",
        choices=SKIPPABLE,
        action="append",
        help="run only this row (repeatable): the --skip- flags of all the others, e.g. "
        "`python -m bench.run --only validation`",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite results.md (and the checks) from an existing results.json; no measuring",
    )
    parser.add_argument(
        "--dbt-scale",
        choices=("demo", "large", "both"),
        default="both",
        help="the dbt row's company: the demo row's folder, a kept --scale large company "
        "(the target's scale; preparing it takes many minutes the first time), or both "
        "(default; --quick measures the small demo only)",
    )
    parser.add_argument("--rows", type=int, help="batch rows (default 500,000; quick 200,000)")
    parser.add_argument(
        "--runs",
        type=int,
        help="timed runs of the validation, PIT, drift, ingest, stream and no-op dbt rows "
        "(default 5)",
    )
    parser.add_argument(
        "--drift-rows", type=int, help="rows a side of the drift row (default 1M; quick 20,000)"
    )
    parser.add_argument(
        "--wide-rows",
        type=int,
        help="rows a side of the 1,000-feature drift run (default 1,000,000; quick 2,000; 0: skip)",
    )
    parser.add_argument(
        "--learning-sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        help="users of each company of the learning row (default 1500,5000,25000; quick 300)",
    )
    args = parser.parse_args(argv)
    for row in SKIPPABLE if args.only else ():
        if row not in args.only:
            setattr(args, f"skip_{row}", True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        return write_results(json.loads((args.data_dir / "results.json").read_text()), args)

    def say(message: str) -> None:
        console.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message}", highlight=False)

    started = time.perf_counter()
    runs = args.runs or (1 if args.quick else 5)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": args.quick,
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "loadavg_before": _load(),
        "loadavg": {},
    }
    data_dir = args.data_dir.resolve()
    if not (args.skip_serving and args.skip_batch):
        _row(results, "scoring", lambda: _scoring(results, args, data_dir, say))
    if not args.skip_validation:
        from bench.validation import FULL as VALIDATION_FULL
        from bench.validation import QUICK as VALIDATION_QUICK
        from bench.validation import run_validation

        size = VALIDATION_QUICK if args.quick else VALIDATION_FULL
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="validation-", dir=data_dir) as work:
            _row(
                results,
                "validation",
                lambda: {
                    "validation": run_validation(
                        size["users"], size["days"], runs, Path(work), say, warmup=not args.quick
                    )
                },
            )
    if not args.skip_pit:
        from bench.pit import FULL as PIT_FULL
        from bench.pit import QUICK as PIT_QUICK
        from bench.pit import run_pit

        size = PIT_QUICK if args.quick else PIT_FULL
        _row(
            results,
            "pit",
            lambda: {
                "pit": run_pit(size["entity_rows"], size["feature_rows"], size["keys"], runs, say)
            },
        )
    if not args.skip_drift:
        from bench.drift import run_drift

        drift_rows = args.drift_rows or (20_000 if args.quick else 1_000_000)
        data_dir.mkdir(parents=True, exist_ok=True)  # the wide run's DuckDB file goes there
        wide = (
            args.wide_rows if args.wide_rows is not None else (2_000 if args.quick else 1_000_000)
        )
        say(f"drift: {drift_rows:,} rows a side, {runs} run(s)")
        _row(
            results,
            "drift",
            lambda: {"drift": run_drift(drift_rows, runs, wide or None, data_dir)},
        )
    if not args.skip_ingest:
        from bench.ingest import run as run_ingest

        scale = "small" if args.quick else "demo"
        say(f"ingest: a {scale} company's files, {runs} run(s) of each side")
        _row(
            results,
            "ingest",
            lambda: {"ingest": run_ingest(data_dir / f"ingest-{scale}", scale, runs)},
        )
    if not args.skip_stream:
        from bench.stream import QUICK as STREAM_QUICK
        from bench.stream import StreamConfig, run_stream

        config = STREAM_QUICK if args.quick else StreamConfig(runs=runs)
        _row(results, "stream", lambda: {"stream": run_stream(data_dir / "stream", config, say)})
    if not (args.skip_demo and args.skip_dbt):
        _loop(results, args, data_dir, runs, say)
    if not args.skip_learning:
        from bench import learning

        sizes = args.learning_sizes or (learning.QUICK_SIZES if args.quick else learning.FULL_SIZES)
        days = learning.QUICK_DAYS if args.quick else learning.DAYS
        root = data_dir / "learning"
        _row(
            results,
            "learning",
            lambda: {"learning": learning.run_learning(root, sizes, days, say, args.rebuild)},
        )
    results["loadavg_after"] = _load()
    results["elapsed_s"] = time.perf_counter() - started
    written = write_results(results, args)
    return 1 if results.get("failed") else written


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _row(results: dict[str, Any], row: str, measure: Callable[[], dict[str, Any]]) -> bool:
    """Measure one row; keep what it returned and the load average around it.

    A row that fails (a command exits non-zero, outputs differ) is recorded under ``failed``
    with its error, and the other rows still run and are written.
    """
    before = _load()
    try:
        results.update(measure())
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        results.setdefault("failed", {})[row] = message
        console.print(f"[red]{row} failed[/]: {message}", highlight=False)
        return False
    results["loadavg"][row] = [before, _load()]
    return True


def _scoring(
    results: dict[str, Any], args: argparse.Namespace, data_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    from bench.batch import BatchConfig, run_batch
    from bench.fixture import ensure_company
    from bench.serving import ServingConfig, run_serving

    out: dict[str, Any] = {}
    settings = ensure_company(data_dir, rebuild=args.rebuild, say=say)
    if not args.skip_serving:
        config = (
            ServingConfig(
                users=100, warmup=300, requests=500, seconds=2.0, rounds=1, batch_repeats=3
            )
            if args.quick
            else ServingConfig()
        )
        out["serving"] = run_serving(settings, config, say)
    if not args.skip_batch:
        rows = args.rows or (200_000 if args.quick else 500_000)
        batch_config = BatchConfig(rows=rows, repeats=2 if args.quick else 5)
        out["batch"] = run_batch(settings, batch_config, say)
    return out


def _loop(
    results: dict[str, Any],
    args: argparse.Namespace,
    data_dir: Path,
    runs: int,
    say: Callable[[str], None],
) -> None:
    """The demo row, then the dbt row on the folder the demo filled (a temporary one)."""
    from bench.dbt_build import prepare_company, run_dbt_build
    from bench.demo import run_demo

    def large() -> dict[str, Any]:
        """The dbt row at --scale large, on a company the bench keeps (long to make)."""
        prepared = prepare_company(data_dir / "dbt-large", "large", args.rebuild, say)
        say("dbt (large): one more day, then incremental build and full refresh in place")
        measured = run_dbt_build(data_dir / "dbt-large", runs)
        return {"dbt_large": measured | {"scale": "large", "prepared": prepared}}

    scale = "small" if args.quick else "demo"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not args.skip_dbt and not args.quick and args.dbt_scale in ("large", "both"):
        _row(results, "dbt", large)
        if args.dbt_scale == "large" and args.skip_demo:
            return
    with tempfile.TemporaryDirectory(prefix="loop-", dir=data_dir) as work:
        folder = Path(work) / "data"
        say(f"demo: loopline demo --scale {scale} in {folder}")
        if not _row(results, "demo", lambda: {"demo": run_demo(folder, scale)}):
            if not args.skip_dbt:
                results["failed"]["dbt"] = "not run: the demo it builds on failed"
            return
        if args.skip_demo:  # run only for the dbt row's folder
            results.pop("demo")
            results["loadavg"].pop("demo")
        if not args.skip_dbt and (args.quick or args.dbt_scale != "large"):
            say("dbt: one more day, then incremental build and full refresh in place")
            _row(results, "dbt", lambda: {"dbt": run_dbt_build(folder, runs) | {"scale": scale}})


def write_results(results: dict[str, Any], args: argparse.Namespace) -> int:
    """Judge the targets; write results.json, results.md (and bench/RESULTS.md if full)."""
    results["checks"] = [c.as_dict() for c in checks(results)]
    out_dir = args.data_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    full = not results.get("quick")
    committed = Path(__file__).parent / "RESULTS.md"
    if full:
        earlier = sections_of(committed.read_text()) if committed.exists() else {}
        committed.write_text(markdown(results, carried=earlier))
    console.print(summary_table(results))
    console.print(
        f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}"
        + (" (and bench/RESULTS.md)" if full else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
