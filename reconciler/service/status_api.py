"""The status page: `GET /status` with `Authorization: Bearer <api key>`, answering the status of the installations
whose tenant the key's globs match — the HTML page by default, the JSON document (docs/status-json.md) with
`?format=json` or `Accept: application/json`.

Owns: the order of refusals (401 no or unknown key, found as the token API finds it; 400 a format that is neither
html nor json; 503 a state that cannot be read) and which form a request asks for. Must not: read state or call a
provider itself (the page function given does, from state alone), or echo a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from reconciler.app.statuspage import PageFormat
from reconciler.config.desired import ApiKey
from reconciler.errors import ReconcilerError
from reconciler.service.token_api import UNAUTHORIZED, key_for

__all__ = ["HTML", "JSON", "StatusAnswer", "page_form", "read_status"]

HTML, JSON = "text/html; charset=utf-8", "application/json"
StatusAnswer = tuple[int, str, str]  # HTTP status, media type, body
Page = Callable[[Sequence[str], PageFormat], str]  # (the key's tenant globs, the form) -> the body


def page_form(asked: str | None, accept: str) -> PageFormat | None:
    """`?format=` when given (html or json; anything else: None), else JSON when the Accept header names
    application/json and not text/html (a browser's names both), else HTML."""
    if asked is not None:
        return "json" if asked == "json" else "html" if asked == "html" else None
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "json" if "application/json" in types and "text/html" not in types else "html"


def read_status(
    authorization: str | None, keys: tuple[ApiKey, ...], asked: str | None, accept: str, page: Page
) -> StatusAnswer:
    """The status, media type and body of one request for the status page."""
    key = key_for(authorization, keys)
    if key is None:
        return 401, JSON, json.dumps(UNAUTHORIZED)
    form = page_form(asked, accept)
    if form is None:
        return 400, JSON, json.dumps({"error": "bad_request", "message": "format must be html or json"})
    try:
        body = page(key.tenants, form)
    except ReconcilerError as exc:
        return 503, JSON, json.dumps({"error": "unavailable", "message": exc.message})
    return 200, JSON if form == "json" else HTML, body
