"""Platform sign-in steps: the browser's redirect to the loopback listener over real HTTP, paste mode's polling with
an injected clock, and the one-use sign-in token shown nowhere but in paste mode's one announcement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.signin import BrowserSignIn, PasteSignIn, Polling
from reconciler.platforms.cyclr.api import SignInToken, sign_in_link
from reconciler.sandbox.cyclr import CyclrSandbox
from reconciler.sandbox.model import ENTRA
from reconciler.sandbox.provider import Provider

TOKEN = "one-use-SIGNIN-token-5f3a9c"
SERVICE = "http://127.0.0.1:8765"


class Links:
    """`link_for` as the executor gives it: each call mints a link with the (fake) one-use token."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token, self.origins = token, list[str | None]()

    def __call__(self, target_origin: str | None) -> str:
        self.origins.append(target_origin)
        return sign_in_link(SERVICE, "9", SignInToken(SecretStr(self.token), None), target_origin or SERVICE)


class Answers:
    """`authenticated()`: False for the first `after` questions, then True (never, when `after` is None)."""

    def __init__(self, after: int | None = 0) -> None:
        self.after, self.asked = after, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.after is not None and self.asked > self.after


class Clock:
    """An injected monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, list[float]()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _target(link: str) -> str:
    return parse_qs(urlsplit(link).query)["targetOrigin"][0]


def _redirecting(query: str, pages: list[httpx.Response]) -> Callable[[str], bool]:
    """A browser that, once opened, is redirected by the platform to `targetOrigin` (+ `query`)."""

    def open_url(link: str) -> bool:
        pages.append(httpx.get(_target(link) + query, timeout=10))
        return True

    return open_url


def _no_token_in(reports: list[str], error: BaseException | None = None) -> None:
    texts = [*reports] + ([str(error), repr(error), getattr(error, "hint", "") or ""] if error else [])
    assert all(TOKEN not in text for text in texts), texts


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _browser(open_url: Callable[[str], bool], reports: list[str], clock: Clock, timeout: float = 30) -> BrowserSignIn:
    polling = Polling(interval=2.0, confirmations=4, sleep=clock.sleep, clock=lambda: clock.now)
    return BrowserSignIn(reports.append, timeout=timeout, open_url=open_url, polling=polling)


def test_browser_sign_in_completes_on_the_redirect_and_the_apis_word(clock: Clock) -> None:
    """The link ends at the loopback listener; its redirect shows the close-the-tab page, then the API is asked."""
    pages: list[httpx.Response] = []
    reports: list[str] = []
    links, answers = Links(), Answers()
    _browser(_redirecting("", pages), reports, clock).sign_in(links, answers, "acme/ado-main")
    (origin,) = links.origins
    assert origin is not None and urlsplit(origin).hostname == "127.0.0.1" and urlsplit(origin).port
    assert pages[0].status_code == 200 and "close this tab" in pages[0].text
    assert answers.asked == 1 and clock.slept == []
    _no_token_in(reports)


def test_browser_sign_in_waits_for_the_platform_to_record_the_tokens(clock: Clock) -> None:
    """The platform may record the sign-in just after redirecting: it is asked again, a few times."""
    answers = Answers(after=2)
    _browser(_redirecting("", []), [], clock).sign_in(Links(), answers, "acme/ado-main")
    assert answers.asked == 3 and clock.slept == [2.0, 2.0]


def test_browser_sign_in_that_the_platform_never_confirms_is_missed(clock: Clock) -> None:
    """A redirect without the platform's confirmation is not a sign-in: missed, after `confirmations` questions."""
    answers, reports = Answers(after=None), list[str]()
    with pytest.raises(ConsentError, match="does not report it signed in") as failure:
        _browser(_redirecting("", []), reports, clock).sign_in(Links(), answers, "acme/ado-main")
    assert failure.value.category == "missed" and answers.asked == 4
    _no_token_in(reports, failure.value)


def test_a_declined_browser_sign_in_is_denied_and_the_api_is_not_asked(clock: Clock) -> None:
    """`error=access_denied` on the redirect is the user's refusal; its page says so."""
    pages: list[httpx.Response] = []
    answers, reports = Answers(), list[str]()
    with pytest.raises(ConsentError, match="denied") as failure:
        _browser(_redirecting("?error=access_denied", pages), reports, clock).sign_in(Links(), answers, "acme/x")
    assert failure.value.category == "denied" and answers.asked == 0
    assert "not completed" in pages[0].text
    _no_token_in(reports, failure.value)


def test_a_browser_sign_in_nobody_finishes_is_missed(clock: Clock) -> None:
    """No redirect before the timeout: category "missed" (the executor may leave it pending)."""
    answers, reports = Answers(), list[str]()
    with pytest.raises(ConsentError, match="no authorization arrived") as failure:
        _browser(lambda link: True, reports, clock, timeout=0.01).sign_in(Links(), answers, "acme/x")
    assert failure.value.category == "missed" and answers.asked == 0
    _no_token_in(reports, failure.value)


def _broken_browser(link: str) -> bool:
    raise OSError(f"no browser could open {link}")


@pytest.mark.parametrize("opener", [lambda link: False, _broken_browser])
def test_no_browser_is_missed_without_repeating_the_link(clock: Clock, opener: Callable[[str], bool]) -> None:
    """A browser that cannot be opened (even one whose error repeats the link) is missed; the link is not shown."""
    reports: list[str] = []
    with pytest.raises(ConsentError, match="could not open a browser") as failure:
        _browser(opener, reports, clock).sign_in(Links(), Answers(), "acme/x")
    assert failure.value.category == "missed" and "paste" in (failure.value.hint or "")
    assert failure.value.__context__ is None or TOKEN not in str(failure.value.__context__)
    _no_token_in(reports, failure.value)


def test_a_transient_failure_while_confirming_is_asked_again(clock: Clock) -> None:
    """A 503 from the API while confirming is 'not yet', reported; another failure is raised as it is."""
    replies: Iterator[bool | ProviderError] = iter([ProviderError("the Cyclr API is unavailable", category="transient"),
                                                   True])

    def authenticated() -> bool:
        reply = next(replies)
        if isinstance(reply, ProviderError):
            raise reply
        return reply

    reports: list[str] = []
    _browser(_redirecting("", []), reports, clock).sign_in(Links(), authenticated, "acme/x")
    assert any("asking again" in r for r in reports)

    def refused() -> bool:
        raise ProviderError("the Cyclr API refused the partner API credentials", category="partner")

    with pytest.raises(ProviderError, match="partner API credentials"):
        _browser(_redirecting("", []), [], clock).sign_in(Links(), refused, "acme/x")


# -- paste mode --------------------------------------------------------------------------------------------------


def _paste(clock: Clock, announced: list[tuple[str, str]], reports: list[str]) -> PasteSignIn:
    polling = Polling(interval=5.0, sleep=clock.sleep, clock=lambda: clock.now)
    return PasteSignIn(lambda label, link: announced.append((label, link)), reports.append, polling=polling)


def test_paste_sign_in_shows_the_link_once_and_polls_until_signed_in(clock: Clock) -> None:
    """The link (to the platform's own origin) is announced once; the API is asked every interval until yes."""
    announced: list[tuple[str, str]] = []
    reports: list[str] = []
    links, answers = Links(), Answers(after=3)
    _paste(clock, announced, reports).sign_in(links, answers, "acme/ado-main")
    assert links.origins == [None]
    assert len(announced) == 1 and TOKEN in announced[0][1] and _target(announced[0][1]) == SERVICE
    assert answers.asked == 4 and clock.slept == [5.0, 5.0, 5.0]
    _no_token_in(reports)


def test_paste_sign_in_is_missed_when_the_link_expires(clock: Clock) -> None:
    """Nobody signs in within the link's five minutes: missed, asked a last time at the deadline, never longer."""
    announced: list[tuple[str, str]] = []
    reports: list[str] = []
    answers = Answers(after=None)
    with pytest.raises(ConsentError, match="link has expired") as failure:
        _paste(clock, announced, reports).sign_in(Links(), answers, "acme/ado-main")
    assert failure.value.category == "missed" and "authorize" in (failure.value.hint or "")
    assert sum(clock.slept) == 300.0 and answers.asked == 61
    assert [link for _, link in announced if TOKEN in link] == [announced[0][1]]
    _no_token_in(reports, failure.value)


# -- against the sandbox's Cyclr model -----------------------------------------------------------------------------


@pytest.fixture
def cyclr() -> CyclrSandbox:
    provider = Provider()
    provider.register_app({"client_id": "entra-app", "client_secret": "entra-app-secret", "flavour": ENTRA,
                           "redirect_uris": [SERVICE + "/connector/callback"]})
    sandbox = CyclrSandbox(provider, "partner", "partner-secret")
    sandbox.create_account({"Id": "acme", "Name": "Acme Ltd"})
    return sandbox


@pytest.mark.parametrize("approve", [True, False])
def test_browser_sign_in_through_the_sandbox_platform(cyclr: CyclrSandbox, clock: Clock, approve: bool) -> None:
    """The sandbox's connectorauth chain (token, provider consent, callback) redirects to the listener; approved,
    the account connector is authenticated; declined, it is denied and stays unauthenticated."""
    properties = [{"Name": "Organization", "Value": "acme-org"}, {"Name": "Scopes", "Value": "vso.code"},
                  {"Name": "ClientId", "Value": "entra-app"}, {"Name": "ClientSecret", "Value": "entra-app-secret"}]
    installed = str(cyclr.install("acme", "310", {"Name": "ado-main", "AuthenticationId": 31,
                                                  "Properties": properties})["Id"])
    now = dt.datetime.now(dt.UTC)
    tokens: list[str] = []

    def link_for(target_origin: str | None) -> str:
        token = cyclr.sign_in_token("acme", now)["Token"]
        tokens.append(token)
        return sign_in_link(SERVICE, installed, SignInToken(SecretStr(token), None), target_origin or SERVICE)

    def browser(link: str) -> bool:
        where = cyclr.begin_sign_in(dict(parse_qsl(urlsplit(link).query)), SERVICE, now)
        consent = cyclr.provider.begin_consent(ENTRA, dict(parse_qsl(where.split("?", 1)[1])))
        back = cyclr.provider.decide(consent.id, approve)
        httpx.get(cyclr.complete_sign_in(dict(parse_qsl(urlsplit(back).query))), timeout=10)
        return True

    def authenticated() -> bool:
        return bool(cyclr.account_connector("acme", installed)["Authenticated"])

    reports: list[str] = []
    step = _browser(browser, reports, clock)
    if approve:
        step.sign_in(link_for, authenticated, "acme/ado-main")
    else:
        with pytest.raises(ConsentError) as failure:
            step.sign_in(link_for, authenticated, "acme/ado-main")
        assert failure.value.category == "denied"
        assert all(tokens[0] not in text for text in (str(failure.value), repr(failure.value)))
    assert authenticated() is approve and len(tokens) == 1
    assert all(tokens[0] not in report for report in reports)
