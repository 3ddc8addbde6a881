"""Running the service: uvicorn over the app, with the background work (webhook deliveries, refresh ahead of
expiry) started before it listens and stopped after it has drained.

Owns: the server's settings (trusted proxies for X-Forwarded-*, graceful shutdown within 10 seconds of SIGTERM:
stop accepting, finish in-flight completions, exit 0), and `ServiceServer`, the same in a thread (tests, the
benchmark). Must not: decide anything a request asks (`reconciler.service.app` and its modules do).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Self

import uvicorn

from reconciler.service.app import service_app
from reconciler.service.context import ServiceContext
from reconciler.service.observe import Metrics, log_to_stderr
from reconciler.service.protocol import head_limited
from reconciler.service.runtime import RefreshSettings, Runtime
from reconciler.state.model import InstallationRecord

__all__ = ["GRACE_SECONDS", "ServiceServer", "pending_links", "run_service", "uvicorn_config"]

GRACE_SECONDS = 8  # in-flight requests get this long after SIGTERM; the process is gone within 10 seconds


def pending_links(ctx: ServiceContext) -> Callable[[], float]:
    """The number of pending authorizations whose link can still be opened (read from state at each scrape)."""

    def count() -> float:
        doc = ctx.backend.read()
        now = ctx.now()
        records = doc.resources.values() if doc is not None else ()
        return float(sum(
            1 for r in records if isinstance(r, InstallationRecord) and r.pending and r.pending.link and now < r.pending.expires_at
        ))

    return count


def uvicorn_config(ctx: ServiceContext, host: str, port: int, metrics: Metrics, runtime: Runtime) -> uvicorn.Config:
    proxies = [str(network) for network in ctx.settings.trusted_proxies]
    return uvicorn.Config(
        service_app(ctx, metrics, runtime),
        host=host,
        port=port,
        http=head_limited(),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,  # the app logs each request without its query string
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACE_SECONDS,
        limit_concurrency=2048,
        backlog=2048,
    )


def run_service(ctx: ServiceContext, host: str, port: int, refresh: RefreshSettings | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT; returns once in-flight requests are done and the
    background work has stopped."""
    log_to_stderr(ctx.loaded.desired.secret_values())
    metrics = Metrics(pending_links(ctx))
    runtime = Runtime(ctx, metrics, refresh).start()
    try:
        _Server(uvicorn_config(ctx, host, port, metrics, runtime)).run()
    finally:
        runtime.stop()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT that stopped it gracefully is not raised again afterwards
    (which would end the process with the signal's status instead of 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class ServiceServer:
    """The service in a background thread, listening once `start()` returns."""

    def __init__(
        self, ctx: ServiceContext, host: str = "127.0.0.1", port: int = 0, refresh: RefreshSettings | None = None
    ) -> None:
        self.ctx = ctx
        self.metrics = Metrics(pending_links(ctx))
        self.runtime = Runtime(ctx, self.metrics, refresh)
        self.server = _Server(uvicorn_config(ctx, host, port, self.metrics, self.runtime))  # in a thread: no signals
        self.thread = threading.Thread(target=self.server.run, name="reconciler-service", daemon=True)

    @property
    def url(self) -> str:
        server = self.server.servers[0]
        host, port = server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self.runtime.start()
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            self.thread.join(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GRACE_SECONDS + 2)
        self.runtime.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
