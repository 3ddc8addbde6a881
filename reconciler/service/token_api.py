"""The token API: `GET /v1/installations/{address}/token` with `Authorization: Bearer <api key>`, answering a fresh
access token of an installation whose tenant the key's globs match.

Owns: finding the key (constant-time over every configured key, so neither a key's value nor its length leaks by
timing), the order of refusals (401 no or unknown key, 403 a tenant the key may not read, 404 no such
installation, 409 nothing to hand out: pending, must sign in again, held by the platform; 503 a refresh that
failed for a passing reason). Must not: refresh, open or audit tokens itself (the token reader does), or echo a key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Protocol

from reconciler.addresses import tenant_of
from reconciler.config.desired import ApiKey
from reconciler.errors import ReconcilerError

__all__ = ["UNAUTHORIZED", "Reader", "TokenAnswer", "key_for", "read_token"]

TokenAnswer = tuple[int, dict[str, Any]]
UNAUTHORIZED = {"error": "unauthorized", "message": "a valid API key is required (Authorization: Bearer <key>)"}


class Reader(Protocol):
    def __call__(self, address: str, actor: str) -> dict[str, Any]:
        """{access_token, expires_at, scopes} of `address` for `actor` (an API key's name), refreshed when due;
        `ReconcilerError` subclasses say why not (see `read_token`)."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def key_for(authorization: str | None, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The configured key a `Bearer` header names; every key is compared, in constant time each."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    given = _digest(value.strip())
    found = None
    for key in keys:
        secret = key.key.get_secret_value()
        if hmac.compare_digest(given, _digest(secret)) and secret:
            found = key
    return found


def read_token(
    authorization: str | None,
    address: str,
    keys: tuple[ApiKey, ...],
    reader: Reader,
    classify: Callable[[ReconcilerError], int],
) -> TokenAnswer:
    """The status and JSON body for one token read (`classify`: the status of a reader's error)."""
    key = key_for(authorization, keys)
    if key is None:
        return 401, dict(UNAUTHORIZED)
    tenant = tenant_of(address)
    if not tenant or not any(fnmatch.fnmatchcase(tenant, glob) for glob in key.tenants):
        return 403, {"error": "forbidden", "message": f"API key {key.name} may not read tokens of this tenant"}
    try:
        return 200, reader(address, key.name)
    except ReconcilerError as exc:
        status = classify(exc)
        return status, {"error": "not_found" if status == 404 else "unavailable", "message": exc.message}
