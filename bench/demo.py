"""The whole loop (issue 14, row 6): `loopline demo` in a fresh data folder, phase by phase.

    python -m bench.demo                 # --scale demo (one run: it takes minutes)
    python -m bench.demo --quick         # --scale small

The command runs as a user would start it (a subprocess, its own Prefect server, dbt and
MLflow in the same tree), in a temporary LOOPLINE_DATA_DIR. The tree's RSS is sampled for
the peak; the phase lines it prints on stderr (``✓ simulate   120 days: ... (9.2 s)``) give
the per-phase table. Targets at the demo scale: <= 3 minutes wall, <= 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.fixture import REPO
from bench.memory import clean_env, run_sampled

TARGET_SECONDS = 180.0
TARGET_RSS_MB = 4096.0

# "✓ build      312 nodes ... (1 m 02 s)"; "!" marks a phase that finished with a warning
_PHASE = re.compile(
    r"^(?P<mark>[✓!]) (?P<name>\S+)\s+(?P<summary>.*?)"
    r"(?: \((?:(?P<min>\d+) m (?P<sec_m>\d+) s|(?P<sec>[\d.]+) s)\))?\s*$"
)


def loopline_command() -> str:
    """The `loopline` console script of the running virtualenv."""
    return str(Path(sys.executable).parent / "loopline")


def parse_phases(stderr: str) -> list[dict[str, Any]]:
    """The phase lines of a loopline command's stderr, in order, with their seconds."""
    phases: list[dict[str, Any]] = []
    for line in stderr.splitlines():
        hit = _PHASE.match(line.strip())
        if not hit:
            continue
        if hit["min"] is not None:
            seconds: float | None = int(hit["min"]) * 60 + int(hit["sec_m"])
        elif hit["sec"] is not None:
            seconds = float(hit["sec"])
        else:
            seconds = None
        phases.append(
            {
                "phase": hit["name"],
                "seconds": seconds,
                "ok": hit["mark"] == "✓",
                "summary": hit["summary"],
            }
        )
    return phases


def run_demo(data_dir: Path, scale: str) -> dict[str, Any]:
    """`loopline demo --scale <scale>` into `data_dir`: wall, tree peak RSS, phases."""
    finished = run_sampled(
        [loopline_command(), "demo", "--scale", scale], env=clean_env(data_dir), cwd=REPO
    ).check()
    phases = parse_phases(finished.stderr)
    if not any(p["phase"] == "demo" for p in phases):
        raise RuntimeError("loopline demo printed no final 'demo' phase line:\n" + finished.stderr)
    return {
        "scale": scale,
        "runs": 1,
        "wall_s": finished.seconds,
        "peak_rss_mb": finished.peak_rss_mb,
        "phases": phases,
        "target_s": TARGET_SECONDS,
        "target_rss_mb": TARGET_RSS_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="--scale small")
    args = parser.parse_args()
    scale = "small" if args.quick else "demo"
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as work:
        result = run_demo(Path(work), scale)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
