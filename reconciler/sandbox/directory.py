"""The sandbox's Entra ID directory: admin-only permissions, admin consent, app-only tokens and the Microsoft Graph
reads a preflight makes.

Owns: which Azure DevOps permissions only an administrator may consent to (the resource's `Admin` permission
type, or a directory whose users may not consent), the admin consents given (`/<tenant>/v2.0/adminconsent`), the
client-credentials grant (issued in the app's own directory only, as AADSTS700016 says otherwise), and the Graph
subset: `GET /v1.0/applications(appId='…')` and `GET /v1.0/servicePrincipals(appId='…')` with an app-only token.
Must not: speak HTTP (`routes`) or hold a lock of its own (the `Provider` it is part of does).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import uuid
from typing import Any

from reconciler.sandbox.model import (
    ADO_RESOURCE,
    ENTRA,
    ENTRA_EXTRA,
    SANDBOX_DIRECTORY,
    App,
    Consent,
    OAuthFailure,
    now,
    same_redirect,
)

__all__ = ["ADO_APP_ID", "GRAPH_DEFAULT", "DirectoryEndpoints", "permission_id"]

ADO_APP_ID = ADO_RESOURCE.rstrip("/")
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
APP_TOKEN_LIFETIME = dt.timedelta(seconds=3599)
_NAMESPACE = uuid.UUID("6f1c7f3e-9d0c-4d55-9a8e-1b2a3c4d5e6f")


def permission_id(scope: str) -> str:
    """The id of an Azure DevOps delegated permission (stable across sandbox runs, as Microsoft's are)."""
    return str(uuid.uuid5(_NAMESPACE, scope))


class DirectoryEndpoints:
    """Admin consent and Graph for `Provider` (which holds the state below, under its lock)."""

    lock: threading.Lock
    apps: dict[str, App]
    catalog: Any
    issued: list[str]
    directory = SANDBOX_DIRECTORY  # the directory the sandbox's one user belongs to

    def _directory_init(self) -> None:
        self.admin_only: set[str] = set()  # permissions of type Admin (only an administrator may consent)
        self.users_may_consent = True  # False: the directory blocks user consent to every permission
        self.admin_consents: dict[str, set[str]] = {}  # client id -> permissions consented for the whole directory
        self.app_tokens: dict[str, tuple[App, dt.datetime]] = {}  # app-only access token -> (app, expiry)
        self.graph_readable = True  # False: Graph answers 403 (the app lacks Application.Read.All)

    # -- admin switches -------------------------------------------------------------------------------------------

    def set_consent_policy(self, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if "admin_only" in data:
                self.admin_only = {str(s) for s in data.get("admin_only") or []}
            if "users_may_consent" in data:
                self.users_may_consent = bool(data["users_may_consent"])
            if "graph_readable" in data:
                self.graph_readable = bool(data["graph_readable"])
            if data.get("clear_admin_consents"):
                self.admin_consents.clear()
            return {
                "admin_only": sorted(self.admin_only),
                "users_may_consent": self.users_may_consent,
                "graph_readable": self.graph_readable,
                "admin_consents": {k: sorted(v) for k, v in self.admin_consents.items()},
            }

    # -- consent ----------------------------------------------------------------------------------------------------

    def needs_admin(self, consent: Consent) -> list[str]:
        """The requested permissions a user may not consent to and no administrator has (Entra only)."""
        if consent.app.flavour != ENTRA or consent.admin:
            return []
        with self.lock:
            held = self.admin_consents.get(consent.app.client_id, set())
            blocked = set(consent.scopes) if not self.users_may_consent else self.admin_only
            return [s for s in consent.scopes if s in blocked and s not in held]

    def admin_consent_request(self, params: dict[str, str]) -> Consent:
        """An admin consent request: `client_id`, `redirect_uri` (registered), `state`, `scope` (the resource's
        permissions with their prefix, or `<resource>/.default` for every permission on the registration)."""
        app = self.apps.get(params.get("client_id", ""))
        if app is None or app.flavour != ENTRA:
            raise ValueError("AADSTS700016: unknown client_id for this directory")
        if not any(same_redirect(app, r, params.get("redirect_uri", "")) for r in app.redirect_uris):
            raise ValueError("AADSTS50011: redirect_uri does not match the application's registered callback")
        if "state" not in params:
            raise ValueError("state is required")
        raw = [s for s in params.get("scope", "").split() if s not in ENTRA_EXTRA]
        scopes = []
        for item in raw:
            if not item.startswith(ADO_RESOURCE):
                raise ValueError(f"AADSTS70011: invalid scope {item}")
            name = item.removeprefix(ADO_RESOURCE)
            scopes += self._registered(app) if name == ".default" else [name]
        return Consent(
            secrets.token_urlsafe(16), app, params["state"], scopes, params["redirect_uri"], None, False, admin=True
        )

    def record_admin_consent(self, consent: Consent) -> dict[str, str]:
        with self.lock:
            self.admin_consents.setdefault(consent.app.client_id, set()).update(consent.scopes)
        return {
            "admin_consent": "True",
            "tenant": self.directory,
            "scope": " ".join(ADO_RESOURCE + s for s in consent.scopes),
            "state": consent.state,
        }

    # -- client credentials and Graph ---------------------------------------------------------------------------

    def client_credentials(self, app: App, tenant: str, form: dict[str, str]) -> dict[str, object]:
        """An app-only token for Graph, in the app's own directory (lock held)."""
        if form.get("scope") != GRAPH_DEFAULT:
            raise OAuthFailure("invalid_scope", f"AADSTS1002012: scope must be {GRAPH_DEFAULT} here.", 400, 1002012)
        if tenant != app.tenant:
            raise OAuthFailure(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{app.client_id}' was not found in the directory "
                f"'{tenant}'.",
                400,
                700016,
            )
        token = f"sbx.app.{secrets.token_urlsafe(32)}"
        self.app_tokens[token] = (app, now() + APP_TOKEN_LIFETIME)
        self.issued.append(token)
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def graph(self, authorization: str | None, parts: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        """A Graph read: (status, body)."""
        token = authorization.split(" ", 1)[1] if authorization and authorization.startswith("Bearer ") else ""
        with self.lock:
            held = self.app_tokens.get(token)
            if held is None or held[1] < now():
                return 401, _graph_error("InvalidAuthenticationToken", "Access token is empty, expired or invalid.")
            if not self.graph_readable:
                return 403, _graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the "
                                         "operation.")
            item = parts[1] if len(parts) == 2 else ""
            if item.startswith("applications(appId='") and item.endswith("')"):
                app = self.apps.get(item[len("applications(appId='"):-2])
                return (200, self._application(app)) if app is not None else (404, _not_found(item))
            if item == f"servicePrincipals(appId='{ADO_APP_ID}')":
                return 200, self._resource()
            return 404, _not_found(item)

    def _resource(self) -> dict[str, Any]:
        scopes = [
            {
                "id": permission_id(name),
                "value": name,
                "type": "Admin" if name in self.admin_only else "User",
                "isEnabled": True,
                "adminConsentDisplayName": scope.name,
            }
            for name, scope in sorted(self.catalog.scopes.items())
        ]
        return {"appId": ADO_APP_ID, "displayName": "Azure DevOps", "oauth2PermissionScopes": scopes}

    def _registered(self, app: App) -> list[str]:
        """The permissions on an app's registration (an app registered with no scopes: every catalog scope)."""
        return list(app.scopes) if app.scopes else sorted(self.catalog.scopes)

    def _application(self, app: App) -> dict[str, Any]:
        access = [{"id": permission_id(s), "type": "Scope"} for s in self._registered(app)]
        return {
            "appId": app.client_id,
            "displayName": app.client_id,
            "signInAudience": app.sign_in_audience,
            "publisherDomain": f"{app.tenant}.example.com",
            "requiredResourceAccess": [{"resourceAppId": ADO_APP_ID, "resourceAccess": access}] if access else [],
        }


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _not_found(item: str) -> dict[str, Any]:
    return _graph_error("Request_ResourceNotFound", f"Resource '{item}' does not exist.")

