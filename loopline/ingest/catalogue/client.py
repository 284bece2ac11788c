"""HTTP with retries: one page at a time, retrying what is worth retrying.

429 waits ``Retry-After`` seconds (these waits do not use up ``max_attempts``);
500/502/503/504, timeouts and connection errors back off exponentially (0.5 s doubling, capped
at 30 s, with jitter, at least ``Retry-After``) for at most ``max_attempts`` tries per request.
Any other 4xx stops at once. Either way the error is an :class:`ExtractError`. An answer is
read as a stream and never held past ``max_bytes`` (the ``catalogue_max_page_bytes``
setting): a larger one stops the extraction at once, like a 4xx (asking again would give the
same page), and lands nothing.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from loopline.ingest.catalogue.reports import EntityReport, ExtractError

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 30.0
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_message(response: httpx.Response) -> str:
    """The server's error code and message, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict) and "message" in body:
        code = body.get("error")
        return f"{code}: {body['message']}" if code else str(body["message"])
    return json.dumps(body)[:300]


class Fetcher:
    """GETs one page, retrying what is worth retrying and counting every retry."""

    def __init__(
        self,
        client: httpx.Client,
        sleep: Callable[[float], None],
        max_attempts: int,
        max_rate_limit_wait: float,
        resume_hint: Callable[[], str],
        report: EntityReport,
        max_bytes: int,
    ) -> None:
        """Remember the client, the (injectable) sleep, the limits and where to count retries."""
        self.client = client
        self.max_bytes = max_bytes
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.max_rate_limit_wait = max_rate_limit_wait
        self.resume_hint = resume_hint
        self.rng = random.Random()
        self.report = report

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter for the n-th failure, at least ``Retry-After``."""
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * BACKOFF_FACTOR ** (failures - 1))
        delay = ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
        return max(delay, retry_after) if retry_after is not None else delay

    def _bounded_get(self, url: str, params: dict[str, Any]) -> httpx.Response:
        """``GET url?params`` read in full, unless the answer is over ``max_bytes``: then an
        ExtractError once the bound is passed, without reading (or holding) the rest."""
        with self.client.stream("GET", url, params=params) as streamed:
            declared = streamed.headers.get("content-length", "")
            size = int(declared) if declared.isdigit() else 0
            body = bytearray()
            if size <= self.max_bytes:
                for chunk in streamed.iter_bytes():
                    body += chunk
                    size = len(body)
                    if size > self.max_bytes:
                        break
            if size > self.max_bytes:
                raise ExtractError(
                    f"GET {url} with {params} answered more than {self.max_bytes:,} bytes "
                    f"(catalogue_max_page_bytes); nothing of it was landed. Ask for smaller "
                    f"pages (page_size) or raise the bound. {self.resume_hint()}",
                    url=url,
                    status=streamed.status_code,
                )
            return httpx.Response(
                streamed.status_code,
                headers=streamed.headers,
                content=bytes(body),
                request=streamed.request,
            )

    def _give_up(self, url: str, status: int | None, last: str, failures: int) -> ExtractError:
        """The error for a request that failed ``max_attempts`` times."""
        what = f"HTTP {status} {last}" if status is not None else last
        return ExtractError(
            f"GET {url} failed {failures} times (last: {what}); gave up after "
            f"max_attempts={self.max_attempts}. {self.resume_hint()}",
            url=url,
            status=status,
        )

    def get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of a 200 answer to ``GET url?params``, after any retries."""
        report = self.report
        failures = 0
        rate_limited = 0
        waited_429 = 0.0
        while True:
            try:
                response = self._bounded_get(url, params)
            except httpx.TransportError as exc:
                failures += 1
                last = f"{type(exc).__name__}: {exc}"
                if failures >= self.max_attempts:
                    raise self._give_up(url, None, last, failures) from exc
                report.retries_transport += 1
                delay = self._backoff(failures, None)
                log.warning("GET %s: %s; retry %d in %.1fs", url, last, failures, delay)
                self.sleep(delay)
                continue
            status = response.status_code
            if status == 200:
                try:
                    body = response.json()
                except ValueError as exc:  # a truncated or garbled 200: try again
                    failures += 1
                    last = f"HTTP 200 with a body that is not JSON ({exc})"
                    if failures >= self.max_attempts:
                        raise self._give_up(url, None, last, failures) from exc
                    report.retries_transport += 1
                    self.sleep(self._backoff(failures, None))
                    continue
                check_body(body, url)
                return body
            if status == 429:
                rate_limited += 1
                wait = retry_after(response)
                if wait is None:
                    wait = self._backoff(rate_limited, None)
                if waited_429 + wait > self.max_rate_limit_wait:
                    raise ExtractError(
                        f"GET {url} still rate-limited (HTTP 429) after waiting "
                        f"{waited_429:.0f}s in total; gave up. {self.resume_hint()}",
                        url=url,
                        status=429,
                    )
                waited_429 += wait
                report.retries_429 += 1
                log.debug("GET %s: rate-limited, waiting %.1fs", url, wait)
                self.sleep(wait)
                continue
            message = error_message(response)
            if status in RETRYABLE_STATUSES:
                failures += 1
                if failures >= self.max_attempts:
                    raise self._give_up(url, status, message, failures)
                report.retries_5xx += 1
                delay = self._backoff(failures, retry_after(response))
                log.warning(
                    "GET %s: HTTP %d %s; retry %d in %.1fs", url, status, message, failures, delay
                )
                self.sleep(delay)
                continue
            raise ExtractError(
                f"GET {url} with {params} failed with HTTP {status} ({message}); not retried. "
                f"{self.resume_hint()}",
                url=url,
                status=status,
            )


def check_body(body: Any, url: str) -> None:
    """Refuse a 200 body that is not a page of this API."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("data"), list)
        or "next_page_token" not in body
        or not (body["next_page_token"] is None or isinstance(body["next_page_token"], str))
    ):
        raise ExtractError(
            f"GET {url} answered 200 with a body that is not a catalogue page: "
            f"{json.dumps(body)[:200]}",
            url=url,
            status=200,
        )
