"""A dbt-duckdb plugin: plain `dbt` takes the warehouse writer lock before it opens the file.

profiles.yml lists this module under `plugins:`, so dbt-duckdb calls
`Plugin.update_connection_config` just before it opens the DuckDB warehouse. A `dbt build`
started from the repository root then queues behind a running flow (ingest, `loopline
build`, scoring) instead of failing on DuckDB's own file lock or, worse, getting the file
between two of a flow's steps. The lock is held until the dbt process exits.

`loopline build` (loopline/dbt.py) runs dbt in-process while it already holds the lock: the
plugin sees that and takes nothing (a second flock in one process would wait for itself).
Another long-lived program that embeds dbt should hold `loopline.warehouse.warehouse_writer`
around its invocations, as loopline/dbt.py does.
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from loopline.settings import Settings
from loopline.warehouse import holds_warehouse_writer, warehouse_writer


class Plugin(BasePlugin):
    """Hold the warehouse writer lock for as long as this dbt process runs."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._held = ExitStack()
        self._locked = False

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        path = str(creds.path)
        if self._locked or path == ":memory:" or path.startswith("md:"):
            return
        warehouse = Path(path)
        if holds_warehouse_writer(warehouse):  # loopline runs dbt under the lock already
            return
        # a waiter says who holds the lock and since when (loopline.warehouse)
        self._held.enter_context(warehouse_writer(Settings(warehouse_path=warehouse)))
        self._locked = True
        atexit.register(self._held.close)
