"""OAuth attacks on the loopback receiver, paste mode and the authorization URL: each refused, no token recorded.

The receiver is driven over real HTTP on 127.0.0.1 with authorization requests built by the real flows against the
sandbox provider, and whole `apply`/`authorize` runs are attacked through the CLI with a hostile "browser" (or a
hostile paste). Every attack counts into the `oauth-attacks` figures: whether it was accepted, and how many tokens it
got recorded — state and sealed credentials compared byte for byte, and the attacker's code checked unredeemed at the
provider.

What "non-loopback address" can honestly mean here: the receiver is bound to 127.0.0.1 (so no other interface can
reach it; traffic to this machine's other addresses is not sent from tests), a peer whose address is not 127.0.0.1
(a connection from 127.0.0.2) is refused, and a request whose Host names another host (DNS rebinding from a web page)
is refused.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.consent import BrowserConsent, LoopbackReceiver, PasteConsent, parse_callback
from reconciler.auth.errors import ConsentError, ProviderError
from reconciler.auth.flows import FlowSettings, make_flow
from reconciler.auth.request import AuthorizationRequest
from reconciler.catalog.files import load_catalog
from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from tests.conftest import run
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
ADDRESS = "installation.acme.ado"


@pytest.fixture
def attack(figures):  # type: ignore[no-untyped-def]
    """Record one attack: `attack(accepted=..., tokens_recorded=...)`; goals: none accepted, no token recorded.
    An attack whose test fails before recording its outcome counts as accepted."""
    figures.goal("oauth-attacks", accepted=0, tokens_recorded=0)
    recorded: list[bool] = []

    def record(*, accepted: bool, tokens_recorded: int) -> None:
        recorded.append(True)
        figures.add("oauth-attacks", attacks=1, accepted=int(accepted), tokens_recorded=tokens_recorded)
        assert not accepted and tokens_recorded == 0

    yield record
    if not recorded:
        figures.add("oauth-attacks", attacks=1, accepted=1, tokens_recorded=0)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def _flow(sandbox: SandboxServer, port: int, flavour: str, http: httpx.Client):  # type: ignore[no-untyped-def]
    entra = flavour == "entra-id"
    base = f"{sandbox.url}/organizations/oauth2/v2.0" if entra else f"{sandbox.url}/oauth2"
    settings = FlowSettings(
        flavour=CONNECTOR.auth[flavour],
        client_id=ENTRA_ID if entra else LEGACY_ID,
        client_secret=SecretStr(ENTRA_SECRET if entra else LEGACY_SECRET),
        redirect_uri=f"http://127.0.0.1:{port}/callback",
        authorize_url=f"{base}/authorize",
        token_url=f"{base}/token",
        scopes=("vso.work_full",),
    )
    return make_flow(settings, http, lambda: dt.datetime.now(dt.UTC))


def _redeemed(sandbox: SandboxServer, landing: str) -> bool:
    """Whether the code in a landing URL was redeemed at the provider (a token issued for it)."""
    code = parse_qs(urlsplit(landing).query)["code"][0]
    return sandbox.provider.codes[code].used


@pytest.fixture
def victim(sandbox: SandboxServer, http: httpx.Client):  # type: ignore[no-untyped-def]
    """A pending legacy authorization with its receiver listening, the attacker's own real callback (a code the
    provider issued to the attacker's session), and the reports the receiver made."""
    port = free_port()
    register(sandbox, port)
    flow = _flow(sandbox, port, "azure-devops-oauth", http)
    request = flow.authorization_request()
    attacker_landing = answer_consent(flow.authorization_request().url, follow=False)
    reports: list[str] = []
    with LoopbackReceiver(port, "/callback", request, reports.append) as receiver:
        yield receiver, request, attacker_landing, reports, f"http://127.0.0.1:{port}"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- the loopback receiver, over real HTTP ---------------------------------------------------------------------------


def test_wrong_state_is_refused_and_the_receiver_keeps_waiting(victim, sandbox, attack) -> None:  # type: ignore[no-untyped-def]
    """The attacker's own valid callback (their code, their state) is refused: 400, reported, not completed."""
    receiver, _request, attacker_landing, reports, _base = victim
    answer = httpx.get(attacker_landing)
    assert answer.status_code == 400 and "does not belong" in answer.text
    with pytest.raises(ConsentError, match="no authorization arrived"):
        receiver.wait(0.5)
    assert any("wrong state" in r for r in reports)
    attack(accepted=receiver.outcome.code is not None, tokens_recorded=int(_redeemed(sandbox, attacker_landing)))


def test_forged_error_callback_cannot_abort_the_authorization(victim, attack) -> None:  # type: ignore[no-untyped-def]
    """`error=access_denied` with a forged state is refused like any wrong state; the real answer still works."""
    receiver, request, _attacker_landing, _reports, base = victim
    assert httpx.get(f"{base}/callback?error=access_denied&state=forged").status_code == 400
    assert receiver.outcome.error is None and not receiver.done.is_set()
    ok = httpx.get(f"{base}/callback?code=real-code&state={request.state.get_secret_value()}")
    assert ok.status_code == 200 and receiver.wait(2) == "real-code"
    attack(accepted=False, tokens_recorded=0)


def test_error_callback_is_a_clear_refusal(victim, attack) -> None:  # type: ignore[no-untyped-def]
    """An `error=` callback with the right state ends the authorization with a clear error and no code."""
    receiver, request, _attacker_landing, _reports, base = victim
    state = request.state.get_secret_value()
    assert httpx.get(f"{base}/callback?error=access_denied&state={state}").status_code == 200
    with pytest.raises(ConsentError, match="the user denied the authorization"):
        receiver.wait(2)
    attack(accepted=receiver.outcome.code is not None, tokens_recorded=0)


def test_second_request_to_the_receiver_is_not_served(victim, sandbox, attack) -> None:  # type: ignore[no-untyped-def]
    """Once the right callback arrived, a second one (the attacker's, with the right state) is never answered."""
    receiver, request, attacker_landing, _reports, base = victim
    state = request.state.get_secret_value()
    assert httpx.get(f"{base}/callback?code=first&state={state}").status_code == 200
    assert receiver.wait(2) == "first"
    second = _with_query(attacker_landing, state=state)
    try:
        served = httpx.get(second, timeout=1).status_code == 200
    except httpx.HTTPError:
        served = False
    assert receiver.outcome.code == "first"
    attack(accepted=served, tokens_recorded=int(_redeemed(sandbox, attacker_landing)))


def test_receiver_is_bound_to_loopback_and_refuses_other_peers(victim, attack) -> None:  # type: ignore[no-untyped-def]
    """Bound to 127.0.0.1 (not all interfaces); a peer address other than 127.0.0.1 gets 403 with the right state."""
    receiver, request, _attacker_landing, reports, base = victim
    assert receiver.server.server_address[0] == "127.0.0.1"
    state = request.state.get_secret_value()
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        answer = other.get(f"{base}/callback?code=stolen&state={state}")
    assert answer.status_code == 403
    assert any("refused a redirect from 127.0.0.2" in r for r in reports)
    attack(accepted=receiver.done.is_set(), tokens_recorded=0)


def test_request_naming_another_host_is_refused(victim, attack) -> None:  # type: ignore[no-untyped-def]
    """DNS rebinding: a request with the right state whose Host names another site is refused (403)."""
    receiver, request, _attacker_landing, reports, base = victim
    state = request.state.get_secret_value()
    port = urlsplit(base).port
    answer = httpx.get(f"{base}/callback?code=x&state={state}", headers={"Host": f"evil.example:{port}"})
    assert answer.status_code == 403
    assert any("refused a request addressed to 'evil.example" in r for r in reports)
    attack(accepted=receiver.done.is_set(), tokens_recorded=0)


def test_other_path_with_the_right_state_is_ignored(victim, attack) -> None:  # type: ignore[no-untyped-def]
    """Only the redirect URI's path completes the authorization."""
    receiver, request, _attacker_landing, _reports, base = victim
    state = request.state.get_secret_value()
    assert httpx.get(f"{base}/callback/../evil?code=x&state={state}").status_code == 404
    assert httpx.get(f"{base}/callbackx?code=x&state={state}").status_code == 404
    attack(accepted=receiver.done.is_set(), tokens_recorded=0)


# -- the authorization URL: where it sends the code, and PKCE --------------------------------------------------------


def _tampered(request: AuthorizationRequest, **params: str | None) -> AuthorizationRequest:
    parts = urlsplit(request.url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in params.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    url = urlunsplit(parts._replace(query=urlencode(query)))
    return AuthorizationRequest(url, request.state, request.redirect_uri, request.client_id, request.scopes,
                                request.code_verifier)


def _browser(opened: list[str]) -> BrowserConsent:
    paste = PasteConsent(lambda label, url: None, lambda prompt: "")
    return BrowserConsent(lambda label, url: None, lambda m: None, paste, timeout=1, open_url=opened.append)


@pytest.mark.parametrize(
    ("flavour", "change", "message"),
    [
        ("azure-devops-oauth", {"redirect_uri": "https://evil.example/callback"}, "would send the code to https://evil"),
        ("entra-id", {"redirect_uri": "http://127.0.0.1:1/callback"}, "would send the code to"),
        ("entra-id", {"code_challenge_method": "plain"}, "refusing a PKCE downgrade"),
        ("entra-id", {"code_challenge": None, "code_challenge_method": None}, "refusing a PKCE downgrade"),
        ("entra-id", {"code_challenge": "A" * 43}, "refusing a PKCE downgrade"),
    ],
    ids=["redirect-other-host", "redirect-other-port", "pkce-plain", "pkce-missing", "pkce-other-challenge"],
)
def test_tampered_authorization_url_is_refused_before_the_browser_opens(  # type: ignore[no-untyped-def]
    sandbox, http, attack, flavour: str, change: dict[str, str | None], message: str
) -> None:
    """An authorization URL that sends the code elsewhere or drops PKCE is never opened, nor shown for paste."""
    port = free_port()
    register(sandbox, port)
    request = _tampered(_flow(sandbox, port, flavour, http).authorization_request(), **change)
    opened: list[str] = []
    for consent in (_browser(opened), PasteConsent(opened.append, lambda prompt: "x")):  # type: ignore[arg-type]
        with pytest.raises(ConsentError, match=message):
            consent.obtain(request, ADDRESS)
    attack(accepted=bool(opened), tokens_recorded=0)


def test_code_flow_without_a_verifier_is_refused(sandbox, http, attack) -> None:  # type: ignore[no-untyped-def]
    """An Entra (code) request that lost its PKCE verifier is refused before the browser opens."""
    port = free_port()
    register(sandbox, port)
    good = _flow(sandbox, port, "entra-id", http).authorization_request()
    stripped = AuthorizationRequest(good.url, good.state, good.redirect_uri, good.client_id, good.scopes, None)
    opened: list[str] = []
    with pytest.raises(ConsentError, match="PKCE"):
        _browser(opened).obtain(stripped, ADDRESS)
    attack(accepted=bool(opened), tokens_recorded=0)


def test_entra_urls_always_carry_s256_and_the_provider_refuses_a_downgrade(sandbox, http, attack) -> None:  # type: ignore[no-untyped-def]
    """Every Entra URL the flow builds uses S256 for its own verifier; the provider refuses plain and none."""
    port = free_port()
    register(sandbox, port)
    flow = _flow(sandbox, port, "entra-id", http)
    for _ in range(20):
        request = flow.authorization_request()
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        assert query["code_challenge_method"] == "S256" and request.code_verifier is not None
    plain = http.get(_tampered(request, code_challenge_method="plain").url)
    missing = http.get(_tampered(request, code_challenge=None, code_challenge_method=None).url)
    assert plain.status_code == missing.status_code == 400 and "PKCE" in plain.text
    attack(accepted=False, tokens_recorded=len(sandbox.provider.live_grants()))


@pytest.mark.parametrize("flavour", ["azure-devops-oauth", "entra-id"])
def test_replayed_code_is_refused_and_revokes_what_it_issued(sandbox, http, attack, flavour: str) -> None:  # type: ignore[no-untyped-def]
    """A code redeemed twice: the second exchange fails (invalid_grant) and the first grant is revoked too."""
    port = free_port()
    register(sandbox, port)
    flow = _flow(sandbox, port, flavour, http)
    request = flow.authorization_request()
    code = parse_callback(answer_consent(request.url, follow=False), request)
    flow.exchange(code, request)
    with pytest.raises(ProviderError) as info:
        flow.exchange(code, request)
    assert info.value.category == "grant"
    live = [g for g in sandbox.provider.live_grants() if not g["revoked"]]
    attack(accepted=False, tokens_recorded=len(live))


# -- whole runs through the CLI: a hostile browser, a hostile paste --------------------------------------------------


def _state_files(directory: Path) -> dict[str, bytes]:
    """State and sealed credentials (the idle lock file aside)."""
    state = directory / "state"
    return {
        str(p.relative_to(state)): p.read_bytes()
        for p in sorted(state.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith(".lock-")
    }


def _tokens_recorded(before: dict[str, bytes], after: dict[str, bytes]) -> int:
    """Credential records created or changed, and installation records added, between two snapshots."""
    changed = [k for k in after if k.endswith(".json") and "credentials" in k and before.get(k) != after[k]]
    return len(changed) + (after.get("default.json") != before.get("default.json"))


@pytest.fixture
def site(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A sandbox configuration with its partners already applied (so only the installation is at stake)."""
    port = free_port()
    register(sandbox, port)
    (tmp_path / "reconciler.yaml").write_text(config_text(sandbox.url, port, "  {}\n"))
    monkeypatch.chdir(tmp_path)
    assert run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], ENV).exit_code == 0
    (tmp_path / "reconciler.yaml").write_text(
        config_text(sandbox.url, port, installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    )
    return sandbox, tmp_path, port


def _hostile(monkeypatch: pytest.MonkeyPatch, act: Callable[[str], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def open_url(url: str) -> bool:
        def go() -> None:
            try:
                act(url)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threading.Thread(target=go, daemon=True).start()
        return True

    monkeypatch.setattr(webbrowser, "open", open_url)
    return errors


APPLY_BROWSER = ["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "2"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("forged-state", "no authorization arrived within 2 s"),
        ("rebinding-host", "no authorization arrived within 2 s"),
        ("error-callback", "the user denied the authorization"),
    ],
)
def test_hostile_browser_gets_nothing_recorded(site, http, monkeypatch, attack, name: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """apply in browser mode while the "browser" sends a forged state, a rebinding Host, or an error: exit 1 with a
    clear message, the refusal reported, no record and no credentials, the attacker's code never redeemed."""
    sandbox, directory, port = site
    attacker = answer_consent(_flow(sandbox, port, "azure-devops-oauth", http).authorization_request().url,
                              follow=False)
    before = _state_files(directory)

    def act(url: str) -> None:
        state = parse_qs(urlsplit(url).query)["state"][0]
        if name == "forged-state":
            httpx.get(attacker)
        elif name == "rebinding-host":
            httpx.get(_with_query(attacker, state=state), headers={"Host": f"rebind.example:{port}"})
        else:
            httpx.get(f"http://127.0.0.1:{port}/callback?error=access_denied&state={state}")

    errors = _hostile(monkeypatch, act)
    result = run(APPLY_BROWSER, ENV)
    assert not errors
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    if name != "error-callback":
        assert "note: refused" in result.stderr
    attack(accepted=result.exit_code == 0,
           tokens_recorded=_tokens_recorded(before, _state_files(directory)) + int(_redeemed(sandbox, attacker)))


def test_browser_mode_refuses_a_redirect_to_another_host(sandbox, tmp_path, monkeypatch, attack) -> None:  # type: ignore[no-untyped-def]
    """--auth-mode browser with a redirect URI on another host: refused before any browser opens."""
    port = free_port()
    register(sandbox, port)
    text = config_text(sandbox.url, port, installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    (tmp_path / "reconciler.yaml").write_text(
        text.replace(f"redirect_uri: http://127.0.0.1:{port}/callback", "redirect_uri: https://elsewhere.example/cb", 1)
    )
    monkeypatch.chdir(tmp_path)
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    result = run(APPLY_BROWSER, ENV)
    assert result.exit_code == 1 and "browser mode receives the code on 127.0.0.1" in result.stderr
    assert not opened
    record = (tmp_path / "state" / "default.credentials" / f"{ADDRESS}.json").exists()
    attack(accepted=bool(opened), tokens_recorded=int(record))


def _paste_apply(directory: Path, extra: list[str], answer: Callable[[str], str]) -> subprocess.CompletedProcess[str]:
    """`apply --auth-mode paste` as a process, answering its URL (as printed) with `answer(url)`."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") or k == "RECONCILER_CACHE_DIR"},
           **ENV}
    command = [sys.executable, "-m", "reconciler", "-C", str(directory), "apply", "--auto-approve", "--auth-mode",
               "paste", *extra]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None and process.stdin is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "/oauth2/authorize?" in line:
            process.stdin.write(answer(line.strip()) + "\n")
            process.stdin.flush()
            break
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, "".join(lines) + err)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("replayed-landing-url", "state does not match"),
        ("forged-state", "state does not match"),
        ("bare-code-without-pkce", "this flow has no PKCE"),
        ("error-callback", "the user denied the authorization"),
    ],
)
def test_hostile_paste_gets_nothing_recorded(site, attack, name: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """paste mode: a landing URL replayed from an earlier authorization, a forged state, a bare code in a flow
    without PKCE, an error callback — each refused, state and credentials unchanged."""
    sandbox, directory, port = site
    first = _paste_apply(directory, [], lambda url: answer_consent(url, follow=False))
    assert first.returncode == 0, first.stderr
    earlier: list[str] = []

    def answer(url: str) -> str:
        landing = answer_consent(url, follow=False)
        earlier.append(landing)
        state = parse_qs(urlsplit(url).query)["state"][0]
        code = parse_qs(urlsplit(landing).query)["code"][0]
        return {
            "replayed-landing-url": lambda: first_landing[0],
            "forged-state": lambda: _with_query(landing, state="forged"),
            "bare-code-without-pkce": lambda: code,
            "error-callback": lambda: f"http://127.0.0.1:{port}/callback?error=access_denied&state={state}",
        }[name]()

    first_landing: list[str] = []
    replay = _paste_apply(directory, ["--replace", ADDRESS], lambda url: first_landing.append(
        answer_consent(url, follow=False)) or first_landing[0])
    assert replay.returncode == 0, replay.stderr  # a second, legitimate re-authorization: its URL is replayed next
    before = _state_files(directory)
    result = _paste_apply(directory, ["--replace", ADDRESS], answer)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    redeemed = sum(_redeemed(sandbox, landing) for landing in earlier)
    attack(accepted=result.returncode == 0, tokens_recorded=_tokens_recorded(before, _state_files(directory)) + redeemed)
