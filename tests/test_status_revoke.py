"""Status words that say what is known, and revocation of grants that are given up, against the sandbox."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from reconciler.sandbox import provider as sandbox_provider
from tests.conftest import run
from tests.sandbox_support import APPLY, ENV, LEGACY_ID, installation

KEY = base64.b64encode(b"status-key-0123456789abcdef01234").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
ADDRESS = "installation.acme.ado"


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """One legacy installation applied against the sandbox."""
    sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, RENV).exit_code == 0
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
    monkeypatch.setattr(sandbox_provider, "ACCESS_LIFETIME", dt.timedelta(hours=5))
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


NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)


def _record(**changes):  # type: ignore[no-untyped-def]
    from reconciler.state.model import InstallationRecord

    return InstallationRecord(
        tenant="acme", name="ado", connector="microsoft-azure-devops", partner="legacy", auth="azure-devops-oauth",
        parameters={}, requested_scopes=("vso.work_full",), client_id="c", client_secret_ref="${env:S}",
        redirect_uri="http://127.0.0.1/cb", token_url="https://t.example/token", verified_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1), **changes,
    )


@pytest.mark.parametrize(
    ("changes", "facts", "word", "reason"),
    [
        ({}, None, "healthy", "token valid until 2026-01-01T13:00:00Z"),
        ({"drift": "token revoked", "checked_at": NOW}, None, "needs-reauthorization", "token revoked"),
        ({}, {"present": False}, "needs-reauthorization", "no tokens are recorded"),
        ({}, {"error": "stored tokens cannot be read: x"}, "error", "stored tokens cannot be read: x"),
        ({}, {"expires_at": NOW + dt.timedelta(minutes=5)}, "expiring", "access token expires at 2026-01-01T12:05:00Z"),
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
