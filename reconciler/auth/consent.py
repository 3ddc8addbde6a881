"""Consent: getting the user's authorization code for an `AuthorizationRequest`.

- `BrowserConsent`: opens the system browser (Python's `webbrowser`, so `BROWSER` is honoured), prints the URL
  too, and receives the redirect on a loopback listener bound to 127.0.0.1 when the redirect URI is
  `http://127.0.0.1:<port>/...` or `http://localhost:<port>/...`; for another redirect URI it falls back to paste
  when it was given a fallback (the default mode), and refuses otherwise (`--auth-mode browser` asked for loopback).
- `PasteConsent`: prints the URL and reads back the URL the user landed on (or, in PKCE flows only, the bare code).
Before anyone sees it, the authorization URL is checked against the request: it must send the code to the request's
redirect URI, carry its state and client id, and — in PKCE flows — its S256 challenge (a downgraded or redirected
URL is refused). `state` is checked in both; an `error=` answer is a clear refusal. The listener answers only
requests from 127.0.0.1 addressed to itself (Host 127.0.0.1 or localhost with its port: no DNS rebinding). It
serves each connection on its own thread (at most `MAX_CONNECTIONS` at once) under a whole-request deadline
(`REQUEST_DEADLINE`), so that a slow or silent local client never holds back the real redirect.
Deferred consent is the executor's business (it records a pending authorization instead of asking anyone).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, urlsplit

from reconciler.auth.errors import ConsentError
from reconciler.auth.request import AuthorizationRequest
from reconciler.errors import one_line

__all__ = [
    "BrowserConsent",
    "ConsentStep",
    "LoopbackReceiver",
    "PasteConsent",
    "check_authorization_url",
    "parse_callback",
]

REQUEST_DEADLINE = 10.0  # seconds one connection has for its whole request; then it is closed
MAX_CONNECTIONS = 16  # connections served at once; more are closed at once (each frees its place by the deadline)

CLOSE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>reconciler</title></head><body style='font-family:"
    "sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


class ConsentStep(Protocol):
    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        """The authorization code for `request` (label names the installation to the user)."""


class StateMismatch(ConsentError):
    """The callback's `state` is not the one this authorization sent: stale, or forged."""


def parse_callback(answer: str, request: AuthorizationRequest) -> str:
    """The code from a callback URL (or a bare code, PKCE only); state checked, `error=` reported."""
    answer = answer.strip()
    if not answer:
        raise ConsentError("no answer was given")
    if "://" not in answer and "?" not in answer and "code=" not in answer:
        if not request.pkce:
            raise ConsentError(
                "paste the whole URL you were redirected to: this flow has no PKCE, so the state must be checked"
            )
        return answer
    query = parse_qs(urlsplit(answer).query if "?" in answer else answer)
    state = (query.get("state") or [""])[0]
    if not hmac.compare_digest(state.encode(), request.state.get_secret_value().encode()):
        raise StateMismatch("the answer's state does not match this authorization (a stale or forged redirect)")
    if "error" in query:
        error = query["error"][0]
        description = (query.get("error_description") or [""])[0]
        category = "denied" if error == "access_denied" else "scope" if error.lower() == "invalidscope" else "consent"
        message = "the user denied the authorization" if category == "denied" else f"the provider refused: {error}"
        raise ConsentError(message + (f" ({description})" if description and category != "denied" else ""), category=category)
    code = (query.get("code") or [""])[0]
    if not code:
        raise ConsentError("the redirect carries no code")
    return code


def check_authorization_url(request: AuthorizationRequest) -> None:
    """Refuse an authorization URL that does not belong to `request`: one that would send the code elsewhere, or
    carries another state or client, or — for a PKCE flow, or any code flow — lacks the S256 challenge of its
    verifier (a downgrade to `plain` or to no PKCE)."""
    query = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
    sent_to = query.get("redirect_uri")
    if sent_to != request.redirect_uri:
        raise ConsentError(
            f"the authorization URL would send the code to {one_line(str(sent_to))}, not to {request.redirect_uri}",
            hint="refused before opening it; re-issue the authorization",
        )
    if query.get("state") != request.state.get_secret_value() or query.get("client_id") != request.client_id:
        raise ConsentError("the authorization URL carries another state or client id than this authorization")
    if request.code_verifier is not None or query.get("response_type") == "code":
        verifier = request.code_verifier.get_secret_value().encode() if request.code_verifier else b""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if not verifier or query.get("code_challenge_method") != "S256" or query.get("code_challenge") != challenge:
            raise ConsentError(
                "the authorization URL lacks this authorization's PKCE S256 challenge: refusing a PKCE downgrade",
                hint="re-issue the authorization",
            )


def loopback_target(redirect_uri: str) -> tuple[int, str] | None:
    """(port, path) when the redirect URI is a loopback address with an explicit port."""
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost"} and parts.port:
        return parts.port, parts.path or "/"
    return None


def _reserve_ipv6(port: int) -> socket.socket | None:
    """For a `localhost` redirect a browser may try [::1] first: hold that port (bound, not listening) so no other
    process can take the code there; the browser falls back to 127.0.0.1, where the receiver listens."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None  # no IPv6 on this machine: nothing to reserve
    try:
        sock.bind(("::1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            return None
        raise ConsentError(
            f"another process listens on [::1]:{port}, where a browser may send the redirect for localhost",
            hint="use a http://127.0.0.1:<port>/ redirect URI, or --auth-mode paste",
        ) from None
    return sock


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
    code: str | None = None
    error: ConsentError | None = None


class LoopbackReceiver:
    """One-shot HTTP listener on 127.0.0.1: serves until a request on `path` carries the expected state."""

    def __init__(self, port: int, path: str, request: AuthorizationRequest, report: Callable[[str], None]) -> None:
        self.request, self.path, self.report = request, path, report
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
        if host not in {f"127.0.0.1:{self.server.server_port}", f"localhost:{self.server.server_port}"}:
            # A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) names its own host here.
            self.report(f"refused a request addressed to {one_line(host[:100])!r}, not to this listener")
            return self._reply(handler, 403, "Refused", "This listener answers its own address only.")
        url = urlsplit(handler.path)
        if url.path != self.path:
            return self._reply(handler, 404, "Not found", "This is not the authorization callback.")
        code: str | None = None
        error: ConsentError | None = None
        try:
            code = parse_callback(handler.path, self.request)
        except StateMismatch:
            self.report(f"refused a redirect with the wrong state on 127.0.0.1:{self.server.server_port}")
            return self._reply(handler, 400, "Refused", "This answer does not belong to the pending sign-in.")
        except ConsentError as exc:
            error = exc
        if not self._settle(code=code, error=error):
            return self._reply(handler, 409, "Already answered", "This sign-in was already answered.")
        try:
            if error is not None:
                self._reply(handler, 200, "Authorization not granted", "You may close this window.")
            else:
                self._reply(handler, 200, "Authorization received", "You may close this window and return to the terminal.")
        finally:
            self.done.set()  # the answer counts even when the browser went away before its page

    def _settle(self, *, code: str | None = None, error: ConsentError | None = None) -> bool:
        """Claim the one answer of this authorization (False when another connection answered first); `done` is
        set by the caller's `_handle` once the page went out, so that closing the receiver cannot cut it off."""
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


class PasteConsent:
    """Print the URL; read back the URL the user was redirected to."""

    def __init__(self, announce: Callable[[str, str], None], read_answer: Callable[[str], str]) -> None:
        self.announce, self.read_answer = announce, read_answer

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        check_authorization_url(request)
        self.announce(label, request.url)
        prompt = "Paste the URL you were redirected to" + (" (or the code)" if request.pkce else "")
        return parse_callback(self.read_answer(prompt), request)


class BrowserConsent:
    """Open the browser; receive the redirect on loopback, or (given `paste`) fall back to it for another redirect."""

    def __init__(
        self,
        announce: Callable[[str, str], None],
        report: Callable[[str], None],
        paste: PasteConsent | None,
        *,
        timeout: float = 300.0,
        open_url: Callable[[str], Any] | None = None,
    ) -> None:
        self.announce, self.report, self.paste, self.timeout, self.open_url = announce, report, paste, timeout, open_url

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        check_authorization_url(request)
        target = loopback_target(request.redirect_uri)
        if target is None and self.paste is None:
            raise ConsentError(
                f"browser mode receives the code on 127.0.0.1, but the redirect URI {request.redirect_uri} sends it "
                "to another host",
                hint="use --auth-mode paste (or leave --auth-mode out), or a http://127.0.0.1:<port>/ redirect URI",
            )
        if target is None:
            assert self.paste is not None
            self.report(f"the redirect URI {request.redirect_uri} is not a loopback address: paste mode")
            return self.paste.obtain(request, label)
        port, path = target
        reserved = _reserve_ipv6(port) if urlsplit(request.redirect_uri).hostname == "localhost" else None
        try:
            with LoopbackReceiver(port, path, request, self.report) as receiver:
                self.announce(label, request.url)
                try:
                    opened = (self.open_url or webbrowser.open)(request.url)
                except Exception:  # noqa: BLE001 - no browser is fine: the URL is printed
                    opened = False
                if opened is False:
                    self.report("could not open a browser; open the URL above yourself")
                return receiver.wait(self.timeout)
        finally:
            if reserved is not None:
                reserved.close()
