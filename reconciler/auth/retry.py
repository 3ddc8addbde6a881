"""Bounded retries of provider calls that failed transiently: 429 (its Retry-After honoured, up to a limit), 5xx,
timeouts, an HTML sign-in page instead of JSON.

Owns: the retry policy shared by apply, authorize and refresh. Must not: retry a failure that is someone's fault
(a partner's rejected secret, a rejected grant, a refusal, an answer in no documented format), or sleep longer
than `max_wait` at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reconciler.auth.errors import ProviderError

__all__ = ["RetryPolicy", "retrying"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.5  # seconds, doubled after each transient failure
    max_wait: float = 30.0  # the longest Retry-After honoured


def retrying(
    call: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    *,
    final: Callable[[ProviderError], bool] = lambda exc: False,
) -> T:
    """`call()`, again after each transient failure, `policy.attempts` times at most. The last failure is raised
    saying how many attempts were made; a different failure after a transient one says what came before it (a
    code exchange that timed out may have used the code, so its retry is refused). A failure `final` accepts is
    raised at once, as it is (the caller has a better answer to it than waiting)."""
    earlier: ProviderError | None = None
    for attempt in range(policy.attempts):
        try:
            return call()
        except ProviderError as exc:
            if final(exc):
                raise
            if exc.category != "transient":
                if earlier is None:
                    raise
                raise _annotated(exc, f"after an earlier attempt failed: {earlier.message}") from None
            if attempt == policy.attempts - 1:
                raise _annotated(exc, f"{policy.attempts} attempts") from None
            earlier = exc
            wait = exc.retry_after if exc.retry_after is not None else policy.backoff * 2**attempt
            sleep(min(wait, policy.max_wait))
    raise AssertionError("unreachable")


def _annotated(exc: ProviderError, note: str) -> ProviderError:
    return ProviderError(
        f"{exc.message} ({note})",
        category=exc.category,
        hint=exc.hint,
        status=exc.status,
        retry_after=exc.retry_after,
    )
