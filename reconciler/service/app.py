"""The service's HTTP face: a Starlette app over the sign-in, token and operations routes.

Routes:
  GET /authorize/{pending id}?sig=…           a sign-in link: 302 to the provider, or a page (403, 410)
  GET /connector/callback                     the provider's redirect back: a page (200 done, 400, 410, 503)
  GET /connector/platform-return              back from the integration platform's sign-in (Cyclr): a page
  GET /v1/installations/{address}/token       the token API (Bearer API key): 200, 401, 403, 404
  GET /status[?format=json]                    the status of the key's tenants (Bearer API key), from state alone
  GET /healthz                                 200 when the state backend answers, else 503
  GET /metrics                                 Prometheus text

Owns: the mapping of answers to responses (plain pages, no script, no secret), the Host check, the request size
limit and one log line per request (path without its query). Must not: decide a sign-in or a token read.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.app.statuspage import status_page
from reconciler.app.tokens import WouldBlock
from reconciler.service.context import ServiceContext
from reconciler.service.observe import CONTENT_TYPE_LATEST, LOGGER, Metrics
from reconciler.service.platform_signin import RETURN_PATH
from reconciler.service.runtime import Runtime
from reconciler.service.signin import Answer, complete_callback, complete_platform_return, open_link
from reconciler.service.status_api import HTML, read_status
from reconciler.service.token_api import read_token

__all__ = ["MAX_BODY", "service_app"]

MAX_BODY = 16 * 1024  # no route takes a body; anything larger is refused before it is read
COMPLETION_THREADS = 8  # callbacks completed at once (one at a time writes; the others exchange their codes)
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title><style>body{{font-family:sans-serif;max-width:36em;margin:3em auto;line-height:1.5}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
}


_STOPPING = Answer(503, "The service is restarting", (
    "your sign-in was not completed; open the link you were sent again in a minute",
))


def page(answer: Answer) -> Response:
    if answer.location is not None:
        return RedirectResponse(answer.location, status_code=302, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    body = "".join(f"<p>{html.escape(line)}</p>" for line in answer.lines)
    if answer.scopes:
        items = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in answer.scopes)
        body += f"<p>Granted scopes:</p><ul id=\"scopes\">{items}</ul>"
    text = _PAGE.format(title=html.escape(answer.title), body=body)
    return HTMLResponse(text, status_code=answer.status, headers=_HEADERS)


def service_app(ctx: ServiceContext, metrics: Metrics, runtime: Runtime) -> ASGIApp:
    """The ASGI app of `ctx`, its token API answered by `runtime`'s reader."""

    async def authorize(request: Request) -> Response:
        answer = await run_in_threadpool(open_link, ctx, request.path_params["pending_id"], request.query_params.get("sig"))
        return page(answer)

    # Completions wait for the state lock: they get threads of their own, so that links, the token API and the
    # health check answer while an apply holds the lock.
    completing = anyio.CapacityLimiter(COMPLETION_THREADS)

    def completion(complete: Callable[[ServiceContext, dict[str, str]], Answer]) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            params = dict(request.query_params)
            answer = await anyio.to_thread.run_sync(complete, ctx, params, limiter=completing)
            if answer.status == 200:
                metrics.completed.inc()
            return page(answer)

        return route

    callback, platform_return = completion(complete_callback), completion(complete_platform_return)

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(ctx.backend.read)
        except Exception:  # any failure to read state is "not healthy"; the type is logged
            logging.getLogger(LOGGER).warning("state backend unreachable", exc_info=True)
            return JSONResponse({"status": "unavailable", "state": ctx.backend.describe()}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_route(request: Request) -> Response:
        data = await run_in_threadpool(metrics.exposition)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def token(request: Request) -> Response:
        asked = (request.headers.get("authorization"), request.path_params["address"], ctx.settings.api_keys)
        try:  # on the loop: a token of local state not due for refresh is a few small file reads (no thread hop)
            status, body = read_token(*asked, runtime.token_at_once, runtime.status_of)
        except WouldBlock:
            status, body = await run_in_threadpool(read_token, *asked, runtime.token, runtime.status_of)
        headers = {"Cache-Control": "no-store"} | ({"WWW-Authenticate": "Bearer"} if status == 401 else {})
        return JSONResponse(body, status_code=status, headers=headers)

    routes = [
        Route("/authorize/{pending_id}", authorize, methods=["GET"]),
        Route("/connector/callback", callback, methods=["GET"]),
        Route(RETURN_PATH, platform_return, methods=["GET"]),
        Route("/v1/installations/{address}/token", token, methods=["GET"]),
        Route("/status", status_route(ctx), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    return _Guard(app, allowed_hosts(ctx.settings.public_url))


def status_route(ctx: ServiceContext) -> Callable[[Request], Awaitable[Response]]:
    """`GET /status`: the status of the API key's tenants from state (read in a worker thread: no provider is
    asked, but the state and the sealed credentials are read)."""

    async def status(request: Request) -> Response:
        asked = (request.headers.get("authorization"), ctx.settings.api_keys, request.query_params.get("format"),
                 request.headers.get("accept", ""))
        code, media, body = await run_in_threadpool(read_status, *asked, functools.partial(status_page, ctx.ws))
        headers = (_HEADERS if media == HTML else {"Cache-Control": "no-store"}) | {"Vary": "Accept, Authorization"}
        if code == 401:
            headers |= {"WWW-Authenticate": "Bearer"}
        return Response(body, status_code=code, media_type=media, headers=headers)

    return status


def allowed_hosts(public_url: str) -> frozenset[str]:
    """Host header values this service answers to: its public URL's host (the proxy passes it on) and loopback."""
    host = (urlsplit(public_url).hostname or "").lower()
    return frozenset({host, "127.0.0.1", "localhost", "::1", "[::1]"})


class _Guard:
    """Before the app: a Host not ours (400), a body too large (413), an unknown method on any route (405 from the
    router); a request cut off by the end of the grace period after SIGTERM: 503, not uvicorn's 500; after it: one
    log line per request."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts
        self.log = logging.getLogger(LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _hostname(headers.get("host", ""))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if scope["path"] not in ("/healthz", "/metrics") and host not in self.hosts:
                await PlainTextResponse("unknown host\n", status_code=400)(scope, receive, sending)
            elif _too_long(headers.get("content-length")) or "transfer-encoding" in headers:
                await PlainTextResponse("request body too large\n", status_code=413)(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        except asyncio.CancelledError:  # the grace period after SIGTERM is over (reconciler.service.server)
            if not status[0]:
                await page(_STOPPING)(scope, receive, sending)
            raise
        finally:
            fields = {
                "method": scope.get("method"), "path": _shown_path(scope["path"]), "status": status[0],
                "ms": round((time.monotonic() - started) * 1000, 1), "client": (scope.get("client") or ("", 0))[0],
            }
            self.log.info("request", extra={"fields": fields})


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _too_long(length: str | None) -> bool:
    try:
        return length is not None and int(length) > MAX_BODY
    except ValueError:
        return True


def _shown_path(path: str) -> str:
    """The path as logged: a link's pending id is shown (an address and a digest, no secret), nothing else varies."""
    return path[:300]
