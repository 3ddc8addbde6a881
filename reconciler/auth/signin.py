"""Platform sign-in: the integration platform runs the OAuth flow itself; a person opens its sign-in link, and the
platform's API says whether the account connector is signed in.

- `BrowserSignIn`: listens on 127.0.0.1 (a port the system chooses) and asks for a link that ends there
  (`targetOrigin`), opens it in the browser the way consent does, and waits for the platform's redirect: `error=`
  is a refusal (the user said no: category "denied"); nothing before the timeout is "missed" (the executor may
  leave it pending). The redirect carries no state, so it is only a sign that the person is done: the sign-in
  counts once `authenticated()` says so, asked a few times (the platform may record the tokens just after
  redirecting).
- `PasteSignIn` (a terminal without a browser): shows the link, then asks `authenticated()` every few seconds
  until it says yes or the link's five minutes are over ("missed"). Its `targetOrigin` is the platform's own
  origin (`link_for(None)`): the browser is on another machine, so nothing of ours could listen for it, and a
  third party's page would learn when (and from where) someone signed in; the platform's own page is already
  trusted with the sign-in.

Owns: the order of the steps, the timeouts and the polling. Must not: know the platform's API (the caller passes
`link_for` and `authenticated`), or put the link or its one-use token in a report, an error or a `repr` — the
one place it is shown is `PasteSignIn`'s announcement, to the person who must open it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from reconciler.auth.consent import refusal
from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.loopback import LoopbackListener, Page, open_in_browser

__all__ = ["LINK_LIFETIME", "BrowserSignIn", "LinkFor", "PasteSignIn", "PlatformSignIn", "Polling"]

LINK_LIFETIME = 300.0  # seconds a sign-in link's one-use token is valid for

# `link_for(target_origin)`: a freshly minted sign-in link that ends at `target_origin`; None: at the platform's
# own origin. Each call mints a new one-use token.
LinkFor = Callable[[str | None], str]

SIGNED_IN = Page("Sign-in received", "You can close this tab and return to the terminal.")
NOT_SIGNED_IN = Page("Sign-in not completed", "You can close this tab; the terminal says what happened.")


class PlatformSignIn(Protocol):
    def sign_in(self, link_for: LinkFor, authenticated: Callable[[], bool], label: str) -> None:
        """Return once the platform reports the account connector signed in (`label` names it to the user);
        `ConsentError` otherwise: "denied" when refused, "missed" when nobody finished it in time."""


@dataclass(frozen=True)
class Polling:
    """How the platform is asked: every `interval` seconds; after a browser's redirect at most `confirmations`
    times. `sleep` and `clock` (monotonic seconds) are the waiting and the time, injectable for tests."""

    interval: float = 3.0
    confirmations: int = 5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def ask(self, authenticated: Callable[[], bool], report: Callable[[str], None], label: str) -> bool:
        """One question: True when signed in. A transient failure is 'not yet' (reported): asked again later."""
        try:
            return bool(authenticated())
        except ProviderError as exc:
            if exc.category != "transient":
                raise
            report(f"could not ask whether {label} is signed in ({exc.message}); asking again")
            return False

    def confirm(self, authenticated: Callable[[], bool], report: Callable[[str], None], label: str) -> bool:
        """Whether the platform reports it signed in within `confirmations` questions."""
        for attempt in range(self.confirmations):
            if attempt:
                self.sleep(self.interval)
            if self.ask(authenticated, report, label):
                return True
        return False


def _landing(target: str) -> str:
    """The platform's redirect to our listener: `error=` is a refusal; anything else means the person is done."""
    query = parse_qs(urlsplit(target).query)
    if "error" in query:
        raise refusal(query)
    return "done"


class BrowserSignIn:
    """Open the sign-in link in the browser; learn that the person is done from the redirect to 127.0.0.1."""

    def __init__(
        self,
        report: Callable[[str], None],
        *,
        timeout: float = LINK_LIFETIME,
        open_url: Callable[[str], Any] | None = None,
        polling: Polling = Polling(),
    ) -> None:
        self.report, self.timeout, self.open_url, self.polling = report, timeout, open_url, polling

    def sign_in(self, link_for: LinkFor, authenticated: Callable[[], bool], label: str) -> None:
        with LoopbackListener(0, "/", _landing, self.report, received=SIGNED_IN, not_granted=NOT_SIGNED_IN) as listener:
            link = link_for(f"http://127.0.0.1:{listener.port}")
            if not open_in_browser(link, self.open_url):
                raise ConsentError(
                    f"could not open a browser to sign {label} in",
                    category="missed",
                    hint="use --auth-mode paste (it shows the link to open elsewhere), or --auth-mode defer",
                )
            self.report(f"sign {label} in, in the browser window that opened")
            listener.wait(self.timeout)
        if not self.polling.confirm(authenticated, self.report, label):
            raise ConsentError(
                f"the sign-in of {label} ended, but the platform does not report it signed in",
                category="missed",  # it may still arrive: left pending, the next plan shows whether it is due
                hint="run `reconciler authorize` to sign in again",
            )


class PasteSignIn:
    """Show the sign-in link; ask the platform until it reports the sign-in, or the link expired."""

    def __init__(
        self,
        announce: Callable[[str, str], None],
        report: Callable[[str], None],
        *,
        lifetime: float = LINK_LIFETIME,
        polling: Polling = Polling(),
    ) -> None:
        self.announce, self.report, self.lifetime, self.polling = announce, report, lifetime, polling

    def sign_in(self, link_for: LinkFor, authenticated: Callable[[], bool], label: str) -> None:
        self.announce(label, link_for(None))  # the one place a sign-in link is shown
        self.report(f"waiting until the platform reports {label} signed in (the link is valid for {self.lifetime:g} s)")
        clock, sleep = self.polling.clock, self.polling.sleep
        deadline = clock() + self.lifetime
        while not self.polling.ask(authenticated, self.report, label):
            left = deadline - clock()
            if left <= 0:
                raise ConsentError(
                    f"{label} was not signed in within {self.lifetime:g} s: the link has expired",
                    category="missed",
                    hint="run `reconciler authorize` for a fresh link",
                )
            sleep(min(self.polling.interval, left))
