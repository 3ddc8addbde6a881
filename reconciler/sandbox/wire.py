"""What a sandbox route reads of an HTTP request and the answer it gives, as plain values.

Owns: `Request` (the path's segments, its query, headers and body) and `Answer` (a status with JSON, an HTML page or
a redirect), shared by the provider's routes (`routes`) and the Cyclr routes (`cyclr_routes`). Must not: speak HTTP
(the server turns a request into `Request` and an `Answer` into bytes: `app`) or hold provider rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = ["Answer", "Request"]


@dataclass(frozen=True)
class Request:
    """What a route reads of an HTTP request: the path's segments, its query, headers and body."""

    method: str
    parts: tuple[str, ...]
    params: Mapping[str, str]
    headers: Mapping[str, str]  # looked up by lower-case name
    body: bytes = b""
    args: tuple[str, ...] = ()  # the path segments a route's `*` matched

    def form(self) -> dict[str, str]:
        """The body as an HTML form (application/x-www-form-urlencoded)."""
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


@dataclass(frozen=True)
class Answer:
    """A route's answer: JSON `body` (None: empty), an HTML `page` instead, or a 302 to `location`."""

    status: int
    body: object = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    page: str | None = None
