"""Provider failures, classified so callers act on whose fault it is — never on message text.

Categories: `partner` (invalid_client & co: the partner's app or secret; never re-authorize installations for
it), `grant` (invalid_grant: this installation must re-authorize), `denied` (the user said no), `scope`
(InvalidScope), `transient` (429, 5xx, timeouts, an HTML sign-in page: retry later), `protocol` (an answer that
fits no documented format), `verify` (the token does not reach what was declared).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import httpx

from reconciler.errors import ReconcilerError

__all__ = ["ConsentError", "ProviderError", "classify_error", "redacted", "retry_after_seconds", "transient"]

Category = Literal["partner", "grant", "denied", "scope", "transient", "protocol", "verify", "config"]
PARTNER_ERRORS = {"invalid_client", "unauthorized_client"}
PARTNER_AADSTS = ("AADSTS7000215", "AADSTS7000222", "AADSTS700016", "AADSTS7000218")


class ProviderError(ReconcilerError):
    def __init__(
        self,
        message: str,
        *,
        category: Category,
        hint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, hint=hint)
        self.category = category
        self.status = status
        self.retry_after = retry_after  # seconds the provider asked us to wait (429 Retry-After)


class ConsentError(ReconcilerError):
    """The interactive step failed: denied, wrong state, timed out, or an unusable pasted answer."""

    def __init__(self, message: str, *, category: str = "consent", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.category = category


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (delta-seconds form; an HTTP date counts as 'soon')."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def classify_error(
    status: int, data: dict[str, Any] | None, *, html: bool = False, retry_after: float | None = None
) -> ProviderError:
    """A `ProviderError` for a token endpoint's non-success answer (either dialect's error keys)."""
    if data is not None:
        error = str(data.get("error") or data.get("Error") or "")
        description = str(data.get("error_description") or data.get("ErrorDescription") or "").splitlines()
        detail = f"{error}: {description[0]}" if description and description[0] else error
        if error in PARTNER_ERRORS or any(code in detail for code in PARTNER_AADSTS):
            return ProviderError(
                f"the provider rejected the partner's client credentials ({detail})",
                category="partner",
                hint="check the partner's client_id and client_secret (Azure DevOps secrets expire after 60 days)",
                status=status,
            )
        if error == "invalid_grant":
            return ProviderError(f"the provider rejected the grant ({detail})", category="grant", status=status)
        if error.lower() in {"invalidscope", "invalid_scope"}:
            return ProviderError(f"the provider refused the scopes ({detail})", category="scope", status=status)
        if error and status < 500 and status != 429:
            return ProviderError(f"the provider refused the request ({detail})", category="protocol", status=status)
    if status == 429 or status >= 500:
        return ProviderError(
            f"the provider is unavailable (HTTP {status}); try again later",
            category="transient",
            status=status,
            retry_after=retry_after,
        )
    if status == 203 or html:
        return ProviderError(
            f"the provider answered with a sign-in page (HTTP {status}) instead of JSON", category="transient", status=status
        )
    return ProviderError(f"the provider answered HTTP {status} with no usable JSON", category="protocol", status=status)


def transient(what: str, exc: httpx.HTTPError) -> ProviderError:
    """A network failure, named by what was being reached (never the request, which may hold secrets)."""
    reason = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
    return ProviderError(f"{what} {reason} ({type(exc).__name__})", category="transient")


def _forms(value: str) -> set[str]:
    """How a value may come back inside a provider's answer: as sent in a form or URL, or base64-encoded."""
    raw = value.encode()
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return {value, quote(value, safe=""), quote_plus(value), *encoded, *(e.rstrip("=") for e in encoded)}


DISTINCTIVE_SECRET = 12  # characters: a secret this long cannot be mistaken for ordinary text (names, literals)


def scrubbed(text: str, values: Iterable[str | None]) -> str:
    """`text` with each of `values` replaced by `(redacted)` in every form a provider may have written it (a value
    shorter than `DISTINCTIVE_SECRET` found anywhere withholds the whole text instead: see `redacted`)."""
    present = [v for v in values if v]
    forms = sorted({f for v in present if len(v) >= DISTINCTIVE_SECRET for f in _forms(v)}, key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, "(redacted)")
    if any(form in text for value in present if len(value) < DISTINCTIVE_SECRET for form in _forms(value)):
        return "the provider's description was withheld: it may repeat a secret"
    return text


def redacted(error: ProviderError, values: Iterable[str | None]) -> ProviderError:
    """`error` with every secret it could echo (a provider that repeats the request in its error description)
    replaced by `(redacted)`, in each form the provider may have written it. A value shorter than
    `DISTINCTIVE_SECRET` is not replaced where it stands (that would mark which word of the text is the secret):
    when one occurs, the whole text is withheld instead."""
    values = list(values)

    def clean(text: str | None) -> str | None:
        return scrubbed(text, values) if text else text

    message, hint = clean(error.message) or "", clean(error.hint)
    if message == error.message and hint == error.hint:
        return error
    return ProviderError(
        message, category=error.category, hint=hint, status=error.status, retry_after=error.retry_after
    )
