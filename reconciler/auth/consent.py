"""Consent: getting the user's authorization code for an `AuthorizationRequest`.

- `BrowserConsent`: opens the system browser (Python's `webbrowser`, so `BROWSER` is honoured), prints the URL
  too, and receives the redirect on a loopback listener bound to 127.0.0.1 when the redirect URI is
  `http://127.0.0.1:<port>/...` or `http://localhost:<port>/...`; for another redirect URI it falls back to paste
  when it was given a fallback (the default mode), and refuses otherwise (`--auth-mode browser` asked for loopback).
- `PasteConsent`: prints the URL and reads back the URL the user landed on (or, in PKCE flows only, the bare code).
Before anyone sees it, the authorization URL is checked against the request: it must send the code to the request's
redirect URI, carry its state and client id, and — in PKCE flows — its S256 challenge (a downgraded or redirected
URL is refused). `state` is checked in both; an `error=` answer is a clear refusal (`refusal`). The listener
itself — 127.0.0.1 only, its own Host only, deadlines, the landing page — is `auth.loopback`'s.
Deferred consent is the executor's business (it records a pending authorization instead of asking anyone).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import socket
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from reconciler.auth.errors import ConsentError
from reconciler.auth.loopback import LoopbackListener, Refused, open_in_browser
from reconciler.auth.request import AuthorizationRequest
from reconciler.errors import one_line

__all__ = [
    "BrowserConsent",
    "ConsentStep",
    "LoopbackReceiver",
    "PasteConsent",
    "check_authorization_url",
    "parse_callback",
    "refusal",
]


class ConsentStep(Protocol):
    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        """The authorization code for `request` (label names the installation to the user)."""


class StateMismatch(Refused):
    """The callback's `state` is not the one this authorization sent: stale, or forged."""

    note = "a redirect with the wrong state"


def parse_callback(answer: str, request: AuthorizationRequest) -> str:
    """The code from a callback URL (or a bare code, PKCE only); state checked, `error=` reported."""
    answer = answer.strip()
    if not answer:
        raise ConsentError("no answer was given")
    if "://" not in answer and "?" not in answer and "code=" not in answer:
        if not request.pkce:
            raise ConsentError(
                "paste the whole URL you were redirected to: this flow has no PKCE, so the state must be checked"
            )
        return answer
    query = parse_qs(urlsplit(answer).query if "?" in answer else answer)
    state = (query.get("state") or [""])[0]
    if not hmac.compare_digest(state.encode(), request.state.get_secret_value().encode()):
        raise StateMismatch("the answer's state does not match this authorization (a stale or forged redirect)")
    if "error" in query:
        raise refusal(query)
    code = (query.get("code") or [""])[0]
    if not code:
        raise ConsentError("the redirect carries no code")
    return code


# Entra ID's answers when the user may not consent and no administrator has: consent required, admin approval needed.
ADMIN_CONSENT_AADSTS = ("AADSTS65001", "AADSTS90094")


def refusal(query: dict[str, list[str]]) -> ConsentError:
    """The error a redirect's `error=` (and `error_description=`) stands for: the user said no, or the provider
    refused (the scopes, or something else)."""
    error = one_line((query.get("error") or [""])[0])
    description = one_line((query.get("error_description") or [""])[0])
    category = "denied" if error == "access_denied" else "scope" if error.lower() == "invalidscope" else "consent"
    if error == "consent_required" or any(code in description for code in ADMIN_CONSENT_AADSTS):
        return ConsentError(
            f"an administrator of the tenant's directory must consent first: the provider refused: {error}"
            + (f" ({description})" if description else ""),
            category="consent",
            hint="`reconciler preflight` gives the admin-consent link of each tenant, for its administrator to open",
        )
    message = "the user denied the authorization" if category == "denied" else f"the provider refused: {error}"
    return ConsentError(message + (f" ({description})" if description and category != "denied" else ""), category=category)


def check_authorization_url(request: AuthorizationRequest) -> None:
    """Refuse an authorization URL that does not belong to `request`: one that would send the code elsewhere, or
    carries another state or client, or — for a PKCE flow, or any code flow — lacks the S256 challenge of its
    verifier (a downgrade to `plain` or to no PKCE)."""
    query = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
    sent_to = query.get("redirect_uri")
    if sent_to != request.redirect_uri:
        raise ConsentError(
            f"the authorization URL would send the code to {one_line(str(sent_to))}, not to {request.redirect_uri}",
            hint="refused before opening it; re-issue the authorization",
        )
    if query.get("state") != request.state.get_secret_value() or query.get("client_id") != request.client_id:
        raise ConsentError("the authorization URL carries another state or client id than this authorization")
    if request.code_verifier is not None or query.get("response_type") == "code":
        verifier = request.code_verifier.get_secret_value().encode() if request.code_verifier else b""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if not verifier or query.get("code_challenge_method") != "S256" or query.get("code_challenge") != challenge:
            raise ConsentError(
                "the authorization URL lacks this authorization's PKCE S256 challenge: refusing a PKCE downgrade",
                hint="re-issue the authorization",
            )


def loopback_target(redirect_uri: str) -> tuple[int, str] | None:
    """(port, path) when the redirect URI is a loopback address with an explicit port."""
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost"} and parts.port:
        return parts.port, parts.path or "/"
    return None


def _reserve_ipv6(port: int) -> socket.socket | None:
    """For a `localhost` redirect a browser may try [::1] first: hold that port (bound, not listening) so no other
    process can take the code there; the browser falls back to 127.0.0.1, where the receiver listens."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None  # no IPv6 on this machine: nothing to reserve
    try:
        sock.bind(("::1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            return None
        raise ConsentError(
            f"another process listens on [::1]:{port}, where a browser may send the redirect for localhost",
            hint="use a http://127.0.0.1:<port>/ redirect URI, or --auth-mode paste",
        ) from None
    return sock


class LoopbackReceiver(LoopbackListener):
    """One-shot listener for an authorization's redirect on 127.0.0.1: its code, with the state checked."""

    def __init__(self, port: int, path: str, request: AuthorizationRequest, report: Callable[[str], None]) -> None:
        super().__init__(port, path, lambda target: parse_callback(target, request), report)
        self.request = request


class PasteConsent:
    """Print the URL; read back the URL the user was redirected to."""

    def __init__(self, announce: Callable[[str, str], None], read_answer: Callable[[str], str]) -> None:
        self.announce, self.read_answer = announce, read_answer

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        check_authorization_url(request)
        self.announce(label, request.url)
        prompt = "Paste the URL you were redirected to" + (" (or the code)" if request.pkce else "")
        return parse_callback(self.read_answer(prompt), request)


class BrowserConsent:
    """Open the browser; receive the redirect on loopback, or (given `paste`) fall back to it for another redirect."""

    def __init__(
        self,
        announce: Callable[[str, str], None],
        report: Callable[[str], None],
        paste: PasteConsent | None,
        *,
        timeout: float = 300.0,
        open_url: Callable[[str], Any] | None = None,
    ) -> None:
        self.announce, self.report, self.paste, self.timeout, self.open_url = announce, report, paste, timeout, open_url

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        check_authorization_url(request)
        target = loopback_target(request.redirect_uri)
        if target is None and self.paste is None:
            raise ConsentError(
                f"browser mode receives the code on 127.0.0.1, but the redirect URI {request.redirect_uri} sends it "
                "to another host",
                hint="use --auth-mode paste (or leave --auth-mode out), or a http://127.0.0.1:<port>/ redirect URI",
            )
        if target is None:
            assert self.paste is not None
            self.report(f"the redirect URI {request.redirect_uri} is not a loopback address: paste mode")
            return self.paste.obtain(request, label)
        port, path = target
        reserved = _reserve_ipv6(port) if urlsplit(request.redirect_uri).hostname == "localhost" else None
        try:
            with LoopbackReceiver(port, path, request, self.report) as receiver:
                self.announce(label, request.url)
                if not open_in_browser(request.url, self.open_url):
                    self.report("could not open a browser; open the URL above yourself")
                return receiver.wait(self.timeout)
        finally:
            if reserved is not None:
                reserved.close()
