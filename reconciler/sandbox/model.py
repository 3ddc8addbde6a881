"""The sandbox provider's records: registered apps, consents, codes, grants, the faults it can be told to answer
with, and the two OAuth dialects' names.

Owns: the shapes the provider keeps (`provider`) and issues tokens from (`tokens`), and the one redirect-match rule.
Must not: hold state or locks (the provider does), or speak HTTP (see `app`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "ADO_RESOURCE",
    "ENTRA",
    "ENTRA_EXTRA",
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "LEGACY",
    "SANDBOX_DIRECTORY",
    "App",
    "Code",
    "Consent",
    "Fault",
    "Grant",
    "OAuthFailure",
    "is_graph",
    "now",
    "s256",
    "same_redirect",
]

LEGACY = "azure-devops-oauth"
ENTRA = "entra-id"
ADO_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798/"
ENTRA_EXTRA = ("offline_access", "openid", "profile", "email")
SANDBOX_DIRECTORY = "6a5b0d1e-0000-4000-8000-000000000001"  # the Entra directory apps are registered in by default


class OAuthFailure(Exception):
    """A refusal the provider reports to the client: `error` code, description, HTTP status, AADSTS code."""

    def __init__(self, error: str, description: str, status: int = 400, aadsts: int | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.aadsts = error, description, status, aadsts


FAULT_ENDPOINTS = ("token", "api", "cyclr", "cyclr-install", "cyclr-token")
FAULT_KINDS = ("status", "signin-page", "slow", "hang", "malformed-json", "no-refresh-token")


@dataclass(frozen=True)
class Fault:
    """How the sandbox misbehaves for one request (see docs/sandbox.md, "Fault switches").

    `status`: that HTTP status with a JSON error body (429 carries `Retry-After: retry_after`); `signin-page`: HTTP
    203 with an HTML sign-in page, as Azure DevOps answers for bad credentials; `slow`: the request is carried out
    at once and its answer sent `seconds` later (a client that gave up by then has lost it); `hang`: no answer at all, the connection held open until the client gives up; `malformed-json`:
    HTTP 200 `application/json` whose body is cut short; `no-refresh-token` (token endpoint): the real answer
    without `refresh_token` (a code exchange issues none; a refresh keeps the current one valid, as RFC 6749 6
    allows). On the Cyclr endpoints a status answer carries `{"Message": message}`, and `organization` (or
    `account` when parsed) names the one account (`X-Cyclr-Account`) whose calls it hits."""

    kind: str
    status: int = 500
    seconds: float = 0.0
    retry_after: str = "1"
    organization: str | None = None  # api faults: only this organization's calls; cyclr faults: this account's
    message: str | None = None  # cyclr faults: the `{"Message": ...}` of a status answer

    @classmethod
    def parse(cls, data: object) -> Fault:
        """A fault from the admin API: an HTTP status (500), a kind ("hang"), or an object with `kind` & co."""
        if isinstance(data, int) or (isinstance(data, str) and data.isdigit()):
            return cls("status", status=int(data))
        if isinstance(data, str):
            data = {"kind": data}
        if not isinstance(data, dict) or data.get("kind", "status") not in FAULT_KINDS:
            raise ValueError(f"a fault is an HTTP status or one of {', '.join(FAULT_KINDS)}")
        organization = data.get("organization", data.get("account"))
        message = data.get("message")
        return cls(
            kind=str(data.get("kind", "status")),
            status=int(data.get("status", 500)),
            seconds=float(data.get("seconds", 0.0)),
            retry_after=str(data.get("retry_after", "1")),
            organization=str(organization) if organization is not None else None,
            message=str(message) if message is not None else None,
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
    secret_expired: bool = False  # its client secret has passed its expiry date (AADSTS7000222)
    # Entra ID: the directory the app is registered in (client credentials are issued there only) and who may sign
    # in (`AzureADMyOrg`: that directory's users only; `AzureADMultipleOrgs`: any organization's)
    tenant: str = SANDBOX_DIRECTORY
    sign_in_audience: str = "AzureADMultipleOrgs"


@dataclass
class Consent:
    id: str
    app: App
    state: str
    scopes: list[str]
    redirect_uri: str
    code_challenge: str | None
    offline: bool
    admin: bool = False  # an admin consent (`/<tenant>/v2.0/adminconsent`): for every user of the directory


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


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def same_redirect(app: App, registered: str, uri: str) -> bool:
    """Whether `uri` is the registered redirect `registered`: exactly, or for Entra ID a loopback one on any port."""
    if registered == uri:
        return True
    if app.flavour != ENTRA:
        return False
    a, b = urlsplit(registered), urlsplit(uri)  # Entra ignores the port of a loopback redirect
    return a.scheme == b.scheme == "http" and a.hostname == b.hostname == "127.0.0.1" and a.path == b.path


def is_graph(parts: tuple[str, ...]) -> bool:
    """Whether a path is one of the Graph reads (`/v1.0/applications(…)`, `/v1.0/servicePrincipals(…)`)."""
    return len(parts) == 2 and parts[0] == "v1.0" and parts[1].startswith(("applications(", "servicePrincipals("))
