"""Signed webhook events: what happened to an installation, posted to every webhook the service declares.

Owns: the closed set of event types and the `data` fields each carries, an event's wire form (one compact JSON
body, serialised once and sent unchanged on every attempt), the signature header (`t=<unix seconds>,v1=<hex
HMAC-SHA256 of "<t>.<body>">`, Stripe's scheme) and its verification, and delivery: every event to every webhook,
one worker thread per webhook, a failed attempt retried with back-off under the same id and body and signed
afresh. Must not: block the caller (`publish` only enqueues), follow a redirect, decide when an event happens (the
service does), or show a webhook's secret in a log, exception or repr (it is read only to sign).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Literal, Self
from urllib.parse import urlsplit

import httpx

from reconciler.config.desired import Webhook

__all__ = [
    "DATA_FIELDS",
    "DEFAULT_SCHEDULE",
    "DELIVERY_TIMEOUT",
    "Deliverer",
    "Event",
    "EventType",
    "Outcome",
    "new_event",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)


class EventType(str, Enum):
    """What happened. The values are the wire `type`: automation matches on them."""

    AUTHORIZATION_COMPLETED = "authorization.completed"
    AUTHORIZATION_FAILED = "authorization.failed"
    REFRESH_FAILED = "refresh.failed"
    NEEDS_REAUTHORIZATION = "installation.needs_reauthorization"
    RECOVERED = "installation.recovered"
    LINK_EXPIRED = "link.expired"


# The `data` fields each type carries, exactly (docs/webhooks.md describes them; a test keeps the two equal).
DATA_FIELDS: Mapping[EventType, frozenset[str]] = MappingProxyType({
    EventType.AUTHORIZATION_COMPLETED: frozenset({"scopes", "by"}),
    EventType.AUTHORIZATION_FAILED: frozenset({"reason"}),
    EventType.REFRESH_FAILED: frozenset({"reason", "category"}),
    EventType.NEEDS_REAUTHORIZATION: frozenset({"reason", "link"}),
    EventType.RECOVERED: frozenset(),
    EventType.LINK_EXPIRED: frozenset(),
})

Outcome = Literal["delivered", "retry", "failed"]

# Seconds before each retry of a failed delivery: the first within 10 seconds, then backing off; a delivery still
# failing after these (8 attempts over about 2.5 hours) is given up.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 3600)
DELIVERY_TIMEOUT = 10.0
# Beyond this many deliveries waiting for one webhook, a new event is given up at once rather than held in memory.
MAX_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class Event:
    """One event, built by `new_event`. `body` is its wire form, serialised once: every attempt sends these bytes."""

    id: str
    type: EventType
    created_at: dt.datetime  # aware, UTC
    tenant: str
    address: str
    data: Mapping[str, object]
    body: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        document = {
            "id": self.id,
            "type": self.type.value,
            "created_at": self.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "tenant": self.tenant,
            "address": self.address,
            "data": dict(self.data),
        }
        object.__setattr__(self, "body", json.dumps(document, separators=(",", ":")).encode())


def new_event(
    type: EventType, *, tenant: str, address: str, data: Mapping[str, object], now: dt.datetime
) -> Event:
    """A new event of `type` with a fresh id (`evt_` and 32 hex digits), stamped `now` (a timezone-aware time).
    `data` must carry exactly the fields of its type (`DATA_FIELDS`) and be JSON-serialisable."""
    if now.tzinfo is None:
        raise ValueError("an event's time must be timezone-aware")
    kind = EventType(type)
    if set(data) != DATA_FIELDS[kind]:
        raise ValueError(f"{kind.value} carries data fields {sorted(DATA_FIELDS[kind])}, not {sorted(data)}")
    return Event(
        id=f"evt_{secrets.token_hex(16)}",
        type=kind,
        created_at=now.astimezone(dt.UTC),
        tenant=tenant,
        address=address,
        data=MappingProxyType(dict(data)),
    )


def _mac(secret: bytes, timestamp: str, body: bytes) -> bytes:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest().encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Reconciler-Signature` header value: `t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    return f"t={timestamp},v1={_mac(secret, str(timestamp), body).decode()}"


def verify(secret: bytes, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance` seconds of `now` (what a receiver
    checks). A malformed header is simply not valid."""
    fields = {key.strip(): value for key, _, value in (part.partition("=") for part in header.split(","))}
    timestamp = fields.get("t", "")
    if not timestamp.isdecimal() or abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(_mac(secret, timestamp, body), fields.get("v1", "").encode())


@dataclass(order=True, slots=True)
class _Due:
    """One delivery of one event to one webhook, due at `at` (the deliverer's clock)."""

    at: float
    seq: int  # publication order breaks ties
    event: Event = field(compare=False)
    attempts: int = field(compare=False, default=0)  # made so far


def _origin(url: str) -> str:
    """What logs name a webhook by: scheme, host and port (no credentials, path or query)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _ignore(outcome: Outcome) -> None:
    del outcome


class Deliverer:
    """Posts every published event to every webhook, in the background, retrying on `schedule`.

    Each webhook has its own queue and worker thread, so a slow or dead webhook delays only its own deliveries.
    `on_outcome` hears of every attempt ("delivered", "retry", "failed": given up), for the metrics.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        on_outcome: Callable[[Outcome], None] = _ignore,
    ) -> None:
        self._webhooks = tuple(webhooks)
        self._origins = tuple(_origin(w.url) for w in self._webhooks)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            timeout=DELIVERY_TIMEOUT, follow_redirects=False
        )
        self._clock = clock
        self._schedule = tuple(schedule)
        self._on_outcome = on_outcome
        self._cond = threading.Condition()
        self._queues: list[list[_Due]] = [[] for _ in self._webhooks]  # heaps, by due time
        self._busy = [0] * len(self._webhooks)  # attempts in flight (0 or 1: one worker each)
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closing_by: float | None = None  # time.monotonic() deadline, once stopping

    def __repr__(self) -> str:
        return f"Deliverer(webhooks={list(self._origins)})"

    def publish(self, event: Event) -> None:
        """Queue `event` for every webhook; returns at once (delivery happens on the workers)."""
        full = []
        with self._cond:
            now = self._clock()
            for index, queue in enumerate(self._queues):
                if len(queue) >= MAX_QUEUED:
                    full.append(index)
                else:
                    heapq.heappush(queue, _Due(now, next(self._seq), event))
            self._cond.notify_all()
        for index in full:
            log.warning("webhook queue full, event given up", extra=self._fields(index, event))
            self._on_outcome("failed")

    def start(self) -> Self:
        """Start the workers (once)."""
        with self._cond:
            if self._threads:
                return self
            self._threads = [
                threading.Thread(target=self._work, args=(index,), name=f"webhook-{index}", daemon=True)
                for index in range(len(self._webhooks))
            ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Make one last attempt at every delivery due now (no more retries), within `timeout` seconds, then
        return. What is left is logged; a worker still in an attempt finishes it on its own."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing_by = deadline
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if left := self.pending():
            log.warning("webhook deliveries left undelivered at shutdown: %d", left)
        if self._owns_client and not any(thread.is_alive() for thread in self._threads):
            self._client.close()

    def pending(self) -> int:
        """Deliveries not yet done: waiting (for their first attempt or a retry) or in flight."""
        with self._cond:
            return sum(len(queue) for queue in self._queues) + sum(self._busy)

    def wait_idle(self, timeout: float) -> bool:
        """For tests: wait until nothing is in flight and nothing is due before `timeout` seconds from now; False
        if that did not happen in time."""
        limit = self._clock() + timeout

        def idle() -> bool:
            return not any(self._busy) and all(not queue or queue[0].at > limit for queue in self._queues)

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def _work(self, index: int) -> None:
        while (due := self._next(index)) is not None:
            delivered = self._attempt(index, due)
            self._settle(index, due, delivered)

    def _next(self, index: int) -> _Due | None:
        """The next delivery for webhook `index` once it is due; None when stopping leaves nothing due."""
        queue = self._queues[index]
        with self._cond:
            while True:
                now = self._clock()
                ready = bool(queue) and queue[0].at <= now
                if self._closing_by is not None and (not ready or time.monotonic() >= self._closing_by):
                    return None
                if ready:
                    self._busy[index] += 1
                    return heapq.heappop(queue)
                self._cond.wait(queue[0].at - now if queue else None)

    def _attempt(self, index: int, due: _Due) -> bool:
        """One POST of `due`'s event, signed now. True when the webhook answered 2xx."""
        webhook, event = self._webhooks[index], due.event
        headers = {
            "Content-Type": "application/json",
            "Reconciler-Event-Id": event.id,
            "Reconciler-Signature": sign(webhook.secret.get_secret_value().encode(), int(self._clock()), event.body),
        }
        try:
            response = self._client.post(
                webhook.url, content=event.body, headers=headers, follow_redirects=False, timeout=DELIVERY_TIMEOUT
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.info("webhook delivery failed: %s", type(exc).__name__, extra=self._fields(index, event, due))
            return False
        except Exception:  # a worker must outlive any failure; the event is retried
            log.exception("webhook delivery failed unexpectedly", extra=self._fields(index, event, due))
            return False
        if not response.is_success:
            log.info("webhook answered %d", response.status_code, extra=self._fields(index, event, due))
        return response.is_success

    def _settle(self, index: int, due: _Due, delivered: bool) -> None:
        """Schedule the retry of a failed attempt (unless stopping or out of retries), report, then mark done."""
        with self._cond:
            retry = not delivered and due.attempts < len(self._schedule) and self._closing_by is None
            if retry:
                at = self._clock() + self._schedule[due.attempts]
                heapq.heappush(self._queues[index], _Due(at, next(self._seq), due.event, due.attempts + 1))
        outcome: Outcome = "delivered" if delivered else "retry" if retry else "failed"
        if outcome == "failed":
            log.warning("webhook delivery given up after %d attempts", due.attempts + 1,
                        extra=self._fields(index, due.event, due))
        try:
            self._on_outcome(outcome)
        except Exception:  # a failing metrics hook must not stop the deliveries
            log.exception("webhook outcome hook failed")
        with self._cond:  # done only once reported: wait_idle returns after on_outcome has been heard
            self._busy[index] -= 1
            self._cond.notify_all()

    def _fields(self, index: int, event: Event, due: _Due | None = None) -> dict[str, object]:
        """The structured fields of a log line about one delivery (never the secret: only the webhook's origin)."""
        fields: dict[str, object] = {"event_id": event.id, "event_type": event.type.value,
                                     "webhook": self._origins[index]}
        if due is not None:
            fields["attempt"] = due.attempts + 1
        return {"fields": fields}  # the service's JSON log lines carry `fields` (reconciler.service.observe)
