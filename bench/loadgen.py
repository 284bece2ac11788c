"""A cheap HTTP/1.1 keep-alive load generator: pre-encoded requests over a raw socket.

Sub-millisecond server latencies are easily hidden by a client's own overhead (building
requests, parsing headers, an HTTP library's bookkeeping). Here every request is encoded once
up front; a request is one ``sendall`` and a response is read by its ``Content-Length``.

Only the standard library is imported, so the throughput worker processes (spawned, not
forked) start fast and carry none of the parent's threads or thread pools.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import socket
import time
from dataclasses import dataclass
from typing import Any

_CRLF2 = b"\r\n\r\n"


class HttpError(RuntimeError):
    """A response that is not what the benchmark expects (bad status, framing, body)."""


def encode_post(host: str, port: int, path: str, body: dict[str, Any]) -> bytes:
    """One complete HTTP/1.1 keep-alive POST with a JSON body, as bytes."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    ).encode()
    return head + payload


class Connection:
    """One keep-alive connection; `request` sends pre-encoded bytes, returns (status, body)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def request(self, raw: bytes) -> tuple[int, bytes]:
        sock = self.sock
        sock.sendall(raw)
        buffer = self.buffer
        end = buffer.find(_CRLF2)
        while end < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("connection closed by the server")
            buffer += chunk
            end = buffer.find(_CRLF2)
        head = buffer[:end]
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise HttpError(f"response without Content-Length: {head[:200]!r}")
        stop = lower.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else len(head)])
        start = end + 4
        need = start + length
        while len(buffer) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("connection closed mid-body")
            buffer += chunk
        self.buffer = buffer[need:]
        return status, buffer[start:need]


def get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One GET on a fresh connection (readiness checks)."""
    conn = Connection(host, port, timeout)
    try:
        raw = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        return conn.request(raw.encode())
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# latency: sequential requests on one connection


@dataclass(frozen=True)
class Latency:
    """Per-request latencies in milliseconds (concurrency 1, one keep-alive connection)."""

    samples_ms: list[float]

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100)."""
        ordered = sorted(self.samples_ms)
        rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
        return ordered[rank - 1]

    def summary(self) -> dict[str, float]:
        n = len(self.samples_ms)
        return {
            "requests": n,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "max_ms": max(self.samples_ms),
            "mean_ms": sum(self.samples_ms) / n,
            "rps_sequential": 1000.0 * n / sum(self.samples_ms),
        }


def measure_latency(
    host: str, port: int, requests: list[bytes], warmup: int, measured: int
) -> Latency:
    """`warmup` then `measured` sequential requests cycling over `requests`; 200 or fail."""
    conn = Connection(host, port)
    clock = time.perf_counter_ns
    samples = [0.0] * measured
    try:
        n = len(requests)
        for i in range(warmup):
            status, body = conn.request(requests[i % n])
            if status != 200:
                raise HttpError(f"warm-up request answered {status}: {body[:300]!r}")
        for i in range(measured):
            raw = requests[i % n]
            t0 = clock()
            status, body = conn.request(raw)
            samples[i] = (clock() - t0) / 1e6
            if status != 200:
                raise HttpError(f"request answered {status}: {body[:300]!r}")
    finally:
        conn.close()
    return Latency(samples)


# --------------------------------------------------------------------------------------------
# throughput: a fixed duration, several connections from separate processes


def _worker(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    start_at: float,
    seconds: float,
    out: Any,
) -> None:
    conn = Connection(host, port)
    done = errors = 0
    n = len(requests)
    i = offset
    try:
        # connect first, then all workers start at the same wall-clock instant
        while time.time() < start_at:
            time.sleep(0.001)
        stop = time.perf_counter() + seconds
        now = time.perf_counter
        while now() < stop:
            status, _ = conn.request(requests[i % n])
            i += 1
            if status == 200:
                done += 1
            else:
                errors += 1
        out.put({"ok": done, "errors": errors, "seconds": seconds})
    except Exception as exc:  # report, never hang the parent
        out.put({"ok": done, "errors": errors + 1, "seconds": seconds, "failure": repr(exc)})
    finally:
        conn.close()


def measure_throughput(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float
) -> dict[str, Any]:
    """Requests per second with `connections` closed-loop clients, each its own process."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5 + 0.3 * connections  # time for the spawned workers to start
    procs = [
        ctx.Process(
            target=_worker,
            args=(host, port, requests, k * 7919, start_at, seconds, out),
            daemon=True,
        )
        for k in range(connections)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    ok = sum(r["ok"] for r in results)
    errors = sum(r["errors"] for r in results)
    failures = [r["failure"] for r in results if "failure" in r]
    return {
        "connections": connections,
        "seconds": seconds,
        "requests_ok": ok,
        "errors": errors,
        "rps": ok / seconds,
        "failures": failures,
    }
