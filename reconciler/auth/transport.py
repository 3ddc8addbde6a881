"""The HTTP of one command: one transport configuration (the process's TLS context, the command's timeout, or a
transport a test hands in) that every flow, verification and revocation sends through — the Entra flow's authlib
client included.

Owns: making clients — one per thread that asks (a single client shared by many threads scans its whole
connection pool on every request, httpcore, which at 32 threads costs more CPU than the refresh itself), all
closed together — and the process's one TLS context. Must not: decide what is sent (flows and checks do), or be
made anywhere but in the application wiring, once per command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Self

import httpx

__all__ = ["Http", "shared_tls_context"]

_TLS: list[Any] = []  # the one TLS context of this process (see shared_tls_context)
_TLS_LOCK = threading.Lock()


def shared_tls_context() -> Any:
    """One verifying TLS context (httpx's defaults) for every client this process makes: building one loads the
    CA bundle, which costs more than the token request it would serve."""
    with _TLS_LOCK:
        if not _TLS:
            _TLS.append(httpx.create_ssl_context())
        return _TLS[0]


class Http:
    """The clients of one command. `transport` makes the transport of each client (None: HTTPS with the shared
    TLS context); `timeout` bounds every request, as the configuration says."""

    def __init__(self, *, timeout: float, transport: Callable[[], httpx.BaseTransport] | None = None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        """The calling thread's client (made on first use)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self._transport is not None:
                client = httpx.Client(transport=self._transport(), timeout=self._timeout)
            else:
                client = httpx.Client(verify=shared_tls_context(), timeout=self._timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
