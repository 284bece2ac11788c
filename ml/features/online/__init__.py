"""The online feature store: the latest vector per (feature set, version, entity) for serving.

`ml.features.online.base` holds the contract (`OnlineStore`) and the value encoding; each
backend is one module beside it (`sqlite`, the embedded default, and `redis`), and
`open_online_store` picks one from ``settings.online_store_url``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ml.features.online.base import OnlineStore, redact

if TYPE_CHECKING:
    from loopline.settings import Settings


def open_online_store(settings: Settings) -> OnlineStore:
    """Return the store ``settings.online_store_url`` names (unset: the embedded SQLite file)."""
    url = settings.online_store_url
    if not url:
        from ml.features.online.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(settings.data_dir / "online" / "online_store.sqlite")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        from ml.features.online.redis import RedisOnlineStore

        return RedisOnlineStore(url)
    raise ValueError(
        f"online_store_url {redact(url)!r} has an unknown scheme {scheme!r}: use "
        "redis://host:port/db (or rediss://), or unset LOOPLINE_ONLINE_STORE_URL for the "
        "embedded SQLite store"
    )
