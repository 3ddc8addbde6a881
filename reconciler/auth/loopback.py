"""The loopback listener: a one-shot HTTP receiver on 127.0.0.1 for the redirect that ends a browser step.

Owns: listening on 127.0.0.1 (a given port, or one the system chooses), answering only requests from 127.0.0.1
addressed to itself (Host 127.0.0.1 or localhost with its port: no DNS rebinding), serving each connection on its
own thread (at most `MAX_CONNECTIONS` at once) under a whole-request deadline (`REQUEST_DEADLINE`) so that a slow
or silent local client never holds back the real redirect, settling on the first answer that belongs here, the
small "you may close this window" page, and opening the system browser (`open_in_browser`).
Must not: know what an answer means — the `read` function it is given turns a request into the answer, refuses
one that does not belong here (`Refused`), or reports a refusal by the user (`ConsentError`); never log a request
(a query may hold a code).
"""

from __future__ import annotations

import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Self
from urllib.parse import urlsplit

from reconciler.auth.errors import ConsentError
from reconciler.errors import one_line

__all__ = ["LoopbackListener", "Page", "Refused", "open_in_browser"]

REQUEST_DEADLINE = 10.0  # seconds one connection has for its whole request; then it is closed
MAX_CONNECTIONS = 16  # connections served at once; more are closed at once (each frees its place by the deadline)

CLOSE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>reconciler</title></head><body style='font-family:"
    "sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


class Refused(ConsentError):
    """A request that does not belong to the pending step (a stale or forged redirect): refused with a 400 and
    reported as `note`; the listener keeps waiting for the real one."""

    note = "a redirect that does not belong to this sign-in"


@dataclass(frozen=True)
class Page:
    """The page the browser shows once the answer arrived: a title and one sentence."""

    title: str
    text: str


RECEIVED = Page("Authorization received", "You may close this window and return to the terminal.")
NOT_GRANTED = Page("Authorization not granted", "You may close this window.")


def open_in_browser(url: str, opener: Callable[[str], Any] | None = None) -> bool:
    """Open `url` with `opener` (default: Python's `webbrowser`, so `BROWSER` is honoured); False when no browser
    could be opened. What went wrong is not kept: an opener's error may repeat the URL."""
    try:
        return (opener or webbrowser.open)(url) is not False
    except Exception:  # noqa: BLE001 - no browser is an answer, not a failure
        return False


class _Server(ThreadingMixIn, HTTPServer):
    """One thread per connection, at most `MAX_CONNECTIONS` at once; each connection is shut down when its
    `REQUEST_DEADLINE` passes (a trickling client cannot extend it byte by byte), or when the receiver closes."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # connections waiting to be accepted while the places are taken

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.open_lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.closing = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Full: wait (in arrival order) for a place; every connection frees its place by its deadline at the latest.
        while not self.slots.acquire(timeout=0.2):
            if self.closing.is_set():
                self.shutdown_request(request)
                return
        with self.open_lock:
            self.open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        deadline = threading.Timer(REQUEST_DEADLINE, _cut, args=(request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke off (the browser closed, the deadline cut it) is nothing to report."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def _release(self, request: socket.socket) -> None:
        with self.open_lock:
            if request not in self.open:
                return
            self.open.discard(request)
        self.slots.release()

    def cut_all(self) -> None:
        """Shut down every connection still open (the receiver is done)."""
        self.closing.set()
        with self.open_lock:
            current = list(self.open)
        for request in current:
            _cut(request)


def _cut(sock: socket.socket) -> None:
    """End a connection from another thread: its blocked read returns, its handler finishes."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


@dataclass
class _Outcome:
    code: str | None = None  # what `read` made of the answer (for an authorization: its code)
    error: ConsentError | None = None


class LoopbackListener:
    """One-shot HTTP listener on 127.0.0.1: serves until a request on `path` gives an answer (`read` turns the
    request target into it). Port 0 lets the system choose one (see `port`)."""

    def __init__(
        self,
        port: int,
        path: str,
        read: Callable[[str], str],
        report: Callable[[str], None],
        *,
        received: Page = RECEIVED,
        not_granted: Page = NOT_GRANTED,
    ) -> None:
        self.path, self.read, self.report = path, read, report
        self.pages = {True: received, False: not_granted}
        self.outcome = _Outcome()
        self.done = threading.Event()
        self.lock = threading.Lock()  # handlers run concurrently: the first answer that belongs here wins
        self.claimed = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_DEADLINE  # per read; the whole request is bounded by the server's deadline
            disable_nagle_algorithm = True  # the page goes out in two writes: no delayed-ACK stall for the browser

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the query holds a code
                return

            def do_GET(self) -> None:
                receiver._handle(self)

        try:
            self.server = _Server(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConsentError(
                f"cannot listen on 127.0.0.1:{port} for the redirect ({exc.strerror})",
                hint="free the port, or use --auth-mode paste",
            ) from None
        self.thread = threading.Thread(target=self._serve, name="loopback-receiver", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def _serve(self) -> None:
        while not self.done.is_set():
            self.server.handle_request()

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, title: str, text: str) -> None:
        body = CLOSE_PAGE.format(title=title, text=text).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.client_address[0] != "127.0.0.1":
            self.report(f"refused a redirect from {handler.client_address[0]}: only 127.0.0.1 may answer")
            return self._reply(handler, 403, "Refused", "Only this machine may answer.")
        host = handler.headers.get("Host", "")
        if host not in {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}:
            # A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) names its own host here.
            self.report(f"refused a request addressed to {one_line(host[:100])!r}, not to this listener")
            return self._reply(handler, 403, "Refused", "This listener answers its own address only.")
        url = urlsplit(handler.path)
        if url.path != self.path:
            return self._reply(handler, 404, "Not found", "This is not the authorization callback.")
        code: str | None = None
        error: ConsentError | None = None
        try:
            code = self.read(handler.path)
        except Refused as exc:
            self.report(f"refused {exc.note} on 127.0.0.1:{self.port}")
            return self._reply(handler, 400, "Refused", "This answer does not belong to the pending sign-in.")
        except ConsentError as exc:
            error = exc
        if not self._settle(code=code, error=error):
            return self._reply(handler, 409, "Already answered", "This sign-in was already answered.")
        try:
            page = self.pages[error is None]
            self._reply(handler, 200, page.title, page.text)
        finally:
            self.done.set()  # the answer counts even when the browser went away before its page

    def _settle(self, *, code: str | None = None, error: ConsentError | None = None) -> bool:
        """Claim the one answer of this step (False when another connection answered first); `done` is set by
        the caller's `_handle` once the page went out, so that closing the receiver cannot cut it off."""
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
            self.outcome.code, self.outcome.error = code, error
            return True

    def __enter__(self) -> Self:
        self.server.timeout = 0.2
        self.thread.start()
        return self

    def wait(self, timeout: float) -> str:
        if not self.done.wait(timeout):
            raise ConsentError(
                f"no authorization arrived within {timeout:g} s",
                category="missed",  # the sign-in timed out or was abandoned: it can be left pending
                hint="retry, raise --auth-timeout, or use --auth-mode paste (e.g. over SSH)",
            )
        if self.outcome.error is not None:
            raise self.outcome.error
        assert self.outcome.code is not None
        return self.outcome.code

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.server.cut_all()  # first: the serving thread may be waiting for a place that a slow client holds
        self.thread.join(2)
        self.server.server_close()
