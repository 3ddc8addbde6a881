"""The sandbox provider's routes: which request reaches which `Provider` call, and the answer it gets.

Routes (see docs/sandbox.md):
  GET  /oauth2/authorize                      Azure DevOps OAuth consent page (response_type=Assertion)
  POST /oauth2/token                          assertion / refresh_token grants, capitalised Error keys
  POST /oauth2/revoke                         RFC 7009 revocation of a grant's token (Azure DevOps OAuth apps)
  GET  /<tenant>/oauth2/v2.0/authorize        Entra ID consent page (code + PKCE S256)
  POST /<tenant>/oauth2/v2.0/token            authorization_code / refresh_token grants
  GET  /<tenant>/v2.0/adminconsent            Entra ID admin consent page (for the whole directory)
  POST /oauth2/consent                        the consent page's Approve / Deny form
  GET  /v1.0/applications(appId='…')          Microsoft Graph: an app registration (app-only token)
  GET  /v1.0/servicePrincipals(appId='…')     Microsoft Graph: Azure DevOps's delegated permissions
  GET  /<org>/_apis/connectionData            organization check (any valid token)
  GET  /<org>/_apis/projects/<project>        project check (needs vso.project or broader)
  /_sandbox/...                               admin: apps, organizations, grants, narrower grants, revoke, expire, faults
Owns: the route table, the consent page, which fault queue a request draws from, and the error bodies of each OAuth
dialect. Must not: speak HTTP itself (the server sends the `Answer`: `app`) or hold provider rules (`provider`).
"""

from __future__ import annotations

import html
import json
from typing import Any

from reconciler.sandbox.model import ENTRA, LEGACY, Fault, OAuthFailure, is_graph
from reconciler.sandbox.provider import Provider
from reconciler.sandbox.wire import Answer, Request

__all__ = ["ProviderRoutes"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sandbox sign-in — {title}</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}} li{{margin:.2em 0}}
button{{font-size:1.1em;padding:.4em 1.4em;margin-right:1em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""

_NOT_FOUND = {"message": "not found"}


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


def _error_page(message: str) -> Answer:
    return Answer(400, page=_PAGE.format(title="Sign-in error", body=f"<p>{html.escape(message)}</p>"))


def _json_object(body: bytes) -> dict[str, Any]:
    data = json.loads(body) if body else {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _token_flavour(request: Request) -> str | None:
    """The OAuth dialect of a token request; None for any other request."""
    parts = request.parts
    if request.method != "POST":
        return None
    if parts == ("oauth2", "token"):
        return LEGACY
    return ENTRA if len(parts) == 4 and parts[1:] == ("oauth2", "v2.0", "token") else None


def _api_organization(request: Request) -> str | None:
    """The organization a REST check (`GET /<org>/_apis/...`) is about; None for any other request."""
    parts = request.parts
    if request.method == "GET" and len(parts) >= 3 and parts[1] == "_apis" and parts[0] != "_sandbox":
        return parts[0]
    return None


def _oauth_error(flavour: str, failure: OAuthFailure) -> Answer:
    """A refusal in the dialect's words: capitalised keys for Azure DevOps OAuth, Entra ID's AADSTS body."""
    if flavour == LEGACY:
        return Answer(failure.status, {"Error": failure.error, "ErrorDescription": failure.description})
    return Answer(
        failure.status,
        {
            "error": failure.error,
            "error_description": failure.description,
            "error_codes": [failure.aadsts] if failure.aadsts else [],
            "trace_id": "00000000-0000-0000-0000-000000000000",
        },
    )


class ProviderRoutes:
    """The provider side of one sandbox server: the two OAuth dialects, the REST checks and the admin API."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def next_fault(self, request: Request) -> Fault | None:
        """The queued fault this request draws: token requests from `token`, REST checks from `api` (for their
        organization); revocation, consent and admin requests take none."""
        if _token_flavour(request) is not None:
            return self.provider.next_fault("token")
        organization = _api_organization(request)
        return None if organization is None else self.provider.next_fault("api", organization)

    @staticmethod
    def fault_body(fault: Fault) -> object:
        """The JSON body of a status fault's answer."""
        return {"message": "sandbox fault"}

    def answer(self, request: Request, fault: Fault | None = None) -> Answer:
        """The answer to a request (`fault`: the one it drew, when it lets the request be carried out)."""
        if request.method == "GET":
            return self._get(request)
        if request.method != "POST":
            return Answer(405, {"message": "method not allowed"})
        try:
            return self._post(request, fault)
        except (ValueError, KeyError) as exc:
            return Answer(400, {"message": f"bad request: {exc}"})

    def _get(self, request: Request) -> Answer:
        parts = request.parts
        if parts == ("oauth2", "authorize"):
            return self._authorize(LEGACY, request)
        if len(parts) == 4 and parts[1:] == ("oauth2", "v2.0", "authorize"):
            return self._authorize(ENTRA, request)
        if len(parts) == 3 and parts[1:] == ("v2.0", "adminconsent"):
            return self._admin_consent(request)
        if is_graph(parts):
            return Answer(*self.provider.graph(request.headers.get("authorization"), parts))
        organization = _api_organization(request)
        if organization is not None:
            status, body = self.provider.api(request.headers.get("authorization"), organization, "/".join(parts[2:]))
            return Answer(status, page=body) if isinstance(body, str) else Answer(status, body)
        if parts == ("_sandbox", "grants"):
            return Answer(200, self.provider.live_grants())
        if parts == ("_sandbox", "health"):
            return Answer(200, {"ok": True})
        return Answer(404, _NOT_FOUND)

    def _post(self, request: Request, fault: Fault | None) -> Answer:
        parts = request.parts
        flavour = _token_flavour(request)
        if flavour is not None:
            return self._token(flavour, request, fault)
        if parts == ("oauth2", "revoke"):
            return self._revoke(request)
        if parts == ("oauth2", "consent"):
            form = request.form()
            try:
                location = self.provider.decide(form.get("consent", ""), form.get("decision") == "approve")
            except ValueError as exc:
                return _error_page(str(exc))
            return Answer(302, location=location)
        if parts[:1] == ("_sandbox",):
            return self._admin(parts[1:], _json_object(request.body))
        return Answer(404, _NOT_FOUND)

    def _authorize(self, flavour: str, request: Request) -> Answer:
        try:
            consent = self.provider.begin_consent(flavour, dict(request.params))
        except ValueError as exc:
            return _error_page(str(exc))
        if flavour == ENTRA and consent.app.sign_in_audience == "AzureADMyOrg" and request.parts[0] != consent.app.tenant:
            return _error_page(f"AADSTS50194: Application '{consent.app.client_id}' is not configured as a "
                               "multi-tenant application; use a tenant-specific endpoint.")
        refused = self.provider.refuse_for_admin(consent)
        if refused is not None:
            return Answer(302, location=refused)
        return Answer(200, page=_consent_page(self.provider, consent.id))

    def _admin_consent(self, request: Request) -> Answer:
        try:
            consent = self.provider.begin_admin_consent(dict(request.params))
        except ValueError as exc:
            return _error_page(str(exc))
        return Answer(200, page=_consent_page(self.provider, consent.id))

    def _token(self, flavour: str, request: Request, fault: Fault | None) -> Answer:
        withhold = fault is not None and fault.kind == "no-refresh-token"
        try:
            if flavour == LEGACY:
                body = self.provider.legacy_token(request.form(), withhold_refresh=withhold)
            else:
                body = self.provider.entra_token(request.form(), withhold_refresh=withhold, tenant=request.parts[0])
        except OAuthFailure as failure:
            return _oauth_error(flavour, failure)
        return Answer(200, body)

    def _revoke(self, request: Request) -> Answer:
        """Revocation takes no queued fault: faults are scripted for the token requests that follow."""
        try:
            return Answer(200, self.provider.legacy_revoke(request.form()))
        except OAuthFailure as failure:
            return _oauth_error(LEGACY, failure)

    def _admin(self, parts: tuple[str, ...], data: dict[str, Any]) -> Answer:
        provider = self.provider
        if parts == ("apps",):
            return Answer(201, {"client_id": provider.register_app(data).client_id})
        if parts == ("orgs",):
            provider.register_org(str(data["organization"]), [str(p) for p in data.get("projects", [])])
            return Answer(201, {"organization": data["organization"]})
        if len(parts) == 3 and parts[0] == "apps" and parts[2] == "grant-only":
            provider.set_grant_only(parts[1], data.get("scopes"))
            return Answer(200, {"client_id": parts[1]})
        if len(parts) == 3 and parts[0] == "apps" and parts[2] == "expire-secret":
            provider.expire_secret(parts[1], bool(data.get("expired", True)))
            return Answer(200, {"client_id": parts[1]})
        if len(parts) == 3 and parts[0] == "apps" and parts[2] == "rotate-secret":
            provider.rotate_secret(parts[1], str(data["client_secret"]))
            return Answer(200, {"client_id": parts[1]})
        if parts == ("revoke",):
            return Answer(200, {"revoked": provider.revoke(data.get("grant_id"), data.get("client_id"))})
        if parts == ("consent-policy",):
            return Answer(200, provider.set_consent_policy(data))
        if parts == ("faults",):
            endpoint = str(data["endpoint"])
            faults = [Fault.parse(f) for f in [*data.get("statuses", []), *data.get("faults", [])]]
            if data.get("clear"):
                provider.clear_faults(endpoint)
            return Answer(200, {"queued": provider.add_faults(endpoint, faults * int(data.get("repeat", 1)))})
        if parts == ("expire",):
            return Answer(200, {"expired": provider.expire(data.get("grant_id"))})
        return Answer(404, _NOT_FOUND)
