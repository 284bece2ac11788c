"""Each dbt node as a Prefect task run while it runs, and a table of how every node ended.

`run_dbt` (loopline/dbt.py) runs dbt in-process under the warehouse writer lock and hands
its `callbacks` every dbt event. `node_runs()` gives one that mirrors the build in Prefect:

- at dbt's ``NodeStart`` a task run named after the node starts (``model int_sessions``,
  ``test not_null_dim_users_user_id``, ``unit_test ...``, ``operation`` for a run hook), a
  child of the ``dbt build`` task;
- at ``NodeFinished`` it ends: Completed (named ``Warned`` or ``Skipped`` when dbt says so),
  or Failed with dbt's message, which its log line repeats;
- when the build ends, a table artifact (key ``dbt-build-nodes``) lists every node with its
  status, seconds and message, failures first; the error `run_dbt` raises names them too.

The task runs are real ones (Prefect's task engine, each in a thread of its own that waits
for its node), so the UI's run graph, logs and states are Prefect's own. Outside a flow run
(`loopline build`) there is nothing to report to and `node_runs()` yields no callback.

prefect-dbt's ``PrefectDbtRunner`` (0.7.25 installs with this stack) does the same, but it
starts a `dbtRunner` of its own that parses the project again (the build parses it once, for
the incremental models' check and the build alike) and takes no other callback (the
terminal's bar), so the build keeps its runner and adds this reporter.

Cost, measured on the test company's 288 nodes (2 busy cores): the build took 30-41 s with
the node runs and 29-44 s without; rebuilding the run's context in each node's thread
(`hydrated_context`, as prefect-dbt does) instead of copying it made it 101 s.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State
from prefect.transactions import CommitMode, transaction

from loopline import progress
from loopline.dbt import FAILED, one_line

ARTIFACT_KEY = "dbt-build-nodes"
# the events that start and end a node: models, seeds, snapshots, tests, unit tests; and
# the project's run hooks (`on-run-start`), which dbt reports as `operation` nodes
STARTS = ("NodeStart", "LogHookStartLine")
FINISHES = ("NodeFinished", "LogHookEndLine")
NOT_FINISHED = "not finished"  # dbt stopped (or crashed) before it reported the node


@dataclass
class Node:
    """One node of the running build, as dbt's events describe it."""

    unique_id: str
    resource_type: str
    name: str
    status: str = ""
    message: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.resource_type} {self.name}"


class NodeRuns:
    """A dbt event callback: one Prefect task run per node (see the module docstring).

    Make it in the thread that runs dbt, inside a task or flow run: it carries that run's
    context to the threads its task runs run in. dbt calls it from its own threads.
    """

    def __init__(self) -> None:
        # the run's context, copied into each node's thread as Prefect's own thread pool
        # does (`hydrated_context` would rebuild it per node: ~0.2 s each, measured here)
        self.context = contextvars.copy_context()
        self.nodes: dict[str, Node] = {}
        self._finished: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        try:
            self._on_event(msg)
        except Exception:  # reporting to Prefect must never break the build itself
            progress.logger.warning("could not report a dbt event to Prefect", exc_info=True)

    def _on_event(self, msg: Any) -> None:
        name = msg.info.name
        if name not in STARTS and name not in FINISHES:
            return
        info = msg.data.node_info
        with self._lock:
            node = self.nodes.get(info.unique_id)
            if node is None:
                node = Node(info.unique_id, info.resource_type, info.node_name)
                self.nodes[node.unique_id] = node
                self._finished[node.unique_id] = threading.Event()
                thread = threading.Thread(
                    target=self.context.copy().run,
                    args=(self._run, node),
                    name=f"dbt node {node.name}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        if name == "NodeFinished":
            result = msg.data.run_result
            node.status = result.status or info.node_status
            node.message = one_line(result.message) if result.message else ""
            node.seconds = float(result.execution_time or 0.0)
        elif name == "LogHookEndLine":  # a run hook says less: no message of its own
            node.status = msg.data.status or info.node_status
            node.seconds = float(msg.data.execution_time or 0.0)
        if name in FINISHES:
            self._finished[node.unique_id].set()

    def _run(self, node: Node) -> None:
        named = dbt_node.with_options(task_run_name=node.label)
        # a node's outcome is final once dbt reports it: committed at once, so the `dbt
        # build` task failing later (its transaction rolled back) leaves the nodes' states
        # as they ended instead of turning them all into "RolledBack"
        with transaction(commit_mode=CommitMode.EAGER):
            named(node, self._finished[node.unique_id], return_state=True)

    def close(self, timeout_s: float = 60.0) -> None:
        """Release nodes dbt never finished, wait (up to `timeout_s`) for every task run."""
        with self._lock:
            for node in self.nodes.values():
                if not self._finished[node.unique_id].is_set():
                    node.status = NOT_FINISHED
                    self._finished[node.unique_id].set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def table(self) -> list[dict[str, object]]:
        """Every node with how it ended, failures first, then in the order they started."""
        order = list(self.nodes.values())
        order.sort(key=lambda n: n.status not in (*FAILED, NOT_FINISHED))
        return [
            {
                "node": n.label,
                "status": n.status,
                "seconds": round(n.seconds, 2),
                "message": n.message,
            }
            for n in order
        ]


@task(name="dbt node", cache_policy=NO_CACHE, persist_result=False)
def dbt_node(node: Node, finished: threading.Event) -> State:
    """Wait for dbt to finish `node`; end in the state its status calls for."""
    finished.wait()
    logger = get_run_logger()
    said = f"{node.label}: {node.status} in {node.seconds:.2f} s" + (
        f": {node.message}" if node.message else ""
    )
    if node.status in FAILED or node.status == NOT_FINISHED:
        logger.error(said)
        return Failed(message=said)
    if node.status == "warn":
        logger.warning(said)
        return Completed(name="Warned", message=said)
    logger.info(said)
    if node.status == "skipped":
        return Completed(name="Skipped", message=said)
    return Completed(message=said)


@contextlib.contextmanager
def node_runs(command: str = "dbt build") -> Iterator[list[Callable[[Any], None]]]:
    """The callbacks for `run_dbt`: a `NodeRuns` inside a flow run, none outside one.

    On the way out (also when dbt failed) every node's task run has ended and the table
    artifact is written.
    """
    if FlowRunContext.get() is None:
        yield []
        return
    runs = NodeRuns()
    try:
        yield [runs]
    finally:
        runs.close()
        failed = sum(n.status in (*FAILED, NOT_FINISHED) for n in runs.nodes.values())
        try:
            if runs.nodes:
                create_table_artifact(
                    table=runs.table(),
                    key=ARTIFACT_KEY,
                    description=f"{command}: {len(runs.nodes)} nodes, {failed} failed",
                )
        except Exception:  # nor may a failed artifact hide how the build ended
            progress.logger.warning("could not write the %s artifact", ARTIFACT_KEY, exc_info=True)
