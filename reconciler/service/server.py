"""Running the service: uvicorn over the app, with the background work (webhook deliveries, refresh ahead of
expiry) started before it listens and stopped after it has drained.

Owns: the server's settings (trusted proxies for X-Forwarded-*, limits on request heads, graceful shutdown), what
SIGTERM guarantees, and `ServiceServer`, the same in a thread (tests, the benchmark). Must not: decide anything a
request asks (`reconciler.service.app` and its modules do).

SIGTERM (or SIGINT): the service stops accepting at once; requests in flight get `GRACE_SECONDS` to finish — a
completion whose provider answers in that time is recorded and its tenant gets the done page. `EXIT_SECONDS` after
the signal the process exits 0 whatever is still running (a completion stuck on a provider that does not answer,
or queued behind one): such a completion is abandoned as a crash would leave it — nothing of it recorded (state
writes are atomic; the state lock is the operating system's and goes with the process), its attempt spent, its
link still usable, the tenant's connection cut. Webhook events not yet delivered by then are not sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Self

import uvicorn

from reconciler.service.app import service_app
from reconciler.service.context import ServiceContext
from reconciler.service.observe import LOGGER, Metrics, log_to_stderr
from reconciler.service.protocol import head_limited
from reconciler.service.runtime import RefreshSettings, Runtime
from reconciler.state.model import InstallationRecord

__all__ = ["EXIT_SECONDS", "GRACE_SECONDS", "ServiceServer", "pending_links", "run_service", "uvicorn_config"]

GRACE_SECONDS = 8  # in-flight requests get this long after SIGTERM
EXIT_SECONDS = 9.0  # the process is gone this long after SIGTERM, whatever still runs (the issue allows 10)


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
    log = log_to_stderr(ctx.loaded.desired.secret_values())
    where = {"public_url": ctx.settings.public_url, "listen": f"http://{host}:{port}", "state": ctx.backend.describe()}
    log.info("serving", extra={"fields": where})
    metrics = Metrics(pending_links(ctx))
    runtime = Runtime(ctx, metrics, refresh).start()
    try:
        _Server(uvicorn_config(ctx, host, port, metrics, runtime)).run()
    finally:
        runtime.stop()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT that stopped it gracefully is not raised again afterwards
    (which would end the process with the signal's status instead of 0), and that the first one also sets the
    process's deadline: uvicorn stops waiting for in-flight requests after the grace period, but their worker
    threads keep the process alive until they return (a provider that hangs: the HTTP timeout, 30 s by default)."""

    deadline: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.deadline is None:
            self.deadline = threading.Timer(EXIT_SECONDS, _abandon)
            self.deadline.daemon = True
            self.deadline.start()
        super().handle_exit(sig, frame)

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


def _abandon() -> None:
    """`EXIT_SECONDS` after SIGTERM with work still running: exit 0 now, as the module docstring says."""
    busy = [t.name for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    log = logging.getLogger(LOGGER)
    log.warning("exiting with requests unfinished: their sign-ins are not recorded, their links still work",
                extra={"fields": {"unfinished": len(busy) - 1}})  # less the main thread
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(0)


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
