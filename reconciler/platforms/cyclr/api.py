"""The Cyclr v1.0 API client: the partner's API token, accounts, connectors, account connectors, sign-in tokens.

Every call goes through one request path: a partner token fetched with the client-credentials grant and kept in
memory for the run (fetched again once on a 401; a second 401 is the partner's API credentials' fault), the
`X-Cyclr-Account` header on account-level calls, transient failures (429 and 503 with their `Retry-After`, other
5xx, timeouts) retried by the shared `RetryPolicy`, and Cyclr's `{"Message": ...}` shown as it is. An install that
failed transiently is retried only after the account's connectors were listed: a retry never installs twice.

Owns: the wire format of section C of the protocols. Must not: decide what to create or change, hold state, or
put a secret (the partner's client secret, a bearer token, a sign-in token, a connector's AuthValue) into an
error, a log or a `repr`.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError, redacted, retry_after_seconds, transient
from reconciler.auth.retry import RetryPolicy, retrying
from reconciler.errors import one_line

__all__ = ["AccountExists", "CyclrApi", "PartnerApiCredentials", "SignInToken", "sign_in_link"]

SECRET_PROPERTIES = frozenset({"ClientSecret"})  # account-connector properties whose values are secrets

_MESSAGE_LIMIT = 300  # characters of a Cyclr message shown to the user


@dataclass(frozen=True)
class PartnerApiCredentials:
    """The partner's OAuth client credentials for the Cyclr API (Console > Settings > OAuth Client Credentials)."""

    client_id: str
    client_secret: SecretStr = field(repr=False)


@dataclass(frozen=True)
class SignInToken:
    """A one-use sign-in token (valid for minutes): only ever shown inside the link a person opens."""

    token: SecretStr = field(repr=False)
    expires_at: dt.datetime | None


class AccountExists(ProviderError):
    """Creating an account with an id the platform already uses: adopt it (`reconciler import`), never take it
    over silently."""


class CyclrApi:
    """One partner's view of one Cyclr API. `client()` gives the calling thread's HTTP client (see `auth.transport`);
    `sleep` waits between retries."""

    def __init__(
        self,
        api_url: str,
        credentials: PartnerApiCredentials,
        client: Callable[[], httpx.Client],
        *,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        secrets: Iterable[str] = (),
    ) -> None:
        """`secrets`: values no error may repeat besides those this client sends (the configuration's)."""
        self._api = api_url.rstrip("/")
        self._credentials = credentials
        self._client = client
        self._policy = policy
        self._sleep = sleep
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._sent: set[str] = set(secrets)  # and every secret value this client has sent: no error repeats one

    def __repr__(self) -> str:
        return f"CyclrApi({self._api!r}, client_id={self._credentials.client_id!r})"

    # -- accounts -------------------------------------------------------------------------------------------------

    def create_account(self, account_id: str, name: str, timezone: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"Id": account_id, "Name": name}
        if timezone:
            body["Timezone"] = timezone
        try:
            return _object(self._call("POST", "/v1.0/accounts", json=body))
        except ProviderError as exc:
            if exc.status == 400 and "already in use" in exc.message.lower():
                raise AccountExists(
                    f"account {account_id!r} already exists on the platform",
                    category="config",
                    hint="adopt it with `reconciler import --tenant TENANT`; nothing was changed",
                    status=400,
                ) from None
            raise

    def get_account(self, account_id: str) -> dict[str, Any] | None:
        return _object_or_none(self._call("GET", f"/v1.0/accounts/{_part(account_id)}", missing_ok=True))

    def list_accounts(self) -> list[dict[str, Any]]:
        return _objects(self._call("GET", "/v1.0/accounts"))

    def update_account(self, account_id: str, name: str, timezone: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"Name": name}
        if timezone:
            body["Timezone"] = timezone
        return _object(self._call("PUT", f"/v1.0/accounts/{_part(account_id)}", json=body))

    def delete_account(self, account_id: str) -> bool:
        """False when the account was already gone."""
        return self._call("DELETE", f"/v1.0/accounts/{_part(account_id)}", missing_ok=True) is not _MISSING

    # -- connectors -----------------------------------------------------------------------------------------------

    def list_connectors(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """The connectors the partner (or, given one, the account) can install, with their `Authentication[]` and
        `Parameters[]`."""
        return _objects(self._call("GET", "/v1.0/connectors", account=account_id))

    def list_account_connectors(self, account_id: str) -> list[dict[str, Any]]:
        return _objects(self._call("GET", "/v1.0/account/connectors", account=account_id))

    def get_account_connector(self, account_id: str, connector_id: str) -> dict[str, Any] | None:
        path = f"/v1.0/account/connectors/{_part(connector_id)}"
        return _object_or_none(self._call("GET", path, account=account_id, missing_ok=True))

    def install(
        self,
        account_id: str,
        connector_id: str,
        *,
        name: str,
        authentication_id: str | None,
        properties: Sequence[Mapping[str, Any]],
        description: str | None = None,
    ) -> dict[str, Any]:
        """Install a connector in the account as the account connector `name`. After a transient failure the
        account's connectors are listed first: one named `name` of this connector is the install that went through."""
        body: dict[str, Any] = {"Name": name, "Properties": [dict(p) for p in properties]}
        if authentication_id is not None:
            body["AuthenticationId"] = authentication_id
        if description:
            body["Description"] = description
        path = f"/v1.0/connectors/{_part(connector_id)}/install"
        sent = tuple(str(p.get("Value")) for p in properties if p.get("Name") in SECRET_PROPERTIES)
        failed: list[ProviderError] = []

        def attempt() -> dict[str, Any]:
            if failed:
                done = self.installed(account_id, connector_id, name)
                if done is not None:
                    return done
            try:
                return _object(self._call("POST", path, account=account_id, json=body, retry=False, sent=sent))
            except ProviderError as exc:
                if exc.category == "transient":
                    failed.append(exc)
                raise

        return retrying(attempt, self._policy, self._sleep)

    def installed(self, account_id: str, connector_id: str, name: str) -> dict[str, Any] | None:
        """The account connector named `name` of this connector in the account, if there is one."""
        for found in self.list_account_connectors(account_id):
            connector = found.get("Connector") or {}
            if found.get("Name") == name and str(connector.get("Id", connector_id)) == str(connector_id):
                return found
        return None

    def set_property(self, account_id: str, account_connector_id: str, name: str, value: str) -> None:
        path = f"/v1.0/account/connectors/{_part(account_connector_id)}/properties"
        sent = (value,) if name in SECRET_PROPERTIES else ()
        self._call("POST", path, account=account_id, json={"Name": name, "Value": value}, sent=sent)

    def put_auth_value(self, account_id: str, account_connector_id: str, auth_value: SecretStr) -> None:
        """Hand the platform the tokens (a JSON string, see the protocols) for an account connector."""
        path = f"/v1.0/account/connectors/{_part(account_connector_id)}"
        value = auth_value.get_secret_value()
        self._call("PUT", path, account=account_id, json={"AuthValue": value}, sent=(value, *_strings_in(value)))

    def delete_account_connector(self, account_id: str, account_connector_id: str) -> bool:
        """False when it was already gone. A platform without the call (405) is an error saying where to do it."""
        path = f"/v1.0/account/connectors/{_part(account_connector_id)}"
        return self._call("DELETE", path, account=account_id, missing_ok=True) is not _MISSING

    def sign_in_token(self, account_id: str, username: str | None = None) -> SignInToken:
        body = {"Username": username} if username else {}
        data = _object(self._call("POST", f"/v1.0/accounts/{_part(account_id)}/signintoken", json=body))
        token = data.get("Token")
        if not isinstance(token, str) or not token:
            raise ProviderError("the Cyclr API answered a sign-in token request without a token", category="protocol")
        return SignInToken(SecretStr(token), _utc(data.get("ExpiresAtUtc")))

    # -- the request path -----------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        account: str | None = None,
        json: Any = None,
        missing_ok: bool = False,
        retry: bool = True,
        sent: tuple[str, ...] = (),
    ) -> Any:
        """One API call's JSON answer (`_MISSING` for a 404 when `missing_ok`), with the partner token, retried
        when `retry` and the failure is transient. `sent`: the secret values in the request, kept out of any error
        made from the answer (a message may repeat the request) — as is every secret sent before by this client (a
        message may repeat what another request set)."""

        with self._token_lock:
            self._sent.update(sent)

        def once() -> Any:
            return self._authorized(method, path, account, json, missing_ok, sent)

        return retrying(once, self._policy, self._sleep) if retry else once()

    def _authorized(
        self, method: str, path: str, account: str | None, json: Any, missing_ok: bool, sent: tuple[str, ...]
    ) -> Any:
        """The call with the cached partner token; on a 401 once more with a new token; a second 401 is the
        partner's API credentials' fault."""
        token, fresh = self._partner_token()
        response = self._send(method, path, token, account, json)
        if response.status_code == 401 and not fresh:
            self._forget(token)
            token, _ = self._partner_token()
            response = self._send(method, path, token, account, json)
        if response.status_code == 401:
            raise _credentials_refused(self._credentials.client_id, response.status_code)
        try:
            return _answer(response, f"{method} {path}", missing_ok)
        except ProviderError as exc:
            with self._token_lock:
                known = (*self._sent, *sent)
            raise redacted(exc, (*known, token, self._credentials.client_secret.get_secret_value())) from None

    def _send(self, method: str, path: str, token: str, account: str | None, json: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if account is not None:
            headers["X-Cyclr-Account"] = account
        try:
            return self._client().request(method, self._api + path, headers=headers, json=json)
        except httpx.HTTPError as exc:
            raise transient(f"the Cyclr API ({method} {path})", exc) from None

    def _partner_token(self) -> tuple[str, bool]:
        """The partner token and whether it was fetched just now (one fetch at a time across threads; a token
        already fetched is read without the lock, which 32 threads would otherwise queue on)."""
        token = self._token
        if token is not None:
            return token, False
        with self._token_lock:
            if self._token is not None:
                return self._token, False
            self._token = retrying(self._fetch_token, self._policy, self._sleep)
            return self._token, True

    def _forget(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret.get_secret_value(),
        }
        try:
            response = self._client().post(self._api + "/oauth/token", data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise transient("the Cyclr API token endpoint", exc) from None
        if response.status_code in (400, 401, 403):
            raise _credentials_refused(self._credentials.client_id, response.status_code)
        try:
            data = _object(_answer(response, "POST /oauth/token", missing_ok=False))
        except ProviderError as exc:
            raise redacted(exc, (form["client_secret"],)) from None
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProviderError("the Cyclr API token endpoint answered without an access_token", category="protocol")
        return token


_MISSING: Any = object()


def sign_in_link(service_url: str, account_connector_id: str, token: SignInToken, target_origin: str) -> str:
    """The browser link that signs an account connector in (every value URL-encoded); it holds a one-use token and
    is shown only to the person who opens it."""
    query = urlencode(
        {"id": account_connector_id, "token": token.token.get_secret_value(), "targetOrigin": target_origin}
    )
    return f"{service_url.rstrip('/')}/connectorauth/updateaccountconnectoroauth?{query}"


def _credentials_refused(client_id: str, status: int) -> ProviderError:
    return ProviderError(
        f"the Cyclr API refused the partner API credentials (client id {client_id!r}, HTTP {status})",
        category="partner",
        hint="check platform.client_id and platform.client_secret (Cyclr Console > Settings > OAuth Client Credentials)",
        status=status,
    )


def _answer(response: httpx.Response, what: str, missing_ok: bool) -> Any:
    """The JSON of a successful answer; every other answer as a classified `ProviderError`."""
    status = response.status_code
    if status == 404 and missing_ok:
        return _MISSING
    if 200 <= status < 300:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"the Cyclr API answered {what} with no JSON", category="protocol", status=status) from None
    if status == 429 or status >= 500:
        raise ProviderError(
            f"the Cyclr API is unavailable ({what}: HTTP {status}); try again later",
            category="transient",
            status=status,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    message = _message(response)
    detail = f": {message}" if message else ""
    if status == 405:
        raise ProviderError(
            f"the Cyclr API does not offer {what} (HTTP 405){detail}",
            category="protocol",
            hint="do it in the Cyclr console; nothing was changed here",
            status=status,
        )
    if status in (400, 404, 409, 422):
        raise ProviderError(f"the Cyclr API refused {what} (HTTP {status}){detail}", category="config", status=status)
    raise ProviderError(f"the Cyclr API refused {what} (HTTP {status}){detail}", category="protocol", status=status)


def _message(response: httpx.Response) -> str | None:
    """Cyclr's `{"Message": ...}`, on one line and bounded."""
    try:
        data = response.json()
    except ValueError:
        return None
    message = data.get("Message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message.strip():
        return None
    text = one_line(message.strip())
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"


def _strings_in(value: str) -> tuple[str, ...]:
    """The string values of a JSON object given as text (the tokens inside an AuthValue); none if it is not one."""
    try:
        data = json.loads(value)
    except ValueError:
        return ()
    return tuple(v for v in data.values() if isinstance(v, str)) if isinstance(data, dict) else ()


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProviderError("the Cyclr API answered with something other than an object", category="protocol")
    return data


def _object_or_none(data: Any) -> dict[str, Any] | None:
    return None if data is _MISSING else _object(data)


def _objects(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ProviderError("the Cyclr API answered with something other than a list of objects", category="protocol")
    return data


def _part(value: str) -> str:
    """A path segment: ids are sent as they are, but nothing in one can leave its segment."""
    return quote(str(value), safe="")


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
