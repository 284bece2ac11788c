"""The warehouse writer as a Prefect global concurrency limit: one slot, visible in the UI.

DuckDB allows one writing process per file, and `loopline/warehouse.py` serialises writers
with a lock file. That lock is invisible to Prefect: a second line run would show as
*running* while it only waits. So a flow that writes the warehouse first takes the one slot
of the global concurrency limit ``warehouse-writer``: a second run logs that it waits, and
the UI's concurrency page shows who holds the slot. The lock file stays as the safety net
for writers outside Prefect (the command line, plain ``dbt``).

The line holds the slot across its steps (no other run may write between its ingest and
its publication); training, scoring and monitoring hold it only while they have the
warehouse open (`each_write_takes_the_slot`): training not while it fits its models.

The limit is created where deployments are registered (``make deployments``, the
``prefect deploy`` build step in ``prefect.yaml``, the worker `loopline up` starts) and, as
a last resort, by the first run that needs it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from loopline.warehouse import guarded_by

WAREHOUSE_WRITER = "warehouse-writer"
LIMITS = {WAREHOUSE_WRITER: 1}  # one writing run at a time (DuckDB: one writer per file)
WAITING_NOTE_S = 3.0  # a run still waiting for the slot after this long says so


def ensure_limits(client: SyncPrefectClient | None = None) -> None:
    """Create (or correct) the global concurrency limits the flows take; safe to repeat."""
    if client is None:
        with get_client(sync_client=True) as own:
            ensure_limits(own)
        return
    for name, limit in LIMITS.items():
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit)
        except PrefectHTTPStatusError as exc:  # another process created it meanwhile
            if exc.response.status_code != 409:
                raise


def prepare_deployments() -> dict[str, str]:
    """A `prefect deploy` build step: create the limits; the repo root, for the pull step."""
    from flows.prefect_compat import send_default_paging

    send_default_paging()  # or `prefect deploy --all` stops after the first deployment
    ensure_limits()
    return {"directory": str(Path(__file__).resolve().parents[1])}


# takes of the slot this process is inside: a nested take (the line holds the slot around
# steps that open the warehouse) goes straight through, as a nested take of the lock file does
_holding = 0
_holding_lock = threading.Lock()


@contextlib.contextmanager
def _counted() -> Iterator[None]:
    global _holding
    with _holding_lock:
        _holding += 1
    try:
        yield
    finally:
        with _holding_lock:
            _holding -= 1


@contextlib.contextmanager
def warehouse_slot() -> Iterator[None]:
    """Hold the ``warehouse-writer`` slot for the block (a no-op outside a flow run).

    Re-entrant within a process, like the lock file under it.
    """
    if FlowRunContext.get() is None:  # the command line: the lock file alone serialises
        yield
        return
    with _holding_lock:
        nested = _holding > 0
    if nested:
        with _counted():
            yield
        return
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        try:
            held = client.read_global_concurrency_limit_by_name(WAREHOUSE_WRITER)
        except ObjectNotFound:
            ensure_limits(client)
            held = client.read_global_concurrency_limit_by_name(WAREHOUSE_WRITER)
    acquired = threading.Event()

    def say_it_waits() -> None:
        if acquired.is_set():
            return
        logger.info(
            "waiting for the %r slot: another run writes the warehouse (the UI's "
            "Concurrency page shows it); this run continues when that one finishes",
            WAREHOUSE_WRITER,
        )

    late = threading.Timer(WAITING_NOTE_S, say_it_waits)
    late.daemon = True
    if held.active_slots >= held.limit:
        say_it_waits()
    else:  # taken between that look and ours: say so too, once it shows
        late.start()
    # a renewal that fails once (a busy API) must not kill an hour-long build: the lock
    # file still keeps a second writer out
    with concurrency(WAREHOUSE_WRITER, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        acquired.set()
        late.cancel()
        logger.info("holding the %r slot", WAREHOUSE_WRITER)
        try:
            with _counted():
                yield
        finally:
            logger.info("releasing the %r slot", WAREHOUSE_WRITER)


@contextlib.contextmanager
def each_write_takes_the_slot() -> Iterator[None]:
    """Within the block, each opening of the warehouse holds the slot while it lasts.

    For flows that touch the warehouse in short spells between long work of their own
    (training reads its data, trains for minutes, then records its decision): the slot,
    and the lock file inside it, are held for the spells only, and a line run can write
    in between. The slot is taken before the lock file (`loopline.warehouse.guarded_by`).
    """
    with guarded_by(warehouse_slot):
        yield
