"""The service's HTTP/1.1 connections: uvicorn's httptools protocol with the two limits on request heads it lacks.

uvicorn (over httptools/llhttp) neither times out a request head that arrives slowly — every byte received cancels
its keep-alive timer, and a new connection has none — nor bounds its size: a client sending headers one byte at a
time, or without end, holds a connection slot (and memory) for as long as it likes. Here a head (request line and
headers) must arrive whole within `HEAD_TIMEOUT` seconds of the connection, or of the first byte of the next
request on a kept-alive one, else the connection gets 408 and is closed; and a head over `MAX_HEAD` bytes gets 431
and is closed, unread beyond that.

Owns: those two limits. Must not: look at what a request asks (`reconciler.service.app` does).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD", "head_limited"]

HEAD_TIMEOUT = 10.0  # seconds for a request line and headers to arrive whole
MAX_HEAD = 32 * 1024  # bytes of request line and headers


def head_limited(timeout: float = HEAD_TIMEOUT, max_bytes: int = MAX_HEAD) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these limits (a class: uvicorn makes one per connection)."""

    class HeadLimited(_HeadLimited):
        head_timeout, max_head = timeout, max_bytes

    return HeadLimited


class _HeadLimited(HttpToolsProtocol):
    head_timeout: float = HEAD_TIMEOUT
    max_head: int = MAX_HEAD
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: int | None = 0  # None: between the end of a head and the start of the next one

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(b"431 Request Header Fields Too Large", b"request head too large\n")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:  # the next request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()
        super().on_headers_complete()

    def _start_head(self) -> None:
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head(self) -> None:
        self._head_bytes = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(b"408 Request Timeout", b"request head not received in time\n")

    def _refuse(self, status: bytes, body: bytes) -> None:
        self._stop_head()
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()
