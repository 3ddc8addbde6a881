"""The sandbox provider's model: registered apps, organizations, consents, codes and token grants.

Owns: the rules of the two OAuth dialects as the real services apply them (exact redirect match and the
assertion token form for Azure DevOps OAuth; code + PKCE S256 and rotating refresh tokens for Entra ID), and the
REST checks a token must pass. Thread-safe; no HTTP here (see `server`). A documented test double for demos and
tests — never used by the real flows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reconciler.catalog.files import load_catalog

__all__ = ["App", "Fault", "Grant", "OAuthFailure", "Provider"]

LEGACY = "azure-devops-oauth"
ENTRA = "entra-id"
ADO_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798/"
ENTRA_EXTRA = ("offline_access", "openid", "profile", "email")
PROJECT_SCOPES = {"vso.project", "vso.project_write", "vso.project_manage"}
PROFILE_SCOPES = {"vso.profile", "vso.profile_write"}
CODE_LIFETIME = dt.timedelta(minutes=5)
ACCESS_LIFETIME = dt.timedelta(seconds=3599)


class OAuthFailure(Exception):
    """A refusal the provider reports to the client: `error` code, description, HTTP status, AADSTS code."""

    def __init__(self, error: str, description: str, status: int = 400, aadsts: int | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.aadsts = error, description, status, aadsts


FAULT_ENDPOINTS = ("token", "api")
FAULT_KINDS = ("status", "signin-page", "slow", "hang", "malformed-json", "no-refresh-token")


@dataclass(frozen=True)
class Fault:
    """How the sandbox misbehaves for one request (see docs/sandbox.md, "Fault switches").

    `status`: that HTTP status with a JSON error body (429 carries `Retry-After: retry_after`); `signin-page`: HTTP
    203 with an HTML sign-in page, as Azure DevOps answers for bad credentials; `slow`: the request is carried out
    at once and its answer sent `seconds` later (a client that gave up by then has lost it); `hang`: no answer at all, the connection held open until the client gives up; `malformed-json`:
    HTTP 200 `application/json` whose body is cut short; `no-refresh-token` (token endpoint): the real answer
    without `refresh_token` (a code exchange issues none; a refresh keeps the current one valid, as RFC 6749 6
    allows)."""

    kind: str
    status: int = 500
    seconds: float = 0.0
    retry_after: str = "1"
    organization: str | None = None  # api faults only: hit only calls for this organization

    @classmethod
    def parse(cls, data: object) -> Fault:
        """A fault from the admin API: an HTTP status (500), a kind ("hang"), or an object with `kind` & co."""
        if isinstance(data, int) or (isinstance(data, str) and data.isdigit()):
            return cls("status", status=int(data))
        if isinstance(data, str):
            data = {"kind": data}
        if not isinstance(data, dict) or data.get("kind", "status") not in FAULT_KINDS:
            raise ValueError(f"a fault is an HTTP status or one of {', '.join(FAULT_KINDS)}")
        organization = data.get("organization")
        return cls(
            kind=str(data.get("kind", "status")),
            status=int(data.get("status", 500)),
            seconds=float(data.get("seconds", 0.0)),
            retry_after=str(data.get("retry_after", "1")),
            organization=str(organization) if organization is not None else None,
        )


@dataclass
class App:
    client_id: str
    client_secret: str
    flavour: str
    redirect_uris: list[str]
    scopes: list[str] | None = None  # registered scopes; None: any catalog scope
    grant_only: list[str] | None = None  # the user consents to these at most (a narrower grant)
    previous_secrets: list[str] = field(default_factory=list)


@dataclass
class Consent:
    id: str
    app: App
    state: str
    scopes: list[str]
    redirect_uri: str
    code_challenge: str | None
    offline: bool


@dataclass
class Code:
    value: str
    app: App
    scopes: list[str]
    redirect_uri: str
    code_challenge: str | None
    offline: bool
    expires_at: dt.datetime
    used: bool = False
    grant: Grant | None = None


@dataclass
class Grant:
    """One authorization: the live access token and refresh token it has issued."""

    id: str
    app: App
    scopes: list[str]
    user: str
    access_token: str
    refresh_token: str | None
    access_expires_at: dt.datetime
    redirect_uri: str
    revoked: bool = False
    refreshes: int = 0

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "client_id": self.app.client_id,
            "flavour": self.app.flavour,
            "scopes": sorted(self.scopes),
            "user": self.user,
            "revoked": self.revoked,
            "access_expires_at": self.access_expires_at.isoformat(),
            "refreshes": self.refreshes,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class Provider:
    """All sandbox state, guarded by one lock."""

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
        self.faults: dict[str, list[Fault]] = {}  # endpoint ("token", "api") -> faults to answer the next requests with
        self.issued: list[str] = []  # every code, token and verifier seen: tests search outputs for them

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
            app = next(
                (a for a in self.apps.values() if a.flavour == LEGACY and a.client_secret == form["client_assertion"]),
                None,
            )
            if app is None:
                raise OAuthFailure("invalid_client", "The client secret is invalid or expired.", 401)
            for grant in self.grants.values():
                if grant.app is app and form["token"] in (grant.access_token, grant.refresh_token):
                    grant.revoked = True
            return {}

    def expire(self, grant_id: str | None = None) -> int:
        """Make access tokens expired now (their refresh tokens still work)."""
        with self.lock:
            hits = [g for g in self.grants.values() if grant_id is None or g.id == grant_id]
            for grant in hits:
                grant.access_expires_at = _now() - dt.timedelta(seconds=1)
            return len(hits)

    def add_fault(self, endpoint: str, statuses: list[int]) -> None:
        """Answer the next requests to `endpoint` ("token" or "api") with these HTTP statuses."""
        self.add_faults(endpoint, [Fault("status", status=int(s)) for s in statuses])

    def add_faults(self, endpoint: str, faults: list[Fault]) -> int:
        """Answer the next requests to `endpoint` ("token" or "api") with these faults, one request each; returns
        how many are queued."""
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
            expires_at=_now() + CODE_LIFETIME,
        )
        with self.lock:
            self.codes[code.value] = code
            self.issued.append(code.value)
        return _with_query(consent.redirect_uri, code=code.value, state=consent.state)

    def consent(self, consent_id: str) -> Consent | None:
        with self.lock:
            return self.consents.get(consent_id)

    # -- token --------------------------------------------------------------------------------------------------

    def legacy_token(self, form: dict[str, str], *, withhold_refresh: bool = False) -> dict[str, object]:
        missing = [
            f
            for f in ("client_assertion_type", "client_assertion", "grant_type", "assertion", "redirect_uri")
            if not form.get(f)
        ]
        if missing:
            raise OAuthFailure("invalid_request", f"missing field(s): {', '.join(missing)}")
        if form["client_assertion_type"] != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            raise OAuthFailure("invalid_request", "client_assertion_type is not jwt-bearer")
        with self.lock:
            app = next(
                (a for a in self.apps.values() if a.flavour == LEGACY and a.client_secret == form["client_assertion"]),
                None,
            )
            if app is None:
                raise OAuthFailure("invalid_client", "The client secret is invalid or expired.", 401)
            grant_type = form["grant_type"]
            if grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                grant = self._redeem(app, form["assertion"], form["redirect_uri"], None, withhold_refresh)
            elif grant_type == "refresh_token":
                grant = self._rotate(app, form["assertion"], form["redirect_uri"], withhold_refresh)
            else:
                raise OAuthFailure("unsupported_grant_type", f"grant_type {grant_type} is not supported")
            body: dict[str, object] = {
                "access_token": grant.access_token,
                "token_type": "jwt-bearer",
                "expires_in": str(int((grant.access_expires_at - _now()).total_seconds())),
                "refresh_token": grant.refresh_token,
                "scope": " ".join([*grant.scopes, "vso.authorization_grant"]),
            }
            if withhold_refresh or not grant.refresh_token:
                del body["refresh_token"]
            return body

    def entra_token(self, form: dict[str, str], *, withhold_refresh: bool = False) -> dict[str, object]:
        with self.lock:
            app = self.apps.get(form.get("client_id", ""))
            if app is None or app.flavour != ENTRA:
                raise OAuthFailure("invalid_client", "AADSTS700016: Application not found.", 400, 700016)
            if form.get("client_secret") != app.client_secret:
                raise OAuthFailure("invalid_client", "AADSTS7000215: Invalid client secret provided.", 401, 7000215)
            grant_type = form.get("grant_type")
            if not form.get("scope"):
                raise OAuthFailure("invalid_request", "AADSTS900144: The request body must contain 'scope'.", 400, 900144)
            if grant_type == "authorization_code":
                if not form.get("code_verifier"):
                    raise OAuthFailure("invalid_request", "AADSTS50148: code_verifier is required.", 400, 50148)
                grant = self._redeem(
                    app, form.get("code", ""), form.get("redirect_uri", ""), form["code_verifier"], withhold_refresh
                )
            elif grant_type == "refresh_token":
                grant = self._rotate(app, form.get("refresh_token", ""), None, withhold_refresh)
            else:
                raise OAuthFailure("unsupported_grant_type", f"AADSTS70003: grant_type {grant_type}.", 400, 70003)
            body: dict[str, object] = {
                "token_type": "Bearer",
                "expires_in": int((grant.access_expires_at - _now()).total_seconds()),
                "ext_expires_in": 3599,
                "scope": " ".join(
                    [*(ADO_RESOURCE + s for s in grant.scopes), *(["offline_access"] if grant.refresh_token else [])]
                ),
                "access_token": grant.access_token,
            }
            if grant.refresh_token and not withhold_refresh:
                body["refresh_token"] = grant.refresh_token
            return body

    def _redeem(
        self, app: App, code_value: str, redirect_uri: str, verifier: str | None, no_refresh: bool = False
    ) -> Grant:
        code = self.codes.get(code_value)
        if code is None or code.app is not app:
            raise OAuthFailure("invalid_grant", _aad(app, 70000, "The provided authorization code is invalid."))
        if code.used:
            if code.grant is not None:  # a replayed code revokes what it issued (RFC 6749 4.1.2)
                code.grant.revoked = True
            raise OAuthFailure("invalid_grant", _aad(app, 54005, "The authorization code was already redeemed."))
        if code.expires_at < _now():
            raise OAuthFailure("invalid_grant", _aad(app, 70008, "The authorization code has expired."))
        if not self._same_redirect(app, code.redirect_uri, redirect_uri):
            raise OAuthFailure("invalid_grant", _aad(app, 50148, "redirect_uri does not match the authorization."))
        if code.code_challenge is not None and (verifier is None or s256(verifier) != code.code_challenge):
            raise OAuthFailure("invalid_grant", _aad(app, 501481, "The code_verifier does not match the challenge."))
        code.used = True
        grant = Grant(
            id=secrets.token_hex(8),
            app=app,
            scopes=list(code.scopes),
            user=self.user,
            access_token=_token("at"),
            refresh_token=_token("rt") if code.offline and not no_refresh else None,
            access_expires_at=_now() + ACCESS_LIFETIME,
            redirect_uri=code.redirect_uri,
        )
        code.grant = grant
        self.issued += [t for t in (grant.access_token, grant.refresh_token, verifier) if t]
        self.grants[grant.id] = grant
        self.by_access[grant.access_token] = grant
        if grant.refresh_token:
            self.by_refresh[grant.refresh_token] = grant
        return grant

    def _rotate(self, app: App, refresh_token: str, redirect_uri: str | None, keep_refresh: bool = False) -> Grant:
        """New tokens for a refresh token: both rotate (with `keep_refresh` only the access token, and the refresh
        token stays valid)."""
        grant = self.by_refresh.get(refresh_token)
        if grant is None or grant.app is not app or grant.revoked or grant.refresh_token != refresh_token:
            raise OAuthFailure("invalid_grant", _aad(app, 70000, "The refresh token is invalid, revoked or used."))
        if redirect_uri is not None and redirect_uri != grant.redirect_uri:
            raise OAuthFailure("invalid_grant", "redirect_uri does not match the authorization.")
        del self.by_access[grant.access_token]
        grant.access_token = _token("at")
        if not keep_refresh:
            del self.by_refresh[refresh_token]
            grant.refresh_token = _token("rt")
            self.by_refresh[grant.refresh_token] = grant
        grant.access_expires_at = _now() + ACCESS_LIFETIME
        grant.refreshes += 1
        self.issued += [grant.access_token, grant.refresh_token]
        self.by_access[grant.access_token] = grant
        return grant

    # -- REST ---------------------------------------------------------------------------------------------------

    def api(self, authorization: str | None, organization: str, resource: str) -> tuple[int, object]:
        """(status, body) of a REST call: body is a dict for JSON, a str for an HTML page."""
        token = authorization.split(" ", 1)[1] if authorization and authorization.startswith("Bearer ") else None
        with self.lock:
            grant = self.by_access.get(token or "")
            if grant is None or grant.revoked:
                return 401, {"message": "TF400813: The user is not authorized to access this resource."}
            if grant.access_expires_at < _now():
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
        return any(self._same_redirect(app, registered, uri) for registered in app.redirect_uris)

    @staticmethod
    def _same_redirect(app: App, registered: str, uri: str) -> bool:
        if registered == uri:
            return True
        if app.flavour != ENTRA:
            return False
        a, b = urlsplit(registered), urlsplit(uri)  # Entra ignores the port of a loopback redirect
        return a.scheme == b.scheme == "http" and a.hostname == b.hostname == "127.0.0.1" and a.path == b.path


def _token(kind: str) -> str:
    return f"sbx.{kind}.{secrets.token_urlsafe(32)}"


def _aad(app: App, code: int, text: str) -> str:
    return f"AADSTS{code}: {text}" if app.flavour == ENTRA else text


def _with_query(uri: str, **params: str) -> str:
    from urllib.parse import urlencode

    return uri + ("&" if "?" in uri else "?") + urlencode(params)
