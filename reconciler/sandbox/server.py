"""The sandbox provider over real HTTP on loopback: Azure DevOps OAuth, Entra ID, the REST checks, and an admin API.

Routes (see docs/sandbox.md):
  GET  /oauth2/authorize                      Azure DevOps OAuth consent page (response_type=Assertion)
  POST /oauth2/token                          assertion / refresh_token grants, capitalised Error keys
  GET  /<tenant>/oauth2/v2.0/authorize        Entra ID consent page (code + PKCE S256)
  POST /<tenant>/oauth2/v2.0/token            authorization_code / refresh_token grants
  POST /oauth2/consent                        the consent page's Approve / Deny form
  GET  /<org>/_apis/connectionData            organization check (any valid token)
  GET  /<org>/_apis/projects/<project>        project check (needs vso.project or broader)
  /_sandbox/...                               admin: apps, organizations, grants, narrower grants, revoke, expire
Must not: be imported by the real flows.
"""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from reconciler.sandbox.provider import ENTRA, LEGACY, OAuthFailure, Provider

__all__ = ["SandboxServer", "SeedError", "load_seed"]

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "reconciler-sandbox"
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits for the client's delayed
    # ACK (~40 ms) on every keep-alive request. Real services answer at once, and so does the sandbox.
    disable_nagle_algorithm = True
    provider: Provider  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: requests carry secrets
        return

    # -- plumbing -------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

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

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if parts == ["oauth2", "authorize"]:
            return self._authorize(LEGACY, params)
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "authorize"]:
            return self._authorize(ENTRA, params)
        if len(parts) >= 3 and parts[1] == "_apis" and parts[0] != "_sandbox":
            fault = self.provider.next_fault("api")
            if fault is not None:
                return self._fault(fault)
            status, body = self.provider.api(self.headers.get("Authorization"), parts[0], "/".join(parts[2:]))
            return self._html(status, body) if isinstance(body, str) else self._json(status, body)
        if parts == ["_sandbox", "grants"]:
            return self._json(200, self.provider.live_grants())
        if parts == ["_sandbox", "health"]:
            return self._json(200, {"ok": True})
        self._json(404, {"message": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        try:
            if parts == ["oauth2", "token"]:
                return self._token(self.provider.legacy_token, LEGACY)
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

    def _fault(self, status: int) -> None:
        if status == 203:
            return self._html(203, "<html><body>Sign in</body></html>")
        headers = {"Retry-After": "1"} if status == 429 else {}
        self._send(status, json.dumps({"message": "sandbox fault"}).encode(), "application/json", headers)

    def _authorize(self, flavour: str, params: dict[str, str]) -> None:
        try:
            consent = self.provider.begin_consent(flavour, params)
        except ValueError as exc:
            return self._error_page(str(exc))
        self._html(200, _consent_page(self.provider, consent.id))

    def _token(self, handler: Any, flavour: str) -> None:
        fault = self.provider.next_fault("token")
        if fault is not None:
            self._body()
            return self._fault(fault)
        try:
            body = handler(self._form())
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
            provider.add_fault(str(data["endpoint"]), [int(s) for s in data["statuses"]])
            return self._json(200, {"queued": len(data["statuses"])})
        if parts == ["expire"]:
            return self._json(200, {"expired": provider.expire(data.get("grant_id"))})
        self._json(404, {"message": "not found"})


class SandboxServer:
    """A sandbox provider listening on `host:port` (port 0: any free port), served from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, provider: Provider | None = None) -> None:
        self.provider = provider or Provider()
        handler = type("Handler", (_Handler,), {"provider": self.provider})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_seed(provider: Provider, path: Path) -> None:
    """Register the apps and organizations listed in a seed file (YAML or JSON; `${NAME}` is taken from the
    environment; see docs/sandbox.md)."""
    import os

    import yaml
    from pydantic import BaseModel, ConfigDict, ValidationError

    class SeedApp(BaseModel):
        model_config = ConfigDict(extra="forbid")
        client_id: str
        client_secret: str
        flavour: Literal["azure-devops-oauth", "entra-id"] = "azure-devops-oauth"
        redirect_uris: list[str]
        scopes: list[str] | None = None
        grant_only: list[str] | None = None

    class Seed(BaseModel):
        model_config = ConfigDict(extra="forbid")
        apps: list[SeedApp] = []
        organizations: dict[str, list[str]] = {}

    try:
        seed = Seed.model_validate(yaml.safe_load(os.path.expandvars(path.read_text())) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: cannot read the seed file ({type(exc).__name__})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SeedError(f"{path}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    for app in seed.apps:
        provider.register_app(app.model_dump())
    for organization, projects in seed.organizations.items():
        provider.register_org(organization, projects)


class SeedError(Exception):
    """The seed file is unreadable or does not have the documented shape."""
