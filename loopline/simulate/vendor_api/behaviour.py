"""How the simulated vendor misbehaves: its settings, a token-bucket rate limit, seeded failures."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiBehaviour:
    """How the simulated vendor misbehaves: rate limit, burst and injected failures."""

    rate_limit_per_s: float = 50
    burst: int = 20
    failure_rate: float = 0.02
    fail_first_n: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject settings that cannot describe a working server."""
        if not self.rate_limit_per_s > 0:
            raise ValueError(f"rate_limit_per_s must be > 0 (got {self.rate_limit_per_s})")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 (got {self.burst})")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1] (got {self.failure_rate})")
        if self.fail_first_n < 0:
            raise ValueError(f"fail_first_n must be >= 0 (got {self.fail_first_n})")


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens per second, at most ``capacity`` stored."""

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start full."""
        self.rate = rate
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take one token: 0.0 on success, else the seconds until one will be available."""
        if math.isinf(self.rate):
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class FailureInjector:
    """Decides, per data request, whether to fail: first ``fail_first_n``, then by seeded chance."""

    def __init__(self, behaviour: ApiBehaviour) -> None:
        """Seed the generator from the behaviour."""
        self._behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        self._seen = 0
        self._lock = threading.Lock()

    def draw(self) -> int | None:
        """The status to fail with (500 or 503), or None to serve the request."""
        with self._lock:
            self._seen += 1
            if self._seen <= self._behaviour.fail_first_n:
                return 503
            if self._behaviour.failure_rate <= 0.0:
                return None
            if self._rng.random() < self._behaviour.failure_rate:
                return 503 if self._rng.random() < 0.5 else 500
            return None
