"""The Cyclr API client on its own (httpx.MockTransport): the partner token, retries, errors, secrets kept out.

The flows through the CLI run against the sandbox over real HTTP; these tests pin the client's wire behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.retry import RetryPolicy
from reconciler.platforms.cyclr.api import AccountExists, CyclrApi, PartnerApiCredentials, sign_in_link

API = "https://api.eu.cyclr.com"
SECRET = "partner-secret-7c1f0e9a2b"
TOKENS = ["bearer-one-5d2c8e", "bearer-two-91aa4f", "bearer-three-0b7d3c"]

Handler = Callable[[httpx.Request], httpx.Response]


class FakeCyclr:
    """Answers the token endpoint with TOKENS in turn and routes the rest to `routes` (method, path) -> handler."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.issued = 0
        self.routes: dict[tuple[str, str], list[Handler]] = {}

    def on(self, method: str, path: str, *answers: Handler) -> None:
        self.routes[(method, path)] = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth/token":
            self.issued += 1
            return httpx.Response(200, json={"token_type": "bearer", "access_token": TOKENS[self.issued - 1],
                                             "expires_in": 1209599})
        answers = self.routes[(request.method, request.url.path)]
        return (answers.pop(0) if len(answers) > 1 else answers[0])(request)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]


def ok(body: object, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def status(code: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(code, json=body, headers=headers)


@pytest.fixture
def fake() -> FakeCyclr:
    return FakeCyclr()


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def api(fake: FakeCyclr, slept: list[float]) -> CyclrApi:
    client = httpx.Client(transport=httpx.MockTransport(fake))
    credentials = PartnerApiCredentials("partner-client", SecretStr(SECRET))
    return CyclrApi(API, credentials, lambda: client, policy=RetryPolicy(attempts=3, backoff=0.25), sleep=slept.append)


def test_the_partner_token_is_fetched_once_and_sent_with_the_account_header(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/account/connectors", ok([{"Id": 7, "Name": "ado-main"}]))
    assert api.list_account_connectors("acme") == [{"Id": 7, "Name": "ado-main"}]
    assert api.list_account_connectors("acme")[0]["Id"] == 7
    (token_request,) = fake.calls("/oauth/token")
    form = dict(x.split("=", 1) for x in token_request.content.decode().split("&"))
    assert form["grant_type"] == "client_credentials" and form["client_id"] == "partner-client"
    for request in fake.calls("/v1.0/account/connectors"):
        assert request.headers["Authorization"] == f"Bearer {TOKENS[0]}"
        assert request.headers["X-Cyclr-Account"] == "acme"


def test_a_401_fetches_a_new_token_once_and_retries(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/accounts/acme", ok({"Id": "acme"}), status(401), ok({"Id": "acme"}))
    assert api.get_account("acme") == {"Id": "acme"}
    assert api.get_account("acme") == {"Id": "acme"}  # the first token expired in between
    assert fake.issued == 2
    last = fake.calls("/v1.0/accounts/acme")[-1]
    assert last.headers["Authorization"] == f"Bearer {TOKENS[1]}"


def test_a_second_401_names_the_partner_api_credentials(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/accounts/acme", ok({"Id": "acme"}), status(401))
    api.get_account("acme")
    with pytest.raises(ProviderError) as caught:
        api.get_account("acme")
    assert caught.value.category == "partner"
    assert "partner API credentials" in caught.value.message and "platform.client_secret" in str(caught.value.hint)
    assert fake.issued == 2  # once again, not in a loop
    assert SECRET not in caught.value.message + str(caught.value.hint)


def test_a_refused_token_request_is_the_partners_fault_and_never_echoes_the_secret(
    api: CyclrApi, fake: FakeCyclr
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        fake.issued += 1
        return httpx.Response(401, json={"Message": f"bad secret {SECRET}"})

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    bad = CyclrApi(API, PartnerApiCredentials("partner-client", SecretStr(SECRET)), lambda: client)
    with pytest.raises(ProviderError) as caught:
        bad.list_accounts()
    assert caught.value.category == "partner"
    assert SECRET not in str(caught.value) + str(caught.value.hint) + repr(bad)


def test_429_and_503_honour_retry_after(api: CyclrApi, fake: FakeCyclr, slept: list[float]) -> None:
    fake.on(
        "GET", "/v1.0/connectors",
        status(429, {"Message": "slow down"}, {"Retry-After": "3"}),
        status(503, None, {"Retry-After": "1"}),
        ok([{"Id": 1, "Name": "Microsoft Azure DevOps"}]),
    )
    assert api.list_connectors("acme")[0]["Id"] == 1
    assert slept == [3.0, 1.0]


def test_transient_failures_end_after_the_policys_attempts(api: CyclrApi, fake: FakeCyclr, slept: list[float]) -> None:
    fake.on("GET", "/v1.0/accounts", status(500))
    with pytest.raises(ProviderError) as caught:
        api.list_accounts()
    assert caught.value.category == "transient" and "3 attempts" in caught.value.message
    assert slept == [0.25, 0.5]


def test_timeouts_are_transient(fake: FakeCyclr, slept: list[float]) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return fake(request)
        raise httpx.ReadTimeout("timed out", request=request)

    client = httpx.Client(transport=httpx.MockTransport(timeout))
    api = CyclrApi(API, PartnerApiCredentials("c", SecretStr(SECRET)), lambda: client,
                   policy=RetryPolicy(attempts=2), sleep=slept.append)
    with pytest.raises(ProviderError) as caught:
        api.list_accounts()
    assert caught.value.category == "transient" and "timed out" in caught.value.message
    assert len(slept) == 1


def test_a_cyclr_message_is_shown_as_it_is(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("POST", "/v1.0/accounts", status(400, {"Message": "Name is required"}))
    with pytest.raises(ProviderError) as caught:
        api.create_account("acme", "")
    assert caught.value.message.endswith(": Name is required")
    assert caught.value.category == "config"


def test_an_account_id_in_use_is_never_taken_over(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("POST", "/v1.0/accounts", status(400, {"Message": "ID already in use"}))
    with pytest.raises(AccountExists) as caught:
        api.create_account("acme", "Acme Ltd", "Europe/London")
    assert "reconciler import" in str(caught.value.hint)
    sent = json.loads(fake.calls("/v1.0/accounts")[0].content)
    assert sent == {"Id": "acme", "Name": "Acme Ltd", "Timezone": "Europe/London"}


def test_an_install_that_failed_is_looked_for_before_it_is_sent_again(
    api: CyclrApi, fake: FakeCyclr, slept: list[float]
) -> None:
    fake.on("POST", "/v1.0/connectors/42/install", status(500))
    fake.on("GET", "/v1.0/account/connectors", ok([{"Id": 9, "Name": "ado-main", "Connector": {"Id": 42}}]))
    found = api.install("acme", "42", name="ado-main", authentication_id="3", properties=[{"Name": "Organization",
                                                                                           "Value": "acme-org"}])
    assert found["Id"] == 9
    assert len(fake.calls("/v1.0/connectors/42/install")) == 1  # never installed twice


def test_an_install_that_did_not_go_through_is_sent_again(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("POST", "/v1.0/connectors/42/install", status(502), ok({"Id": 11, "Authenticated": False}))
    fake.on("GET", "/v1.0/account/connectors", ok([{"Id": 5, "Name": "other", "Connector": {"Id": 42}}]))
    assert api.install("acme", "42", name="ado-main", authentication_id=None, properties=[])["Id"] == 11
    assert len(fake.calls("/v1.0/connectors/42/install")) == 2
    assert len(fake.calls("/v1.0/account/connectors")) == 1


def test_missing_things_are_none_or_false_not_errors(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/account/connectors/9", status(404, {"Message": "Not found"}))
    fake.on("DELETE", "/v1.0/account/connectors/9", status(404))
    fake.on("DELETE", "/v1.0/accounts/acme", status(204))
    assert api.get_account_connector("acme", "9") is None
    assert api.delete_account_connector("acme", "9") is False
    assert api.delete_account("acme") is True


def test_a_delete_the_platform_does_not_offer_says_where_to_do_it(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("DELETE", "/v1.0/account/connectors/9", status(405, {"Message": "Method not allowed"}))
    with pytest.raises(ProviderError) as caught:
        api.delete_account_connector("acme", "9")
    assert "Cyclr console" in str(caught.value.hint)


def test_ids_cannot_leave_their_path_segment(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/accounts/../connectors", status(404))  # decoded by httpx
    assert api.get_account("../connectors") is None
    assert fake.requests[-1].url.raw_path == b"/v1.0/accounts/..%2Fconnectors"


def test_sign_in_tokens_appear_only_in_the_link(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("POST", "/v1.0/accounts/acme/signintoken", ok({"Token": "one-use token&x", "ExpiresAtUtc": "2026-12-03T10:05:00Z"}))
    token = api.sign_in_token("acme", "admin@acme.example")
    assert "one-use" not in repr(token) and token.expires_at is not None and token.expires_at.utcoffset() is not None
    link = sign_in_link("https://app-h.cyclr.com/", "9", token, "http://127.0.0.1:8765/done")
    assert link == (
        "https://app-h.cyclr.com/connectorauth/updateaccountconnectoroauth?id=9&token=one-use+token%26x"
        "&targetOrigin=http%3A%2F%2F127.0.0.1%3A8765%2Fdone"
    )


def test_tokens_are_handed_over_as_an_authvalue_string(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("PUT", "/v1.0/account/connectors/9", ok({"Id": 9, "Authenticated": True}))
    value = json.dumps({"AccessToken": "a-token", "RefreshToken": "r-token", "Expires": "2026-12-03T11:00:00Z"})
    api.put_auth_value("acme", "9", SecretStr(value))
    sent = json.loads(fake.calls("/v1.0/account/connectors/9")[0].content)
    assert json.loads(sent["AuthValue"])["RefreshToken"] == "r-token"


def test_answers_in_no_documented_shape_are_protocol_errors(api: CyclrApi, fake: FakeCyclr) -> None:
    fake.on("GET", "/v1.0/connectors", ok({"not": "a list"}))
    with pytest.raises(ProviderError) as caught:
        api.list_connectors("acme")
    assert caught.value.category == "protocol"


def test_a_message_that_repeats_the_request_never_carries_its_secrets(api: CyclrApi, fake: FakeCyclr) -> None:
    access, refresh = "access-token-4b1e9a7c55", "refresh-token-8d2f0c6e13"
    client_secret = "connector-secret-93ab71f0"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"Message": f"bad request: {request.content.decode()}"})

    fake.on("PUT", "/v1.0/account/connectors/9", echo)
    fake.on("POST", "/v1.0/account/connectors/9/properties", echo)
    fake.on("POST", "/v1.0/connectors/42/install", echo)
    value = json.dumps({"AccessToken": access, "RefreshToken": refresh})
    calls = [
        lambda: api.put_auth_value("acme", "9", SecretStr(value)),
        lambda: api.set_property("acme", "9", "ClientSecret", client_secret),
        lambda: api.install("acme", "42", name="ado", authentication_id=None,
                            properties=[{"Name": "ClientSecret", "Value": client_secret}]),
    ]
    for call in calls:
        with pytest.raises(ProviderError) as caught:
            call()
        shown = str(caught.value) + str(caught.value.hint)
        assert caught.value.status == 400
        for secret in (access, refresh, client_secret, SECRET, *TOKENS):
            assert secret not in shown


def test_a_token_endpoint_message_never_carries_the_client_secret(fake: FakeCyclr) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"Message": f"cannot: {request.content.decode()}"})

    client = httpx.Client(transport=httpx.MockTransport(echo))
    api = CyclrApi(API, PartnerApiCredentials("partner-client", SecretStr(SECRET)), lambda: client)
    with pytest.raises(ProviderError) as caught:
        api.list_accounts()
    assert caught.value.status == 422 and SECRET not in str(caught.value)
