"""A flow that writes the warehouse under the Prefect slot, for tests of concurrent writers.

Deployed to a worker pool by tests/flows/test_workers.py.
While it holds the ``warehouse-writer`` slot it waits until another run of this flow logs
that it waits for the slot (or no other run is left), so a second run started at the same
time really does meet a held slot. Then it records, in ``main.writes`` of the warehouse,
its role, its flow run id and when it took and left the slot.
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

from prefect import flow, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.context import FlowRunContext

from flows.slots import WAREHOUSE_WRITER, each_write_takes_the_slot, warehouse_slot
from loopline.settings import get_settings
from loopline.warehouse import writing

NAME = "slot-writer"
WAITS = f"waiting for the {WAREHOUSE_WRITER!r} slot"
UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


def _hold_on(own: object, since: object) -> bool:
    """True while another run of this flow is unfinished and has not said it waits."""
    with get_client(sync_client=True) as client:
        others = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[NAME])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,  # None: a 422 from this server
            limit=20,
            offset=0,
        )
        others = [r for r in others if r.id != own]
        if not others:
            return False
        logs = client.read_logs(
            LogFilter(timestamp=LogFilterTimestamp(after_=since)),  # type: ignore[arg-type]
            limit=200,
            offset=0,
            sort=LogSort.TIMESTAMP_ASC,
        )
    waiting = {log.flow_run_id for log in logs if WAITS in log.message}
    return not waiting & {r.id for r in others}


@flow(name=NAME)
def slot_writer(role: str, per_write: bool = False, hold: bool = True) -> str:
    """Take the slot, hold it while another run comes to wait for it, write one row.

    `per_write`: take it as training and scoring do, on opening the warehouse
    (`each_write_takes_the_slot`), rather than around the whole step as the line does.
    """
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    own, started = context.flow_run.id, context.flow_run.start_time
    since = (started or context.flow_run.created) - timedelta(seconds=5)  # type: ignore[operator]

    def held() -> float:
        entered = time.time()
        deadline = time.monotonic() + 240
        while hold and _hold_on(own, since) and time.monotonic() < deadline:
            time.sleep(0.5)
        return entered

    with contextlib.ExitStack() as stack:
        if per_write:
            stack.enter_context(each_write_takes_the_slot())
        else:
            stack.enter_context(warehouse_slot())
            entered = held()
        with writing(get_settings()) as con:
            if per_write:
                entered = held()
            con.execute(
                "create table if not exists main.writes "
                "(role varchar, flow_run_id varchar, entered double, left_at double)"
            )
            con.execute(
                "insert into main.writes values (?, ?, ?, ?)",
                [role, str(own), entered, time.time()],
            )
    return role
