"""Signed webhook events: the wire form, the signature, and delivery to real receivers on 127.0.0.1 (retries,
isolation between webhooks, never blocking the publisher, never showing the secret)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from reconciler.config.desired import Webhook
from reconciler.service.events import (
    DATA_FIELDS,
    Deliverer,
    Event,
    EventType,
    Outcome,
    new_event,
    sign,
    verify,
)

SECRET = "whsec-test-d2f1c0a7-never-shown"
NOW = dt.datetime(2026, 12, 4, 8, 0, 0, 123456, tzinfo=dt.UTC)
FAST = (0.05, 0.1)  # retries in tests: three attempts in all
SAMPLE_DATA: dict[EventType, dict[str, object]] = {
    EventType.AUTHORIZATION_COMPLETED: {"scopes": ["vso.code", "vso.work_full"], "by": "link"},
    EventType.AUTHORIZATION_FAILED: {"reason": "access_denied: the user declined consent"},
    EventType.REFRESH_FAILED: {"reason": "invalid_grant", "category": "tenant"},
    EventType.NEEDS_REAUTHORIZATION: {"reason": "refresh token rejected",
                                      "link": "https://connect.example.com/authorize/p-1?sig=abc"},
    EventType.RECOVERED: {},
    EventType.LINK_EXPIRED: {},
}


@dataclass
class Received:
    """One request a receiver got, and whether its signature verified when it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    valid: bool


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies every signature with `verify` as it arrives. It answers 500
    to the first `fail_first` attempts of each id, a 302 when `redirect_to` is set, and holds every request until
    `release` is set when `hold` is."""

    secret: bytes = SECRET.encode()
    fail_first: int = 0
    redirect_to: str | None = None
    hold: bool = False
    now: Callable[[], float] = time.time
    on_failure: Callable[[], None] = lambda: None
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.answer(self, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        valid = verify(self.secret, handler.headers.get("Reconciler-Signature", ""), body, now=int(self.now()))
        got = Received(handler.command, handler.path, dict(handler.headers.items()), body, valid)
        with self.cond:
            self.requests.append(got)
            tries = sum(1 for r in self.requests if r.headers.get("Reconciler-Event-Id") == got.headers.get(
                "Reconciler-Event-Id"))
            self.cond.notify_all()
        if self.hold:
            self.release.wait(30)
        failing = tries <= self.fail_first
        if failing:
            self.on_failure()
        handler.send_response(302 if self.redirect_to else 500 if failing else 204)
        if self.redirect_to:
            handler.send_header("Location", self.redirect_to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def wait_for(self, count: int, timeout: float = 30) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def ids(self) -> list[str]:
        return [r.headers["Reconciler-Event-Id"] for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**options: object) -> Receiver:
        made.append(Receiver(**options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def deliverer_factory() -> Iterator[Callable[..., tuple[Deliverer, list[Outcome]]]]:
    """A started deliverer to the given URLs (all with SECRET), and the outcomes it reports."""
    made: list[Deliverer] = []

    def make(*urls: str, schedule: tuple[float, ...] = FAST, **options: object) -> tuple[Deliverer, list[Outcome]]:
        outcomes: list[Outcome] = []
        hooks = [Webhook(url=url, secret_ref="${env:HOOK_SECRET}", secret=SecretStr(SECRET)) for url in urls]
        made.append(Deliverer(hooks, schedule=schedule, on_outcome=outcomes.append, **options))  # type: ignore[arg-type]
        return made[-1].start(), outcomes

    yield make
    for deliverer in made:
        deliverer.stop(timeout=2)


def _dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def _event(kind: EventType = EventType.AUTHORIZATION_COMPLETED, tenant: str = "eu-a") -> Event:
    return new_event(kind, tenant=tenant, address=f"installation.{tenant}.ado", data=SAMPLE_DATA[kind], now=NOW)


def test_every_event_type_arrives_signed_with_its_exact_body_and_headers(receiver_factory, deliverer_factory) -> None:
    """Each event reaches the receiver once, as a POST with exactly the documented headers, a valid signature and
    a compact body with exactly the documented fields and types."""
    receiver = receiver_factory()
    deliverer, outcomes = deliverer_factory(receiver.url)
    events = {kind: _event(kind) for kind in EventType}
    for event in events.values():
        deliverer.publish(event)
    assert deliverer.wait_idle(30)
    assert sorted(receiver.ids()) == sorted(e.id for e in events.values())
    assert outcomes == ["delivered"] * len(EventType)
    for got in receiver.requests:
        event = next(e for e in events.values() if e.id == got.headers["Reconciler-Event-Id"])
        assert (got.method, got.path, got.valid, got.body) == ("POST", "/hook", True, event.body)
        assert got.headers["Content-Type"] == "application/json"
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", got.headers["Reconciler-Signature"])
        document = json.loads(got.body)
        assert list(document) == ["id", "type", "created_at", "tenant", "address", "data"]
        assert re.fullmatch(r"evt_[0-9a-f]{32}", document["id"])
        assert document["type"] == event.type.value
        assert document["created_at"] == "2026-12-04T08:00:00.123Z"
        assert (document["tenant"], document["address"]) == ("eu-a", "installation.eu-a.ado")
        assert document["data"] == SAMPLE_DATA[event.type] and set(document["data"]) == DATA_FIELDS[event.type]
        assert got.body == json.dumps(document, separators=(",", ":")).encode()


def test_a_failed_delivery_is_retried_with_the_same_id_and_body_signed_afresh(
    receiver_factory, deliverer_factory
) -> None:
    """A receiver failing the first two attempts gets the same id and body a third time, each attempt signed at
    its own time (the clock jumps ten minutes at each failure: a reused signature would be too old)."""
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    def jump() -> None:
        offset[0] += 600

    receiver = receiver_factory(fail_first=2, now=clock, on_failure=jump)
    deliverer, outcomes = deliverer_factory(receiver.url, clock=clock)
    event = _event()
    deliverer.publish(event)
    assert receiver.wait_for(3) and deliverer.wait_idle(30)  # (the jumps move wait_idle's horizon: wait for 3 first)
    assert receiver.ids() == [event.id] * 3
    assert {r.body for r in receiver.requests} == {event.body}
    assert [r.valid for r in receiver.requests] == [True, True, True]
    assert len({r.headers["Reconciler-Signature"] for r in receiver.requests}) == 3
    assert outcomes == ["retry", "retry", "delivered"]
    assert Counter(receiver.ids()) == {event.id: 3} and deliverer.pending() == 0


def test_a_delivery_failing_every_attempt_is_given_up_and_reported(receiver_factory, deliverer_factory, caplog) -> None:
    """After the last retry of the schedule the delivery is given up: reported "failed" and logged."""
    receiver = receiver_factory(fail_first=99)
    deliverer, outcomes = deliverer_factory(receiver.url)
    with caplog.at_level(logging.INFO, logger="reconciler.service.events"):
        deliverer.publish(_event())
        assert deliverer.wait_idle(30)
    assert len(receiver.requests) == 1 + len(FAST)
    assert outcomes == ["retry", "retry", "failed"] and deliverer.pending() == 0
    assert any("given up after 3 attempts" in r.getMessage() for r in caplog.records)


def test_a_dead_or_hanging_webhook_does_not_hold_up_a_healthy_one(receiver_factory, deliverer_factory) -> None:
    """Every event reaches a healthy webhook once while another refuses connections and a third holds its first
    request unanswered."""
    healthy, hanging = receiver_factory(), receiver_factory(hold=True)
    deliverer, _ = deliverer_factory(_dead_url(), hanging.url, healthy.url)
    events = [_event(tenant=f"eu-{n}") for n in range(20)]
    for event in events:
        deliverer.publish(event)
    assert healthy.wait_for(20)
    assert hanging.wait_for(1) and len(hanging.requests) == 1  # still holding the first one
    assert sorted(healthy.ids()) == sorted(e.id for e in events) and all(r.valid for r in healthy.requests)
    hanging.release.set()
    assert deliverer.wait_idle(60)
    assert sorted(hanging.ids()) == sorted(e.id for e in events)


def test_publish_never_blocks_on_an_unreachable_webhook(deliverer_factory) -> None:
    """Publishing 1,000 events to a webhook nothing answers returns while every delivery is still pending."""
    deliverer, outcomes = deliverer_factory(_dead_url(), schedule=(3600,))
    for n in range(1000):
        deliverer.publish(_event(tenant=f"eu-{n}"))
    assert deliverer.pending() == 1000  # none delivered, none given up: the first retry is an hour away
    assert "delivered" not in outcomes


def test_stop_makes_a_last_attempt_at_what_is_due(receiver_factory) -> None:
    """Events published before stop are delivered before it returns; nothing is retried after it."""
    receiver = receiver_factory()
    hook = Webhook(url=receiver.url, secret_ref="${env:HOOK_SECRET}", secret=SecretStr(SECRET))
    deliverer = Deliverer([hook], schedule=(3600,))
    events = [_event(tenant=f"eu-{n}") for n in range(5)]
    for event in events:
        deliverer.publish(event)
    deliverer.start().stop(timeout=30)
    assert sorted(receiver.ids()) == sorted(e.id for e in events) and deliverer.pending() == 0


def test_a_redirect_is_not_followed(receiver_factory, deliverer_factory) -> None:
    """A webhook answering 302 is a failed delivery; the target of the redirect never receives the event."""
    target = receiver_factory()
    redirecting = receiver_factory(redirect_to=target.url)
    deliverer, outcomes = deliverer_factory(redirecting.url)
    deliverer.publish(_event())
    assert deliverer.wait_idle(30)
    assert len(redirecting.requests) == 3 and target.requests == []
    assert outcomes == ["retry", "retry", "failed"]


def test_the_secret_never_shows_in_repr_or_logs(receiver_factory, deliverer_factory, caplog) -> None:
    """Neither the deliverer, its webhooks, nor any log line (with its structured fields) shows the secret,
    through failures, retries and giving up."""
    failing = receiver_factory(fail_first=99)
    with caplog.at_level(logging.DEBUG):
        deliverer, _ = deliverer_factory(failing.url, _dead_url())
        deliverer.publish(_event())
        assert deliverer.wait_idle(30)
        deliverer.stop(timeout=2)
    assert len(caplog.records) >= 6  # two give-ups and the failures before them were logged
    shown = [repr(deliverer), str(deliverer), caplog.text, *(repr(vars(r)) for r in caplog.records)]
    assert not [text for text in shown if SECRET in text]


@pytest.mark.parametrize(
    ("case", "secret", "body", "now"),
    [
        ("tampered body", SECRET.encode(), b'{"id":"evt_x","type":"link.expired"}', 1_800_000_000),
        ("wrong secret", b"another-secret", b'{"id":"evt_x"}', 1_800_000_000),
        ("older than 5 minutes", SECRET.encode(), b'{"id":"evt_x"}', 1_800_000_301),
        ("from the future", SECRET.encode(), b'{"id":"evt_x"}', 1_799_999_699),
    ],
)
def test_verify_refuses_a_tampered_misdated_or_foreign_signature(
    case: str, secret: bytes, body: bytes, now: int
) -> None:
    """`verify` refuses a body, secret or time other than the ones signed (beyond 300 seconds)."""
    header = sign(SECRET.encode(), 1_800_000_000, b'{"id":"evt_x"}')
    assert verify(SECRET.encode(), header, b'{"id":"evt_x"}', now=1_800_000_300)
    assert not verify(secret, header, body, now=now), case


@pytest.mark.parametrize("header", ["", "t=,v1=", "v1=abc", "t=1800000000", "t=abc,v1=00", "t=1800000000,v1=é"])
def test_verify_refuses_a_malformed_header(header: str) -> None:
    """A malformed signature header is invalid, never an exception."""
    assert not verify(SECRET.encode(), header, b"{}", now=1_800_000_000)


def test_new_event_requires_exactly_the_data_fields_of_its_type() -> None:
    """An event carries exactly its type's documented data fields, and a timezone-aware time; ids are unique."""
    with pytest.raises(ValueError, match=r"refresh.failed carries data fields \['category', 'reason'\]"):
        new_event(EventType.REFRESH_FAILED, tenant="eu-a", address="a", data={"reason": "x"}, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        new_event(EventType.RECOVERED, tenant="eu-a", address="a", data={}, now=NOW.replace(tzinfo=None))
    assert len({_event().id for _ in range(1000)}) == 1000


DOC = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


def test_the_docs_list_every_event_type_with_its_data_fields() -> None:
    """docs/webhooks.md has one row per event type naming exactly the data fields it carries."""
    rows = re.findall(r"^\| `([a-z._]+)` \|.*\| (.*) \|$", DOC.read_text(), flags=re.MULTILINE)
    documented = {kind: set(re.findall(r"`(\w+)`", fields)) for kind, fields in rows}
    assert documented == {kind.value: set(DATA_FIELDS[kind]) for kind in EventType}


def test_the_verification_snippet_in_the_docs_verifies_a_real_delivery(receiver_factory, deliverer_factory) -> None:
    """The receiver's snippet in docs/webhooks.md (standard library only) accepts a real delivery and refuses it
    tampered or under another secret."""
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert snippet and len(snippet.group(1).strip().splitlines()) <= 10
    namespace: dict[str, object] = {}
    exec(snippet.group(1), namespace)  # noqa: S102 - the documented code itself is under test
    verify_signature = namespace["verify_signature"]
    assert callable(verify_signature)
    receiver = receiver_factory()
    deliverer, _ = deliverer_factory(receiver.url)
    deliverer.publish(_event())
    assert deliverer.wait_idle(30) and len(receiver.requests) == 1
    got = receiver.requests[0]
    header = got.headers["Reconciler-Signature"]
    assert verify_signature(SECRET.encode(), header, got.body) is True
    assert verify_signature(SECRET.encode(), header, got.body.replace(b"eu-a", b"eu-b")) is False
    assert verify_signature(b"another-secret", header, got.body) is False
