"""Secrets never leave their sealed home: not in output, logs, plans, state, backups, journals or the cache.

One end-to-end run against the sandbox provider over real HTTP drives every command that touches secrets — plan in
every format (and split into comment parts), saved plans and `show`, apply in browser and defer modes, `authorize`,
`refresh` and `plan --refresh` (rotating every token), re-authorization, `state list/show/mv/pull`, a rotated
partner secret, revoked grants, token-endpoint faults, and two partners whose token endpoint echoes the request
(body and parsed form) in its error description, as careless providers do. The client secrets are unique and
recognisable, with characters that change under URL encoding; the sandbox reports every code, token and PKCE
verifier it issued. Then every artifact — each command's stdout and stderr, every log record (DEBUG and up, all
libraries), and every file under the configuration directory, the state backup directory and the parse cache
(the generated state key file excepted: it is where the key lives) — is searched for every secret as plain text,
URL-encoded, and base64 (standard and URL-safe, at each of the three byte alignments, padded or not).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.flows import FlowSettings, make_flow
from reconciler.auth.request import AuthorizationRequest
from reconciler.catalog.files import load_catalog
from reconciler.sandbox import SandboxServer
from reconciler.sandbox.model import SANDBOX_DIRECTORY
from reconciler.tokens.model import TokenSet
from tests.conftest import run
from tests.sandbox_support import ENTRA_ID, LEGACY_ID, ScriptedBrowser, free_port, installation

ENCODINGS = ("plain", "url", "base64")


def encodings(secret: str) -> dict[str, set[str]]:
    """Every form in which `secret` could appear inside a larger text, by encoding.

    Base64 of a substring depends on where it starts in its 3-byte group: for each of the three alignments, the
    characters that come from the secret's bytes alone (those mixed with neighbouring bytes dropped)."""
    raw = secret.encode()
    b64: set[str] = set()
    for align in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * align + raw).decode().rstrip("=")
            start = {0: 0, 1: 2, 2: 3}[align]  # characters that mix in the leading filler bytes
            end = len(text) - (1 if (align + len(raw)) % 3 else 0)  # a last character mixed with what follows
            b64.add(text[start:end])
    return {"plain": {secret}, "url": {quote(secret, safe=""), quote_plus(secret)}, "base64": b64}


def find_secrets(secrets: dict[str, str], artifacts: dict[str, bytes]) -> list[str]:
    """Every (secret, encoding, artifact) where a secret is found."""
    hits = []
    for name, secret in secrets.items():
        for encoding, forms in encodings(secret).items():
            for form in forms:
                needle = form.encode()
                hits += [f"{name} ({encoding}) in {where}" for where, blob in artifacts.items() if needle in blob]
    return sorted(set(hits))


def test_encodings_find_a_secret_embedded_at_any_alignment() -> None:
    """The search itself works: a secret inside base64 of a longer text is found at all three alignments."""
    secret = "s3cr3t/v+a=l:ue-long-enough"
    for prefix in ("", "a", "ab", "abc"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(f"{prefix}{secret}!tail".encode())
            assert find_secrets({"s": secret}, {"x": blob}) == ["s (base64) in x"], (prefix, encode)
    assert find_secrets({"s": secret}, {"x": b"form=" + quote_plus(secret).encode()}) == ["s (url) in x"]
    assert find_secrets({"s": secret}, {"x": b"nothing here"}) == []


class _Echo(BaseHTTPRequestHandler):
    """A token endpoint that refuses every request and repeats it in the error description."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        described = f"cannot use {body} ({json.dumps(dict(parse_qsl(body)))})"
        payload = json.dumps({"error": "invalid_request", "error_description": described}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _settings(flavour: str, token_url: str, secret: str) -> FlowSettings:
    connector = load_catalog().connectors["microsoft-azure-devops"]
    return FlowSettings(
        flavour=connector.auth[flavour],
        client_id="app",
        client_secret=SecretStr(secret),
        redirect_uri="http://127.0.0.1:1/callback",
        authorize_url="http://127.0.0.1:1/authorize",
        token_url=token_url,
        scopes=("vso.work_full",),
    )


@pytest.mark.parametrize("flavour", ["azure-devops-oauth", "entra-id"])
@pytest.mark.parametrize("step", ["exchange", "refresh"])
def test_provider_errors_that_echo_the_request_are_redacted(echo_server: str, flavour: str, step: str) -> None:
    """A token endpoint repeating the request (form-encoded and parsed) in its error: no secret in the error."""
    import datetime as dt

    secret, code, verifier, refresh = "cl/ient+sec=ret:1", "co/de+value=2", "ver/ifier+value=3", "re/fresh+tok=4"
    with httpx.Client() as http:
        flow = make_flow(_settings(flavour, f"{echo_server}/token", secret), http, lambda: dt.datetime.now(dt.UTC))
        request = AuthorizationRequest("u", SecretStr("s"), "http://127.0.0.1:1/callback", "app", ("vso.work_full",),
                                       SecretStr(verifier) if flavour == "entra-id" else None)
        tokens = TokenSet(access_token=SecretStr("at"), refresh_token=SecretStr(refresh))
        with pytest.raises(ProviderError) as info:
            flow.exchange(code, request) if step == "exchange" else flow.refresh(tokens)
    text = "\n".join([*info.value.lines(), str(info.value)])
    assert "the provider refused the request (invalid_request: cannot use" in text and "(redacted)" in text
    secrets = {"secret": secret, "code": code, "verifier": verifier, "refresh": refresh}
    assert find_secrets(secrets, {"error": text.encode()}) == []


# -- the end-to-end run -----------------------------------------------------------------------------------------------


def _config(sandbox: str, port: int, echo: str) -> str:
    callback = f"http://127.0.0.1:{port}/callback"
    legacy = f"authorize_url: {sandbox}/oauth2/authorize, token_url: {sandbox}/oauth2/token, api_url: {sandbox}"
    entra = (
        f"authorize_url: {sandbox}/organizations/oauth2/v2.0/authorize, "
        f"token_url: {sandbox}/organizations/oauth2/v2.0/token, api_url: {sandbox}"
    )
    partners = {
        "legacy": ("azure-devops-oauth", LEGACY_ID, "LEGACY_SECRET", legacy),
        "entra": ("entra-id", ENTRA_ID, "ENTRA_SECRET", entra),
        "echo": ("azure-devops-oauth", LEGACY_ID, "LEGACY_SECRET", legacy.replace(f"{sandbox}/oauth2/token", echo)),
        "echo-entra": ("entra-id", ENTRA_ID, "ENTRA_SECRET", entra.replace(f"{sandbox}/organizations/oauth2/v2.0/token", echo)),
    }
    lines = ["version: 1", "platform: {service_domain: app-h.cyclr.com}", "partners:"]
    for name, (auth, client, env, endpoints) in partners.items():
        # Entra ID partners name the app's own directory: preflight asks it (the echo partner's token endpoint
        # repeats the request, client secret included, in its error)
        tenant = f"    tenant_id: organizations\n    app_tenant_id: {SANDBOX_DIRECTORY}\n" if auth == "entra-id" else ""
        lines.append(
            f"  {name}:\n    connector: microsoft-azure-devops\n    auth: {auth}\n{tenant}    client_id: {client}\n"
            f"    client_secret: ${{env:{env}}}\n    redirect_uri: {callback}\n    endpoints: {{{endpoints}}}"
        )
    lines.append("tenants:")
    text = "\n".join(lines) + "\n"
    text += installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"])
    text += "      entra:\n        partner: entra\n        parameters: {organization: acme-org, project: Web}\n"
    text += "        scopes: [vso.work_full]\n"
    text += installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"])
    text += installation("echo", "ado", "echo", "acme-org", "Platform", ["vso.work_full"])
    text += "      entra:\n        partner: echo-entra\n        parameters: {organization: acme-org, project: Web}\n"
    text += "        scopes: [vso.work_full]\n"
    return text


class _SeparateBrowser(ScriptedBrowser):
    """The scripted browser, whose own HTTP requests (the redirect to the loopback receiver carries the code) are
    not logged here: a real browser is another process, and its history is not reconciler's output."""

    def __call__(self, url: str) -> bool:
        logging.disable(logging.CRITICAL)
        try:
            return super().__call__(url)
        finally:
            logging.disable(logging.NOTSET)


def _register(sandbox: SandboxServer, port: int, legacy_secret: str, entra_secret: str) -> None:
    redirect = f"http://127.0.0.1:{port}/callback"
    provider = sandbox.provider
    provider.register_app({"client_id": LEGACY_ID, "client_secret": legacy_secret, "flavour": "azure-devops-oauth",
                           "redirect_uris": [redirect]})
    provider.register_app({"client_id": ENTRA_ID, "client_secret": entra_secret, "flavour": "entra-id",
                           "redirect_uris": [redirect]})
    provider.register_org("acme-org", ["Platform", "Web"])
    provider.register_org("globex", ["Operations"])


def test_no_secret_in_any_output_or_file(  # type: ignore[no-untyped-def]
    sandbox: SandboxServer, echo_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, figures
) -> None:
    """Every command of a full lifecycle, then a search of everything written: zero secrets found."""
    import webbrowser

    figures.goal("secrets", found=0)
    unique = uuid.uuid4().hex[:10]
    secrets = {
        "legacy client secret": f"rly-legacy/{unique}+Secret=value:1",
        "entra client secret": f"rly-entra/{unique}+Secret=value:2",
        "rotated client secret": f"rly-rotated/{unique}+Secret=value:3",
    }
    env = {"LEGACY_SECRET": secrets["legacy client secret"], "ENTRA_SECRET": secrets["entra client secret"],
           "RECONCILER_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    _register(sandbox, port, env["LEGACY_SECRET"], env["ENTRA_SECRET"])
    config = tmp_path / "config"
    config.mkdir()
    (config / "reconciler.yaml").write_text(_config(sandbox.url, port, echo_server))
    browser = _SeparateBrowser()
    monkeypatch.setattr(webbrowser, "open", browser)
    monkeypatch.chdir(config)
    caplog.set_level(logging.DEBUG)
    outputs: dict[str, bytes] = {}

    def cli(*args: str, expect: int | tuple[int, ...] = 0) -> None:
        result = run(["-C", ".", *args], env)
        outputs[f"stdout of {' '.join(args)} #{len(outputs)}"] = result.stdout.encode()
        outputs[f"stderr of {' '.join(args)} #{len(outputs)}"] = result.stderr.encode()
        assert "Traceback" not in result.stdout + result.stderr
        assert result.exit_code in ((expect,) if isinstance(expect, int) else expect), (args, result.stderr)

    not_echo = ["--exclude", "installation.echo.*", "--exclude", "partner.echo*"]
    browser_mode = ["--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"]
    cli("validate")
    cli("preflight")  # the echo partner's token endpoint refuses, echoing what it was sent: a note
    cli("preflight", "--format", "json")
    assert b"partner.echo-entra: not checked" in outputs[next(k for k in outputs if k.startswith("stdout of preflight"))]
    cli("plan")
    cli("plan", "--format", "json")
    cli("plan", "--format", "markdown", "--split-dir", "parts")
    cli("plan", "--out", "plan.bin", *not_echo, "--exclude", "installation.globex.*")
    for fmt in ("text", "json", "markdown"):
        cli("show", "plan.bin", "--format", fmt)
    cli("apply", "plan.bin", *browser_mode)
    cli("apply", "--auto-approve", "--auth-mode", "defer", "--target", "installation.globex.*", expect=3)
    cli("plan", "--format", "markdown", *not_echo)
    cli("authorize", "--auth-mode", "browser", "--auth-timeout", "20")
    cli("state", "list")
    cli("status", expect=(0, 2))
    cli("status", "--refresh", "--format", "json", expect=(0, 2))
    cli("status", "--format", "markdown", expect=(0, 2))
    cli("status", "--format", "html", expect=(0, 2))
    cli("state", "show", "installation.acme.ado")
    cli("state", "show", "installation.acme.entra", "--json")
    cli("refresh", "--window", "120")
    cli("plan", "--refresh", "--window", "120", "--format", "json", *not_echo)
    sandbox.provider.add_fault("token", [500, 500, 500, 500, 500, 500, 500, 500, 500])
    cli("refresh", "--window", "120")
    sandbox.provider.faults.clear()
    cli("apply", *browser_mode, "--target", "installation.echo.ado", expect=1)
    cli("apply", *browser_mode, "--target", "installation.echo.entra", expect=1)
    cli("apply", *browser_mode, "--replace", "installation.acme.entra", *not_echo)
    cli("state", "mv", "installation.globex.ado", "installation.globex.ado-main")
    cli("state", "pull", str(tmp_path / "backup"))
    cli("state", "rekey")  # a new key file; the old one kept as default.key.old
    sandbox.provider.rotate_secret(LEGACY_ID, secrets["rotated client secret"])
    cli("refresh", "--window", "120", expect=1)
    sandbox.provider.revoke(client_id=ENTRA_ID)
    cli("plan", "--refresh", *not_echo)
    env["LEGACY_SECRET"] = secrets["rotated client secret"]
    cli("apply", *browser_mode, *not_echo, "--exclude", "installation.globex.*")

    issued = list(dict.fromkeys(sandbox.provider.issued))
    assert len(issued) >= 20 and not browser.errors  # codes, tokens and verifiers of every flow above
    secrets |= {f"issued value {n}": value for n, value in enumerate(issued)}
    key_file, retired = config / "state" / "default.key", config / "state" / "default.key.old"
    secrets["state key"] = key_file.read_text().strip()
    secrets["retired state key"] = retired.read_text().strip()
    files = {
        str(path.relative_to(tmp_path)): path.read_bytes()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file() and path not in (key_file, retired)
    }
    logs = {"log records": "\n".join(r.getMessage() + repr(r.args) for r in caplog.records).encode()}
    artifacts = {**outputs, **files, **logs}
    assert any(name.startswith("config/state/default.credentials/") for name in files)  # sealed tokens are there
    assert any("backup/" in name for name in files) and any(name.startswith("cache/") for name in files)
    assert any(b"(redacted)" in blob for blob in outputs.values())  # the echoing partners were reached

    hits = find_secrets(secrets, artifacts)
    figures.set("secrets", secrets=len(secrets), encodings=len(ENCODINGS), artifacts=len(artifacts))
    figures.add("secrets", found=len(hits))
    assert hits == [], hits
