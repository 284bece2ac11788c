"""Peak resident memory of a process tree, sampled, and commands run under that sampler.

`ru_maxrss` only sees one process (or the largest child); dbt, a Prefect server and MLflow
run in subprocesses, so the rows that time whole commands sample the sum of the RSS of a
process and all its descendants instead (every `interval` seconds: a peak shorter than that
can be missed, so the figure is a lower bound).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

INTERVAL = 0.1


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants now (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited between the listing and the read
            continue
    return total


@dataclass
class Peak:
    """The largest tree RSS seen so far (bytes) and the one before sampling began."""

    baseline: int = 0
    bytes: int = 0
    samples: int = 0

    @property
    def mb(self) -> float:
        return self.bytes / 2**20

    @property
    def added_mb(self) -> float:
        """Peak above the RSS the process had when sampling began."""
        return max(self.bytes - self.baseline, 0) / 2**20


@contextmanager
def sampled(pid: int | None = None, interval: float = INTERVAL) -> Iterator[Peak]:
    """Sample the tree RSS of `pid` (default: this process) until the block ends."""
    pid = os.getpid() if pid is None else pid
    peak = Peak(baseline=tree_rss(pid))
    peak.bytes = peak.baseline
    stop = threading.Event()

    def sample() -> None:
        while True:
            peak.bytes = max(peak.bytes, tree_rss(pid))
            peak.samples += 1
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.bytes = max(peak.bytes, tree_rss(pid))


@dataclass
class Finished:
    """A command run under the sampler: exit code, wall time, tree peak, its output."""

    args: list[str]
    returncode: int
    seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    extra: dict[str, object] = field(default_factory=dict)

    def check(self) -> Finished:
        """Self, or a RuntimeError with the command's last lines of output."""
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).splitlines()[-25:])
            raise RuntimeError(f"{' '.join(self.args)} exited {self.returncode}:\n{tail}")
        return self


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS added in MB) of one call in this process."""
    with sampled() as peak:
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
    return result, seconds, peak.added_mb


def run_sampled(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    interval: float = INTERVAL,
) -> Finished:
    """Run `args` to the end, sampling its process tree's RSS; capture stdout and stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with sampled(proc.pid, interval) as peak:
        out, err = proc.communicate()
    seconds = time.perf_counter() - started
    return Finished(list(args), proc.returncode, seconds, peak.mb, out, err)


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without loopline, Prefect and MLflow settings, pointed at `data_dir`.

    `make bench` exports PREFECT_HOME for the repo's data folder; a measured command must not
    share it (or any other service) with the caller.
    """
    prefixes = ("LOOPLINE_", "PREFECT_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        LOOPLINE_DATA_DIR=str(data_dir),
        # a pipe is not a terminal: phase lines still print, without bars, and unclipped
        COLUMNS="200",
        **extra,
    )
    return env
