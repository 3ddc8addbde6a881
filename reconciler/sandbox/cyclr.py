"""The sandbox's Cyclr platform model: partner API credentials and bearer tokens, accounts, the connector list,
account connectors with their properties and authentication, one-use sign-in tokens, and the sign-in chain that
hands a person from the connectorauth link to the sandbox provider's consent page and back to `targetOrigin`.

Owns: the Cyclr v1.0 rules as section C of the protocols states them (404 for unknown ids, `{"Message": ...}`
errors, "ID already in use", one-use five-minute sign-in tokens, 14-day bearer tokens) plus console actions for
tests (deauthenticate, delete or edit an account connector as a person in the console would). Thread-safe; no
HTTP here (the sandbox server's Cyclr routes are to call it). A documented test double — never used by the real
adapters.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from reconciler.sandbox.model import ADO_RESOURCE, ENTRA, LEGACY, OAuthFailure
from reconciler.sandbox.provider import Provider

__all__ = ["CyclrFailure", "CyclrSandbox", "default_connectors"]

BEARER_LIFETIME = dt.timedelta(days=14)
SIGN_IN_LIFETIME = dt.timedelta(minutes=5)
CALLBACK = "/connector/callback"


class CyclrFailure(Exception):
    """An answer other than success: HTTP `status` with `{"Message": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def default_connectors() -> list[dict[str, Any]]:
    """The connector list the sandbox offers: Azure DevOps with both authentication types, and Slack."""
    ado_parameters = [
        {"Id": 101, "TargetName": "Organization", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 102, "TargetName": "Project", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 103, "TargetName": "Scopes", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 104, "TargetName": "ClientId", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 105, "TargetName": "ClientSecret", "IsAccountConnectorProperty": True, "IsOptional": True,
         "IsSensitive": True},
    ]
    return [
        {
            "Id": 310, "Name": "Microsoft Azure DevOps", "Version": "1.0",
            "Authentication": [
                {"Id": 31, "AuthName": "Entra Token (recommended)", "AuthType": "OAuth2",
                 "OAuth2Type": "AuthorisationCode"},
                {"Id": 32, "AuthName": "Azure DevOps OAuth app (being retired)", "AuthType": "OAuth2",
                 "OAuth2Type": "AuthorisationCode"},
            ],
            "Parameters": ado_parameters,
        },
        {
            "Id": 420, "Name": "Slack", "Version": "1.0",
            "Authentication": [{"Id": 41, "AuthName": "OAuth", "AuthType": "OAuth2"}],
            "Parameters": [{"Id": 201, "TargetName": "Channel", "IsAccountConnectorProperty": True,
                            "IsOptional": True}],
        },
    ]


@dataclass
class AccountConnector:
    id: int
    account: str
    connector: dict[str, Any]
    name: str
    description: str
    authentication_id: int | None
    properties: dict[str, str] = field(default_factory=dict)
    authenticated: bool = False
    auth_value: str | None = None

    def public(self, *, detail: bool) -> dict[str, Any]:
        listed: dict[str, Any] = {
            "Id": self.id,
            "Name": self.name,
            "Description": self.description,
            "Connector": {"Id": self.connector["Id"], "Name": self.connector["Name"],
                          "Version": self.connector["Version"]},
        }
        if detail:
            listed["Authenticated"] = self.authenticated
            listed["AuthenticationId"] = self.authentication_id
            listed["Properties"] = [
                {"Name": name, "Value": "********" if name == "ClientSecret" else value}
                for name, value in sorted(self.properties.items())
            ]
        return listed


@dataclass
class SignIn:
    """A sign-in under way: the browser is at the provider's consent page."""

    connector: AccountConnector
    target_origin: str
    verifier: str
    client: tuple[str, str]
    flavour: str
    redirect_uri: str


class CyclrSandbox:
    """All Cyclr state, guarded by one lock. `provider` runs the OAuth consent of every sign-in."""

    def __init__(self, provider: Provider, client_id: str, client_secret: str) -> None:
        self.lock = threading.Lock()
        self.provider = provider
        self.partner = (client_id, client_secret)
        self.bearers: dict[str, dt.datetime] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.connectors = default_connectors()
        self.library: dict[int, tuple[str, str]] = {}  # authentication id -> the partner's app (client id, secret)
        self.account_connectors: dict[int, AccountConnector] = {}
        self.sign_in_tokens: dict[str, tuple[str, dt.datetime]] = {}  # token -> (account id, expiry)
        self.sign_ins: dict[str, SignIn] = {}  # OAuth state -> sign-in
        self.ids = itertools.count(1001)
        self.issued: list[str] = []  # every bearer and sign-in token: tests search outputs for them

    # -- partner token ------------------------------------------------------------------------------------------

    def issue_bearer(self, form: dict[str, str], now: dt.datetime) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise CyclrFailure(400, "unsupported_grant_type")
        if (form.get("client_id"), form.get("client_secret")) != self.partner:
            raise CyclrFailure(401, "invalid_client")
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.bearers[token] = now + BEARER_LIFETIME
            self.issued.append(token)
        return {"token_type": "bearer", "access_token": token, "expires_in": int(BEARER_LIFETIME.total_seconds()) - 1,
                "clientId": self.partner[0]}

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
            for key in [k for k, c in self.account_connectors.items() if c.account == account_id]:
                del self.account_connectors[key]

    # -- account connectors -------------------------------------------------------------------------------------

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
        properties = {str(p.get("Name")): str(p.get("Value")) for p in body.get("Properties") or []}
        known = {p["TargetName"] for p in connector["Parameters"] if p.get("IsAccountConnectorProperty")}
        unknown = sorted(set(properties) - known - {"ClientId", "ClientSecret"})
        if unknown:
            raise CyclrFailure(400, f"Unknown property {unknown[0]}")
        with self.lock:
            installed = AccountConnector(
                next(self.ids), account_id, connector, body["Name"], str(body.get("Description") or ""),
                int(authentication) if authentication is not None else None, properties,
            )
            self.account_connectors[installed.id] = installed
        return installed.public(detail=True)

    def _owned(self, account_id: str, connector_id: str) -> AccountConnector:
        found = self.account_connectors.get(int(connector_id)) if connector_id.isdigit() else None
        if found is None or found.account != account_id:
            raise CyclrFailure(404, f"Account connector {connector_id} not found")
        return found

    def list_account_connectors(self, account_id: str) -> list[dict[str, Any]]:
        self.account(account_id)
        with self.lock:
            return [c.public(detail=False) for c in self.account_connectors.values() if c.account == account_id]

    def account_connector(self, account_id: str, connector_id: str) -> dict[str, Any]:
        with self.lock:
            return self._owned(account_id, connector_id).public(detail=True)

    def set_property(self, account_id: str, connector_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            self._owned(account_id, connector_id).properties[str(body.get("Name"))] = str(body.get("Value"))

    def put_auth_value(self, account_id: str, connector_id: str, body: dict[str, Any]) -> dict[str, Any]:
        value = body.get("AuthValue")
        try:
            tokens = json.loads(value) if isinstance(value, str) else None
        except ValueError:
            tokens = None
        if not isinstance(tokens, dict):
            raise CyclrFailure(400, "AuthValue must be a JSON string")
        with self.lock:
            connector = self._owned(account_id, connector_id)
            connector.auth_value = value
            connector.authenticated = bool(tokens.get("AccessToken"))
            return connector.public(detail=True)

    def delete_account_connector(self, account_id: str, connector_id: str) -> None:
        with self.lock:
            del self.account_connectors[self._owned(account_id, connector_id).id]

    def deauthenticate(self, connector_id: int) -> None:
        """Console/test action: the account connector's authentication lapses."""
        with self.lock:
            connector = self.account_connectors[connector_id]
            connector.authenticated, connector.auth_value = False, None

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
        scopes = connector.properties.get("Scopes", "").split()
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
