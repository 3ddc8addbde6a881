"""The sandbox provider's token endpoints: codes redeemed and refresh tokens rotated, in either OAuth dialect.

Owns: the token rules as the real services apply them (a code once, before it expires, at its redirect, with its
PKCE verifier; a replayed code revokes what it issued; refresh tokens rotate), and each dialect's answer. Must
not: speak HTTP (see `app`) or keep state of its own (the `Provider` it is part of does, under its lock).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable

from reconciler.sandbox.model import (
    ADO_RESOURCE,
    ENTRA,
    LEGACY,
    App,
    Code,
    Grant,
    OAuthFailure,
    now,
    s256,
    same_redirect,
)

__all__ = ["ACCESS_LIFETIME", "TokenEndpoints"]

ACCESS_LIFETIME = dt.timedelta(seconds=3599)


class TokenEndpoints:
    """The token endpoints of `Provider` (which holds the state below)."""

    lock: threading.Lock
    user: str
    apps: dict[str, App]
    codes: dict[str, Code]
    grants: dict[str, Grant]
    by_access: dict[str, Grant]
    by_refresh: dict[str, Grant]
    issued: list[str]
    client_credentials: Callable[[App, str, dict[str, str]], dict[str, object]]  # `DirectoryEndpoints`

    def legacy_client(self, secret: str) -> App:
        """The Azure DevOps OAuth app whose client secret is `secret` (lock held): it authenticates by no other."""
        app = next((a for a in self.apps.values() if a.flavour == LEGACY and a.client_secret == secret), None)
        if app is None or app.secret_expired:
            raise OAuthFailure("invalid_client", "The client secret is invalid or expired.", 401)
        return app

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
            app = self.legacy_client(form["client_assertion"])
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
                "expires_in": str(int((grant.access_expires_at - now()).total_seconds())),
                "refresh_token": grant.refresh_token,
                "scope": " ".join([*grant.scopes, "vso.authorization_grant"]),
            }
            if withhold_refresh or not grant.refresh_token:
                del body["refresh_token"]
            return body

    def entra_token(
        self, form: dict[str, str], *, withhold_refresh: bool = False, tenant: str = "organizations"
    ) -> dict[str, object]:
        with self.lock:
            app = self.apps.get(form.get("client_id", ""))
            if app is None or app.flavour != ENTRA:
                raise OAuthFailure("invalid_client", "AADSTS700016: Application not found.", 400, 700016)
            if form.get("client_secret") != app.client_secret:
                raise OAuthFailure("invalid_client", "AADSTS7000215: Invalid client secret provided.", 401, 7000215)
            if app.secret_expired:
                raise OAuthFailure("invalid_client", f"AADSTS7000222: The provided client secret keys for app "
                                   f"'{app.client_id}' are expired.", 401, 7000222)
            grant_type = form.get("grant_type")
            if not form.get("scope"):
                raise OAuthFailure("invalid_request", "AADSTS900144: The request body must contain 'scope'.", 400, 900144)
            if grant_type == "client_credentials":
                return self.client_credentials(app, tenant, form)
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
                "expires_in": int((grant.access_expires_at - now()).total_seconds()),
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
        if code.expires_at < now():
            raise OAuthFailure("invalid_grant", _aad(app, 70008, "The authorization code has expired."))
        if not same_redirect(app, code.redirect_uri, redirect_uri):
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
            access_expires_at=now() + ACCESS_LIFETIME,
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
        grant.access_expires_at = now() + ACCESS_LIFETIME
        grant.refreshes += 1
        self.issued += [grant.access_token, grant.refresh_token]
        self.by_access[grant.access_token] = grant
        return grant


def _token(kind: str) -> str:
    return f"sbx.{kind}.{secrets.token_urlsafe(32)}"


def _aad(app: App, code: int, text: str) -> str:
    return f"AADSTS{code}: {text}" if app.flavour == ENTRA else text
