"""Status words that say what is known, and revocation of grants that are given up, against the sandbox."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from reconciler.sandbox import tokens as sandbox_tokens
from tests.conftest import read_env_file, run
from tests.sandbox_support import APPLY, ENV, LEGACY_ID, installation

KEY = base64.b64encode(b"status-key-0123456789abcdef01234").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
ADDRESS = "installation.acme.ado"


def revocable(sandbox, directory: Path, write):  # type: ignore[no-untyped-def]
    """`write`, with the legacy partner declaring the sandbox's RFC 7009 endpoint as its `revoke_url` (Microsoft
    documents none for Azure DevOps OAuth: revocation is opt-in, per partner)."""
    token = f"      token_url: {sandbox.url}/oauth2/token\n"

    def write_revocable(installations: str, extra: str = "") -> None:
        write(installations, extra)
        text = (directory / "reconciler.yaml").read_text()
        assert text.count(token) == 1
        (directory / "reconciler.yaml").write_text(text.replace(token, f"{token}      revoke_url: {sandbox.url}/oauth2/revoke\n"))

    return write_revocable


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """One legacy installation applied against the sandbox, its partner declaring the sandbox's revoke_url."""
    sandbox, directory, write, _ = sandbox_config
    write = revocable(sandbox, directory, write)
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, RENV).exit_code == 0
    assert _show()["revoke_url"] == f"{sandbox.url}/oauth2/revoke"  # recorded with the grant, in state
    return sandbox, directory, write


def _show(address: str = ADDRESS) -> dict:  # type: ignore[type-arg]
    result = run(["-C", ".", "state", "show", address, "--json"], RENV)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _listed(address: str = ADDRESS) -> list[str]:
    result = run(["-C", ".", "state", "list"], RENV)
    assert result.exit_code == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if line.startswith(address + "\t")).split("\t")


def test_a_fresh_installation_is_healthy_with_its_expiry_and_check_time(applied) -> None:
    """After apply, state list and show say healthy, with the token's expiry and when it was verified."""
    listed = _listed()
    assert listed[1] == "healthy" and "token valid until" in listed[2] and "(checked never)" not in listed[2]
    shown = _show()
    assert shown["status"] == "healthy" and shown["expires_at"] and shown["checked_at"] == shown["verified_at"]


def test_a_revoked_token_found_by_refresh_shows_needs_reauthorization(applied) -> None:
    """Revoked at the provider, then `refresh`: state list and show say needs-reauthorization, token revoked."""
    sandbox = applied[0]
    sandbox.provider.revoke(client_id=LEGACY_ID)
    assert run(["-C", ".", "refresh"], RENV).exit_code == 0
    word, reason = _listed()[1:3]
    assert word == "needs-reauthorization" and reason.startswith("token revoked (checked 20")
    shown = _show()
    assert shown["status"] == "needs-reauthorization" and shown["reason"] == "token revoked"
    assert shown["checked_at"]
    text = run(["-C", ".", "state", "show", ADDRESS], RENV).stdout
    assert "needs-reauthorization" in text and "authorized\n" not in text


def test_a_rotation_moves_expires_at_forward_without_moving_serial(applied, monkeypatch) -> None:
    """Expired early and refreshed: state show's expires_at is the rotated token's, and the serial is unchanged."""
    sandbox, directory, _ = applied
    before = _show()["expires_at"]
    serial = json.loads((directory / "state" / "default.json").read_text())["serial"]
    monkeypatch.setattr(sandbox_tokens, "ACCESS_LIFETIME", dt.timedelta(hours=5))
    sandbox.provider.expire()
    result = run(["-C", ".", "refresh"], RENV)
    assert result.exit_code == 0 and "1 refreshed" in result.stdout, result.stdout + result.stderr
    after = _show()
    moved = dt.datetime.fromisoformat(after["expires_at"]) - dt.datetime.fromisoformat(before)
    assert moved > dt.timedelta(hours=3) and after["status"] == "healthy"
    assert json.loads((directory / "state" / "default.json").read_text())["serial"] == serial


def test_status_without_a_key_falls_back_to_the_recorded_expiry(applied) -> None:
    """Without the state key the tokens stay sealed: the status uses the expiry recorded at apply."""
    result = run(["-C", ".", "state", "list"], ENV)
    assert result.exit_code == 0 and f"{ADDRESS}\thealthy\t" in result.stdout


NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def _record(**changes):  # type: ignore[no-untyped-def]
    from reconciler.state.model import InstallationRecord

    fields = {
        "tenant": "acme", "name": "ado", "connector": "microsoft-azure-devops", "partner": "legacy",
        "auth": "azure-devops-oauth", "parameters": {}, "scopes": ("vso.work_full",), "client_id": "c",
        "client_secret_ref": "${env:S}", "redirect_uri": "http://127.0.0.1/cb", "token_url": "https://t.example/token",
        "verified_at": NOW, "expires_at": NOW + dt.timedelta(hours=1),
    }
    return InstallationRecord(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "facts", "word", "reason"),
    [
        ({}, None, "healthy", "token valid until 2026-01-01T13:00:00Z"),
        ({"drift": "revoked", "checked_at": NOW}, None, "needs-reauthorization", "token revoked"),
        ({}, {"present": False}, "needs-reauthorization", "no tokens are recorded"),
        ({}, {"error": "stored tokens cannot be read: x"}, "error", "stored tokens cannot be read: x"),
        ({}, {"expires_at": NOW - dt.timedelta(minutes=5)}, "healthy", "access token expired at 2026-01-01T11:55:00Z; a refresh"),
        ({}, {"expires_at": NOW - dt.timedelta(minutes=5), "refreshable": False}, "needs-reauthorization",
         "token expired at 2026-01-01T11:55:00Z (no refresh token)"),
        ({}, {"expires_at": NOW + dt.timedelta(days=2), "refreshable": False}, "expiring", "no refresh token"),
        ({}, {"expires_at": NOW + dt.timedelta(days=9)}, "healthy", "token valid until 2026-01-10T12:00:00Z"),
    ],
)
def test_status_rule(changes, facts, word, reason) -> None:  # type: ignore[no-untyped-def]
    """Each status word follows from what state recorded and the stored token's expiry against now."""
    from reconciler.status import STATUS_WORDS, TokenFacts, installation_status

    status = installation_status(_record(**changes), TokenFacts(**facts) if facts is not None else None, now=NOW)
    assert status.word == word and status.word in STATUS_WORDS and reason in status.reason


def _grants(sandbox) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return sandbox.provider.live_grants()


def test_deleting_an_installation_revokes_its_grant_at_the_provider(applied) -> None:
    """Removed from configuration: the plan says the grant is revoked, and apply revokes it at the sandbox."""
    sandbox, _, write = applied
    write(installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"]))
    plan = run(["-C", ".", "plan"], RENV)
    assert "its grant is revoked at the provider" in plan.stdout, plan.stdout
    assert [g["revoked"] for g in _grants(sandbox)] == [False]
    result = run(APPLY, RENV)
    assert result.exit_code == 0, result.stderr
    old, new = _grants(sandbox)
    assert old["revoked"] is True and new["revoked"] is False
    assert "not revoked" not in result.stderr and f"{ADDRESS}: deleted; its grant is revoked" in result.stdout + result.stderr


def test_replace_revokes_the_old_grant_not_the_new_one(applied) -> None:
    """--replace: the new grant is obtained, then the old one revoked; the new tokens keep working."""
    sandbox = applied[0]
    plan = run(["-C", ".", "plan", "--replace", ADDRESS], RENV)
    assert "the old grant is revoked once the new one is in place" in plan.stdout, plan.stdout
    result = run([*APPLY, "--replace", ADDRESS], RENV)
    assert result.exit_code == 0, result.stderr
    assert [g["revoked"] for g in _grants(sandbox)] == [True, False]
    assert run(["-C", ".", "plan", "--refresh", "--detailed-exitcode"], RENV).exit_code == 0


def test_moving_to_another_partner_revokes_the_old_grant(applied) -> None:
    """A tenant moved from the legacy partner to Entra: the legacy grant is revoked once the Entra one is in place."""
    sandbox, _, write = applied
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    result = run(APPLY, RENV)
    assert result.exit_code == 0, result.stderr
    assert [(g["flavour"], g["revoked"]) for g in _grants(sandbox)] == [("azure-devops-oauth", True), ("entra-id", False)]


def test_a_flavour_without_revocation_says_so_in_the_plan(sandbox_config) -> None:
    """Entra offers a client no revocation: the plan, in every format, says the tokens are forgotten, not revoked,
    and where to revoke; apply forgets them and the grant stays live at the provider."""
    sandbox, _, write, _ = sandbox_config
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, RENV).exit_code == 0
    write(installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"]))
    for form in ("text", "markdown", "json"):
        shown = run(["-C", ".", "plan", "--format", form], RENV).stdout
        assert "its tokens are forgotten, not revoked: revoke in https://myapps.microsoft.com" in shown, (form, shown)
    assert run(APPLY, RENV).exit_code == 0
    assert [g["revoked"] for g in _grants(sandbox) if g["flavour"] == "entra-id"] == [False]


def test_a_failed_revocation_is_a_warning_and_the_tokens_are_still_forgotten(applied) -> None:
    """The client secret no longer works at the revocation endpoint: apply warns naming the installation and
    where to revoke, and still forgets the tokens."""
    sandbox, directory, write = applied
    sandbox.provider.rotate_secret(LEGACY_ID, "another-secret")
    write(installation("globex", "ado", "entra", "globex", "Operations", ["vso.work_full"]))
    result = run(APPLY, RENV)
    assert result.exit_code == 0, result.stderr
    assert f"{ADDRESS}" in result.stderr and "not revoked" in result.stderr and "Authorized OAuth apps" in result.stderr
    assert not (directory / "state" / "default.credentials" / f"{ADDRESS}.json").exists()


def test_without_a_revoke_url_the_legacy_grant_is_forgotten_not_revoked(sandbox_config) -> None:
    """The same legacy partner without `revoke_url`: nothing is sent to a revocation endpoint; the plan says the
    tokens are forgotten, not revoked, and where the user revokes; the grant stays live at the provider."""
    sandbox, _, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, RENV).exit_code == 0
    write(installation("globex", "ado", "entra", "globex", "Operations", ["vso.work_full"]))
    plan = run(["-C", ".", "plan"], RENV).stdout
    assert "its tokens are forgotten, not revoked: revoke in the user's Azure DevOps profile" in plan, plan
    assert "revoked at the provider" not in plan
    result = run(APPLY, RENV)
    assert result.exit_code == 0 and f"{ADDRESS}: deleted; its tokens are forgotten" in result.stdout + result.stderr
    assert [g["revoked"] for g in _grants(sandbox) if g["flavour"] == "azure-devops-oauth"] == [False]


def test_declaring_a_revoke_url_later_is_recorded_by_an_update_then_used(sandbox_config) -> None:
    """A grant obtained before the partner declared `revoke_url`: the next plan updates the installation's record
    in place (no new consent), and a later delete revokes at the recorded endpoint."""
    sandbox, directory, write, _ = sandbox_config
    ado = installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
    write(ado)
    assert run(APPLY, RENV).exit_code == 0
    write = revocable(sandbox, directory, write)
    write(ado)
    plan = run(["-C", ".", "plan"], RENV).stdout
    assert "revocation endpoint changed: (none) -> " in plan and "0 to reauthorize" in plan, plan
    assert run(APPLY, RENV).exit_code == 0
    assert _show()["revoke_url"] == f"{sandbox.url}/oauth2/revoke"
    write(installation("globex", "ado", "entra", "globex", "Operations", ["vso.work_full"]))
    assert "its grant is revoked at the provider" in run(["-C", ".", "plan"], RENV).stdout
    assert run(APPLY, RENV).exit_code == 0
    assert [g["revoked"] for g in _grants(sandbox) if g["flavour"] == "azure-devops-oauth"] == [True]


CASES = Path(__file__).parent / "cases"


def test_microsofts_default_endpoints_plan_no_revocation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Microsoft documents no app-level revocation for Azure DevOps OAuth: with its default endpoints (no override)
    deleting a legacy installation plans "not revoked: revoke in ..." (text and JSON), never a revocation."""
    shutil.copytree(CASES / "installation_removed", tmp_path / "case")
    env = read_env_file(tmp_path / "case" / "env")
    expected = "its tokens are forgotten, not revoked: revoke in the user's Azure DevOps profile, Authorized OAuth apps"
    text = run(["-C", str(tmp_path / "case"), "plan"], env)
    assert text.exit_code == 2 or text.exit_code == 0, text.stderr
    assert expected in text.stdout and "revoked at the provider" not in text.stdout, text.stdout
    shown = json.loads(run(["-C", str(tmp_path / "case"), "plan", "--format", "json"], env).stdout)
    deleted = [c for c in shown["changes"] if c["action"] == "delete"]
    assert deleted and all(any(w.startswith(expected) for w in c["warnings"]) for c in deleted), deleted
    assert not any("revoked at the provider" in r for c in deleted for r in c["reasons"])


def test_a_revoke_url_on_another_origin_than_the_token_endpoint_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A token is only ever sent to the origin that issued it: `revoke_url` elsewhere is a validation error naming
    file:line and the key, with nothing written."""
    (tmp_path / "reconciler.yaml").write_text(
        "version: 1\n"
        "platform: {service_domain: app-h.cyclr.com}\n"
        "partners:\n"
        "  microsoft-azure-devops:\n"
        "    auth: azure-devops-oauth\n"
        "    client_id: c\n"
        "    client_secret: ${env:S}\n"
        "    endpoints:\n"
        "      token_url: https://proxy.example/oauth2/token\n"
        "      revoke_url: https://elsewhere.example/oauth2/revoke\n"
    )
    result = run(["-C", str(tmp_path), "validate"], {"S": "secret-value"})
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert "reconciler.yaml:10" in result.stderr and "revoke_url" in result.stderr, result.stderr
    assert "https://elsewhere.example" in result.stderr and "https://proxy.example" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconciler.yaml"]


@pytest.mark.parametrize(
    ("revoke_url", "token_url", "ok"),
    [
        ("https://proxy.example/oauth2/revoke", "https://proxy.example/oauth2/token", True),
        ("https://PROXY.example:443/revoke", "https://proxy.example/oauth2/token", True),
        ("http://proxy.example/oauth2/revoke", "https://proxy.example/oauth2/token", False),
        ("https://proxy.example:8443/revoke", "https://proxy.example/oauth2/token", False),
        ("https://evil.example/revoke", "https://proxy.example/oauth2/token", False),
    ],
)
def test_a_recorded_revoke_url_is_used_only_on_the_recorded_token_origin(revoke_url, token_url, ok) -> None:  # type: ignore[no-untyped-def]
    """At delete time the endpoint comes from state; one on another origin than the recorded token endpoint (an
    edited state) is not used, and the flavour (Microsoft's, no `revoke_path`) offers none either."""
    from reconciler.catalog.files import load_catalog
    from reconciler.planner import revocation_url

    record = _record(revoke_url=revoke_url, token_url=token_url)
    assert revocation_url(record, load_catalog()) == (revoke_url if ok else None)
    assert revocation_url(_record(), load_catalog()) is None


def test_state_recorded_before_revoke_url_existed_loads() -> None:
    """Old state (no `revoke_url` on either record) loads, and such a grant is not revocable."""
    from reconciler.state.model import decode_state

    raw = (CASES / "installation_removed" / "state" / "default.json").read_bytes()
    assert b"revoke_url" not in raw
    doc = decode_state(raw, "default.json")
    assert all(r.revoke_url is None for r in doc.resources.values())


@pytest.mark.parametrize(("auth", "client_field"), [("azure-devops-oauth", "client_assertion"), ("entra-id", "client_secret")])
def test_revoke_grant_authenticates_in_the_flavours_dialect_and_only_on_the_token_origin(auth, client_field) -> None:  # type: ignore[no-untyped-def]
    """The client authenticates at the revocation endpoint as at its token endpoint; a URL on another origin than
    the recorded token endpoint is refused before anything is sent."""
    import httpx
    from pydantic import SecretStr

    from reconciler.auth.errors import ProviderError
    from reconciler.auth.flows import FlowSettings, revoke_grant
    from reconciler.catalog.files import load_catalog
    from reconciler.tokens.model import TokenSet

    sent: list[httpx.Request] = []
    http = httpx.Client(transport=httpx.MockTransport(lambda r: (sent.append(r), httpx.Response(200))[1]))
    flavour = load_catalog().connectors["microsoft-azure-devops"].auth[auth]
    settings = FlowSettings(flavour, "cid", SecretStr("the-secret"), "http://127.0.0.1/cb", "", "https://p.example/t", ())
    tokens = TokenSet(access_token=SecretStr("at"), refresh_token=SecretStr("rt"), expires_at=NOW, scope=())
    with pytest.raises(ProviderError):
        revoke_grant(settings, "https://other.example/revoke", http, tokens)
    assert sent == []
    assert revoke_grant(settings, "https://p.example/revoke", http, tokens) is True
    [request] = sent
    form = dict(httpx.QueryParams(request.content.decode()))
    assert str(request.url) == "https://p.example/revoke" and form[client_field] == "the-secret"
    assert form["token"] == "rt" and form["token_type_hint"] == "refresh_token" and form["client_id"] == "cid"
