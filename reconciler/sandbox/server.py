"""The sandbox provider over real HTTP on loopback: Azure DevOps OAuth, Entra ID, the REST checks, an admin API and
the Cyclr API, served by uvicorn (httptools) from the starlette application in `app`.

Owns: the listening socket (bound when the server is made, so a taken port fails there), the uvicorn server and its
thread, and stopping it (which ends slow answers and hung connections). Routes: `routes` (the provider) and
`cyclr_routes` (Cyclr); see docs/sandbox.md. Must not: log requests (they carry secrets), or be imported by the
real flows.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Self

import uvicorn

from reconciler.sandbox.app import build_app
from reconciler.sandbox.cyclr import CyclrSandbox
from reconciler.sandbox.cyclr_routes import CyclrRoutes
from reconciler.sandbox.provider import Provider
from reconciler.sandbox.routes import ProviderRoutes

__all__ = ["BACKLOG", "SandboxServer"]

BACKLOG = 256  # connections queued before they are accepted: a benchmark's burst is queued, not reset
KEEP_ALIVE = 30  # seconds an idle connection is kept: longer than httpx keeps its own (5), so it never races
STOP_GRACE = 5.0  # seconds `stop` lets requests in flight finish before it drops them


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host:port` (IPv4; port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, saying when it serves (`ready`) and telling the application when it stops (`stopping`).
    Signals are uvicorn's to handle only when it runs in the main thread (`serve_forever`): SIGINT and SIGTERM
    stop it gracefully, then uvicorn raises them again (Ctrl-C ends in KeyboardInterrupt)."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self.stopping = stopping
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping.set()  # before uvicorn waits for the requests in flight: the slow and hung ones end now
        await super().shutdown(sockets)


class SandboxServer:
    """A sandbox provider and Cyclr API listening on `host:port` (port 0: any free port), served from a background
    thread (`start`) or the calling one (`serve_forever`). `cyclr` is the Cyclr model (see `cyclr`), whose sign-ins
    consent at this server's provider."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, provider: Provider | None = None) -> None:
        self.provider = provider or Provider()
        self.cyclr = CyclrSandbox(self.provider)
        self._socket = _listen(host, port)
        stopping = asyncio.Event()  # bound to the server's event loop when first awaited there
        config = uvicorn.Config(
            build_app(ProviderRoutes(self.provider), CyclrRoutes(self.cyclr, self.url), stopping),
            http="httptools", ws="none", lifespan="off", interface="asgi3", loop="asyncio",
            log_config=None, access_log=False,  # requests carry secrets: nothing of them is logged
            proxy_headers=False, server_header=False, headers=[("Server", "reconciler-sandbox")],
            backlog=BACKLOG, timeout_keep_alive=KEEP_ALIVE,
        )
        self._server = _Uvicorn(config, stopping)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> Self:
        """Serve from a daemon thread; return once it serves (RuntimeError if it could not)."""
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self._thread.start()
        self._server.ready.wait()
        if not self._server.started:
            raise RuntimeError("the sandbox server did not start")
        return self

    def _run(self) -> None:
        try:
            self.serve_forever()
        finally:
            self._server.ready.set()  # a failed start must not leave `start` waiting

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` (or, in the main thread, SIGINT or SIGTERM)."""
        serving = self._server.serve(sockets=[self._socket])
        try:
            asyncio.run(serving)
        finally:
            serving.close()  # a signal before it ran: no "never awaited" warning

    def stop(self) -> None:
        """Stop serving (requests in flight get STOP_GRACE to finish) and close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_GRACE)
            self._server.force_exit = True
            self._thread.join()
            self._thread = None
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
