"""The sandbox provider over real HTTP on loopback: Azure DevOps OAuth, Entra ID, the REST checks, and an admin API.

Routes (see docs/sandbox.md):
  GET  /oauth2/authorize                      Azure DevOps OAuth consent page (response_type=Assertion)
  POST /oauth2/token                          assertion / refresh_token grants, capitalised Error keys
  POST /oauth2/revoke                         RFC 7009 revocation of a grant's token (Azure DevOps OAuth apps)
  GET  /<tenant>/oauth2/v2.0/authorize        Entra ID consent page (code + PKCE S256)
  POST /<tenant>/oauth2/v2.0/token            authorization_code / refresh_token grants
  POST /oauth2/consent                        the consent page's Approve / Deny form
  GET  /<org>/_apis/connectionData            organization check (any valid token)
  GET  /<org>/_apis/projects/<project>        project check (needs vso.project or broader)
  /_sandbox/...                               admin: apps, organizations, grants, narrower grants, revoke, expire, faults
  /oauth/token, /v1.0/..., /connectorauth/..., /connector/callback, /_sandbox/cyclr/...   the Cyclr API (`cyclr_routes`)
Must not: be imported by the real flows.
"""

from __future__ import annotations

import html
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from reconciler.sandbox.cyclr import CyclrSandbox
from reconciler.sandbox.cyclr_routes import CyclrRoutes, Request
from reconciler.sandbox.model import ENTRA, LEGACY, Fault, OAuthFailure
from reconciler.sandbox.provider import Provider

__all__ = ["SandboxServer"]

HANG_LIMIT = 120.0  # seconds a hung connection is held at most (the client normally gives up long before)

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox sign-in — {title}</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}} li{{margin:.2em 0}}
button{{font-size:1.1em;padding:.4em 1.4em;margin-right:1em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _consent_page(provider: Provider, consent_id: str) -> str:
    consent = provider.consent(consent_id)
    assert consent is not None
    names = provider.catalog.scopes
    items = "".join(
        f"<li><code>{html.escape(s)}</code> — {html.escape(names[s].name if s in names else 'unknown scope')}</li>"
        for s in consent.scopes
    )
    body = (
        f"<p>Signed in as <b>{html.escape(provider.user)}</b>.</p>"
        f"<p>The application <code>{html.escape(consent.app.client_id)}</code> asks for access to:</p><ul>{items}</ul>"
        f'<form method="post" action="/oauth2/consent"><input type="hidden" name="consent" value="{consent.id}">'
        '<button id="approve" name="decision" value="approve" type="submit">Approve</button>'
        '<button id="deny" name="decision" value="deny" type="submit">Deny</button></form>'
        "<p><small>reconciler sandbox — a local stand-in for the Microsoft sign-in page.</small></p>"
    )
    return _PAGE.format(title="Authorize application", body=body)


class _Headers(dict):  # type: ignore[type-arg]
    """Request headers by lower-cased name (the handlers only `get` them)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "reconciler-sandbox"
    disable_nagle_algorithm = True  # a response is one write; never wait for the client's delayed ACK
    raw_requestline: bytes  # read by handle_one_request before it calls parse_request
    provider: Provider  # set on the subclass made per server
    cyclr: CyclrRoutes  # likewise
    delay = 0.0  # seconds to hold the next answer back (the "slow" fault)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests carry secrets
        return

    # -- plumbing -------------------------------------------------------------------------------------------

    def parse_request(self) -> bool:
        """The request line and headers (HTTP/1.0 and 1.1), read without the standard library's e-mail parser,
        which cost more than any route: the sandbox must not be what limits a benchmark of its clients."""
        self.command = None  # type: ignore[assignment]
        self.request_version = version = "HTTP/0.9"
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        version = words[2]
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or not name.strip():
                self.send_error(400, "Bad header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        return True

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        if self.delay:
            self.server.stopping.wait(self.delay)  # type: ignore[attr-defined]
            self.delay = 0.0
        lines = [
            f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            *(f"{key}: {value}" for key, value in (headers or {}).items()),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (the "slow" fault)
            self.close_connection = True

    def _json(self, status: int, data: object) -> None:
        self._send(status, json.dumps(data).encode(), "application/json; charset=utf-8")

    def _html(self, status: int, page: str) -> None:
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _error_page(self, message: str) -> None:
        self._html(400, _PAGE.format(title="Sign-in error", body=f"<p>{html.escape(message)}</p>"))

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _form(self) -> dict[str, str]:
        return dict(parse_qsl(self._body().decode("utf-8", "replace"), keep_blank_values=True))

    def _json_body(self) -> dict[str, Any]:
        raw = self._body()
        data = json.loads(raw) if raw else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    # -- routes ---------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if self.cyclr.claims(tuple(parts)):
            return self._cyclr(tuple(parts), params)
        if parts == ["oauth2", "authorize"]:
            return self._authorize(LEGACY, params)
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "authorize"]:
            return self._authorize(ENTRA, params)
        if len(parts) >= 3 and parts[1] == "_apis" and parts[0] != "_sandbox":
            fault = self.provider.next_fault("api", parts[0])
            if fault is not None and self._fault(fault):
                return None
            status, body = self.provider.api(self.headers.get("Authorization"), parts[0], "/".join(parts[2:]))
            return self._html(status, body) if isinstance(body, str) else self._json(status, body)
        if parts == ["_sandbox", "grants"]:
            return self._json(200, self.provider.live_grants())
        if parts == ["_sandbox", "health"]:
            return self._json(200, {"ok": True})
        self._json(404, {"message": "not found"})

    def do_POST(self) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        if self.cyclr.claims(tuple(parts)):
            return self._cyclr(tuple(parts), {})
        try:
            if parts == ["oauth2", "token"]:
                return self._token(self.provider.legacy_token, LEGACY)
            if parts == ["oauth2", "revoke"]:
                return self._revoke()
            if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                return self._token(self.provider.entra_token, ENTRA)
            if parts == ["oauth2", "consent"]:
                form = self._form()
                try:
                    location = self.provider.decide(form.get("consent", ""), form.get("decision") == "approve")
                except ValueError as exc:
                    return self._error_page(str(exc))
                return self._redirect(location)
            if parts[:1] == ["_sandbox"]:
                return self._admin(parts[1:], self._json_body())
        except (ValueError, KeyError) as exc:
            return self._json(400, {"message": f"bad request: {exc}"})
        self._json(404, {"message": "not found"})

    def do_PUT(self) -> None:
        self._other_method()

    def do_DELETE(self) -> None:
        self._other_method()

    def _other_method(self) -> None:
        url = urlsplit(self.path)
        parts = tuple(unquote(p) for p in url.path.split("/") if p)
        if self.cyclr.claims(parts):
            return self._cyclr(parts, dict(parse_qsl(url.query, keep_blank_values=True)))
        self._body()
        self._json(405, {"message": "method not allowed"})

    def _cyclr(self, parts: tuple[str, ...], params: dict[str, str]) -> None:
        """A Cyclr request: its queued fault if any (a status answer in Cyclr's `{"Message"}`), else its route."""
        request = Request(self.command, parts, params, self.headers, self._body())  # type: ignore[arg-type]
        account = self.headers.get("X-Cyclr-Account")
        fault = next(filter(None, (self.provider.next_fault(q, account) for q in self.cyclr.fault_queues(request))), None)
        if fault is not None and self._fault(fault, {"Message": fault.message or "sandbox fault"}):
            return None
        answer = self.cyclr.answer(request)
        if answer.location is not None:
            return self._send(answer.status, b"", "text/plain", {"Location": answer.location, **answer.headers})
        body = b"" if answer.body is None else json.dumps(answer.body).encode()
        self._send(answer.status, body, "application/json; charset=utf-8", answer.headers)

    def _fault(self, fault: Fault, body: object = None) -> bool:
        """Misbehave as `fault` says (a status answer's JSON `body`); False when the request is then to be answered
        as usual (slow, or the answer is to be altered by the handler)."""
        stopping: threading.Event = self.server.stopping  # type: ignore[attr-defined]
        if fault.kind == "slow":
            self.delay = fault.seconds  # carried out now, answered late (see `_send`)
            return False
        if fault.kind == "no-refresh-token":
            return False
        if fault.kind == "hang":
            self._hang(stopping)
            return True
        if fault.kind == "malformed-json":
            self._send(200, b'{"access_token": "sbx.at.', "application/json; charset=utf-8")
            return True
        if fault.kind == "signin-page" or fault.status == 203:
            self._html(203, "<html><head><title>Sign In</title></head><body><h1>Sign in to your account</h1></body></html>")
            return True
        headers = {"Retry-After": fault.retry_after} if fault.status == 429 else {}
        error = body if body is not None else {"message": "sandbox fault"}
        self._send(fault.status, json.dumps(error).encode(), "application/json", headers)
        return True

    def _hang(self, stopping: threading.Event) -> None:
        """Answer nothing: hold the connection until the client hangs up (or the server stops)."""
        self.close_connection = True
        deadline = time.monotonic() + HANG_LIMIT
        while time.monotonic() < deadline and not stopping.is_set():
            ready, _, _ = select.select([self.connection], [], [], 0.1)
            if ready:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client gave up
                except OSError:
                    return
                time.sleep(0.1)

    def _authorize(self, flavour: str, params: dict[str, str]) -> None:
        try:
            consent = self.provider.begin_consent(flavour, params)
        except ValueError as exc:
            return self._error_page(str(exc))
        self._html(200, _consent_page(self.provider, consent.id))

    def _token(self, handler: Any, flavour: str) -> None:
        form = self._form()
        fault = self.provider.next_fault("token")
        if fault is not None and self._fault(fault):
            return None
        try:
            body = handler(form, withhold_refresh=fault is not None and fault.kind == "no-refresh-token")
        except OAuthFailure as failure:
            if flavour == LEGACY:
                return self._json(failure.status, {"Error": failure.error, "ErrorDescription": failure.description})
            return self._json(
                failure.status,
                {
                    "error": failure.error,
                    "error_description": failure.description,
                    "error_codes": [failure.aadsts] if failure.aadsts else [],
                    "trace_id": "00000000-0000-0000-0000-000000000000",
                },
            )
        self._json(200, body)

    def _revoke(self) -> None:
        """Revocation takes no queued fault: faults are scripted for the token requests that follow."""
        try:
            self._json(200, self.provider.legacy_revoke(self._form()))
        except OAuthFailure as failure:
            self._json(failure.status, {"Error": failure.error, "ErrorDescription": failure.description})

    def _admin(self, parts: list[str], data: dict[str, Any]) -> None:
        provider = self.provider
        if parts == ["apps"]:
            app = provider.register_app(data)
            return self._json(201, {"client_id": app.client_id})
        if parts == ["orgs"]:
            provider.register_org(str(data["organization"]), [str(p) for p in data.get("projects", [])])
            return self._json(201, {"organization": data["organization"]})
        if len(parts) == 3 and parts[0] == "apps" and parts[2] == "grant-only":
            provider.set_grant_only(parts[1], data.get("scopes"))
            return self._json(200, {"client_id": parts[1]})
        if len(parts) == 3 and parts[0] == "apps" and parts[2] == "rotate-secret":
            provider.rotate_secret(parts[1], str(data["client_secret"]))
            return self._json(200, {"client_id": parts[1]})
        if parts == ["revoke"]:
            return self._json(200, {"revoked": provider.revoke(data.get("grant_id"), data.get("client_id"))})
        if parts == ["faults"]:
            endpoint = str(data["endpoint"])
            faults = [Fault.parse(f) for f in [*data.get("statuses", []), *data.get("faults", [])]]
            if data.get("clear"):
                provider.clear_faults(endpoint)
            return self._json(200, {"queued": provider.add_faults(endpoint, faults * int(data.get("repeat", 1)))})
        if parts == ["expire"]:
            return self._json(200, {"expired": provider.expire(data.get("grant_id"))})
        self._json(404, {"message": "not found"})


class _Server(ThreadingHTTPServer):
    """One thread per connection; a deep listen backlog so that a benchmark's burst of connections is queued, not
    reset (the standard library's default is 5)."""

    request_queue_size = 256
    daemon_threads = True


class SandboxServer:
    """A sandbox provider and Cyclr API listening on `host:port` (port 0: any free port), served from a background
    thread. `cyclr` is the Cyclr model (see `cyclr`), whose sign-ins consent at this server's provider."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, provider: Provider | None = None) -> None:
        self.provider = provider or Provider()
        self.cyclr = CyclrSandbox(self.provider)
        routes = CyclrRoutes(self.cyclr, "")
        handler = type("Handler", (_Handler,), {"provider": self.provider, "cyclr": routes})
        self.httpd = _Server((host, port), handler)
        routes.service_url = self.url
        self.httpd.stopping = threading.Event()  # type: ignore[attr-defined]  # ends slow and hung answers
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode("ascii") if isinstance(host, bytes | bytearray) else host  # bytes: never for IPv4
        return f"http://{name}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.stopping.set()  # type: ignore[attr-defined]
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
