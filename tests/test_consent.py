"""Consent steps and OAuth attacks: the loopback receiver, paste mode, state checks, replayed codes, PKCE."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.consent import LoopbackReceiver, parse_callback
from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.flows import FlowSettings, make_flow
from reconciler.auth.request import AuthorizationRequest
from reconciler.catalog.files import load_catalog
from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from tests.sandbox_support import (
    ENTRA_ID,
    ENTRA_SECRET,
    ENV,
    LEGACY_ID,
    LEGACY_SECRET,
    config_text,
    free_port,
    installation,
    register,
)

CONNECTOR = load_catalog().connectors["microsoft-azure-devops"]


def _request(pkce: bool = False, port: int = 1) -> AuthorizationRequest:
    verifier = SecretStr("v" * 50) if pkce else None
    redirect = f"http://127.0.0.1:{port}/callback"
    return AuthorizationRequest("https://example/authorize", SecretStr("the-state"), redirect, "app", ("vso.work",), verifier)


@pytest.mark.parametrize(
    ("answer", "pkce", "message"),
    [
        ("http://127.0.0.1:1/callback?code=abc&state=wrong", False, "state does not match"),
        ("http://127.0.0.1:1/callback?code=abc", False, "state does not match"),
        ("http://127.0.0.1:1/callback?error=access_denied&state=the-state", False, "denied"),
        ("http://127.0.0.1:1/callback?error=InvalidScope&state=the-state", False, "refused: InvalidScope"),
        ("http://127.0.0.1:1/callback?state=the-state", False, "no code"),
        ("bare-code-123", False, "no PKCE"),
        ("", True, "no answer"),
    ],
)
def test_pasted_answers_that_are_refused(answer: str, pkce: bool, message: str) -> None:
    """Paste mode refuses a wrong or missing state, error callbacks, and a bare code without PKCE."""
    with pytest.raises(ConsentError, match=message):
        parse_callback(answer, _request(pkce))


def test_pasted_answers_that_are_accepted() -> None:
    """The landing URL with the right state gives its code; a bare code is accepted only with PKCE."""
    assert parse_callback("http://127.0.0.1:1/callback?code=abc&state=the-state", _request()) == "abc"
    assert parse_callback("  bare-code-123\n", _request(pkce=True)) == "bare-code-123"


def test_loopback_receiver_refuses_wrong_state_and_other_paths_then_accepts() -> None:
    """Requests with the wrong state or on other paths are refused (and reported); the right one completes it;
    after that the listener is gone."""
    port = free_port()
    reports: list[str] = []
    request = _request(port=port)
    with LoopbackReceiver(port, "/callback", request, reports.append) as receiver:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/other?code=x&state=the-state").status_code == 404
        assert httpx.get(f"{base}/callback?code=evil&state=forged").status_code == 400
        ok = httpx.get(f"{base}/callback?code=good&state=the-state")
        assert ok.status_code == 200 and "close this window" in ok.text
        assert receiver.wait(5) == "good"
    assert any("wrong state" in r for r in reports)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/callback?code=again&state=the-state", timeout=2)


def test_loopback_receiver_times_out() -> None:
    """No redirect within the timeout is a clear error."""
    port = free_port()
    with (
        LoopbackReceiver(port, "/callback", _request(port=port), lambda m: None) as receiver,
        pytest.raises(ConsentError, match=r"no authorization arrived within 0\.3 s"),
    ):
        receiver.wait(0.3)


@pytest.fixture
def http():  # type: ignore[no-untyped-def]
    with httpx.Client() as client:
        yield client


def _flow(sandbox: SandboxServer, port: int, flavour: str, http: httpx.Client):  # type: ignore[no-untyped-def]
    entra = flavour == "entra-id"
    settings = FlowSettings(
        flavour=CONNECTOR.auth[flavour],
        client_id=ENTRA_ID if entra else LEGACY_ID,
        client_secret=SecretStr(ENTRA_SECRET if entra else LEGACY_SECRET),
        redirect_uri=f"http://127.0.0.1:{port}/callback",
        authorize_url=f"{sandbox.url}/organizations/oauth2/v2.0/authorize" if entra else f"{sandbox.url}/oauth2/authorize",
        token_url=f"{sandbox.url}/organizations/oauth2/v2.0/token" if entra else f"{sandbox.url}/oauth2/token",
        scopes=("vso.work_full",),
    )
    return make_flow(settings, http, lambda: dt.datetime.now(dt.UTC))


@pytest.mark.parametrize("flavour", ["azure-devops-oauth", "entra-id"])
def test_replayed_code_is_refused(sandbox: SandboxServer, flavour: str, http: httpx.Client) -> None:
    """A code redeemed twice is refused as invalid_grant (and the provider revokes what it issued)."""
    port = free_port()
    register(sandbox, port)
    flow = _flow(sandbox, port, flavour, http)
    request = flow.authorization_request()
    landing = answer_consent(request.url, follow=False)
    code = parse_callback(landing, request)
    tokens = flow.exchange(code, request)
    assert tokens.access_token.get_secret_value() and tokens.token_type == "Bearer"
    with pytest.raises(ProviderError) as info:
        flow.exchange(code, request)
    assert info.value.category == "grant"
    assert all(g["revoked"] for g in sandbox.provider.live_grants())


def test_entra_refuses_an_authorization_url_without_pkce(sandbox: SandboxServer, http: httpx.Client) -> None:
    """An Entra authorization URL stripped of its PKCE challenge (a downgrade) is refused by the provider, and
    the flow always builds S256 URLs."""
    port = free_port()
    register(sandbox, port)
    request = _flow(sandbox, port, "entra-id", http).authorization_request()
    assert "code_challenge_method=S256" in request.url and request.code_verifier is not None
    downgraded = request.url.replace("code_challenge_method=S256", "code_challenge_method=plain")
    page = http.get(downgraded)
    assert page.status_code == 400 and "PKCE" in page.text


def test_refresh_rotates_and_the_old_refresh_token_dies(sandbox: SandboxServer, http: httpx.Client) -> None:
    """Legacy refresh returns a new refresh token each time; the previous one no longer works."""
    port = free_port()
    register(sandbox, port)
    flow = _flow(sandbox, port, "azure-devops-oauth", http)
    request = flow.authorization_request()
    first = flow.exchange(parse_callback(answer_consent(request.url, follow=False), request), request)
    second = flow.refresh(first)
    assert second.refresh_token != first.refresh_token
    with pytest.raises(ProviderError) as info:
        flow.refresh(first)
    assert info.value.category == "grant"
    assert flow.refresh(second).access_token != second.access_token


def _paste_apply(directory: Path, transform) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Run `apply --auth-mode paste` as a process; answer its URL like a user, transformed by `transform`."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") or k == "RECONCILER_CACHE_DIR"}, **ENV}
    command = [sys.executable, "-m", "reconciler", "-C", str(directory), "apply", "--auto-approve", "--auth-mode", "paste"]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None and process.stdin is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "/oauth2/authorize?" in line:
            process.stdin.write(transform(answer_consent(line.strip(), follow=False)) + "\n")
            process.stdin.flush()
            break
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, "".join(lines) + err)


def test_paste_mode_end_to_end(sandbox: SandboxServer, tmp_path: Path) -> None:
    """paste: the user pastes the URL they landed on; tokens are recorded."""
    port = free_port()
    register(sandbox, port)
    (tmp_path / "reconciler.yaml").write_text(
        config_text(sandbox.url, port, installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    )
    result = _paste_apply(tmp_path, lambda landing: landing)
    assert result.returncode == 0, result.stderr
    state = json.loads((tmp_path / "state" / "default.json").read_text())
    assert state["resources"]["installation.acme.ado"]["status"] == "authorized"


def test_paste_mode_with_forged_state_records_nothing(sandbox: SandboxServer, tmp_path: Path) -> None:
    """paste: a landing URL with another state is refused; no token is recorded."""
    port = free_port()
    register(sandbox, port)
    (tmp_path / "reconciler.yaml").write_text(
        config_text(sandbox.url, port, installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    )
    result = _paste_apply(tmp_path, lambda landing: landing.replace("state=", "state=forged"))
    assert result.returncode == 1
    assert "state does not match" in result.stderr
    state = json.loads((tmp_path / "state" / "default.json").read_text())
    assert "installation.acme.ado" not in state["resources"]
    assert not (tmp_path / "state" / "default.credentials" / "installation.acme.ado.json").exists()
