"""The sandbox's Cyclr platform model: partner API credentials and bearer tokens, accounts, the connector list,
account connectors with their properties and authentication, one-use sign-in tokens, and the sign-in chain that
hands a person from the connectorauth link to the sandbox provider's consent page and back to `targetOrigin`.

Owns: the Cyclr v1.0 rules as section C of the protocols states them (404 for unknown ids, `{"Message": ...}`
errors, "ID already in use", one-use five-minute sign-in tokens, 14-day bearer tokens) plus console actions for
tests (set the partner's API credentials and the Application Connector Library; deauthenticate, delete or edit an
account connector as a person in the console would; add accounts that exist already). Thread-safe. Must not:
speak HTTP (`cyclr_routes` does) or be used by the real adapters: it is a documented test double.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import secrets
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from reconciler.sandbox.cyclr_model import (
    CALLBACK,
    AccountConnector,
    CyclrFailure,
    SignIn,
    default_connectors,
)
from reconciler.sandbox.model import ADO_RESOURCE, ENTRA, LEGACY, OAuthFailure
from reconciler.sandbox.provider import Provider

__all__ = ["CyclrFailure", "CyclrSandbox", "default_connectors"]

BEARER_LIFETIME = dt.timedelta(days=14)
SIGN_IN_LIFETIME = dt.timedelta(minutes=5)
_NO_SCOPES = ("vso.profile",)  # what a sign-in asks for when its connector has no Scopes property


class CyclrSandbox:
    """All Cyclr state, guarded by one lock. `provider` runs the OAuth consent of every sign-in. Without partner
    API credentials (`set_partner`) every token request is refused."""

    def __init__(self, provider: Provider, client_id: str | None = None, client_secret: str | None = None) -> None:
        self.lock = threading.Lock()
        self.provider = provider
        self.partner = (client_id, client_secret) if client_id and client_secret else None
        self.bearers: dict[str, dt.datetime] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.connectors = default_connectors()
        self.library: dict[int, tuple[str, str]] = {}  # authentication id -> the partner's app (client id, secret)
        self.account_connectors: dict[int, AccountConnector] = {}
        self.by_account: dict[str, dict[int, AccountConnector]] = {}  # account id -> its account connectors
        self.sign_in_tokens: dict[str, tuple[str, dt.datetime]] = {}  # token -> (account id, expiry)
        self.sign_ins: dict[str, SignIn] = {}  # OAuth state -> sign-in
        self.ids = itertools.count(1001)
        self.issued: list[str] = []  # every bearer, sign-in token and seeded AuthValue token: tests search for them

    # -- partner token ------------------------------------------------------------------------------------------

    def set_partner(self, client_id: str, client_secret: str) -> None:
        """Console action (Settings > OAuth Client Credentials): the partner's API credentials from now on."""
        if not client_id or not client_secret:
            raise CyclrFailure(400, "client_id and client_secret are required")
        with self.lock:
            self.partner = (client_id, client_secret)

    def set_library(self, authentication_id: int, client_id: str, client_secret: str) -> None:
        """Console action (Application Connector Library): the app an authentication type signs in with when an
        account connector has no `ClientId`/`ClientSecret` of its own."""
        if not any(a["Id"] == authentication_id for c in self.connectors for a in c["Authentication"]):
            raise CyclrFailure(404, f"Authentication {authentication_id} not found")
        with self.lock:
            self.library[authentication_id] = (client_id, client_secret)

    def issue_bearer(self, form: Mapping[str, str], now: dt.datetime) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise CyclrFailure(400, "unsupported_grant_type")
        partner = self.partner
        if partner is None or (form.get("client_id"), form.get("client_secret")) != partner:
            raise CyclrFailure(401, "invalid_client")
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.bearers[token] = now + BEARER_LIFETIME
            self.issued.append(token)
        return {"token_type": "bearer", "access_token": token, "expires_in": int(BEARER_LIFETIME.total_seconds()) - 1,
                "clientId": partner[0]}

    def check_bearer(self, authorization: str | None, now: dt.datetime) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self.lock:
            expiry = self.bearers.get(token)
        if expiry is None or expiry <= now:
            raise CyclrFailure(401, "Authorization has been denied for this request.")

    def expire_bearers(self) -> int:
        """Console/test action: every bearer token stops working (the next call answers 401)."""
        with self.lock:
            count, self.bearers = len(self.bearers), {}
        return count

    # -- accounts -----------------------------------------------------------------------------------------------

    def create_account(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise CyclrFailure(400, "Name is required")
        account_id = str(body.get("Id") or secrets.token_hex(8))
        with self.lock:
            if account_id in self.accounts:
                raise CyclrFailure(400, "ID already in use")
            account = {"Id": account_id, "Name": name, "Description": body.get("Description") or "",
                       "Timezone": body.get("Timezone") or "UTC"}
            self.accounts[account_id] = account
        return dict(account)

    def account(self, account_id: str) -> dict[str, Any]:
        with self.lock:
            account = self.accounts.get(account_id)
        if account is None:
            raise CyclrFailure(404, f"Account {account_id} not found")
        return dict(account)

    def list_accounts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self.accounts.values()]

    def update_account(self, account_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.accounts.get(account_id)
            if account is None:
                raise CyclrFailure(404, f"Account {account_id} not found")
            account.update({k: v for k, v in body.items() if k in ("Name", "Description", "Timezone")})
            return dict(account)

    def delete_account(self, account_id: str) -> None:
        with self.lock:
            if self.accounts.pop(account_id, None) is None:
                raise CyclrFailure(404, f"Account {account_id} not found")
            for key in self.by_account.pop(account_id, {}):
                del self.account_connectors[key]

    # -- account connectors -------------------------------------------------------------------------------------

    def connector_id(self, reference: str | int) -> str:
        """The id of the connector `reference` names: its Id, or its Name (any case)."""
        for connector in self.connectors:
            if str(reference) == str(connector["Id"]) or str(reference).lower() == connector["Name"].lower():
                return str(connector["Id"])
        raise CyclrFailure(404, f"Connector {reference} not found")

    def install(self, account_id: str, connector_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.account(account_id)
        connector = next((c for c in self.connectors if str(c["Id"]) == connector_id), None)
        if connector is None:
            raise CyclrFailure(404, f"Connector {connector_id} not found")
        auth_ids = {a["Id"] for a in connector["Authentication"]}
        authentication = body.get("AuthenticationId")
        if authentication is not None and int(authentication) not in auth_ids:
            raise CyclrFailure(400, f"AuthenticationId {authentication} is not an authentication of this connector")
        if not isinstance(body.get("Name"), str) or not body["Name"]:
            raise CyclrFailure(400, "Name is required")
        properties = _properties(connector, body.get("Properties") or [])
        with self.lock:
            installed = AccountConnector(
                next(self.ids), account_id, connector, body["Name"], str(body.get("Description") or ""),
                int(authentication) if authentication is not None else None, properties,
            )
            self.account_connectors[installed.id] = installed
            self.by_account.setdefault(account_id, {})[installed.id] = installed
        return installed.public(detail=True)

    def _owned(self, account_id: str, connector_id: str) -> AccountConnector:
        found = self.account_connectors.get(int(connector_id)) if connector_id.isdigit() else None
        if found is None or found.account != account_id:
            raise CyclrFailure(404, f"Account connector {connector_id} not found")
        return found

    def list_account_connectors(self, account_id: str) -> list[dict[str, Any]]:
        self.account(account_id)
        with self.lock:
            return [c.public(detail=False) for c in self.by_account.get(account_id, {}).values()]

    def account_connector(self, account_id: str, connector_id: str) -> dict[str, Any]:
        with self.lock:
            return self._owned(account_id, connector_id).public(detail=True)

    def set_property(self, account_id: str, connector_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            connector = self._owned(account_id, connector_id)
            connector.properties.update(_properties(connector.connector, [body]))

    def update_account_connector(self, account_id: str, connector_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT: `AuthValue` (a JSON string of the tokens; `"{}"` signs it out), `Name`, `Description`,
        `Properties` — whichever the body has."""
        changes: dict[str, Any] = {k: str(body[k]) for k in ("Name", "Description") if body.get(k) is not None}
        if "AuthValue" in body:
            changes["auth"] = _auth_value(body["AuthValue"])
        with self.lock:
            connector = self._owned(account_id, connector_id)
            properties = _properties(connector.connector, body.get("Properties") or [])
            connector.name = changes.get("Name", connector.name)
            connector.description = changes.get("Description", connector.description)
            connector.properties.update(properties)
            if "auth" in changes:
                connector.auth_value, connector.authenticated = changes["auth"]
            return connector.public(detail=True)

    def delete_account_connector(self, account_id: str, connector_id: str) -> None:
        with self.lock:
            self._forget(self._owned(account_id, connector_id))

    def _forget(self, connector: AccountConnector) -> None:
        del self.account_connectors[connector.id]
        self.by_account.get(connector.account, {}).pop(connector.id, None)

    # -- console actions (tests and demos) ----------------------------------------------------------------------

    def _any(self, connector_id: int) -> AccountConnector:
        found = self.account_connectors.get(connector_id)
        if found is None:
            raise CyclrFailure(404, f"Account connector {connector_id} not found")
        return found

    def deauthenticate(self, connector_id: int) -> None:
        """The account connector's authentication lapses."""
        with self.lock:
            connector = self._any(connector_id)
            connector.authenticated, connector.auth_value = False, None

    def console_delete(self, connector_id: int) -> None:
        """A person deletes the account connector in the console."""
        with self.lock:
            self._forget(self._any(connector_id))

    def console_set_property(self, connector_id: int, name: str, value: str) -> None:
        """A person edits a property in the console."""
        with self.lock:
            connector = self._any(connector_id)
            connector.properties.update(_properties(connector.connector, [{"Name": name, "Value": value}]))

    def mark_authenticated(self, connector_id: int) -> None:
        """The account connector was signed in before (an estate to import): it holds tokens of its own."""
        tokens = {"AccessToken": secrets.token_urlsafe(24), "RefreshToken": secrets.token_urlsafe(24)}
        with self.lock:
            connector = self._any(connector_id)
            connector.auth_value, connector.authenticated = json.dumps({**tokens, "Expires": 3599}), True
            self.issued.extend(tokens.values())

    # -- sign-in ------------------------------------------------------------------------------------------------

    def sign_in_token(self, account_id: str, now: dt.datetime) -> dict[str, Any]:
        self.account(account_id)
        token = secrets.token_urlsafe(18)
        expires = now + SIGN_IN_LIFETIME
        with self.lock:
            self.sign_in_tokens[token] = (account_id, expires)
            self.issued.append(token)
        return {"Token": token, "ExpiresAtUtc": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def begin_sign_in(self, params: dict[str, str], service_url: str, now: dt.datetime) -> str:
        """Check the link's one-use token and return the provider's authorization URL (path and query) to send
        the browser to."""
        with self.lock:
            account_id, expires = self.sign_in_tokens.pop(params.get("token", ""), (None, now))
        if account_id is None or expires <= now:
            raise CyclrFailure(401, "The sign-in token is invalid, used or expired")
        with self.lock:
            connector = self._owned(account_id, params.get("id", ""))
        if not params.get("targetOrigin"):
            raise CyclrFailure(400, "targetOrigin is required")
        flavour, client = self._app_of(connector)
        state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        redirect = service_url.rstrip("/") + CALLBACK
        with self.lock:
            self.sign_ins[state] = SignIn(connector, params["targetOrigin"], verifier, client, flavour, redirect)
        # A connector without a Scopes property (Slack) has no scopes of its own here: the sandbox's one consent
        # page stands in for its provider and asks for the user's profile.
        scopes = connector.properties.get("Scopes", "").split() or list(_NO_SCOPES)
        if flavour == LEGACY:
            query = {"client_id": client[0], "response_type": "Assertion", "state": state,
                     "scope": " ".join(scopes), "redirect_uri": redirect}
            return "/oauth2/authorize?" + urlencode(query)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {"client_id": client[0], "response_type": "code", "state": state, "redirect_uri": redirect,
                 "scope": " ".join([*(ADO_RESOURCE + s for s in scopes), "offline_access"]),
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        return "/organizations/oauth2/v2.0/authorize?" + urlencode(query)

    def _app_of(self, connector: AccountConnector) -> tuple[str, tuple[str, str]]:
        auth = next((a for a in connector.connector["Authentication"] if a["Id"] == connector.authentication_id), None)
        flavour = LEGACY if auth is not None and "Azure DevOps OAuth" in auth["AuthName"] else ENTRA
        own = (connector.properties.get("ClientId"), connector.properties.get("ClientSecret"))
        if own[0] and own[1]:
            return flavour, (own[0], own[1])
        library = self.library.get(connector.authentication_id or -1)
        if library is None:
            raise CyclrFailure(400, "No client id and secret: set them in the Application Connector Library")
        return flavour, library

    def complete_sign_in(self, params: dict[str, str]) -> str:
        """The provider's redirect: redeem the code, record the tokens, and return where the browser goes next."""
        with self.lock:
            sign_in = self.sign_ins.pop(params.get("state", ""), None)
        if sign_in is None:
            raise CyclrFailure(400, "Unknown or used sign-in state")
        if "code" not in params:
            return _with(sign_in.target_origin, error=params.get("error", "access_denied"))
        try:
            body = self._redeem(sign_in, params["code"])
        except OAuthFailure as exc:
            return _with(sign_in.target_origin, error=exc.error)
        value = json.dumps({"AccessToken": body["access_token"], "RefreshToken": body.get("refresh_token"),
                            "Expires": body["expires_in"]})
        with self.lock:
            sign_in.connector.auth_value, sign_in.connector.authenticated = value, True
        return sign_in.target_origin

    def _redeem(self, sign_in: SignIn, code: str) -> dict[str, object]:
        if sign_in.flavour == LEGACY:
            return self.provider.legacy_token({
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": sign_in.client[1], "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": code, "redirect_uri": sign_in.redirect_uri,
            })
        return self.provider.entra_token({
            "client_id": sign_in.client[0], "client_secret": sign_in.client[1], "grant_type": "authorization_code",
            "code": code, "code_verifier": sign_in.verifier, "redirect_uri": sign_in.redirect_uri,
            "scope": "offline_access",
        })


def _with(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _properties(connector: dict[str, Any], given: object) -> dict[str, str]:
    """`[{"Name", "Value"}, ...]` as a mapping, every name one of the connector's account-connector properties."""
    if not isinstance(given, list) or not all(isinstance(p, dict) and p.get("Name") for p in given):
        raise CyclrFailure(400, "Properties must be a list of {Name, Value}")
    properties = {str(p["Name"]): str(p.get("Value")) for p in given}
    known = {p["TargetName"] for p in connector["Parameters"] if p.get("IsAccountConnectorProperty")}
    unknown = sorted(set(properties) - known - {"ClientId", "ClientSecret"})
    if unknown:
        raise CyclrFailure(400, f"Unknown property {unknown[0]}")
    return properties


def _auth_value(value: object) -> tuple[str | None, bool]:
    """(the stored AuthValue, authenticated) for a PUT: a JSON object as a string; `"{}"` signs out."""
    tokens = None
    if isinstance(value, str):
        try:
            tokens = json.loads(value)
        except ValueError:
            pass
    if not isinstance(value, str) or not isinstance(tokens, dict):
        raise CyclrFailure(400, "AuthValue must be a JSON string")
    return (value if tokens else None), bool(tokens.get("AccessToken"))
