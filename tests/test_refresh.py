"""Refresh and drift against the sandbox: rotation stored, revocation found, partner faults contained, retries."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from reconciler.sandbox import SandboxServer
from tests.conftest import run
from tests.sandbox_support import (
    APPLY,
    ENV,
    LEGACY_ID,
    all_text_under,
    installation,
)

KEY = base64.b64encode(b"refresh-key-0123456789abcdef0123").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
THREE = (
    installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"])
    + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full", "vso.project"])
    + installation("initech", "ado", "entra", "acme-org", "Web", ["vso.work_full", "vso.project"])
)


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """Three installations applied against the sandbox."""
    sandbox, directory, write, _browser = sandbox_config
    write(THREE)
    assert run(APPLY, RENV).exit_code == 0
    return sandbox, directory


def _grants(sandbox: SandboxServer) -> dict[str, dict]:  # type: ignore[type-arg]
    return {g["client_id"] + "/" + str(g["id"]): g for g in sandbox.provider.live_grants()}


def test_refresh_rotates_expiring_tokens_and_stores_them(applied) -> None:  # type: ignore[no-untyped-def]
    """With a window wider than the tokens' life every token is refreshed, the new refresh token is stored (a
    second refresh works), the document's serial does not move, and no token shows up anywhere."""
    sandbox, directory = applied
    serial = json.loads((directory / "state" / "default.json").read_text())["serial"]
    for _ in range(2):
        result = run(["-C", ".", "refresh", "--window", "120"], RENV)
        assert result.exit_code == 0, result.stderr
        assert "Refresh complete: 3 refreshed." in result.stdout
    assert sorted(g["refreshes"] for g in sandbox.provider.live_grants()) == [2, 2, 2]
    assert json.loads((directory / "state" / "default.json").read_text())["serial"] == serial
    text = all_text_under(directory / "state") + result.stdout + result.stderr
    assert not [t for t in sandbox.provider.issued if t in text]


def test_revoked_token_becomes_reauthorize(applied) -> None:  # type: ignore[no-untyped-def]
    """A grant revoked at the provider: plan --refresh plans `reauthorize` (token revoked); refresh records it so
    an offline plan says so too; re-authorizing clears it."""
    sandbox, _directory = applied
    grant = next(g for g in sandbox.provider.live_grants() if g["client_id"] == LEGACY_ID)
    sandbox.provider.revoke(grant_id=str(grant["id"]))
    plain = run(["-C", ".", "plan", "--detailed-exitcode"], RENV)
    assert plain.exit_code == 0  # offline: it cannot know
    refreshed = run(["-C", ".", "plan", "--refresh", "--detailed-exitcode"], RENV)
    assert refreshed.exit_code == 2, refreshed.stderr
    assert refreshed.stdout.count("must be re-authorized") == 1 and "token revoked" in refreshed.stdout
    recorded = run(["-C", ".", "refresh"], RENV)
    assert recorded.exit_code == 0 and "1 revoked" in recorded.stdout
    offline = run(["-C", ".", "plan", "--detailed-exitcode"], RENV)
    assert offline.exit_code == 2 and "token revoked" in offline.stdout
    assert run(APPLY, RENV).exit_code == 0
    assert run(["-C", ".", "plan", "--refresh", "--detailed-exitcode"], RENV).exit_code == 0


def test_rejected_refresh_token_becomes_reauthorize(applied) -> None:  # type: ignore[no-untyped-def]
    """An expiring token whose refresh is refused (invalid_grant) plans `reauthorize` (refresh token rejected)."""
    sandbox, _directory = applied
    sandbox.provider.revoke(client_id="22222222-3333-4444-8555-entraapp0001")
    result = run(["-C", ".", "plan", "--refresh", "--window", "120"], RENV)
    assert "installation.initech.ado must be re-authorized" in result.stdout
    assert "refresh token rejected" in result.stdout


def test_partner_fault_is_never_a_mass_reauthorization(applied) -> None:  # type: ignore[no-untyped-def]
    """An expired partner secret (invalid_client): an error on the partner; its installations are not planned
    for re-authorization, and after 3 identical failures the rest are not even tried."""
    sandbox, directory = applied
    sandbox.provider.rotate_secret(LEGACY_ID, "the-new-secret-nobody-configured")
    result = run(["-C", ".", "plan", "--refresh", "--window", "120"], RENV)
    assert result.exit_code == 1
    assert "rejected the client credentials of partner(s) legacy" in result.stderr
    assert "must be re-authorized" not in result.stdout
    recorded = run(["-C", ".", "refresh", "--window", "120"], RENV)
    assert recorded.exit_code == 1 and "partner fault" in recorded.stdout
    state = json.loads((directory / "state" / "default.json").read_text())
    assert all(r.get("drift") is None for r in state["resources"].values())


@pytest.mark.parametrize("statuses", [[429, 429], [500, 503], [203]])
def test_transient_faults_are_retried(applied, statuses: list[int]) -> None:  # type: ignore[no-untyped-def]
    """429 (Retry-After honoured), 5xx and a sign-in page are retried; the refresh then succeeds."""
    sandbox, _directory = applied
    sandbox.provider.add_fault("token", statuses)
    result = run(["-C", ".", "refresh", "--window", "120", "--parallelism", "1"], RENV)
    assert result.exit_code == 0, result.stderr
    assert "Refresh complete: 3 refreshed." in result.stdout
    assert sandbox.provider.faults["token"] == []


def test_persistent_fault_loses_nothing(applied) -> None:  # type: ignore[no-untyped-def]
    """A provider that keeps failing: "could not be checked", exit 1 naming each installation, no drift recorded,
    tokens still work afterwards."""
    sandbox, directory = applied
    before = all_text_under(directory / "state")
    sandbox.provider.add_fault("token", [500] * 40)
    result = run(["-C", ".", "refresh", "--window", "120", "--parallelism", "2"], RENV)
    assert result.exit_code == 1 and "3 could not be checked" in result.stdout
    assert "error: 3 installations could not be refreshed or checked" in result.stderr
    assert "installation.acme.ado: could not refresh: the provider is unavailable (HTTP 500)" in result.stderr
    checks = directory / "state" / "default.service" / "checks.jsonl"
    shutil.move(directory / "state" / "default.service", directory / "service")  # kept beside the state
    assert all_text_under(directory / "state") == before
    checks = directory / "service" / "checks.jsonl"
    assert [json.loads(line)["outcome"] for line in checks.read_text().splitlines()] == ["provider"] * 3
    sandbox.provider.faults["token"] = []
    assert "3 refreshed" in run(["-C", ".", "refresh", "--window", "120"], RENV).stdout


def test_token_expired_early_at_the_provider_is_refreshed_not_retried(applied) -> None:  # type: ignore[no-untyped-def]
    """An access token the provider expired before its recorded expiry answers with a sign-in page: refresh
    rotates it once and checks again (as apply does), instead of retrying it and reporting "could not be checked";
    plan --refresh then shows no change."""
    import time

    sandbox, _directory = applied
    sandbox.provider.expire()
    started = time.monotonic()
    result = run(["-C", ".", "refresh"], RENV)
    assert result.exit_code == 0, result.stderr
    assert "Refresh complete: 3 refreshed." in result.stdout
    assert time.monotonic() - started < 3  # no back-off on a token that stays expired
    assert sorted(g["refreshes"] for g in sandbox.provider.live_grants()) == [1, 1, 1]
    sandbox.provider.expire()
    assert run(["-C", ".", "plan", "--refresh", "--detailed-exitcode"], RENV).exit_code == 0
