"""Review findings on tokens, the loopback receiver and output: each reproduced over the real CLI, real HTTP on
127.0.0.1 and the sandbox provider.

- Finding 2: tokens and the client secret go only to the endpoints recorded for an installation; an endpoint that
  moved in the configuration is a planned re-authorization, never a side effect of refresh or `authorize`.
- Finding 9: a slow local client does not hold the loopback receiver: connections are served concurrently, each
  under a whole-request deadline.
- Finding 11: addresses follow the configuration's name rules wherever they come from (arguments, state), and the
  redaction backstop never corrupts a JSON document nor tells a reader that a shown value equals a secret.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from pydantic import SecretStr

from reconciler.auth import loopback
from reconciler.auth.consent import LoopbackReceiver
from reconciler.auth.request import AuthorizationRequest
from tests.conftest import run, snapshot
from tests.sandbox_support import APPLY, ENTRA_SECRET, ENV, LEGACY_SECRET, free_port, installation

KEY = base64.b64encode(b"review-auth-key-0123456789abcdef").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
ADDRESS = "installation.acme.ado"
SECRETS = {"legacy": LEGACY_SECRET, "entra": ENTRA_SECRET}
TOKEN_PATHS = {"legacy": "/oauth2/token", "entra": "/organizations/oauth2/v2.0/token"}


class Recorder:
    """An HTTP server on 127.0.0.1 standing for a "new" endpoint: records every request it receives (line,
    headers, body) and answers like a provider that rejects it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                recorder.requests.append(f"{self.requestline}\n{self.headers}\n{body}")
                payload = b'{"error": "invalid_grant"}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


def _partner_block(text: str, partner: str) -> tuple[int, int]:
    start = text.index(f"  {partner}:\n")
    end = text.index("\n  entra:\n") if partner == "legacy" else text.index("\ntenants:")
    return start, end


def _move_endpoint(directory: Path, partner: str, key: str, new_url: str) -> None:
    """Point one endpoint of `partner` in reconciler.yaml at `new_url`."""
    path = directory / "reconciler.yaml"
    text = path.read_text()
    start, end = _partner_block(text, partner)
    block = text[start:end]
    lines = [
        f"      {key}: {new_url}" if line.strip().startswith(f"{key}:") else line for line in block.split("\n")
    ]
    path.write_text(text[:start] + "\n".join(lines) + text[end:])


def _plan_json(extra: list[str] | None = None) -> dict:  # type: ignore[type-arg]
    result = run(["-C", ".", "plan", "--format", "json", *(extra or [])], RENV)
    assert result.exit_code in (0, 2), result.stderr
    return json.loads(result.stdout)


def _action(plan: dict, address: str) -> str:  # type: ignore[type-arg]
    return next(c["action"] for c in plan["changes"] if c["address"] == address)


# -- finding 2: tokens go only to the endpoints that issued them --------------------------------------------------


@pytest.mark.finding(2)
@pytest.mark.parametrize("partner", ["legacy", "entra"])
def test_refresh_never_sends_tokens_to_a_moved_token_endpoint(sandbox_config, recorder: Recorder, partner: str) -> None:
    """After the token endpoint moves in the configuration, neither `refresh` nor `plan --refresh` sends anything
    (refresh token, client secret) to the new URL; the plan re-authorizes the installation."""
    sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", partner, "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, RENV).exit_code == 0
    _move_endpoint(directory, partner, "token_url", recorder.url + TOKEN_PATHS[partner])

    refreshed = run(["-C", ".", "refresh", "--window", "120"], RENV)
    plan = _plan_json(["--refresh", "--window", "120"])

    assert recorder.requests == [], "the new token endpoint was sent a request before any apply"
    assert _action(plan, ADDRESS) == "reauthorize"
    issued = list(sandbox.provider.issued)
    seen = refreshed.stdout + refreshed.stderr + json.dumps(plan)
    assert not [t for t in [*issued, SECRETS[partner]] if t in seen]


def test_authorized_installation_never_sends_its_bearer_to_a_moved_api(sandbox_config, recorder: Recorder) -> None:
    """An authorized installation whose API endpoint moved: refresh and plan --refresh send no bearer token to the
    new API, and the plan re-authorizes it (a guard: this held before the fix of the class)."""
    _sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, RENV).exit_code == 0
    _move_endpoint(directory, "legacy", "api_url", recorder.url)

    run(["-C", ".", "refresh", "--window", "120"], RENV)
    plan = _plan_json(["--refresh"])

    assert recorder.requests == []
    assert _action(plan, ADDRESS) == "reauthorize"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("api_url", marks=pytest.mark.finding(2)),
        pytest.param("authorize_url", marks=pytest.mark.finding(2)),
        "token_url",  # in the pending authorization's digest already: a guard
    ],
)
def test_deferred_authorization_is_not_completed_against_moved_endpoints(
    sandbox_config, recorder: Recorder, key: str
) -> None:
    """A deferred authorization, then an endpoint moves: the plan re-authorizes (the pending link is withdrawn),
    and `authorize` refuses the stale pending authorization instead of sending a code, a secret or a bearer token
    to the new URL."""
    _sandbox, directory, write, browser = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    deferred = run([*APPLY[:-4], "--auth-mode", "defer"], RENV)
    assert deferred.exit_code == 3, deferred.stderr
    new_url = recorder.url + ("/oauth2/authorize" if key == "authorize_url" else "/oauth2/token" if key == "token_url" else "")
    _move_endpoint(directory, "legacy", key, new_url)

    plan = _plan_json()
    assert _action(plan, ADDRESS) == "reauthorize"
    state_before = snapshot(directory / "state")

    result = run(["-C", ".", "authorize", "--auth-mode", "browser", "--auth-timeout", "20"], RENV)
    assert result.exit_code != 0
    assert "no longer matches" in result.stderr
    assert recorder.requests == []
    assert browser.opened == []
    assert snapshot(directory / "state") == state_before


# -- finding 9: a slow local client does not hold the loopback receiver --------------------------------------------


def _request(port: int) -> AuthorizationRequest:
    redirect = f"http://127.0.0.1:{port}/callback"
    return AuthorizationRequest(
        url=f"http://127.0.0.1:1/authorize?redirect_uri={redirect}",
        state=SecretStr("state-9f3c1b2a7d5e4c6b8a0f"),
        redirect_uri=redirect,
        client_id="client",
        scopes=("vso.work_full",),
    )


def _trickle(sock: socket.socket, stop: threading.Event) -> None:
    """A slow client: a byte at a time, until told to stop or the receiver closes the connection."""
    try:
        while not stop.wait(0.2):
            sock.sendall(b"a")
    except OSError:
        return


@pytest.mark.finding(9)
def test_a_trickling_client_does_not_block_the_real_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    """One connection sends a partial request and then trickles; the real redirect on a second connection is
    received all the same, and the slow connection is closed by the whole-request deadline."""
    monkeypatch.setattr(loopback, "REQUEST_DEADLINE", 1.0)
    port = free_port()
    request = _request(port)
    stop = threading.Event()
    with LoopbackReceiver(port, "/callback", request, lambda message: None) as receiver:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /callback?code=")
        trickler = threading.Thread(target=_trickle, args=(slow, stop), daemon=True)
        trickler.start()
        try:
            with socket.create_connection(("127.0.0.1", port)) as real:
                real.sendall(
                    f"GET /callback?code=the-code&state={request.state.get_secret_value()} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                assert receiver.wait(30) == "the-code"
            slow.settimeout(30)  # a safety net only: the deadline closes it long before
            try:
                while slow.recv(1024):
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            assert closed, "the slow connection was not closed by the request deadline"
        finally:
            stop.set()
            trickler.join(10)
            slow.close()


def test_silent_connections_beyond_the_cap_do_not_block_the_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many idle connections (a browser's pre-connects, or a flood) hold no more than the cap; once their deadline
    passes the real redirect is received (a guard for the cap: connections beyond it wait their turn)."""
    monkeypatch.setattr(loopback, "REQUEST_DEADLINE", 1.0)
    port = free_port()
    request = _request(port)
    with LoopbackReceiver(port, "/callback", request, lambda message: None) as receiver:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            with socket.create_connection(("127.0.0.1", port)) as real:
                real.sendall(
                    f"GET /callback?code=code-2&state={request.state.get_secret_value()} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                assert receiver.wait(60) == "code-2"
        finally:
            for sock in idle:
                sock.close()


# -- finding 11: addresses follow the name rules; redaction by structure ------------------------------------------

FORGED = "installation.acme.x\tauthorized\nFORGED-LINE"


@pytest.fixture
def deferred(sandbox_config):  # type: ignore[no-untyped-def]
    """One installation recorded (pending authorization) in a local state."""
    _sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run([*APPLY[:-4], "--auth-mode", "defer"], RENV).exit_code == 3
    return directory


@pytest.mark.finding(11)
@pytest.mark.parametrize(
    "args",
    [
        ["state", "mv", ADDRESS, FORGED],
        ["state", "mv", FORGED, "installation.acme.y"],
        ["state", "mv", ADDRESS, "installation.acme.a.b"],
        ["state", "mv", ADDRESS, "installation.acme.-x"],
        ["state", "rm", FORGED],
        ["state", "show", FORGED],
        ["plan", "--target", FORGED],
        ["plan", "--exclude", FORGED],
        ["plan", "--replace", FORGED],
        ["plan", "--allow-delete", FORGED],
        ["authorize", "--auth-mode", "paste", FORGED],
    ],
)
def test_addresses_from_arguments_follow_the_name_rules(deferred: Path, args: list[str]) -> None:
    """An address argument that the configuration's names could not form is refused with a one-line error, the
    raw text never echoed (no forged lines), and nothing written."""
    before = snapshot(deferred / "state")
    result = run(["-C", ".", *args], RENV)
    assert result.exit_code not in (0, 2, 3), result.stdout
    assert "is not a" in result.stderr and "address" in result.stderr
    assert "\nFORGED-LINE" not in result.stdout + result.stderr
    assert snapshot(deferred / "state") == before
    listing = run(["-C", ".", "state", "list"], RENV)
    lines = listing.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[ADDRESS, "pending"], ["partner.entra", "recorded"],
                                                       ["partner.legacy", "recorded"]]
    assert lines[0].split("\t")[2].startswith("authorization pending since ")


@pytest.mark.finding(11)
def test_a_state_document_with_a_forged_address_is_refused_as_damaged(deferred: Path) -> None:
    """A state file whose address key could not be formed from names (or does not match its record) is damaged:
    `state list` and `plan` refuse it rather than print the forged line."""
    path = deferred / "state" / "default.json"
    doc = json.loads(path.read_text())
    record = doc["resources"].pop(ADDRESS)
    record["name"] = FORGED.split(".", 2)[2]  # the record agrees with its forged key
    doc["resources"][FORGED] = record
    path.write_text(json.dumps(doc))
    for args in (["state", "list"], ["plan"]):
        result = run(["-C", ".", *args], RENV)
        assert result.exit_code == 1, result.stdout
        assert "\nFORGED-LINE" not in result.stdout + result.stderr
        assert "invalid address" in result.stderr


@pytest.mark.finding(11)
def test_a_journal_record_with_a_forged_address_is_refused(deferred: Path) -> None:
    """A journal record (checksum and all) that sets a forged address is refused like a damaged document."""
    from reconciler.state.local import LocalBackend

    backend = LocalBackend(deferred / "state", "default")
    doc = backend.read()
    assert doc is not None
    record = doc.resources[ADDRESS].model_copy(update={"name": FORGED.split(".", 2)[2]})
    with backend.lock("test", timeout=0):
        backend.write(doc.with_record(FORGED, record), expected_serial=doc.serial, changed={FORGED})
    result = run(["-C", ".", "state", "list"], RENV)
    assert result.exit_code == 1, result.stdout
    assert "\nFORGED-LINE" not in result.stdout + result.stderr
    assert "invalid address" in result.stderr


def _plans(directory: Path, secret: str) -> dict[str, str]:
    """The plan, in each format, with the partner's client secret set to `secret`."""
    env = {**RENV, "LEGACY_SECRET": secret}
    out = {}
    for fmt in ("json", "text", "markdown"):
        for cache in ([], ["--no-cache"]):  # a plan served from the plan memo, and one made afresh
            result = run(["-C", ".", *cache, "plan", "--format", fmt], env)
            assert result.exit_code in (0, 2), result.stderr
            out[f"{fmt}{cache}"] = result.stdout
    return out


@pytest.mark.finding(11)
@pytest.mark.parametrize("secret", ["true", "null", "1", "acme", "acme-org", "Platform"])
def test_plans_neither_corrupt_json_nor_reveal_a_secret_by_its_value(sandbox_config, secret: str) -> None:
    """With a client secret equal to a JSON literal, a number, or a name shown in the plan, every output format is
    exactly what it is with a long random secret: the JSON stays valid, nothing is replaced, and no output lets a
    reader infer which shown value equals the secret."""
    _sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    reference = _plans(directory, "a-long-random-reference-secret-7f3e9c1d")
    plans = _plans(directory, secret)
    for fmt, text in plans.items():
        if fmt.startswith("json"):
            json.loads(text)
    assert plans == reference


@pytest.mark.finding(11)
@pytest.mark.parametrize("fmt", ["json", "text", "markdown"])
def test_a_distinctive_secret_shown_as_a_name_fails_closed(sandbox_config, fmt: str) -> None:
    """A long secret that equals a value the plan shows (here an organization's name): nothing of the plan is
    printed or written — not a document with the value edited out, which would mark it — and the error does not
    show the value."""
    _sandbox, directory, write, _ = sandbox_config
    secret = "acme-org-production-42"
    write(installation("acme", "ado", "legacy", secret, "Platform", ["vso.work_full"]))
    parts = directory / "parts"
    extra = ["--split-dir", str(parts)] if fmt == "markdown" else []
    for cache in ([], ["--no-cache"]):
        result = run(["-C", ".", *cache, "plan", "--format", fmt, *extra], {**RENV, "LEGACY_SECRET": secret})
        assert result.exit_code == 1
        assert result.stdout == ""
        assert secret not in result.stderr
        assert "(sensitive)" not in result.stderr
    assert not parts.exists() or not list(parts.iterdir())


@pytest.mark.finding(11)
@pytest.mark.parametrize("secret", ["true", "1", "acme", "client"])
def test_provider_errors_never_mark_a_short_secret_in_place(secret: str) -> None:
    """A provider error echoing a short secret is withheld whole rather than edited where the value stood (which
    would tell which word is the secret); a long one is replaced in every form it may take."""
    from reconciler.auth.errors import ProviderError, redacted

    echoed = ProviderError(f"the provider refused: invalid_client (client_assertion={secret} is not valid)", category="partner")
    cleaned = redacted(echoed, (secret, "a-long-refresh-token-0123456789"))
    assert "(redacted)" not in cleaned.message
    assert secret not in cleaned.message
    assert cleaned.category == "partner"
    long_echo = ProviderError("refused assertion=a-long-refresh-token-0123456789 here", category="grant")
    assert redacted(long_echo, ("a-long-refresh-token-0123456789",)).message == "refused assertion=(redacted) here"


@pytest.mark.finding(11)
def test_recorded_values_forge_no_lines_in_plans_or_state_show(deferred: Path) -> None:
    """A value recorded in state (here a token endpoint with a line break in it) is shown escaped on its own line by
    `plan` and `state show`: it cannot pass for another change or another field."""
    path = deferred / "state" / "default.json"
    doc = json.loads(path.read_text())
    record = doc["resources"][ADDRESS]
    record.pop("pending")
    record["status"] = "authorized"
    record["token_url"] = "https://x.example/t\n  # installation.evil.forged will be deleted"
    path.write_text(json.dumps(doc))
    outputs = [run(["-C", ".", "plan"], RENV), run(["-C", ".", "state", "show", ADDRESS], RENV)]
    for result in outputs:
        assert result.exit_code in (0, 2), result.stderr
        lines = (result.stdout + result.stderr).splitlines()
        assert not [line for line in lines if line.lstrip().startswith("# installation.evil")]
    assert "installation.evil.forged" in outputs[0].stdout  # shown, escaped, inside the reason


@pytest.mark.finding(11)
def test_a_saved_plan_with_a_forged_address_is_refused(deferred: Path) -> None:
    """A saved plan (signed with the state key, so only its holder could make it) that names a forged address is
    refused by `show` and `apply`: nothing printed with the forged line, nothing applied."""
    from reconciler.crypto import StateKey
    from reconciler.planfile import _mac

    assert run(["-C", ".", "plan", "--out", "plan.bin"], RENV).exit_code in (0, 2)
    path = deferred / "plan.bin"
    payload = json.loads(path.read_text())
    change = next(c for c in payload["plan"]["changes"] if c["address"] == ADDRESS)
    change["address"] = FORGED
    body = {k: v for k, v in payload.items() if k not in {"hmac", "key_id"}}
    payload["hmac"] = _mac(StateKey(base64.b64decode(KEY), "test"), body)
    path.write_text(json.dumps(payload))
    before = snapshot(deferred / "state")
    for args in (["show", "plan.bin"], ["apply", "plan.bin", "--auto-approve", "--auth-mode", "defer"]):
        result = run(["-C", ".", *args], RENV)
        assert result.exit_code == 1, result.stdout
        assert "\nFORGED-LINE" not in result.stdout + result.stderr
        assert "invalid address" in result.stderr
    assert snapshot(deferred / "state") == before
