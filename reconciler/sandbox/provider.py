"""The sandbox provider: registered apps, organizations, consents, codes and token grants, behind one lock.

Owns: the admin switches (apps, organizations, narrower grants, secret rotation, revocation, expiry, faults), the
consent rules of the two OAuth dialects as the real services apply them (exact redirect match for Azure DevOps
OAuth; code + PKCE S256 for Entra ID), and the REST checks a token must pass; the token endpoints are
`tokens`, the records `model`. Thread-safe; no HTTP here (see `routes`). A documented test double for demos and
tests — never used by the real flows.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from typing import Any
from urllib.parse import urlencode

from reconciler.catalog.files import load_catalog
from reconciler.sandbox.directory import DirectoryEndpoints
from reconciler.sandbox.model import (
    ADO_RESOURCE,
    ENTRA,
    ENTRA_EXTRA,
    FAULT_ENDPOINTS,
    LEGACY,
    SANDBOX_DIRECTORY,
    App,
    Code,
    Consent,
    Fault,
    Grant,
    OAuthFailure,
    now,
    same_redirect,
)
from reconciler.sandbox.tokens import TokenEndpoints

__all__ = ["Provider"]

PROJECT_SCOPES = {"vso.project", "vso.project_write", "vso.project_manage"}
CODE_LIFETIME = dt.timedelta(minutes=5)


class Provider(TokenEndpoints, DirectoryEndpoints):
    """All sandbox state, guarded by one lock (token endpoints: `TokenEndpoints`; admin consent and Graph:
    `DirectoryEndpoints`)."""

    def __init__(self, user: str = "sandbox.user@example.com") -> None:
        self.lock = threading.Lock()
        self.user = user
        self.catalog = load_catalog().connectors["microsoft-azure-devops"]
        self.apps: dict[str, App] = {}
        self.orgs: dict[str, set[str]] = {}
        self.consents: dict[str, Consent] = {}
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}
        self.by_access: dict[str, Grant] = {}
        self.by_refresh: dict[str, Grant] = {}
        self.faults: dict[str, list[Fault]] = {}  # endpoint (FAULT_ENDPOINTS) -> faults to answer the next requests with
        self.issued: list[str] = []  # every code, token and verifier seen: tests search outputs for them
        self._directory_init()

    # -- admin ------------------------------------------------------------------------------------------------

    def register_app(self, data: dict[str, Any]) -> App:  # a JSON object
        flavour = str(data.get("flavour", LEGACY))
        if flavour not in (LEGACY, ENTRA):
            raise ValueError(f"flavour must be {LEGACY} or {ENTRA}")
        uris = data.get("redirect_uris") or []
        app = App(
            client_id=str(data["client_id"]),
            client_secret=str(data["client_secret"]),
            flavour=flavour,
            redirect_uris=[str(u) for u in uris],
            scopes=list(data["scopes"]) if data.get("scopes") else None,
            grant_only=list(data["grant_only"]) if data.get("grant_only") else None,
            tenant=str(data.get("tenant", SANDBOX_DIRECTORY)),
            sign_in_audience=str(data.get("sign_in_audience", "AzureADMultipleOrgs")),
        )
        with self.lock:
            self.apps[app.client_id] = app
        return app

    def register_org(self, organization: str, projects: list[str]) -> None:
        with self.lock:
            self.orgs.setdefault(organization, set()).update(projects)

    def set_grant_only(self, client_id: str, scopes: list[str] | None) -> None:
        with self.lock:
            self.apps[client_id].grant_only = scopes

    def rotate_secret(self, client_id: str, new_secret: str) -> None:
        with self.lock:
            app = self.apps[client_id]
            app.previous_secrets.append(app.client_secret)
            app.client_secret = new_secret

    def expire_secret(self, client_id: str, expired: bool = True) -> None:
        """The app's client secret passes (or, with `expired` False, is back before) its expiry date."""
        with self.lock:
            self.apps[client_id].secret_expired = expired

    def revoke(self, grant_id: str | None = None, client_id: str | None = None) -> int:
        """Revoke one grant, or every grant of a client (or all): both its tokens stop working."""
        with self.lock:
            hits = [
                g
                for g in self.grants.values()
                if (grant_id is None or g.id == grant_id) and (client_id is None or g.app.client_id == client_id)
            ]
            for grant in hits:
                grant.revoked = True
            return len(hits)

    def legacy_revoke(self, form: dict[str, str], **_: object) -> dict[str, object]:
        """RFC 7009 revocation for Azure DevOps OAuth apps: the client authenticates with its secret as
        `client_assertion`; the grant that issued `token` (access or refresh) is revoked. An unknown token is
        answered 200 as the RFC says (nothing to revoke)."""
        if not form.get("client_assertion") or not form.get("token"):
            raise OAuthFailure("invalid_request", "missing field(s): client_assertion, token")
        with self.lock:
            app = self.legacy_client(form["client_assertion"])
            for grant in self.grants.values():
                if grant.app is app and form["token"] in (grant.access_token, grant.refresh_token):
                    grant.revoked = True
            return {}

    def expire(self, grant_id: str | None = None) -> int:
        """Make access tokens expired now (their refresh tokens still work)."""
        with self.lock:
            hits = [g for g in self.grants.values() if grant_id is None or g.id == grant_id]
            for grant in hits:
                grant.access_expires_at = now() - dt.timedelta(seconds=1)
            return len(hits)

    def add_fault(self, endpoint: str, statuses: list[int]) -> None:
        """Answer the next requests to `endpoint` ("token" or "api") with these HTTP statuses."""
        self.add_faults(endpoint, [Fault("status", status=int(s)) for s in statuses])

    def add_faults(self, endpoint: str, faults: list[Fault]) -> int:
        """Answer the next requests to `endpoint` (one of `FAULT_ENDPOINTS`: the OAuth token endpoints, the REST
        checks, the Cyclr API) with these faults, one request each; returns how many are queued."""
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(FAULT_ENDPOINTS)}")
        with self.lock:
            queue = self.faults.setdefault(endpoint, [])
            queue.extend(faults)
            return len(queue)

    def clear_faults(self, endpoint: str) -> None:
        with self.lock:
            self.faults.pop(endpoint, None)

    def next_fault(self, endpoint: str, organization: str | None = None) -> Fault | None:
        """The first queued fault for this request (an `organization` fault only hits that organization's calls)."""
        with self.lock:
            queue = self.faults.get(endpoint) or []
            for index, fault in enumerate(queue):
                if fault.organization is None or fault.organization == organization:
                    return queue.pop(index)
            return None

    def live_grants(self) -> list[dict[str, object]]:
        with self.lock:
            return [g.public() for g in self.grants.values()]

    # -- authorize ----------------------------------------------------------------------------------------------

    def begin_consent(self, flavour: str, params: dict[str, str]) -> Consent:
        """Validate an authorization request; a refusal that cannot be redirected raises ValueError."""
        app = self.apps.get(params.get("client_id", ""))
        if app is None or app.flavour != flavour:
            raise ValueError("unknown client_id for this endpoint")
        redirect = params.get("redirect_uri", "")
        if not self._redirect_allowed(app, redirect):
            raise ValueError("redirect_uri does not match the application's registered callback")
        if "state" not in params:
            raise ValueError("state is required")
        if flavour == LEGACY:
            if params.get("response_type") != "Assertion":
                raise ValueError("response_type must be Assertion")
            requested = params.get("scope", "").split()
            challenge, offline = None, True
        else:
            if params.get("response_type") != "code":
                raise ValueError("response_type must be code")
            if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
                raise ValueError("PKCE with code_challenge_method=S256 is required")
            raw = params.get("scope", "").split()
            offline = "offline_access" in raw
            bare = [s for s in raw if s not in ENTRA_EXTRA and not s.startswith(ADO_RESOURCE)]
            if bare:  # Entra knows Azure DevOps scopes only with the resource prefix
                raise ValueError(f"AADSTS70011: invalid scope {bare[0]} (expected {ADO_RESOURCE}{bare[0]})")
            requested = [s.removeprefix(ADO_RESOURCE) for s in raw if s not in ENTRA_EXTRA]
            challenge = params["code_challenge"]
        consent = Consent(secrets.token_urlsafe(16), app, params["state"], requested, redirect, challenge, offline)
        with self.lock:
            self.consents[consent.id] = consent
        return consent

    def invalid_scopes(self, consent: Consent) -> list[str]:
        allowed = self.catalog.closure(consent.app.scopes) if consent.app.scopes else set(self.catalog.scopes)
        return [s for s in consent.scopes if s not in allowed] or ([] if consent.scopes else ["(none)"])

    def decide(self, consent_id: str, approve: bool) -> str:
        """The URL the browser is sent to after the user clicks Approve or Deny."""
        with self.lock:
            consent = self.consents.pop(consent_id, None)
        if consent is None:
            raise ValueError("this consent request is unknown or was already answered")
        if not approve:
            return _with_query(consent.redirect_uri, error="access_denied", state=consent.state)
        if consent.admin:
            return _with_query(consent.redirect_uri, **self.record_admin_consent(consent))
        bad = self.invalid_scopes(consent)
        if bad:
            return _with_query(
                consent.redirect_uri, error="InvalidScope", error_description=" ".join(bad), state=consent.state
            )
        granted = consent.scopes
        if consent.app.grant_only is not None:
            granted = [s for s in consent.scopes if s in consent.app.grant_only]
        code = Code(
            value=secrets.token_urlsafe(32),
            app=consent.app,
            scopes=granted,
            redirect_uri=consent.redirect_uri,
            code_challenge=consent.code_challenge,
            offline=consent.offline,
            expires_at=now() + CODE_LIFETIME,
        )
        with self.lock:
            self.codes[code.value] = code
            self.issued.append(code.value)
        return _with_query(consent.redirect_uri, code=code.value, state=consent.state)

    def refuse_for_admin(self, consent: Consent) -> str | None:
        """Where an Entra sign-in asking for permissions only an administrator may consent to (and none has) is sent
        back to at once: `consent_required`, AADSTS65001, as Entra answers when user consent is not allowed."""
        blocked = self.needs_admin(consent)
        if not blocked:
            return None
        with self.lock:
            self.consents.pop(consent.id, None)
        return _with_query(
            consent.redirect_uri,
            error="consent_required",
            error_description=f"AADSTS65001: The user or administrator has not consented to use the application "
            f"with ID '{consent.app.client_id}'. Admin consent is required for: {' '.join(blocked)}.",
            state=consent.state,
        )

    def begin_admin_consent(self, params: dict[str, str]) -> Consent:
        consent = self.admin_consent_request(params)
        with self.lock:
            self.consents[consent.id] = consent
        return consent

    def consent(self, consent_id: str) -> Consent | None:
        with self.lock:
            return self.consents.get(consent_id)

    # -- REST ---------------------------------------------------------------------------------------------------

    def api(self, authorization: str | None, organization: str, resource: str) -> tuple[int, object]:
        """(status, body) of a REST call: body is a dict for JSON, a str for an HTML page."""
        token = authorization.split(" ", 1)[1] if authorization and authorization.startswith("Bearer ") else None
        with self.lock:
            grant = self.by_access.get(token or "")
            if grant is None or grant.revoked:
                return 401, {"message": "TF400813: The user is not authorized to access this resource."}
            if grant.access_expires_at < now():
                return 203, "<html><body><h1>Sign in to your account</h1></body></html>"
            if organization not in self.orgs:
                return 404, {"message": f"TF200016: The organization {organization} does not exist."}
            granted = self.catalog.closure(grant.scopes)
            if resource == "connectionData":
                return 200, {
                    "authenticatedUser": {"id": grant.id, "providerDisplayName": grant.user},
                    "instanceId": organization,
                }
            project = resource.removeprefix("projects/")
            if not granted & PROJECT_SCOPES:
                return 401, {"message": "VS403403: the token's scopes do not allow reading projects."}
            if project not in self.orgs[organization]:
                return 404, {"message": f"TF200016: The project {project} does not exist."}
            return 200, {"id": f"{organization}/{project}", "name": project, "state": "wellFormed"}

    # -- helpers ------------------------------------------------------------------------------------------------

    def _redirect_allowed(self, app: App, uri: str) -> bool:
        return any(same_redirect(app, registered, uri) for registered in app.redirect_uris)


def _with_query(uri: str, **params: str) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)
