"""Verification: a fresh token must reach the declared organization (mandatory) and project (a warning when the
declared scopes cannot allow the check). Checks come from the connector catalog's `verify` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from reconciler.auth.errors import ProviderError, classify_error, retry_after_seconds, transient
from reconciler.catalog import Connector
from reconciler.tokens.model import TokenSet

__all__ = ["Verification", "verify_token"]


@dataclass
class Verification:
    user: str | None = None
    warnings: list[str] = field(default_factory=list)


def verify_token(
    http: httpx.Client,
    connector: Connector,
    api_url: str,
    parameters: Mapping[str, str],
    scopes: tuple[str, ...],
    tokens: TokenSet,
) -> Verification:
    """Check `tokens` against every check of the connector (timeouts: the client's)."""
    result = Verification()
    headers = {"Authorization": f"Bearer {tokens.access_token.get_secret_value()}", "Accept": "application/json"}
    granted = connector.closure(scopes)
    for name, check in connector.verify.items():
        path = check.path.format(**{k: quote(v, safe="") for k, v in parameters.items()})
        target = f"{name} {parameters[name]}" if name in parameters else name
        try:
            response = http.get(f"{api_url.rstrip('/')}/{path}", headers=headers)
        except httpx.HTTPError as exc:
            raise transient(f"{name} check at {api_url}", exc) from None
        if response.status_code == 200 and "json" in response.headers.get("content-type", ""):
            user = _authenticated_user(name, response)
            if name == "organization":
                result.user = user
            continue
        allowed = not check.needs_any or any(scope in granted for scope in check.needs_any)
        if response.status_code in (401, 403) and not allowed:
            needs = ", ".join(check.needs_any)
            result.warnings.append(f"could not verify {target}: the scopes do not include {needs}")
            continue
        raise _failure(name, target, response)
    return result


def _authenticated_user(name: str, response: httpx.Response) -> str | None:
    """Who a passing check says the token belongs to (None: not said); a body that is no JSON object is refused."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ProviderError(f"{name} check: the provider answered with unusable JSON", category="protocol")
    user = body.get("authenticatedUser", {})
    return user.get("providerDisplayName") if isinstance(user, dict) else None


def _failure(name: str, target: str, response: httpx.Response) -> ProviderError:
    """Why a check did not pass: `target` not found, the token refused there, or the answer classified as any
    provider answer is (throttled, unavailable, a sign-in page, ...)."""
    if response.status_code == 404:
        return ProviderError(f"{target} was not found with this token", category="verify", status=404)
    if response.status_code in (401, 403):
        hint = None
        if "TF400813" in response.text[:300]:
            hint = "the organization may have disabled third-party application access via OAuth"
        return ProviderError(
            f"the token does not reach {target} (HTTP {response.status_code})",
            category="verify",
            hint=hint,
            status=response.status_code,
        )
    error = classify_error(
        response.status_code,
        None,
        html="html" in response.headers.get("content-type", ""),
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
    )
    return ProviderError(
        f"{name} check: {error.message}", category=error.category, status=response.status_code, retry_after=error.retry_after
    )
