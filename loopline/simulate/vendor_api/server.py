"""Running the vendor API: in a background thread (the demo, tests) or in the foreground."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import uvicorn

from loopline.simulate.vendor_api.app import make_app
from loopline.simulate.vendor_api.behaviour import ApiBehaviour

log = logging.getLogger(__name__)


class CatalogueServer:
    """Runs the API with uvicorn in a background thread; use as a context manager."""

    def __init__(
        self,
        catalogue_dir: Path,
        behaviour: ApiBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ) -> None:
        """Configure; nothing listens until :meth:`start` (or ``with``)."""
        self.catalogue_dir = Path(catalogue_dir)
        self.behaviour = behaviour or ApiBehaviour()
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.app = make_app(self.catalogue_dir, self.behaviour)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the real port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind, start serving in a daemon thread and wait until ``/healthz`` answers."""
        if self._thread is not None:
            raise RuntimeError("CatalogueServer already started")
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"catalogue-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        """Poll ``/healthz`` until it answers 200, the thread dies or the timeout passes."""
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("catalogue API thread exited during startup")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"catalogue API not healthy at {self.url}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Ask uvicorn to exit, join the thread and release the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("catalogue API thread did not stop within 10 s")
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> Self:
        """Start and return self."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


def serve_forever(
    catalogue_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    behaviour: ApiBehaviour | None = None,
) -> None:
    """Serve in the foreground until interrupted (Ctrl-C)."""
    app = make_app(Path(catalogue_dir), behaviour or ApiBehaviour())
    log.info("catalogue API on http://%s:%d serving %s", host, port, catalogue_dir)
    uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
