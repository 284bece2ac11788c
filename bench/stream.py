"""Row 5: `loopline stream` from Redis Streams into the warehouse, against the file-drop path.

The streaming path into the warehouse is two long-lived processes, as a deployment runs them:
`loopline stream` (Redis consumer group -> micro-batch files in the landing folder, acked
once durable) and a continuous loader of the events those files hold
(``python -m bench.stream load``: `loopline.ingest.files.Follower` for the events source, a
`load_files` without its fixed cost per pass, in a loop under the warehouse writer lock, a
commit per pass; each commit's wall time is logged
so every event's "queryable at" is known). An event is queryable once the loader's
transaction holding it committed. The file-drop path is the same events written as hourly
``events_*.ndjson`` drops, loaded by one `load_files` in a fresh process.

Three measurements, each in a fresh data folder and a fresh Redis key (db 11 by default; the
keys are deleted afterwards):

- **throughput**: N events already in the stream; the consumer and the loader start; the
  sustained rate is the events committed after the commit that took the total past a tenth,
  over the time from it to the last commit (start-up and the first batch's one-off costs
  excluded: end to end is reported apart). The file-drop side: the
  same N events as files, one load. Warm-up, then the median of `runs` of each, interleaved.
- **latency**: a producer (`loopline.stream.producer.publish`, as `loopline produce` runs it)
  offers `rate` events/s for `seconds`; each event's publish time (when XADD returned) and its
  commit time give the event-to-queryable latency.
- **spike**: the same at `rate`, times `spike_factor` for `spike_seconds`, then `rate` for
  `after_s`; the drain time is how long after the spike's end every event published by then
  was queryable (the lag of the spike back to zero).

Every measurement first checks that the warehouse holds exactly the events produced: the set
of event ids in ``raw.events_lines`` equals what was published, each once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.fixture import REPO
from bench.memory import Peak, clean_env, sampled

REDIS_URL = "redis://127.0.0.1:6379/11"
EVENT_PREFIX = "ev_bench_"
WAIT_S = 600.0  # the most any phase waits for the warehouse to catch up
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StreamConfig:
    events: int = 200_000  # the throughput measurement's backlog
    runs: int = 5
    warmup: bool = True
    rate: float = 10_000.0  # offered events/s of the latency and spike measurements
    seconds: float = 30.0  # the latency measurement's length
    spike_factor: float = 5.0
    # the steady window before the spike, whose largest backlog is the level the spike's lag
    # must come back to: 30 s holds two or three of the loader's ~1 s checkpoint pauses (every
    # 10-15 s at this rate), a normal part of the steady state; 10 s often held none, so
    # the first pause after the spike counted as the spike's lag
    spike_after_s: float = 30.0
    spike_seconds: float = 10.0
    after_s: float = 60.0  # at `rate` after the spike
    per_file: int = 2_000  # events per hourly file of the file-drop side
    features: bool = True  # `loopline stream`'s default: the streaming features too
    redis_url: str = REDIS_URL


QUICK = StreamConfig(
    events=4_000, runs=1, warmup=False, rate=1_000.0, seconds=2.0, spike_after_s=1.0,
    spike_seconds=1.0, after_s=2.0, per_file=500, features=False,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the events


def event_line(i: int) -> str:
    """Event `i`'s NDJSON line, shaped like the simulator's (about 330 bytes)."""
    at = START + timedelta(milliseconds=1800 * i)  # 2,000 an hour
    return (
        f'{{"event_id":"{EVENT_PREFIX}{i:012d}","event_type":"heartbeat",'
        f'"user_id":{i % 5_000 + 1},"session_id":"ss_{i // 40:016x}",'
        f'"show_id":"sh_{i % 317:05d}","episode_id":"ep_{i % 2_003:06d}",'
        f'"occurred_at":"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",'
        f'"device":"tv","position_ms":{(i % 97) * 30_000},"bitrate_kbps":5000,'
        '"context":{"app_version":"4.8.1","os":"tvos","network":"wifi","country":"BR"}}'
    )


def lines(first: int, count: int | None = None) -> Iterator[str]:
    """Event lines from `first` on (`count` of them, or without end)."""
    i = first
    while count is None or i < first + count:
        yield event_line(i)
        i += 1


def write_drops(landing: Path, first: int, count: int, per_file: int) -> int:
    """The events as the file-drop path lands them: one file per hour of event time, in
    ``events/date=<day>/events_<YYYYMMDDTHH>.ndjson``; return how many files."""
    for start in range(first, first + count, per_file):
        n = min(per_file, first + count - start)
        at = START + timedelta(milliseconds=1800 * start)
        folder = landing / "events" / f"date={at:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"events_{at:%Y%m%dT%H}.ndjson"
        with path.open("a") as out:  # a partial hour at either end shares its file
            out.write("".join(f"{line}\n" for line in lines(start, n)))
    return len(list(landing.glob("events/date=*/events_*.ndjson")))


# --------------------------------------------------------------------------------------------
# the continuous loader (its own process)


def load_loop(log_path: Path, stop_path: Path, poll_s: float = 0.05) -> None:
    """Load new event files into ``raw.events_lines`` until `stop_path` exists (then once more);
    log each commit that loaded events as one JSON line (wall time, batch id, records)."""
    from loopline.ingest.files import SOURCES, Follower, ensure_raw
    from loopline.ingest.run import new_batch_id
    from loopline.settings import get_settings
    from loopline.warehouse import writing

    settings = get_settings()
    events = [source for source in SOURCES if source.name == "events"]
    with writing(settings) as con, log_path.open("a") as log:
        ensure_raw(con)
        follower = Follower(con, settings.landing_dir, events, settings.max_record_bytes)
        log.write(json.dumps({"ready": time.time()}) + "\n")
        log.flush()
        while True:
            stopping = stop_path.exists()
            batch_id = new_batch_id()
            report = follower.load(batch_id)
            records = report.records.get("events", 0)
            if records:
                line = {"t": time.time(), "batch_id": batch_id, "records": records}
                log.write(json.dumps(line | {"files": report.files.get("events", 0)}) + "\n")
                log.flush()
            if report.rejected:
                raise RuntimeError(f"the loader rejected files: {report.rejected[:5]}")
            if stopping:
                return
            if not records:
                time.sleep(poll_s)


def read_log(log_path: Path) -> tuple[float | None, list[dict[str, Any]]]:
    """The loader's ready time and its commits so far."""
    ready, commits = None, []
    with suppress(FileNotFoundError):
        for text in log_path.read_text().splitlines():
            line = json.loads(text)
            if "ready" in line:
                ready = line["ready"]
            else:
                commits.append(line)
    return ready, commits


def committed(log_path: Path) -> int:
    return sum(c["records"] for c in read_log(log_path)[1])


# --------------------------------------------------------------------------------------------
# processes


class Run:
    """One measurement's folder, Redis key, and the processes started in it."""

    def __init__(self, root: Path, config: StreamConfig, name: str) -> None:
        self.config = config
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)).resolve()
        self.data = self.dir / "data"
        self.key = f"loopline-bench:{name}:{uuid.uuid4().hex[:12]}"
        self.log = self.dir / "loader.jsonl"
        self.stop = self.dir / "stop"
        self.env = clean_env(
            self.data,
            LOOPLINE_STREAM_URL=config.redis_url,
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.peaks: dict[str, Peak] = {}
        self._stack = ExitStack()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = (self.dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, env=self.env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out.close()
        self.procs.append(proc)
        self.peaks[name] = self._stack.enter_context(sampled(proc.pid))
        return proc

    def start_loader(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "bench.stream", "load", str(self.log), str(self.stop)]
        proc = self.start("loader", argv)
        self.wait(lambda: read_log(self.log)[0] is not None, "the loader to start", 180)
        return proc

    def start_consumer(self, idle_exit_s: float = 1.0) -> subprocess.Popen[bytes]:
        argv = [
            str(Path(sys.executable).parent / "loopline"), "stream", "--key", self.key,
            "--idle-exit", str(idle_exit_s), "--report-every", "1",
            "--features" if self.config.features else "--no-features",
        ]  # fmt: skip
        return self.start("consumer", argv)

    def wait(self, check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for proc in self.procs:
                if proc.poll() not in (None, 0):
                    raise RuntimeError(f"waiting for {what}: a process exited {proc.returncode}"
                                       f"; see {self.dir}:\n{self.tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not happen within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.dir.glob("*.log"))
        )

    def finish(self, consumer: subprocess.Popen[bytes] | None) -> None:
        """Wait for the consumer to drain and exit, then for the loader's last pass."""
        if consumer is not None:
            self.wait(lambda: consumer.poll() is not None, "the consumer to drain and exit")
            if consumer.returncode != 0:
                raise RuntimeError(f"loopline stream exited {consumer.returncode}:\n{self.tail()}")
        self.stop.touch()
        loader = next(p for p in self.procs if "bench.stream" in p.args)  # type: ignore[operator]
        self.wait(lambda: loader.poll() is not None, "the loader's last pass")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._stack.close()
        _delete_key(self.config.redis_url, self.key)

    def peak_mb(self) -> float:
        return sum(peak.mb for peak in self.peaks.values())

    def landed_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """The event number and batch id of every row of ``raw.events_lines``."""
        from loopline.settings import Settings
        from loopline.warehouse import reading

        settings = Settings(data_dir=self.data)
        with reading(settings) as con:
            rows = con.execute(
                "select cast(substr(json_extract_string(line, '$.event_id'), ?) as bigint), "
                "_batch_id from raw.events_lines",
                [len(EVENT_PREFIX) + 1],
            ).fetchnumpy()
        ids, batches = rows[next(iter(rows))], rows["_batch_id"]
        return np.asarray(ids, dtype=np.int64), np.asarray(batches, dtype=object)


def _redis(url: str) -> Any:
    from loopline.stream.sources import _redis_client

    return _redis_client(url)


def _delete_key(url: str, key: str) -> None:
    client = _redis(url)
    try:
        client.delete(key)
    finally:
        client.close()


def check_equal(run: Run, produced: int, first: int = 0) -> dict[str, int]:
    """The warehouse holds events `first` .. `first + produced - 1`, each once; or raise."""
    ids, _ = run.landed_ids()
    unique = np.unique(ids)
    expected = np.arange(first, first + produced)
    if len(ids) != produced or not np.array_equal(unique, expected):
        missing = np.setdiff1d(expected, unique)
        extra = np.setdiff1d(unique, expected)
        raise AssertionError(
            f"{run.dir.name}: the warehouse holds {len(ids):,} rows of {len(unique):,} events "
            f"for {produced:,} produced ({len(missing):,} missing, {len(extra):,} unexpected, "
            f"{len(ids) - len(unique):,} repeated)"
        )
    return {"events": produced, "rows": len(ids)}


# --------------------------------------------------------------------------------------------
# the measurements


def _publish_all(url: str, key: str, first: int, count: int) -> None:
    from loopline.stream.sources import RedisTarget

    target = RedisTarget(url, key)
    try:
        chunk: list[str] = []
        for line in lines(first, count):
            chunk.append(line)
            if len(chunk) == 5_000:
                target.publish(chunk)
                chunk = []
        if chunk:
            target.publish(chunk)
    finally:
        target.close()


def throughput_stream(root: Path, config: StreamConfig) -> dict[str, Any]:
    """N events waiting in the stream, through `loopline stream` and the loader."""
    run = Run(root, config, "stream-throughput")
    try:
        _publish_all(config.redis_url, run.key, 0, config.events)
        run.start_loader()
        started = time.time()
        consumer = run.start_consumer()
        run.wait(lambda: committed(run.log) >= config.events, "every event to be queryable")
        run.finish(consumer)
        verified = check_equal(run, config.events)
        _, commits = read_log(run.log)
        last = commits[-1]
        # sustained: from the commit that took the total past a tenth to the last one, so
        # the first batch's one-off costs (the consumer's first features write opens the
        # registry, importing MLflow) are left out; end to end, they are in
        done = np.cumsum([c["records"] for c in commits])
        k = int(np.searchsorted(done, config.events // 10, side="left"))
        span = last["t"] - commits[k]["t"]
        end_to_end = config.events / (last["t"] - started)
        # a backlog the loader committed in one go after its first tenth has no span: its
        # end-to-end rate (start-up included, so a lower bound) stands in
        sustained = (config.events - done[k]) / span if span > 0 else end_to_end
        return {
            "wall_s": last["t"] - started,
            "events_per_s_end_to_end": end_to_end,
            "events_per_s": sustained,
            "commits": len(commits),
            "files": _files(run),
            "peak_rss_mb": run.peak_mb(),
            "verified": verified,
        }
    finally:
        run.close()
        _remove(run.dir)


def throughput_files(root: Path, config: StreamConfig) -> dict[str, Any]:
    """The same N events as hourly file drops, loaded once."""
    run = Run(root, config, "file-drop")
    try:
        files = write_drops(run.data / "landing", 0, config.events, config.per_file)
        run.start_loader()
        run.finish(None)
        verified = check_equal(run, config.events)
        ready, commits = read_log(run.log)
        assert ready is not None
        seconds = commits[-1]["t"] - ready
        return {
            "wall_s": seconds,
            "events_per_s": config.events / seconds,
            "commits": len(commits),
            "files": files,
            "peak_rss_mb": run.peak_mb(),
            "verified": verified,
        }
    finally:
        run.close()
        _remove(run.dir)


def _files(run: Run) -> int:
    return len(list((run.data / "landing").glob("events/date=*/events_*.ndjson")))


class _Recording:
    """A publishing target that remembers when each chunk was in the stream."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sent = 0
        self.times: list[float] = []
        self.counts: list[int] = []

    def publish(self, chunk: list[str]) -> None:
        # a slice at a time (the target's own round trip), each slice's time recorded: a late
        # tick's chunk of tens of thousands of events takes a while, and the events of its
        # first slices are consumed, even committed, before it returns
        step = getattr(self.target, "PUBLISH_SLICE", len(chunk)) or 1
        for start in range(0, len(chunk), step):
            part = chunk[start : start + step]
            self.target.publish(part)
            self.sent += len(part)
            self.times.append(time.time())
            self.counts.append(self.sent)

    def delivered_by(self, events: float) -> float | None:
        """When the `events`-th event (1-based) was in the stream, None if it never was."""
        k = int(np.searchsorted(np.asarray(self.counts), events, side="left"))
        return self.times[k] if k < len(self.times) else None

    def published_at(self, ids: np.ndarray) -> np.ndarray:
        """When event number `ids` (0-based, in publishing order) was in the stream."""
        k = np.searchsorted(np.asarray(self.counts), ids, side="right")
        return np.asarray(self.times)[k]


WARMUP_EVENTS = 1_000


def offered(root: Path, config: StreamConfig, spike: bool) -> dict[str, Any]:
    """Events offered at `config.rate` (with the spike if `spike`), after a warm-up batch that
    both processes have taken end to end; latencies and, with the spike, its drain time."""
    from loopline.stream.producer import publish
    from loopline.stream.sources import RedisTarget

    run = Run(root, config, "stream-spike" if spike else "stream-latency")
    lag: list[tuple[float, int, int]] = []  # (time, stream lag, produced - committed)
    try:
        run.start_loader()
        # the consumer keeps up with the producer, which shares the 2 cores and can pause
        # for a second (a late tick's large chunk): exit only after a longer quiet, once the
        # run has waited for every offered event anyway
        consumer = run.start_consumer(idle_exit_s=10.0)
        _publish_all(config.redis_url, run.key, 0, WARMUP_EVENTS)  # start-up is not latency
        run.wait(lambda: committed(run.log) >= WARMUP_EVENTS, "the warm-up events")
        target = _Recording(RedisTarget(config.redis_url, run.key))
        seconds = (
            config.spike_after_s + config.spike_seconds + config.after_s
            if spike
            else config.seconds
        )
        done = threading.Event()
        sampler = threading.Thread(
            target=_sample_lag, args=(run, target, done, lag), name="lag", daemon=True
        )
        sampler.start()
        started = time.time()
        try:
            sent = publish(
                target, lines(WARMUP_EVENTS), config.rate, seconds=seconds,
                spike_factor=config.spike_factor if spike else 1.0,
                spike_after_s=config.spike_after_s, spike_seconds=config.spike_seconds,
            )  # fmt: skip
        finally:
            target.target.close()
        run.wait(
            lambda: committed(run.log) >= WARMUP_EVENTS + sent.events,
            "every offered event to be queryable",
        )
        done.set()
        sampler.join()
        run.finish(consumer)
        verified = check_equal(run, WARMUP_EVENTS + sent.events)
        _, commits = read_log(run.log)
        commit_at = {c["batch_id"]: c["t"] for c in commits}
        ids, batches = run.landed_ids()
        mask = ids >= WARMUP_EVENTS
        queryable = np.array([commit_at[b] for b in batches[mask]])
        published = target.published_at(ids[mask] - WARMUP_EVENTS)
        latency = queryable - published
        out: dict[str, Any] = {
            "offered_rate": config.rate,
            "seconds": sent.seconds,
            "events": sent.events,
            "achieved_rate": sent.events / sent.seconds,
            "latency_s": _percentiles(latency),
            "peak_rss_mb": run.peak_mb(),
            "files": _files(run),
            "verified": verified,
            "lag": [(round(t - started, 2), s, w) for t, s, w in lag],
        }
        if spike:
            spike_start = started + config.spike_after_s
            spike_end = spike_start + config.spike_seconds
            times, counts = np.asarray(target.times), np.asarray(target.counts)
            in_spike = (times >= spike_start) & (times < spike_end)
            steady = latency[published < spike_start]
            out |= {
                "spike_factor": config.spike_factor,
                "spike_after_s": config.spike_after_s,
                "spike_seconds": config.spike_seconds,
                "after_s": config.after_s,
                "spike_events": int(np.diff(counts[in_spike]).sum()) if in_spike.any() else 0,
                "spike_achieved_rate": _rate(times, counts, spike_start, spike_end),
                "pre_spike_lag": steady_level(out["lag"], config.spike_after_s),
                "for_good_s": drain_time(
                    out["lag"],
                    config.spike_after_s,
                    config.spike_seconds,
                    float(queryable.max()) - started,
                ),
                # the producer shares the cores and can fall behind in the spike: the spike
                # is in the stream once it has sent what the schedule owed by the spike's end
                "delivered_s": _since(
                    target.delivered_by(
                        math.floor(
                            config.rate
                            * (config.spike_after_s + config.spike_factor * config.spike_seconds)
                        )
                    ),
                    spike_end,
                ),
                "steady_latency_s": _percentiles(steady),
                "max_stream_lag": max((s for _, s, _ in lag), default=0),
                "max_warehouse_lag": max((w for _, _, w in lag), default=0),
            }
            out["drain_s"] = settle_time(
                out["lag"], config.spike_after_s, config.spike_seconds,
                out["delivered_s"] or 0.0, float(queryable.max()) - started,
            )  # fmt: skip
        return out
    finally:
        run.close()
        _remove(run.dir)


def _spike_drain(spike: dict[str, Any]) -> str:
    """What the drain figures say, in words (results from before `settle_time` have only
    the "for good" one, as `drain_s`)."""
    level = (
        f"its level before the spike (the largest backlog in the {spike['spike_after_s']:.0f} s "
        f"before it, {spike.get('pre_spike_lag', 0):,} events: batches in flight and the "
        "loader's pauses while DuckDB checkpoints)"
    )
    if "for_good_s" not in spike:
        return (
            f"The backlog (published, not yet queryable) was back to {level} for good "
            f"{spike['drain_s']:.1f} s after the spike's end."
        )
    delivered = spike.get("delivered_s")
    sent = (
        "the producer never caught up"
        if delivered is None
        else f"the producer had sent the whole spike {delivered:.1f} s after its end"
    )
    return (
        f"The spike's lag was drained **{spike['drain_s']:.1f} s** after its end: {sent}, and "
        f"from {spike['drain_s']:.1f} s the backlog (published, not yet queryable) stayed at "
        f"or below {level} for {HOLD_S:.0f} s. Back there for good (no later sample above it, "
        f"the checkpoint pauses of the rest of the run included): {spike['for_good_s']:.1f} s."
    )


def steady_level(lag: Sequence[tuple[float, int, int]], spike_after_s: float) -> int:
    """The largest backlog (published, not yet queryable) sampled before the spike."""
    return max((w for t, _, w in lag if t < spike_after_s), default=0)


def drain_time(
    lag: Sequence[tuple[float, int, int]],
    spike_after_s: float,
    spike_seconds: float,
    all_queryable_s: float,
) -> float:
    """Seconds from the spike's end until the events published but not yet queryable are
    back, for good, to what they were before the spike (the largest backlog seen then:
    batches in flight), from the lag samples (seconds since the start, stream lag, warehouse
    lag); if the last sample is still above it, until every event was queryable. "For good":
    the backlog moves in steps of a loader commit, so one low sample proves nothing."""
    end = spike_after_s + spike_seconds
    level = steady_level(lag, spike_after_s)
    after = [(t, w) for t, _, w in lag if t >= end]
    above = [i for i, (_, w) in enumerate(after) if w > level]
    if not above:
        return 0.0
    if above[-1] == len(after) - 1:
        return max(all_queryable_s - end, 0.0)
    return after[above[-1] + 1][0] - end


# how long the backlog must stay at its steady level to count as drained: less than the
# 10-15 s between the loader's checkpoint pauses, more than a few loader commits
HOLD_S = 5.0


def settle_time(
    lag: Sequence[tuple[float, int, int]],
    spike_after_s: float,
    spike_seconds: float,
    delivered_s: float,
    all_queryable_s: float,
    hold_s: float = HOLD_S,
) -> float:
    """Seconds from the spike's end until its lag was drained: the first sample, once the
    producer had sent the whole spike (`delivered_s` after its end), from which the backlog
    stayed at or below its level before the spike (`drain_time`'s level) for `hold_s`; if
    none, until every event was queryable. A later excursion, such as a checkpoint pause a
    little longer than the steady window's, is not the spike's lag: `drain_time` reports
    the stricter "for good" beside it."""
    end = spike_after_s + spike_seconds
    level = steady_level(lag, spike_after_s)
    after = [(t, w) for t, _, w in lag if t >= end + delivered_s]
    for i, (t, w) in enumerate(after):
        if w > level or after[-1][0] < t + hold_s:
            continue
        if all(v <= level for u, v in after[i:] if u <= t + hold_s):
            return t - end
    return max(all_queryable_s - end, 0.0)


def _since(moment: float | None, origin: float) -> float | None:
    return None if moment is None else max(moment - origin, 0.0)


def _rate(times: np.ndarray, counts: np.ndarray, start: float, end: float) -> float:
    inside = np.flatnonzero((times >= start) & (times < end))
    if len(inside) < 2:
        return 0.0
    a, b = inside[0], inside[-1]
    return float((counts[b] - counts[a]) / (times[b] - times[a]))


def _sample_lag(
    run: Run, target: _Recording, done: threading.Event, out: list[tuple[float, int, int]]
) -> None:
    """Every 0.5 s: the consumer group's lag (read or not, not acknowledged) and the events
    published but not yet queryable."""
    client = _redis(run.config.redis_url)
    try:
        while not done.wait(0.5):
            stream_lag = 0
            for info in client.xinfo_groups(run.key):
                stream_lag = int(info.get("lag") or 0) + int(info.get("pending") or 0)
            waiting = WARMUP_EVENTS + target.sent - committed(run.log)
            out.append((time.time(), stream_lag, waiting))
    finally:
        client.close()


def _percentiles(seconds: np.ndarray) -> dict[str, float]:
    if not len(seconds):
        return {}
    return {
        "p50": float(np.percentile(seconds, 50)),
        "p90": float(np.percentile(seconds, 90)),
        "p99": float(np.percentile(seconds, 99)),
        "max": float(seconds.max()),
        "min": float(seconds.min()),
    }


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def run_stream(
    root: Path, config: StreamConfig, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """The three measurements; raw numbers, no verdicts."""
    from loopline.stream.sources import _redis_client

    _redis_client(config.redis_url).close()  # a clear StreamError if Redis is not there
    root.mkdir(parents=True, exist_ok=True)
    sides: dict[str, list[dict[str, Any]]] = {"stream": [], "files": []}
    rounds = config.runs + (1 if config.warmup else 0)
    for k in range(rounds):
        label = "warm-up" if config.warmup and k == 0 else f"run {k + (0 if config.warmup else 1)}"
        for side, measure in (("stream", throughput_stream), ("files", throughput_files)):
            say(f"stream: throughput, {side}, {config.events:,} events ({label})")
            result = measure(root, config)
            say(f"stream:   {result['events_per_s']:,.0f} events/s")
            if label != "warm-up":
                sides[side].append(result)
    out: dict[str, Any] = {"config": asdict(config) | {"warmup_events": WARMUP_EVENTS}}
    for side, runs in sides.items():
        out[side] = {
            "runs": runs,
            "events_per_s": _median([r["events_per_s"] for r in runs]),
            "peak_rss_mb": _median([r["peak_rss_mb"] for r in runs]),
            "wall_s": _median([r["wall_s"] for r in runs]),
        }
    out["stream"]["events_per_s_end_to_end"] = _median(
        [r["events_per_s_end_to_end"] for r in sides["stream"]]
    )
    out["ratio"] = out["stream"]["events_per_s"] / out["files"]["events_per_s"]
    say(f"stream: latency at {config.rate:,.0f} events/s offered for {config.seconds:.0f} s")
    out["latency"] = offered(root, config, spike=False)
    say(f"stream:   p99 {out['latency']['latency_s']['p99']:.2f} s")
    say(
        f"stream: a x{config.spike_factor:g} spike for {config.spike_seconds:.0f} s after "
        f"{config.spike_after_s:.0f} s, then {config.after_s:.0f} s at the base rate"
    )
    out["spike"] = offered(root, config, spike=True)
    say(f"stream:   drained {out['spike']['drain_s']:.1f} s after the spike")
    return out


# --------------------------------------------------------------------------------------------
# the results section


def stream_body(d: dict[str, Any]) -> list[str]:
    """The row 5 section of the results file (after the checks table)."""
    cfg = d["config"]
    stream, files, lat, spike = d["stream"], d["files"], d["latency"], d["spike"]
    runs = len(stream["runs"])
    lines_ = [
        "",
        "Streaming path: `loopline stream --key <fresh key>` (Redis Streams at "
        f"`{cfg['redis_url']}`, a consumer group; micro-batches of 500 events or 2 s, the "
        "defaults, growing to 20,000 under lag; streaming features "
        f"{'on, as by default' if cfg['features'] else 'off'}) landing files, and a continuous "
        "loader (`python -m bench.stream load`: `loopline.ingest.files.Follower` for the events "
        "source in a loop under the writer lock, a `load_files` that reads the manifest once and "
        "then looks only at names it has not seen) committing them to `raw.events_lines`; an event is queryable "
        "when that commit returned. File-drop path: the same events as hourly "
        f"`events_*.ndjson` drops of {cfg['per_file']:,} events, one `load_files` in a fresh "
        "process. Each measurement in a fresh data folder and Redis key (deleted after). Before "
        "any figure: the set of event ids in `raw.events_lines` equals what was produced, each "
        "once (checked for every run of both paths).",
        "",
        f"**Throughput**: {cfg['events']:,} events"
        + (", a warm-up of each path then" if cfg["warmup"] else ",")
        + f" the median of {runs} interleaved runs. Stream: the events wait in the stream when "
        "both processes start; sustained = events committed after the commit that took the "
        "total past a tenth / time from it to the last commit (process start-up and the "
        "first batch's one-off registry open apart: end to end "
        f"{stream['events_per_s_end_to_end']:,.0f} events/s). File drop: from the loader's "
        "warehouse open to its commit.",
        "",
        "| path | events/s (median) | runs | wall (median) | peak RSS of the trees |",
        "|---|---|---|---|---|",
        f"| `loopline stream` + loader | {stream['events_per_s']:,.0f} | "
        + ", ".join(f"{r['events_per_s']:,.0f}" for r in stream["runs"])
        + f" | {stream['wall_s']:.1f} s | {stream['peak_rss_mb']:,.0f} MB |",
        f"| file drop + `load_files` | {files['events_per_s']:,.0f} | "
        + ", ".join(f"{r['events_per_s']:,.0f}" for r in files["runs"])
        + f" | {files['wall_s']:.1f} s | {files['peak_rss_mb']:,.0f} MB |",
        "",
        f"Stream / file drop: {d['ratio']:.2f}x.",
        "",
        f"**Latency**: {lat['events']:,} events offered at {lat['offered_rate']:,.0f}/s "
        f"(achieved {lat['achieved_rate']:,.0f}/s) for {lat['seconds']:.0f} s by "
        "`loopline.stream.producer.publish` (what `loopline produce` runs), after "
        f"{cfg['warmup_events']:,} warm-up events went through end to end; event-to-queryable "
        "= the loader's commit time minus the time XADD returned.",
        "",
        "| measurement | p50 | p90 | p99 | max | files landed | peak RSS |",
        "|---|---|---|---|---|---|---|",
        _latency_row(f"steady {lat['offered_rate']:,.0f}/s", lat["latency_s"], lat),
        _latency_row(
            f"x{spike['spike_factor']:g} spike run, all events", spike["latency_s"], spike
        ),
        _latency_row("spike run, before the spike", spike["steady_latency_s"], spike),
        "",
        f"**Spike**: {spike['offered_rate']:,.0f}/s, x{spike['spike_factor']:g} for "
        f"{spike['spike_seconds']:.0f} s after {spike['spike_after_s']:.0f} s (achieved during "
        f"the spike: {spike['spike_achieved_rate']:,.0f}/s), then {spike['after_s']:.0f} s at "
        f"the base rate. {_spike_drain(spike)} The producer shares the 2 cores: "
        f"it offered {spike['spike_achieved_rate']:,.0f}/s in the spike's window and sent what "
        f"it still owed afterwards ({spike['events']:,} events in {spike['seconds']:.0f} s, "
        f"{spike['achieved_rate']:,.0f}/s on average), so the excess reached the consumer "
        "later, not less of it. Largest lag seen (every 0.5 s): "
        f"{spike['max_stream_lag']:,} events unacknowledged in the consumer group, "
        f"{spike['max_warehouse_lag']:,} published but not yet queryable.",
    ]
    return lines_


def stream_checks(d: dict[str, Any]) -> list[Any]:
    """The row's three targets (as `bench.run.Check`s)."""
    from bench.run import Check

    return [
        Check("stream: sustained events/s into the warehouse", d["stream"]["events_per_s"],
              50_000.0, "events/s", True, "stream"),
        Check(f"stream: p99 event-to-queryable at {d['latency']['offered_rate']:,.0f}/s",
              d["latency"]["latency_s"]["p99"], 5.0, "s", False, "stream"),
        Check(f"stream: lag back to zero after a x{d['spike']['spike_factor']:g} spike",
              d["spike"]["drain_s"], 60.0, "s", False, "stream"),
    ]  # fmt: skip


def _latency_row(label: str, p: dict[str, float], d: dict[str, Any]) -> str:
    return (
        f"| {label} | {p['p50']:.2f} s | {p['p90']:.2f} s | {p['p99']:.2f} s | "
        f"{p['max']:.2f} s | {d['files']:,} | {d['peak_rss_mb']:,.0f} MB |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream")
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="the continuous loader (one process)")
    load.add_argument("log", type=Path)
    load.add_argument("stop", type=Path)
    args = parser.parse_args(argv)
    if args.command == "load":
        load_loop(args.log, args.stop)


if __name__ == "__main__":
    main()
