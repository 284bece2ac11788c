"""Timestamps on the wire (ISO-8601 ``Z``, epoch microseconds) and opaque keyset page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from loopline.simulate.vendor_api.errors import ApiError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
TOKEN_VERSION = 1


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // ONE_US


def iso_z(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` suffix and microsecond precision."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_updated_since(raw: str) -> int:
    """Parse an ISO-8601 timestamp into epoch microseconds, or raise a 400."""
    text = raw.strip()
    candidates = [text]
    if " " in text:  # an unencoded '+' in a query string arrives as a space
        candidates.append(text.replace(" ", "+"))
    for candidate in candidates:
        try:
            return to_micros(datetime.fromisoformat(candidate))
        except ValueError:
            continue
    raise ApiError(
        400,
        "invalid_updated_since",
        f"updated_since must be an ISO-8601 timestamp (got {raw!r})",
    )


@dataclass(frozen=True)
class PageCursor:
    """What a page token carries: the resource, the filter and the last key served."""

    resource: str
    since_us: int | None
    last_us: int
    last_id: str

    def encode(self) -> str:
        """The opaque, URL-safe token string."""
        payload = {
            "v": TOKEN_VERSION,
            "r": self.resource,
            "s": self.since_us,
            "u": self.last_us,
            "i": self.last_id,
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, resource: str) -> PageCursor:
        """Parse a token issued for ``resource``, or raise a 400."""
        bad = ApiError(400, "invalid_page_token", "page_token is not a token this API issued")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise bad from None
        if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
            raise bad
        since, last_us, last_id = payload.get("s"), payload.get("u"), payload.get("i")
        if (
            not isinstance(last_us, int)
            or not isinstance(last_id, str)
            or not (since is None or isinstance(since, int))
        ):
            raise bad
        if payload.get("r") != resource:
            raise ApiError(
                400,
                "invalid_page_token",
                f"page_token was issued for /v1/{payload.get('r')}, not /v1/{resource}",
            )
        return cls(resource=resource, since_us=since, last_us=last_us, last_id=last_id)
