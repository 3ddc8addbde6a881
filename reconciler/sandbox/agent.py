"""A scripted user agent for the sandbox consent page: what a person does in the browser, over plain HTTP.

`reconciler sandbox approve URL` opens the authorization URL, answers the sandbox consent form (Approve, or
Deny with --deny) and follows the redirect to the callback — so it can stand in for a browser via `BROWSER`:
    BROWSER="reconciler sandbox approve %s" reconciler apply --auth-mode browser
It talks only to the sandbox's consent page; it is not a way around consent at a real provider.
"""

from __future__ import annotations

import re

import httpx

__all__ = ["ConsentAgentError", "answer_consent"]

_CONSENT_ID = re.compile(r'name="consent" value="([^"]+)"')


class ConsentAgentError(Exception):
    """The page was not a sandbox consent page, or the flow ended somewhere unexpected."""


def answer_consent(
    url: str, *, approve: bool = True, follow: bool = True, timeout: float = 10.0, client: httpx.Client | None = None
) -> str:
    """Answer the consent page at `url`; return the callback URL the provider redirected to. A caller answering many
    pages may pass its own `client` (redirects not followed) to save setting one up each time."""
    if client is None:
        with httpx.Client(timeout=timeout, follow_redirects=False) as own:
            return answer_consent(url, approve=approve, follow=follow, client=own)
    page = client.get(url)
    match = _CONSENT_ID.search(page.text)
    if page.status_code != 200 or match is None:
        raise ConsentAgentError(f"no consent form at the authorization URL (HTTP {page.status_code})")
    base = f"{page.url.scheme}://{page.url.netloc.decode()}"
    decision = {"consent": match.group(1), "decision": "approve" if approve else "deny"}
    answer = client.post(f"{base}/oauth2/consent", data=decision)
    location: str | None = answer.headers.get("Location")
    if answer.status_code != 302 or not location:
        raise ConsentAgentError(f"the consent form was not accepted (HTTP {answer.status_code})")
    if follow:
        client.get(location)
    return location
