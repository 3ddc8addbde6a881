"""The sandbox's Cyclr model on its own: the rules the platform adapter is tested against over HTTP."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from reconciler.sandbox.cyclr import CyclrFailure, CyclrSandbox
from reconciler.sandbox.model import ENTRA, LEGACY
from reconciler.sandbox.provider import Provider

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
SERVICE = "http://127.0.0.1:8765"


@pytest.fixture
def cyclr() -> CyclrSandbox:
    provider = Provider()
    for flavour, client in ((ENTRA, "entra-app"), (LEGACY, "legacy-app")):
        provider.register_app({"client_id": client, "client_secret": f"{client}-secret", "flavour": flavour,
                               "redirect_uris": [SERVICE + "/connector/callback"]})
    sandbox = CyclrSandbox(provider, "partner", "partner-secret")
    sandbox.create_account({"Id": "acme", "Name": "Acme Ltd"})
    return sandbox


def _install(cyclr: CyclrSandbox, authentication: int, client: str | None) -> int:
    properties = [{"Name": "Organization", "Value": "acme-org"}, {"Name": "Scopes", "Value": "vso.code vso.work"}]
    if client:
        properties += [{"Name": "ClientId", "Value": client}, {"Name": "ClientSecret", "Value": f"{client}-secret"}]
    body = {"Name": "ado-main", "AuthenticationId": authentication, "Properties": properties}
    return int(cyclr.install("acme", "310", body)["Id"])


def _sign_in(cyclr: CyclrSandbox, connector: int, approve: bool = True) -> str:
    token = cyclr.sign_in_token("acme", NOW)["Token"]
    where = cyclr.begin_sign_in({"id": str(connector), "token": token, "targetOrigin": "http://127.0.0.1:9/done"},
                                SERVICE, NOW)
    path, query = where.split("?", 1)
    flavour = LEGACY if path == "/oauth2/authorize" else ENTRA
    consent = cyclr.provider.begin_consent(flavour, dict(parse_qsl(query)))
    back = cyclr.provider.decide(consent.id, approve)
    assert back.startswith(SERVICE + "/connector/callback?")
    return cyclr.complete_sign_in(dict(parse_qsl(urlsplit(back).query)))


@pytest.mark.parametrize(("authentication", "client"), [(31, "entra-app"), (32, "legacy-app")])
def test_a_sign_in_runs_the_providers_consent_and_authenticates(cyclr: CyclrSandbox, authentication: int,
                                                                client: str) -> None:
    connector = _install(cyclr, authentication, client)
    assert cyclr.account_connector("acme", str(connector))["Authenticated"] is False
    assert _sign_in(cyclr, connector) == "http://127.0.0.1:9/done"
    shown = cyclr.account_connector("acme", str(connector))
    assert shown["Authenticated"] is True
    assert {"Name": "ClientSecret", "Value": "********"} in shown["Properties"]
    assert json.loads(cyclr.account_connectors[connector].auth_value or "{}")["AccessToken"]


def test_the_application_connector_library_serves_installs_without_their_own_client(cyclr: CyclrSandbox) -> None:
    connector = _install(cyclr, 31, None)
    with pytest.raises(CyclrFailure, match="Application Connector Library"):
        _sign_in(cyclr, connector)
    cyclr.library[31] = ("entra-app", "entra-app-secret")
    assert _sign_in(cyclr, connector) == "http://127.0.0.1:9/done"


def test_a_declined_sign_in_leaves_it_unauthenticated(cyclr: CyclrSandbox) -> None:
    connector = _install(cyclr, 31, "entra-app")
    assert _sign_in(cyclr, connector, approve=False) == "http://127.0.0.1:9/done?error=access_denied"
    assert cyclr.account_connector("acme", str(connector))["Authenticated"] is False


def test_sign_in_tokens_are_one_use_and_expire(cyclr: CyclrSandbox) -> None:
    connector = str(_install(cyclr, 31, "entra-app"))
    token = cyclr.sign_in_token("acme", NOW)["Token"]
    params = {"id": connector, "token": token, "targetOrigin": "http://127.0.0.1:9/"}
    cyclr.begin_sign_in(params, SERVICE, NOW)
    with pytest.raises(CyclrFailure) as used:
        cyclr.begin_sign_in(params, SERVICE, NOW)
    assert used.value.status == 401
    late = {**params, "token": cyclr.sign_in_token("acme", NOW)["Token"]}
    with pytest.raises(CyclrFailure):
        cyclr.begin_sign_in(late, SERVICE, NOW + dt.timedelta(minutes=6))


def test_accounts_follow_the_documented_errors(cyclr: CyclrSandbox) -> None:
    with pytest.raises(CyclrFailure, match="ID already in use"):
        cyclr.create_account({"Id": "acme", "Name": "Again"})
    with pytest.raises(CyclrFailure, match="Name is required"):
        cyclr.create_account({"Id": "globex"})
    with pytest.raises(CyclrFailure) as missing:
        cyclr.account("nobody")
    assert missing.value.status == 404


def test_console_actions_drift_what_was_installed(cyclr: CyclrSandbox) -> None:
    connector = _install(cyclr, 31, "entra-app")
    _sign_in(cyclr, connector)
    cyclr.deauthenticate(connector)
    assert cyclr.account_connector("acme", str(connector))["Authenticated"] is False
    cyclr.set_property("acme", str(connector), {"Name": "Organization", "Value": "edited"})
    assert {"Name": "Organization", "Value": "edited"} in cyclr.account_connector("acme", str(connector))["Properties"]
    cyclr.delete_account_connector("acme", str(connector))
    assert cyclr.list_account_connectors("acme") == []


def test_bearer_tokens_last_until_expired(cyclr: CyclrSandbox) -> None:
    with pytest.raises(CyclrFailure):
        cyclr.issue_bearer({"grant_type": "client_credentials", "client_id": "partner", "client_secret": "x"}, NOW)
    token = cyclr.issue_bearer({"grant_type": "client_credentials", "client_id": "partner",
                                "client_secret": "partner-secret"}, NOW)["access_token"]
    cyclr.check_bearer(f"Bearer {token}", NOW + dt.timedelta(days=13))
    with pytest.raises(CyclrFailure):
        cyclr.check_bearer(f"Bearer {token}", NOW + dt.timedelta(days=15))
    cyclr.expire_bearers()
    with pytest.raises(CyclrFailure):
        cyclr.check_bearer(f"Bearer {token}", NOW)
