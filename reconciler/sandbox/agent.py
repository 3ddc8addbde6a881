"""A scripted user agent for the sandbox consent page: what a person does in the browser, over plain HTTP.

`reconciler sandbox approve URL` opens the URL (a link of the authorization service redirects to the sandbox
first), follows the sandbox's own redirects to its consent page (a Cyclr connectorauth link leads there too), answers the consent form (Approve, or Deny with --deny) and follows the
redirect that comes back — through the sandbox's Cyclr callback, when the link was a Cyclr one — to the OAuth
callback, or to the Cyclr link's `targetOrigin`. So it can stand in for a browser via `BROWSER`:
    BROWSER="reconciler sandbox approve %s" reconciler apply --auth-mode browser
It talks only to the sandbox's consent page; it is not a way around consent at a real provider.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx

from reconciler.sandbox.cyclr_model import CALLBACK

__all__ = ["ConsentAgentError", "answer_consent"]

_CONSENT_ID = re.compile(r'name="consent" value="([^"]+)"')
_MAX_HOPS = 10


class ConsentAgentError(Exception):
    """The page was not a sandbox consent page, or the flow ended somewhere unexpected."""


def answer_consent(
    url: str, *, approve: bool = True, follow: bool = True, timeout: float = 10.0, client: httpx.Client | None = None
) -> str:
    """Answer the consent page that `url` is or leads to; return where the answer sent the browser — past the
    sandbox's Cyclr callback, if that is where — and open it, when `follow`. A caller answering many pages may pass its own `client`
    (redirects not followed) to save setting one up each time."""
    if client is None:
        with httpx.Client(timeout=timeout, follow_redirects=False) as own:
            return answer_consent(url, approve=approve, follow=follow, client=own)
    page = client.get(url)
    if page.is_redirect and page.headers.get("Location"):  # a link of the authorization service: to the sandbox
        page = client.get(urljoin(str(page.url), page.headers["Location"]))
    origin = _origin(page.url)
    page, location = _within(client, page, origin)
    match = _CONSENT_ID.search(page.text)
    if page.status_code != 200 or match is None or location is not None:
        raise ConsentAgentError(f"no consent form at the authorization URL (HTTP {page.status_code}){_said(page)}")
    decision = {"consent": match.group(1), "decision": "approve" if approve else "deny"}
    answer = client.post(urljoin(str(page.url), "/oauth2/consent"), data=decision)
    if answer.status_code != 302 or not answer.headers.get("Location"):
        raise ConsentAgentError(f"the consent form was not accepted (HTTP {answer.status_code})")
    location = urljoin(str(answer.url), answer.headers["Location"])
    if location.startswith(origin + CALLBACK + "?"):  # the sandbox's Cyclr hop, on the way to targetOrigin
        hop = client.get(location)
        if hop.status_code != 302 or not hop.headers.get("Location"):
            raise ConsentAgentError(f"the Cyclr sign-in was not completed (HTTP {hop.status_code}){_said(hop)}")
        location = urljoin(location, hop.headers["Location"])
    if follow:
        client.get(location)
    return location


def _within(client: httpx.Client, response: httpx.Response, origin: str) -> tuple[httpx.Response, str | None]:
    """Follow redirects while they stay on the sandbox's `origin` (a connectorauth link leads to the consent page
    so): (the last answer, the first address outside it)."""
    for _ in range(_MAX_HOPS):
        location = response.headers.get("Location")
        if not response.is_redirect or not location:
            return response, None
        target = urljoin(str(response.url), location)
        if _origin(httpx.URL(target)) != origin:
            return response, target
        response = client.get(target)
    raise ConsentAgentError("too many redirects")


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode()}"


def _said(response: httpx.Response) -> str:
    """A Cyclr `{"Message": ...}` from the sandbox, which names no secret."""
    try:
        data = response.json()
    except ValueError:
        return ""
    message = data.get("Message") if isinstance(data, dict) else None
    return f": {message}" if isinstance(message, str) else ""
