"""One adapter over a Prefect 3.8.8 client bug in this version set; drop it once fixed upstream.

Prefect's client reads a work pool's workers with ``"limit": null, "offset": null`` in the
body, and its server, on FastAPI 0.154 (the newest it imports with), refuses the nulls
(422). ``prefect deploy`` makes that call after registering each deployment, so
``prefect deploy --all`` stops with an error after the first one. `send_default_paging`
makes the client send the server's own defaults instead of nulls. It runs in the deploy
process as part of the ``prepare`` build step of ``prefect.yaml`` (flows/slots.py).
"""

from __future__ import annotations

import functools
from typing import Any

from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient

_PATCHED = "_loopline_default_paging"


def send_default_paging() -> None:
    """Make `read_workers_for_work_pool` send ``offset=0`` and the default limit, not null."""
    original = WorkPoolAsyncClient.read_workers_for_work_pool
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    async def read_workers(self: Any, *args: Any, **kwargs: Any) -> Any:
        from prefect.settings import PREFECT_API_DEFAULT_LIMIT

        if kwargs.get("offset") is None:
            kwargs["offset"] = 0
        if kwargs.get("limit") is None:
            kwargs["limit"] = PREFECT_API_DEFAULT_LIMIT.value()
        return await original(self, *args, **kwargs)

    setattr(read_workers, _PATCHED, True)
    WorkPoolAsyncClient.read_workers_for_work_pool = read_workers  # type: ignore[method-assign]
