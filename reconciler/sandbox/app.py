"""The sandbox's HTTP side, a starlette application: every request to its routes, their answers in bytes, and the
misbehaviour that faults script on the wire.

One catch-all route hands each request to the route tables (`routes` for the provider, `cyclr_routes` for the
Cyclr API), which match on the raw path's segments (percent-decoded one by one, empty ones skipped): the paths
they answer are the ones the sandbox has always answered. The model is called on the event loop: its calls are
in-memory and lock-guarded, never I/O. Waits (a slow answer, a hung connection) are asynchronous and end when the
server stops. Owns: turning a request into a `Request` and an `Answer` into a response (`Cache-Control: no-store`
on every one), the request limits, and the wire faults (status, sign-in page, malformed JSON, slow, hang). Must
not: hold provider or Cyclr rules, or log requests (they carry secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reconciler.sandbox.cyclr_routes import CyclrRoutes
from reconciler.sandbox.model import Fault
from reconciler.sandbox.routes import ProviderRoutes
from reconciler.sandbox.wire import Answer, Request

__all__ = ["HANG_LIMIT", "build_app"]

HANG_LIMIT = 120.0  # seconds a hung connection is held at most (the client normally gives up long before)
MAX_HEADERS = 100  # header lines a request may have
MAX_LINE = 65536  # bytes a header line may take

_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_SIGN_IN = "<html><head><title>Sign In</title></head><body><h1>Sign in to your account</h1></body></html>"
_METHODS = ("GET", "POST", "PUT", "DELETE")


def _send(status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Response:
    """A response whose headers are exactly these (starlette adds Content-Length; the server, Date and Server)."""
    return Response(body, status, {"Content-Type": content_type, "Cache-Control": "no-store", **(headers or {})})


def _json(status: int, data: object) -> Response:
    return _send(status, json.dumps(data).encode(), _JSON)


def _response(answer: Answer) -> Response:
    if answer.location is not None:
        return _send(answer.status, b"", "text/plain", {"Location": answer.location, **answer.headers})
    if answer.page is not None:
        return _send(answer.status, answer.page.encode(), _HTML, answer.headers)
    body = b"" if answer.body is None else json.dumps(answer.body).encode()
    return _send(answer.status, body, _JSON, answer.headers)


def _refused(scope: Scope) -> Response | None:
    """400 for a request that is not HTTP/1.0 or 1.1 (a bare HTTP/0.9 request line); 431 for one with more header
    lines than MAX_HEADERS, or one longer than MAX_LINE."""
    if scope["http_version"] not in ("1.0", "1.1"):
        return _send(400, b'{"message": "bad request line"}', _JSON, {"Connection": "close"})
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS or any(len(name) + 2 + len(value) > MAX_LINE for name, value in headers):
        return _send(431, b'{"message": "request header fields too large"}', _JSON, {"Connection": "close"})
    return None


async def _read(http: HttpRequest) -> Request:
    """What the routes read of a request: the raw path's segments, each percent-decoded, and the rest."""
    scope = http.scope
    path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    return Request(
        method=scope["method"],
        parts=tuple(unquote(p) for p in path.split("/") if p),
        params=dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
        headers={name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]},
        body=await http.body(),
    )


async def _disconnected(receive: Receive) -> None:
    """Return once the client has hung up (the request's body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Sandbox:
    """The endpoint (an ASGI application: it takes every method): one request to the routes that claim it, with
    the fault it draws carried out."""

    def __init__(self, provider: ProviderRoutes, cyclr: CyclrRoutes, stopping: asyncio.Event) -> None:
        self.provider, self.cyclr, self.stopping = provider, cyclr, stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.handle(HttpRequest(scope, receive))
        except ClientDisconnect:
            return  # the client left before its request was read: nobody to answer
        await response(scope, receive, send)

    async def handle(self, http: HttpRequest) -> Response:
        refused = _refused(http.scope)
        if refused is not None:
            return refused
        if http.method not in _METHODS:
            await http.body()
            return _json(501, {"message": "unsupported method"})
        request = await _read(http)
        routes = self.cyclr if self.cyclr.claims(request.parts) else self.provider
        fault = routes.next_fault(request)
        if fault is not None and fault.kind not in ("slow", "no-refresh-token"):
            return await self._misbehave(fault, routes.fault_body(fault), http.receive)
        response = _response(routes.answer(request, fault))
        if fault is not None and fault.kind == "slow":
            await self._until_stopped(fault.seconds)  # carried out now, answered late
        return response

    async def _misbehave(self, fault: Fault, body: object, receive: Receive) -> Response:
        """The answer `fault` gives in place of the route's (`body`: a status answer's JSON)."""
        if fault.kind == "hang":
            return await self._hang(receive)
        if fault.kind == "malformed-json":
            return _send(200, b'{"access_token": "sbx.at.', _JSON)
        if fault.kind == "signin-page" or fault.status == 203:
            return _send(203, _SIGN_IN.encode(), _HTML)
        headers = {"Retry-After": fault.retry_after} if fault.status == 429 else {}
        return _send(fault.status, json.dumps(body).encode(), "application/json", headers)

    async def _hang(self, receive: Receive) -> Response:
        """Answer nothing: hold the connection until the client hangs up (the answer then goes nowhere). Should the
        server stop first, or HANG_LIMIT pass, a 503 ends it and closes the connection."""
        gone = asyncio.ensure_future(_disconnected(receive))
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((gone, stopped), timeout=HANG_LIMIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stopped.cancel()
        return _send(503, b'{"message": "sandbox fault: the hang ended"}', _JSON, {"Connection": "close"})

    async def _until_stopped(self, seconds: float) -> None:
        """Wait `seconds`, or less if the server stops first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def build_app(provider: ProviderRoutes, cyclr: CyclrRoutes, stopping: asyncio.Event) -> Starlette:
    """The sandbox's application; `stopping`, once set, ends every slow answer and hung connection."""
    return Starlette(routes=[Route("/{path:path}", _Sandbox(provider, cyclr, stopping))])
