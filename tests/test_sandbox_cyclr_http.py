"""The Cyclr API client against the sandbox's Cyclr API over real HTTP on 127.0.0.1: partner token, accounts,
installs, properties, the sign-in chain through the consent page, faults, console drift, seeds and concurrency."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.retry import RetryPolicy
from reconciler.cli import cli
from reconciler.platforms.cyclr.api import AccountExists, CyclrApi, PartnerApiCredentials, sign_in_link
from reconciler.sandbox import SandboxServer, cyclr_routes, load_seed
from reconciler.sandbox.agent import ConsentAgentError, answer_consent
from reconciler.sandbox.seed import SeedError
from reconciler.sandbox.server import BACKLOG

PARTNER, PARTNER_SECRET = "partner-client", "partner-secret-61c0d2e9f7-UNIQUE"
ENTRA_APP, ENTRA_SECRET = "entra-app", "entra-app-secret-4b8e1a"
LANDING = "http://127.0.0.1:9/signed-in"
ADO = "310"
TOOL = Path(__file__).parent / "tools" / "chromium_approve.py"


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as sandbox:
        sandbox.provider.register_app({"client_id": ENTRA_APP, "client_secret": ENTRA_SECRET, "flavour": "entra-id",
                                       "redirect_uris": [sandbox.url + "/connector/callback"]})
        _admin(sandbox, "cyclr/partner", {"client_id": PARTNER, "client_secret": PARTNER_SECRET})
        yield sandbox


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def api(server: SandboxServer, slept: list[float]) -> Iterator[CyclrApi]:
    with httpx.Client(timeout=2.0) as client:
        yield CyclrApi(server.url, PartnerApiCredentials(PARTNER, SecretStr(PARTNER_SECRET)), lambda: client,
                       policy=RetryPolicy(attempts=3, backoff=0.25), sleep=slept.append)


def _admin(server: SandboxServer, route: str, body: object) -> Any:
    answer = httpx.post(f"{server.url}/_sandbox/{route}", json=body)
    assert answer.status_code < 300, answer.text
    return answer.json()


def _install(api: CyclrApi, account: str = "acme", name: str = "ado-main") -> str:
    properties = [{"Name": "Organization", "Value": "acme-org"}, {"Name": "Scopes", "Value": "vso.work_full"},
                  {"Name": "ClientId", "Value": ENTRA_APP}, {"Name": "ClientSecret", "Value": ENTRA_SECRET}]
    return str(api.install(account, ADO, name=name, authentication_id="31", properties=properties)["Id"])


def _link(server: SandboxServer, api: CyclrApi, connector: str) -> str:
    return sign_in_link(server.url, connector, api.sign_in_token("acme"), LANDING)


def _properties(api: CyclrApi, connector: str) -> dict[str, str]:
    found = api.get_account_connector("acme", connector)
    assert found is not None
    return {p["Name"]: p["Value"] for p in found["Properties"]}


def test_accounts_are_created_once_and_an_id_in_use_is_refused(api: CyclrApi) -> None:
    """The partner token opens the API; a second account with the same id is `AccountExists`, never a takeover."""
    assert api.create_account("acme", "Acme Ltd", "Europe/London")["Id"] == "acme"
    with pytest.raises(AccountExists, match="already exists"):
        api.create_account("acme", "Someone else")
    assert api.get_account("acme") == {"Id": "acme", "Name": "Acme Ltd", "Description": "", "Timezone": "Europe/London"}
    assert api.get_account("nobody") is None
    assert [a["Id"] for a in api.list_accounts()] == ["acme"]
    assert api.delete_account("acme") is True and api.delete_account("acme") is False


def test_a_connector_installs_with_its_properties_and_is_listed(api: CyclrApi) -> None:
    """Install, list, set a property, delete: each as the account header says."""
    api.create_account("acme", "Acme Ltd")
    assert {c["Name"] for c in api.list_connectors("acme")} >= {"Microsoft Azure DevOps", "Slack"}
    connector = _install(api)
    assert [c["Name"] for c in api.list_account_connectors("acme")] == ["ado-main"]
    api.set_property("acme", connector, "Project", "Platform")
    assert _properties(api, connector) == {"ClientId": ENTRA_APP, "ClientSecret": "********", "Organization": "acme-org",
                                           "Project": "Platform", "Scopes": "vso.work_full"}
    with pytest.raises(ProviderError, match="Unknown property Colour"):
        api.set_property("acme", connector, "Colour", "blue")
    assert api.delete_account_connector("acme", connector) is True
    assert api.get_account_connector("acme", connector) is None


def test_an_auth_value_put_authenticates_and_an_empty_one_signs_out(api: CyclrApi) -> None:
    """PUT with AuthValue (auth_via: reconciler) sets Authenticated; "{}" clears it."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    api.put_auth_value("acme", connector, SecretStr(json.dumps({"AccessToken": "at", "RefreshToken": "rt"})))
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is True
    api.put_auth_value("acme", connector, SecretStr("{}"))
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is False


def test_a_put_renames_and_sets_properties(server: SandboxServer, api: CyclrApi) -> None:
    """PUT without AuthValue changes the name and properties, and leaves the authentication as it was."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    answer_consent(_link(server, api, connector), follow=False)
    headers = {"Authorization": f"Bearer {server.cyclr.issued[0]}", "X-Cyclr-Account": "acme"}
    body = {"Name": "renamed", "Properties": [{"Name": "Project", "Value": "Platform"}]}
    answer = httpx.put(f"{server.url}/v1.0/account/connectors/{connector}", json=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["Name"] == "renamed"
    assert answer.json()["Authenticated"] is True and _properties(api, connector)["Project"] == "Platform"


@pytest.mark.parametrize("approve", [True, False])
def test_the_connectorauth_link_leads_through_consent_to_target_origin(server: SandboxServer, api: CyclrApi,
                                                                       approve: bool) -> None:
    """The scripted user follows the link to the consent page; approve authenticates, deny lands with ?error."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    landing = answer_consent(_link(server, api, connector), approve=approve, follow=False)
    assert landing == (LANDING if approve else LANDING + "?error=access_denied")
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is approve


def test_a_used_or_expired_sign_in_token_is_refused(server: SandboxServer, api: CyclrApi,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The sign-in token is one-use and lives five minutes; the refusal is a Cyclr message, never the consent page."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    link = _link(server, api, connector)
    answer_consent(link, follow=False)
    with pytest.raises(ConsentAgentError, match=r"HTTP 401.*invalid, used or expired"):
        answer_consent(link, follow=False)
    late = _link(server, api, connector)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    monkeypatch.setattr(cyclr_routes, "now", lambda: later)
    refused = httpx.get(late)
    assert refused.status_code == 401 and refused.json() == {"Message": "The sign-in token is invalid, used or expired"}


def test_an_expired_partner_token_is_fetched_again_once(server: SandboxServer, api: CyclrApi) -> None:
    """After every bearer expires, the next call gets 401, fetches a new partner token and succeeds."""
    api.create_account("acme", "Acme Ltd")
    assert _admin(server, "cyclr/expire-bearers", {}) == {"expired": 1}
    assert api.get_account("acme") is not None
    assert len(server.cyclr.bearers) == 1 and len(server.cyclr.issued) == 2


def test_wrong_partner_credentials_and_a_missing_bearer_are_refused(server: SandboxServer) -> None:
    """Bad client credentials are the partner's fault; a call without a bearer is 401 with a Message."""
    with httpx.Client() as client:
        wrong = CyclrApi(server.url, PartnerApiCredentials(PARTNER, SecretStr("not-it")), lambda: client)
        with pytest.raises(ProviderError, match="refused the partner API credentials") as refused:
            wrong.list_accounts()
        assert "not-it" not in str(refused.value)
        bare = client.get(server.url + "/v1.0/accounts")
    assert bare.status_code == 401 and bare.json() == {"Message": "Authorization has been denied for this request."}


def test_a_429_is_retried_after_its_retry_after(server: SandboxServer, api: CyclrApi, slept: list[float]) -> None:
    """A 429 with Retry-After: 7 is waited out for 7 seconds, then the call succeeds."""
    api.create_account("acme", "Acme Ltd")
    _admin(server, "faults", {"endpoint": "cyclr", "faults": [{"status": 429, "retry_after": "7"}]})
    assert [c["Name"] for c in api.list_account_connectors("acme")] == []
    assert slept == [7.0]


def test_a_400_message_is_shown_as_cyclr_said_it(server: SandboxServer, api: CyclrApi) -> None:
    """A scripted 400 {"Message"} on an install reaches the user as that message."""
    api.create_account("acme", "Acme Ltd")
    fault = {"status": 400, "message": "InvalidScope: vso.work_full is not registered"}
    _admin(server, "faults", {"endpoint": "cyclr-install", "faults": [fault]})
    with pytest.raises(ProviderError, match=r"HTTP 400\): InvalidScope: vso.work_full is not registered"):
        _install(api)
    assert api.list_account_connectors("acme") == []


def test_a_failed_install_is_retried_once_and_installs_once(server: SandboxServer, api: CyclrApi) -> None:
    """A 500 and a hung install are retried; the account ends with exactly one account connector."""
    api.create_account("acme", "Acme Ltd")
    _admin(server, "faults", {"endpoint": "cyclr-install", "faults": [500, "hang"]})
    _install(api)
    assert [c["Name"] for c in api.list_account_connectors("acme")] == ["ado-main"]


def test_console_actions_drift_what_the_api_shows(server: SandboxServer, api: CyclrApi) -> None:
    """Deauthenticate, edit a property and delete in the 'console': the API shows each."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    answer_consent(_link(server, api, connector), follow=False)
    _admin(server, f"cyclr/account-connectors/{connector}/deauthenticate", {})
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is False
    _admin(server, f"cyclr/account-connectors/{connector}/properties", {"Name": "Organization", "Value": "edited"})
    assert _properties(api, connector)["Organization"] == "edited"
    _admin(server, f"cyclr/account-connectors/{connector}/delete", {})
    assert api.get_account_connector("acme", connector) is None
    missing = httpx.post(f"{server.url}/_sandbox/cyclr/account-connectors/{connector}/delete", json={})
    assert missing.status_code == 404 and "not found" in missing.json()["Message"]


def test_existing_accounts_come_from_the_admin_route_and_the_seed(server: SandboxServer, api: CyclrApi,
                                                                  tmp_path: Path) -> None:
    """Accounts made 'before the reconciler' are listed by the API as they are, signed in where they were."""
    added = _admin(server, "cyclr/accounts", {"id": "globex", "name": "Globex", "connectors": [
        {"connector": "Microsoft Azure DevOps", "name": "ado", "authentication_id": 31,
         "properties": {"Organization": "globex-org"}, "authenticated": True}]})
    (connector,) = added["accounts"][0]["Connectors"]
    assert (api.get_account_connector("globex", str(connector)) or {})["Authenticated"] is True
    seed = tmp_path / "seed.yaml"
    seed.write_text("cyclr:\n  partner: {client_id: other, client_secret: ${OTHER_SECRET}}\n"
                    "  library: [{authentication_id: 32, client_id: legacy-app, client_secret: s}]\n"
                    "  accounts:\n  - {id: initech, name: Initech, connectors: [{connector: 420, name: chat}]}\n")
    os.environ["OTHER_SECRET"] = "other-secret"
    try:
        load_seed(server.provider, seed, server.cyclr)
    finally:
        del os.environ["OTHER_SECRET"]
    assert server.cyclr.partner == ("other", "other-secret") and server.cyclr.library == {32: ("legacy-app", "s")}
    assert [c["Name"] for c in server.cyclr.list_account_connectors("initech")] == ["chat"]
    seed.write_text("cyclr:\n  accounts: [{id: x, name: X, connectors: [{connector: Teams, name: t}]}]\n")
    with pytest.raises(SeedError, match="cyclr: Connector Teams not found"):
        load_seed(server.provider, seed, server.cyclr)


def test_errors_are_cyclr_messages(server: SandboxServer, api: CyclrApi) -> None:
    """Unknown routes, methods and bodies answer {"Message": ...} with their status."""
    api.create_account("acme", "Acme Ltd")
    token = server.cyclr.issued[0]
    headers = {"Authorization": f"Bearer {token}", "X-Cyclr-Account": "acme"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        answers = [client.get("/v1.0/nothing"), client.delete("/v1.0/connectors"),
                   client.post("/v1.0/accounts", content=b"[1]"), client.post("/v1.0/accounts", json={"Id": "x"}),
                   client.get("/v1.0/account/connectors", headers={"X-Cyclr-Account": ""})]
    assert [(a.status_code, a.json()["Message"]) for a in answers] == [
        (404, "No HTTP resource was found that matches the request URI"),
        (405, "The requested resource does not support this method"),
        (400, "The request body must be a JSON object"),
        (400, "Name is required"),
        (400, "The X-Cyclr-Account header is required"),
    ]


def test_the_sandbox_approve_command_follows_a_connectorauth_link(server: SandboxServer, api: CyclrApi) -> None:
    """`reconciler sandbox approve LINK --no-follow` signs in and prints the targetOrigin landing."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    result = CliRunner().invoke(cli, ["sandbox", "approve", _link(server, api, connector), "--no-follow"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == LANDING
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is True
    assert not any(secret in result.output for secret in server.cyclr.issued)


class _Landing(BaseHTTPRequestHandler):
    """The targetOrigin page (HTTP/1.0: the body ends with the connection)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html><body><h1>Signed in to Cyclr</h1></body></html>")

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_chromium_signs_in_through_the_connectorauth_link(server: SandboxServer, api: CyclrApi) -> None:
    """A real headless Chromium opens the link, clicks Approve and lands on targetOrigin."""
    api.create_account("acme", "Acme Ltd")
    connector = _install(api)
    landing = HTTPServer(("127.0.0.1", 0), _Landing)
    threading.Thread(target=landing.serve_forever, daemon=True).start()
    try:
        target = f"http://127.0.0.1:{landing.server_address[1]}/done"
        link = sign_in_link(server.url, connector, api.sign_in_token("acme"), target)
        result = subprocess.run([sys.executable, str(TOOL), link], env={**os.environ, "CHROMIUM_DECISION": "approve"},
                                capture_output=True, text=True, timeout=120, check=False)
    finally:
        landing.shutdown()
        landing.server_close()
    assert result.returncode == 0, result.stderr
    assert "Signed in to Cyclr" in result.stderr
    assert (api.get_account_connector("acme", connector) or {})["Authenticated"] is True


def test_64_concurrent_connections_are_all_answered(server: SandboxServer, api: CyclrApi) -> None:
    """64 clients connecting at the same moment, 10 calls each: none is reset, every call answers 200 (the listen
    backlog holds a burst of connections; the standard library's default of 5 does not)."""
    api.create_account("acme", "Acme Ltd")
    assert BACKLOG >= 64
    headers = {"Authorization": f"Bearer {server.cyclr.issued[0]}", "X-Cyclr-Account": "acme"}
    clients = [httpx.Client(timeout=30.0, headers=headers) for _ in range(64)]
    start = threading.Barrier(64)
    statuses: list[int] = []
    failures: list[str] = []

    def run(http: httpx.Client) -> None:
        start.wait()
        for _ in range(10):
            try:
                statuses.append(http.get(server.url + "/v1.0/account/connectors").status_code)
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)

    threads = [threading.Thread(target=run, args=(http,)) for http in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for http in clients:
        http.close()
    assert failures == []
    assert statuses.count(200) == 64 * 10


def test_sandbox_serve_seeds_the_cyclr_api(tmp_path: Path) -> None:
    """`reconciler sandbox serve --seed` with a cyclr: section serves that partner and its existing accounts."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(f"cyclr:\n  partner: {{client_id: {PARTNER}, client_secret: {PARTNER_SECRET}}}\n"
                    "  accounts: [{id: globex, name: Globex, connectors: [{connector: 310, name: ado-main}]}]\n")
    command = [sys.executable, "-m", "reconciler", "sandbox", "serve", "--port", "0", "--seed", str(seed)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = line.split(" listening on ")[1].split()[0]
        with httpx.Client() as client:
            api = CyclrApi(url, PartnerApiCredentials(PARTNER, SecretStr(PARTNER_SECRET)), lambda: client)
            assert [c["Name"] for c in api.list_account_connectors("globex")] == ["ado-main"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
