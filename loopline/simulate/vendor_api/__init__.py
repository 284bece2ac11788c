"""The simulated catalogue vendor: a local HTTP API serving the show catalogue as paginated JSON.

The demo's source, not part of the line: the ingest only knows a catalogue URL.

The simulator writes ``shows.parquet`` and ``episodes.parquet`` into a catalogue folder
(atomically, via rename); this server reads them into memory sorted by ``(updated_at, id)``,
reloads them when their file changes, and serves them the way a real vendor would:
keyset pagination with opaque page tokens, an ``updated_since`` filter, a token-bucket
rate limit (429 + ``Retry-After``) and injected, seeded failures (500 / 503).

- ``behaviour``: the misbehaviour settings, the rate limit and the failure injection
- ``tokens``: timestamps on the wire and the page tokens
- ``store``: the catalogue files held in memory, one page at a time
- ``app``: the FastAPI app (``GET /v1/shows``, ``GET /v1/episodes``, ``GET /healthz``)
- ``server``: running it in a background thread or in the foreground
"""

from loopline.simulate.vendor_api.app import make_app
from loopline.simulate.vendor_api.behaviour import ApiBehaviour, TokenBucket
from loopline.simulate.vendor_api.server import CatalogueServer, serve_forever
from loopline.simulate.vendor_api.store import MISSING_CATALOGUE_MESSAGE

__all__ = [
    "MISSING_CATALOGUE_MESSAGE",
    "ApiBehaviour",
    "CatalogueServer",
    "TokenBucket",
    "make_app",
    "serve_forever",
]
