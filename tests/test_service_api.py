"""The service's token API, webhooks and background refresh over real HTTP against the sandbox: keys see only
their tenants, tokens handed out work at the provider and every read is audited; events arrive signed, once per
id; a rejected refresh token marks the installation and sends a new link."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from reconciler.sandbox.model import Fault
from reconciler.service.events import verify
from tests.sandbox_support import free_port
from tests.service_support import (
    API_KEY_ALL,
    API_KEY_EU,
    EVERY_STATUS,
    SECRETS,
    WEBHOOK_SECRET,
    ServiceWorld,
    links_in,
    sign_in,
    tenants_yaml,
)


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks every signature and keeps each event once per id."""

    def __init__(self) -> None:
        self.events: dict[str, dict] = {}  # type: ignore[type-arg]
        self.bad: list[str] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers.get("Reconciler-Signature", "")
                now = int(dt.datetime.now(dt.UTC).timestamp())
                if not verify(WEBHOOK_SECRET.encode(), header, body, now=now):
                    receiver.bad.append(header)
                event = json.loads(body)
                assert self.headers["Reconciler-Event-Id"] == event["id"]
                with receiver.arrived:
                    receiver.events.setdefault(event["id"], event)
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, type_: str, count: int = 1, timeout: float = 30) -> list[dict]:  # type: ignore[type-arg]
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.of(type_)) >= count, timeout=timeout)
            return self.of(type_)

    def of(self, type_: str) -> list[dict]:  # type: ignore[type-arg]
        return [e for e in self.events.values() if e["type"] == type_]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def _signed_in(world: ServiceWorld, receiver: Receiver, tenants: str) -> dict[str, str]:
    hooks = f"  webhooks:\n    - url: {receiver.url}\n      secret: ${{env:WEBHOOK_SECRET}}\n"
    world.write(tenants, extra_service=hooks)
    deferred = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.stdout + deferred.stderr
    links = links_in(deferred.stdout, world.public_url)
    world.start()
    with httpx.Client(timeout=20) as client:
        for link in links.values():
            assert sign_in(link, client).status_code == 200
    return links


def _token(world: ServiceWorld, address: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(f"{world.public_url}/v1/installations/{address}/token", headers=headers, timeout=20)


def test_the_token_api_hands_out_working_tokens_to_the_keys_tenants_only(service_world: ServiceWorld, receiver: Receiver) -> None:
    _signed_in(service_world, receiver, tenants_yaml(2, prefix="eu") + tenants_yaml(1, prefix="us"))
    ok = _token(service_world, "installation.eu-0.ado", API_KEY_EU)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert set(body) == {"access_token", "expires_at", "scopes"} and body["expires_at"].endswith("Z")
    assert body["scopes"] == ["vso.code", "vso.project"]
    check = httpx.get(f"{service_world.sandbox.url}/acme-org/_apis/connectionData",
                      headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=10)
    assert check.status_code == 200
    assert _token(service_world, "installation.us-0.ado", API_KEY_EU).status_code == 403
    assert _token(service_world, "installation.us-0.ado", API_KEY_ALL).status_code == 200
    assert _token(service_world, "installation.eu-0.ado", None).status_code == 401
    assert _token(service_world, "installation.eu-0.ado", "not-a-key").status_code == 401
    assert _token(service_world, "installation.eu-9.ado", API_KEY_EU).status_code == 404
    audit = service_world.cli("audit", "--format", "json")
    reads = [e for e in json.loads(audit.stdout)["entries"] if e["kind"] == "token.read"]
    assert [(e["actor"], e["address"]) for e in reads] == [
        ("runtime-eu", "installation.eu-0.ado"), ("runtime-all", "installation.us-0.ado")
    ]
    metrics = httpx.get(f"{service_world.public_url}/metrics", timeout=10).text
    assert "reconciler_token_reads_total 2.0" in metrics
    assert "reconciler_authorizations_completed_total 3.0" in metrics


def test_an_expiring_token_is_refreshed_once_under_fifty_concurrent_api_reads(service_world: ServiceWorld, receiver: Receiver) -> None:
    _signed_in(service_world, receiver, tenants_yaml(1))
    grants = lambda: httpx.get(f"{service_world.sandbox.url}/_sandbox/grants", timeout=10).json()  # noqa: E731
    before = sum(g["refreshes"] for g in grants())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)  # the sandbox's tokens live an hour: due now
    service_world.clock = lambda: later
    start = threading.Barrier(50)

    def read(_: int) -> httpx.Response:
        start.wait()
        return _token(service_world, "installation.eu-0.ado", API_KEY_EU)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(read, range(50)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert sum(g["refreshes"] for g in grants()) - before == 1


def test_completions_send_signed_events_once_per_id(service_world: ServiceWorld, receiver: Receiver) -> None:
    links = _signed_in(service_world, receiver, tenants_yaml(3))
    completed = receiver.wait_for("authorization.completed", 3)
    assert sorted(e["address"] for e in completed) == sorted(links)
    assert not receiver.bad
    event = completed[0]
    assert set(event) == {"id", "type", "created_at", "tenant", "address", "data"}
    assert event["tenant"] == event["address"].split(".")[1] and event["data"]["scopes"]


def test_a_rejected_refresh_token_marks_the_installation_and_sends_a_new_link(service_world: ServiceWorld, receiver: Receiver) -> None:
    _signed_in(service_world, receiver, tenants_yaml(1))
    sandbox = service_world.sandbox
    assert sandbox.provider.revoke(client_id=None) >= 1  # every grant: the refresh token is now rejected
    server = service_world.servers[0]
    server.runtime.settings = server.runtime.settings.__class__(interval=3600, window=dt.timedelta(days=2))
    server.runtime.sweep()
    needs = receiver.wait_for("installation.needs_reauthorization")
    assert needs and needs[0]["data"]["link"].startswith(f"{service_world.public_url}/authorize/installation.eu-0.ado~")
    plan = service_world.cli("plan", "--format", "json")
    pending = [c for c in json.loads(plan.stdout)["changes"] if c["pending"]]
    assert [c["link"] for c in pending] == [needs[0]["data"]["link"]]
    with httpx.Client(timeout=20) as client:
        assert sign_in(needs[0]["data"]["link"], client).status_code == 200
    assert receiver.wait_for("installation.recovered")
    assert not receiver.bad


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The service's loggers writing JSON lines, as `reconciler serve` sets them up, into a buffer for one test."""
    from reconciler.service.observe import LOGGER, log_to_stderr

    loggers = [logging.getLogger(name) for name in (LOGGER, "uvicorn.error")]
    kept = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    buffer = io.StringIO()
    log_to_stderr(SECRETS, stream=buffer)
    yield buffer
    for logger, (handlers, level, propagate) in zip(loggers, kept, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_no_secret_in_the_services_output(service_world: ServiceWorld, receiver: Receiver, json_logs: io.StringIO) -> None:
    _signed_in(service_world, receiver, tenants_yaml(2))
    token = _token(service_world, "installation.eu-0.ado", API_KEY_EU).json()["access_token"]
    service_world.stop()
    err = json_logs.getvalue()
    assert '"path": "/connector/callback"' in err and all(json.loads(line) for line in err.splitlines())
    for secret in (*SECRETS, token):
        assert secret not in err
    assert "code=" not in err and "state=" not in err and "sig=" not in err


def test_redaction_happens_before_escaping_and_skips_values_too_short_to_be_secrets() -> None:
    """A secret with quotes, backslashes or non-ASCII characters is redacted in the value, not in its JSON escape; a
    one-character "secret" does not mangle every line."""
    from reconciler.service.observe import JsonLines

    secret = 'we"ird\\sécret\tvalue'
    formatter = JsonLines([secret, "s"])
    record = logging.LogRecord("reconciler.service", logging.INFO, __file__, 1, "saw %s", (secret,), None)
    record.fields = {"nested": {"list": [secret]}}
    line = json.loads(formatter.format(record))
    assert line["message"] == "saw [redacted]" and line["nested"] == {"list": ["[redacted]"]}
    assert secret not in json.dumps(line) and "sécret" not in formatter.format(record)


def test_a_callback_and_a_platform_return_never_take_each_others_attempts(service_world: ServiceWorld, receiver: Receiver) -> None:
    """The OAuth state and the platform's return nonce are kept apart: each route refuses the other's value (400),
    and the attempt stays for its own route."""
    links = _signed_in(service_world, receiver, tenants_yaml(1) + tenants_yaml(1, prefix="us"))
    with httpx.Client(timeout=20) as client:
        opened = client.get(links["installation.us-0.ado"].replace("us-0", "us-0"))
        assert opened.status_code == 410  # already completed by _signed_in
    state = "x" * 32
    for path in (f"/connector/platform-return?attempt={state}", f"/connector/callback?state={state}&code=c"):
        assert httpx.get(service_world.public_url + path, timeout=10).status_code == 400



def _status(world: ServiceWorld, key: str | None, query: str = "", accept: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    headers |= {"Accept": accept} if accept is not None else {}
    return httpx.get(f"{world.public_url}/status{query}", headers=headers, timeout=20)


def test_the_status_page_shows_a_key_the_installations_of_its_tenants_only(every_status: ServiceWorld) -> None:
    """GET /status: 401 without a known key; with one, the status of its tenants' installations only (counted
    among themselves), in the words `reconciler status` says."""
    for key in (None, "not-a-key"):
        refused = _status(every_status, key, "?format=json")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"] == "unauthorized" and "installation" not in refused.text
    eu = _status(every_status, API_KEY_EU, "?format=json")
    assert eu.status_code == 200 and eu.headers["content-type"] == "application/json", eu.text
    document = eu.json()
    assert [e["address"] for e in document["installations"]] == sorted(
        a for addresses in EVERY_STATUS.values() for a in addresses if a.startswith("installation.eu-")
    )
    assert document["total"] == document["shown"] == 4 and set(document["partners"]) == {"legacy", "entra"}
    assert "us-initech" not in eu.text and "us-hooli" not in eu.text and "lapsed" not in eu.text
    cli = json.loads(every_status.cli("status", "--format", "json").stdout)
    everything = _status(every_status, API_KEY_ALL, "?format=json").json()
    assert everything["summary"] == cli["summary"] == {w: len(a) for w, a in EVERY_STATUS.items()}
    assert [(e["address"], e["status"], e["reason"], e["pending"]) for e in everything["installations"]] == [
        (e["address"], e["status"], e["reason"], e["pending"]) for e in cli["installations"]
    ]


def test_the_status_page_is_html_unless_json_is_asked_for(every_status: ServiceWorld) -> None:
    """The page by default and for a browser's Accept (no script allowed, not cached); the document for
    `?format=json` or `Accept: application/json`; 400 for another format."""
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for query, accept in (("", None), ("", browser_accept), ("?format=html", "application/json")):
        page = _status(every_status, API_KEY_EU, query, accept)
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text.startswith("<!DOCTYPE html>") and 'data-address="installation.eu-acme.ado"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["cache-control"] == "no-store" and "<script" not in page.text
    for query, accept in (("?format=json", None), ("", "application/json")):
        answer = _status(every_status, API_KEY_EU, query, accept)
        assert answer.headers["content-type"] == "application/json" and answer.json()["shown"] == 4
    wrong = _status(every_status, API_KEY_EU, "?format=xml")
    assert wrong.status_code == 400 and wrong.json()["error"] == "bad_request"


def test_the_status_page_asks_no_provider_and_shows_no_token(every_status: ServiceWorld) -> None:
    """The status comes from state alone: failures queued at the provider's token and API endpoints are all still
    queued after the page was read; no token or code the provider issued is in it."""
    provider = every_status.sandbox.provider
    queued = {endpoint: provider.add_faults(endpoint, [Fault("status", status=500)] * 3) for endpoint in ("token", "api")}
    bodies = [_status(every_status, API_KEY_ALL, query).text for query in ("", "?format=json")]
    assert {endpoint: len(provider.faults[endpoint]) for endpoint in queued} == queued
    assert provider.issued and not [secret for secret in (*provider.issued, *SECRETS) for body in bodies if secret in body]


@pytest.mark.parametrize(
    ("asked", "accept", "form"),
    [
        (None, "", "html"),
        (None, "*/*", "html"),
        (None, "application/json", "json"),
        (None, "Application/JSON; charset=utf-8", "json"),
        (None, "text/html, application/json", "html"),
        ("json", "text/html", "json"),
        ("html", "application/json", "html"),
        ("JSON", "", None),
        ("", "", None),
    ],
)
def test_the_form_of_the_status_page(asked: str | None, accept: str, form: str | None) -> None:
    """`?format=` decides when given (html or json, else nothing); else the Accept header, HTML unless it names
    JSON and not HTML."""
    from reconciler.service.status_api import page_form

    assert page_form(asked, accept) == form
