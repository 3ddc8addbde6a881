"""The service under hostile requests, over real sockets against `reconciler serve` as operators run it: oversized,
malformed, wrong Host, unknown paths and methods, traversal in ids, huge and repeated parameters, non-UTF-8 bytes —
each refused with a 4xx (never a 500), nothing recorded in state, no traceback in the logs, and the service still
answering; and slow clients (headers one byte at a time, responses never read) that neither starve other clients
nor hold a connection past the head timeout.

Figures: the "service" area (tests/reliability/conftest.py) counts bad requests, slow clients and their outcomes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.service.protocol import HEAD_TIMEOUT, MAX_HEAD
from tests.reliability.conftest import Figures
from tests.reliability.service_proc import ServiceProcess, deferred, raw_request, status_of
from tests.service_support import ServiceWorld


@pytest.fixture
def served(service_world: ServiceWorld, tmp_path: Path) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    links = deferred(service_world, 2)
    proc = ServiceProcess(service_world, tmp_path / "serve.log").start()
    try:
        yield proc, links
    finally:
        proc.kill()


def _req(target: bytes, *, host: bytes = b"127.0.0.1", method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"Connection: close\r\n\r\n"


def bad_requests(link: str) -> list[tuple[str, bytes, set[int]]]:
    """(what, raw request, the statuses it may get) — 0 stands for a connection closed without an answer."""
    path = link.split("://", 1)[1].split("/", 1)[1]
    pending_id, sig = path.removeprefix("authorize/").split("?sig=")
    target = f"/{path}".encode()
    huge = b"A" * (MAX_HEAD * 4)
    return [
        ("body over the limit", _req(b"/healthz", extra=b"Content-Length: 1000000000\r\n"), {413}),
        ("chunked body", _req(b"/healthz", extra=b"Transfer-Encoding: chunked\r\n"), {413}),
        ("huge header", _req(b"/healthz", extra=b"X-Big: " + huge + b"\r\n"), {431, 0}),
        ("huge request line", _req(b"/healthz?" + huge), {431, 0}),
        ("many headers", _req(b"/healthz", extra=b"".join(b"X-%d: v\r\n" % i for i in range(20000))), {431, 0}),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", {400, 0}),
        ("no version", b"GET /connector/callback?state=x&code=y\r\n\r\n", {400, 0}),
        ("bad header line", b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n", {400}),
        ("NUL in a header", _req(b"/healthz", extra=b"X-A: a\x00b\r\n"), {400}),
        ("two Content-Lengths", _req(b"/healthz", extra=b"Content-Length: 1\r\nContent-Length: 2\r\n"), {400}),
        ("wrong Host on a link", _req(target, host=b"evil.example"), {400}),
        ("wrong Host on the callback", _req(b"/connector/callback?state=x&code=y", host=b"evil.example"), {400}),
        ("wrong Host on the token API", _req(b"/v1/installations/installation.eu-0.ado/token", host=b"evil.example"), {400}),
        ("no Host", b"GET " + target + b" HTTP/1.0\r\n\r\n", {400}),
        ("unknown path", _req(b"/admin"), {404}),
        ("wrong method on a link", _req(target, method=b"POST", extra=b"Content-Length: 0\r\n"), {405}),
        ("wrong method on healthz", _req(b"/healthz", method=b"DELETE"), {405}),
        ("unknown method", _req(b"/healthz", method=b"BREW"), {400, 405}),
        ("traversal in the id", _req(b"/authorize/..%2f..%2fstate%2fdefault.json?sig=" + sig.encode()), {403, 404}),
        ("dot segments", _req(b"/authorize/../../etc/passwd"), {403, 404}),
        ("NUL in the id", _req(b"/authorize/" + pending_id.encode() + b"%00?sig=" + sig.encode()), {403}),
        ("very long id", _req(b"/authorize/" + b"x" * 6000 + b"?sig=" + sig.encode()), {403}),
        ("traversal in the address", _req(b"/v1/installations/..%2f..%2fx/token"), {401, 404}),
        ("NUL in the address", _req(b"/v1/installations/installation.eu-0.ado%00/token",
                                    extra=b"Authorization: Bearer nope\r\n"), {401}),
        ("repeated sig", _req(target + b"&sig=AAAA&sig=" + sig.encode()[::-1]), {403}),
        ("huge sig", _req(b"/" + path.split("?")[0].encode() + b"?sig=" + b"A" * 6000), {403}),
        ("repeated state", _req(b"/connector/callback?state=a&state=b&code=c&code=d"), {400}),
        ("huge state", _req(b"/connector/callback?code=c&state=" + b"s" * 6000), {400}),
        ("non-UTF-8 percent bytes in the path", _req(b"/authorize/%ff%fe%00?sig=%ff"), {403}),
        ("non-UTF-8 percent bytes in the query", _req(b"/connector/callback?state=%ff%fe&code=%c3%28"), {400}),
        ("raw non-ASCII bytes in the path", _req(b"/authorize/\xff\xfe?sig=x"), {400, 403}),
        ("raw non-ASCII bytes in the query", _req(b"/connector/callback?state=\xff&code=\xfe"), {400}),
        ("callback error param", _req(b"/connector/callback?state=x&error=" + b"%0a%0d" * 500), {400}),
    ]


def _serial(world: ServiceWorld) -> int:
    return int(world.state()["serial"])


def test_bad_requests_get_a_4xx_and_record_nothing(
    served: tuple[ServiceProcess, dict[str, str]], figures: Figures
) -> None:
    proc, links = served
    world = proc.world
    serial = _serial(world)
    cases = bad_requests(next(iter(links.values())))
    figures.goal("service", server_errors=0)
    wrong = []
    for what, data, allowed in cases:
        got = status_of(raw_request(world.port, data))
        if got not in allowed:
            wrong.append((what, got))
        assert httpx.get(f"{proc.url}/healthz", timeout=30).status_code == 200, what  # still answering
        figures.add("service", bad_requests=1, server_errors=int(got >= 500))
    assert not wrong
    assert _serial(world) == serial
    assert httpx.get(f"{proc.url}/healthz", headers={"Host": "anything.example"}, timeout=30).status_code == 200
    assert httpx.get(f"{proc.url}/metrics", headers={"Host": "anything.example"}, timeout=30).status_code == 200
    for link in links.values():  # the links still open after all that
        assert httpx.get(link, timeout=30).status_code == 302
    records = proc.records()
    assert not [r for r in records if r.get("level") in ("error", "critical") or "Traceback" in json.dumps(r)]
    assert not [r for r in records if r.get("status", 0) >= 500]


def _slowloris(port: int, count: int) -> list[socket.socket]:
    """`count` connections each holding a request head open, one byte sent."""
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"G")
        out.append(sock)
    return out


def _unread(port: int, count: int, target: bytes) -> list[socket.socket]:
    """`count` connections that pipeline requests for `target` and never read an answer."""
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(one * 20)
        out.append(sock)
    return out


def _slow_clients(served: tuple[ServiceProcess, dict[str, str]], figures: Figures, count: int) -> None:
    proc, links = served
    held = _slowloris(proc.world.port, count) + _unread(proc.world.port, count // 4 + 1, b"/metrics")
    try:
        for sock in held[: count // 2]:  # headers one byte at a time, on half of them
            for byte in b"ET /healthz HTTP/1.1\r\nX-Slow: 1":
                sock.sendall(bytes([byte]))
        with httpx.Client(timeout=30) as client:  # completes within 30 s, or the test fails
            assert client.get(f"{proc.url}/healthz").status_code == 200
            assert client.get(next(iter(links.values()))).status_code == 302
        figures.add("service", slow_clients=len(held), answered_beside_them=2)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.quick
def test_slow_clients_do_not_starve_others_quick(served: tuple[ServiceProcess, dict[str, str]], figures: Figures) -> None:
    _slow_clients(served, figures, 40)


@pytest.mark.slow
def test_slow_clients_do_not_starve_others(served: tuple[ServiceProcess, dict[str, str]], figures: Figures) -> None:
    _slow_clients(served, figures, 400)


def test_a_request_head_that_never_completes_is_cut_off(
    served: tuple[ServiceProcess, dict[str, str]], figures: Figures
) -> None:
    """A connection that trickles its head (or sends nothing) is answered 408 and closed once the head timeout
    passes, however long it keeps trickling: it does not hold a connection slot for ever."""
    proc, _ = served
    idle = socket.create_connection(("127.0.0.1", proc.world.port), timeout=HEAD_TIMEOUT * 6)
    trickling = socket.create_connection(("127.0.0.1", proc.world.port), timeout=HEAD_TIMEOUT * 6)
    try:
        trickling.sendall(b"GET /healthz HTTP/1.1\r\n")
        received = b""
        for _ in range(3):  # a byte now and then, never the blank line: the server must end it
            try:
                trickling.sendall(b"X")
                chunk = trickling.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail("a trickling request head held its connection past six head timeouts")
        assert status_of(received) in (408, 0), received[:200]
        assert status_of(idle.recv(4096)) in (408, 0)
        figures.add("service", heads_cut_off=2)
    finally:
        idle.close()
        trickling.close()
