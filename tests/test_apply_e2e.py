"""Apply end to end, over real HTTP against the sandbox provider on 127.0.0.1, for both auth flavours.

Consent is given by a scripted user agent standing in for the browser (it fetches the consent page, clicks
Approve or Deny, and follows the redirect to reconciler's loopback listener); tests/test_browser.py does the same
with a real headless Chromium.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from tests.conftest import run
from tests.sandbox_support import (
    APPLY,
    ENTRA_SECRET,
    ENV,
    LEGACY_SECRET,
    all_text_under,
    installation,
)

PLAN_EXIT = ["-C", ".", "plan", "--detailed-exitcode"]


@pytest.fixture
def setup(sandbox_config):  # type: ignore[no-untyped-def]
    return sandbox_config


def _state(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "state" / "default.json").read_text())


def _secrets_absent(outputs: str, directory: Path, sandbox: SandboxServer) -> None:
    """Every token, code, verifier and client secret is absent, in plain, base64 and URL-encoded forms."""
    haystack = outputs + all_text_under(directory / "state")
    values = [*sandbox.provider.issued, LEGACY_SECRET, ENTRA_SECRET]
    assert len(sandbox.provider.issued) >= 3
    for value in values:
        for form in {value, base64.b64encode(value.encode()).decode(), urllib.parse.quote(value, safe="")}:
            assert form not in haystack


@pytest.mark.parametrize("partner", ["legacy", "entra"])
def test_apply_records_tokens_and_granted_scopes_then_converges(setup, partner: str) -> None:  # type: ignore[no-untyped-def]
    """apply -> tokens sealed, granted scopes recorded -> plan exits 0 -> scope change plans reauthorize -> apply -> 0."""
    sandbox, directory, write, browser = setup
    write(installation("acme", "ado", partner, "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    outputs = []

    first = run(APPLY, ENV)
    outputs.append(first.stdout + first.stderr)
    assert first.exit_code == 0, first.stderr
    assert "Apply complete: 3 completed" in first.stdout
    assert len(browser.opened) == 1 and not browser.errors
    record = _state(directory)["resources"]["installation.acme.ado"]
    assert record["status"] == "authorized"
    assert record["granted_scopes"] == ["vso.project", "vso.work_full"]
    assert record["authorized_by"] == "sandbox.user@example.com"
    sealed = json.loads((directory / "state" / "default.credentials" / "installation.acme.ado.json").read_text())
    assert sealed["tokens"]["alg"] == "AES-256-GCM" and "pending" not in sealed
    assert oct((directory / "state" / "default.key").stat().st_mode & 0o777) == "0o600"

    again = run(PLAN_EXIT, ENV)
    outputs.append(again.stdout + again.stderr)
    assert again.exit_code == 0, again.stdout
    assert "No changes." in again.stdout

    write(installation("acme", "ado", partner, "acme-org", "Platform", ["vso.work_full", "vso.project", "vso.code"]))
    changed = run(PLAN_EXIT, ENV)
    outputs.append(changed.stdout + changed.stderr)
    assert changed.exit_code == 2
    assert "installation.acme.ado must be re-authorized" in changed.stdout and "scopes added: vso.code" in changed.stdout

    second = run(APPLY, ENV)
    outputs.append(second.stdout + second.stderr)
    assert second.exit_code == 0, second.stderr
    assert _state(directory)["resources"]["installation.acme.ado"]["granted_scopes"] == [
        "vso.code",
        "vso.project",
        "vso.work_full",
    ]
    final = run(PLAN_EXIT, ENV)
    assert final.exit_code == 0, final.stdout
    live = [g for g in sandbox.provider.live_grants() if not g["revoked"]]
    assert ["vso.code", "vso.project", "vso.work_full"] in [g["scopes"] for g in live]
    _secrets_absent("\n".join(outputs) + final.stdout + final.stderr, directory, sandbox)


def test_deny_records_nothing_for_the_installation(setup) -> None:  # type: ignore[no-untyped-def]
    """Deny on the consent page: a clear error, exit 1, the partner (done before) kept, no installation record."""
    _sandbox, directory, write, browser = setup
    browser.approve = False
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1
    assert "installation.acme.ado: the user denied the authorization" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    resources = _state(directory)["resources"]
    assert "partner.legacy" in resources and "installation.acme.ado" not in resources
    assert not (directory / "state" / "default.credentials" / "installation.acme.ado.json").exists()


def test_unknown_organization_fails_verification_and_records_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    """A token that cannot reach the declared organization is an error naming it; the installation is not recorded."""
    _sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "nope-org", "Platform", ["vso.work_full"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1
    assert "installation.acme.ado: organization nope-org was not found" in result.stderr
    assert "installation.acme.ado" not in _state(directory)["resources"]


def test_narrower_grant_is_recorded_and_reported(setup) -> None:  # type: ignore[no-untyped-def]
    """The provider grants fewer scopes: apply records what was granted and warns; the plan keeps reauthorize."""
    sandbox, directory, write, _browser = setup
    sandbox.provider.set_grant_only("11111111-2222-4333-8444-legacyapp001", ["vso.work_full"])
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.code"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr
    assert "granted fewer scopes than asked (missing: vso.code)" in result.stderr
    assert _state(directory)["resources"]["installation.acme.ado"]["granted_scopes"] == ["vso.work_full"]
    plan = run(PLAN_EXIT, ENV)
    assert plan.exit_code == 2 and "scopes not granted: vso.code" in plan.stdout


def test_require_scopes_makes_a_narrower_grant_an_error(setup) -> None:  # type: ignore[no-untyped-def]
    """--require-scopes: a narrower grant fails the step and records nothing for it."""
    sandbox, directory, write, _browser = setup
    sandbox.provider.set_grant_only("11111111-2222-4333-8444-legacyapp001", ["vso.work_full"])
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.code"]))
    result = run([*APPLY, "--require-scopes"], ENV)
    assert result.exit_code == 1
    assert "granted fewer scopes than asked (missing: vso.code)" in result.stderr
    assert "installation.acme.ado" not in _state(directory)["resources"]


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        ([500] * 4, "unavailable (HTTP 500); try again later (4 attempts)"),
        ([400], "HTTP 400"),
        ([203] * 4, "sign-in page (HTTP 203) instead of JSON (4 attempts)"),
    ],
)
def test_token_endpoint_failures_are_clear_and_lose_nothing(setup, statuses: list[int], message: str) -> None:  # type: ignore[no-untyped-def]
    """Token endpoint faults that last (transient ones outlast the retries): a clear error naming the installation;
    what was done before is kept."""
    sandbox, directory, write, _browser = setup
    write(
        installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
        + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"])
    )
    assert run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser"], ENV).exit_code == 0
    before = _state(directory)
    write(
        installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
        + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"])
        + installation("initech", "ado", "legacy", "acme-org", "Web", ["vso.work_full"])
    )
    sandbox.provider.add_fault("token", statuses)
    result = run(APPLY, ENV)
    assert result.exit_code == 1
    assert "installation.initech.ado:" in result.stderr and message in result.stderr
    after = _state(directory)
    assert after["resources"] == before["resources"]


def test_wrong_client_secret_is_a_partner_fault(setup) -> None:  # type: ignore[no-untyped-def]
    """invalid_client from the token endpoint is reported as the partner's credentials, with a hint."""
    sandbox, _directory, write, _browser = setup
    sandbox.provider.rotate_secret("11111111-2222-4333-8444-legacyapp001", "a-new-secret-the-config-lacks")
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1
    assert "rejected the partner's client credentials (invalid_client" in result.stderr
    assert "client_secret" in result.stderr  # the hint


def test_wrong_state_key_is_a_clear_error_and_changes_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    """Opening sealed tokens with another key fails clearly (an update needs them) and writes nothing."""
    _sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    write(installation("acme", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    before = all_text_under(directory / "state")
    other_key = base64.b64encode(b"k" * 32).decode()
    result = run(APPLY, {**ENV, "RECONCILER_STATE_KEY": other_key})
    assert result.exit_code == 1
    assert "sealed with key id" in result.stderr and "nothing was changed" in result.stderr
    assert all_text_under(directory / "state") == before
    ok = run(APPLY, ENV)
    assert ok.exit_code == 0, ok.stderr
    assert _state(directory)["resources"]["installation.acme.ado"]["parameters"]["project"] == "Web"


def test_update_verifies_the_new_project(setup) -> None:  # type: ignore[no-untyped-def]
    """Changing the project is an in-place update verified against the provider: an unknown project fails."""
    _sandbox, directory, write, browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    write(installation("acme", "ado", "legacy", "acme-org", "Missing", ["vso.work_full", "vso.project"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1 and "project Missing was not found" in result.stderr
    assert _state(directory)["resources"]["installation.acme.ado"]["parameters"]["project"] == "Platform"
    assert len(browser.opened) == 1  # an update never asks for consent


def test_expired_token_is_refreshed_on_update_and_rotation_is_stored(setup) -> None:  # type: ignore[no-untyped-def]
    """An update with an expired access token refreshes first and stores the rotated refresh token at once."""
    sandbox, _directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    sandbox.provider.expire()
    for project in ("Web", "Platform"):
        write(installation("acme", "ado", "legacy", "acme-org", project, ["vso.work_full", "vso.project"]))
        result = run(APPLY, ENV)
        assert result.exit_code == 0, result.stderr
        sandbox.provider.expire()
    assert [g["refreshes"] for g in sandbox.provider.live_grants()] == [2]


def test_delete_forgets_tokens(setup) -> None:  # type: ignore[no-untyped-def]
    """Removing an installation deletes its record and its sealed tokens."""
    _sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, ENV).exit_code == 0
    write("  {}\n")
    (directory / "reconciler.yaml").write_text((directory / "reconciler.yaml").read_text().replace("tenants:\n  {}\n", "tenants: {}\n"))
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr
    assert "installation.acme.ado: deleted" in result.stderr
    assert "installation.acme.ado" not in _state(directory)["resources"]
    assert not (directory / "state" / "default.credentials" / "installation.acme.ado.json").exists()


def test_defer_then_authorize(setup) -> None:  # type: ignore[no-untyped-def]
    """defer records pending authorizations, prints links and exits 3; `authorize` completes them later."""
    _sandbox, directory, write, browser = setup
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full"]))
    deferred = run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], ENV)
    assert deferred.exit_code == 3, deferred.stderr
    assert "authorization pending" in deferred.stdout and "/organizations/oauth2/v2.0/authorize?" in deferred.stdout
    assert browser.opened == []
    record = _state(directory)["resources"]["installation.acme.ado"]
    assert record["status"] == "pending_authorization" and record["pending"]["requested_scopes"] == ["vso.work_full"]
    plan = run(PLAN_EXIT, ENV)
    assert plan.exit_code == 0 and "Pending authorizations" in plan.stdout
    link = next(line.strip() for line in deferred.stdout.splitlines() if "oauth2/v2.0/authorize?" in line)
    comment = run(["-C", ".", "plan", "--format", "markdown"], ENV).stdout
    assert "| Address | Link | Valid until |" in comment and "/organizations/oauth2/v2.0/authorize?" in comment

    done = run(["-C", ".", "authorize", "--auth-mode", "browser", "--auth-timeout", "20"], ENV)
    assert done.exit_code == 0, done.stderr
    assert browser.opened == [link]  # the same link as posted: it stays valid
    record = _state(directory)["resources"]["installation.acme.ado"]
    assert record["status"] == "authorized" and "pending" not in record
    final = run(PLAN_EXIT, ENV)
    assert final.exit_code == 0 and "Pending" not in final.stdout


def test_apply_without_terminal_needs_auto_approve(setup) -> None:  # type: ignore[no-untyped-def]
    """With no terminal to confirm on, apply refuses unless --auto-approve is given, and writes nothing."""
    _sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    result = run(["-C", ".", "apply"], ENV)
    assert result.exit_code == 1 and "--auto-approve" in result.stderr
    assert not (directory / "state").exists()


def test_state_show_never_prints_token_material(setup) -> None:  # type: ignore[no-untyped-def]
    """state show prints status, scopes, client id and times, and no token."""
    sandbox, _directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, ENV).exit_code == 0
    text = run(["-C", ".", "state", "show", "installation.acme.ado"]).stdout
    data = json.loads(run(["-C", ".", "state", "show", "installation.acme.ado", "--json"]).stdout)
    assert "granted_scopes" in text and data["status"] == "healthy" and data["client_id"]
    for value in sandbox.provider.issued:
        assert value not in text + json.dumps(data)
    missing = run(["-C", ".", "state", "show", "installation.nope.x"])
    assert missing.exit_code == 1 and "not in state" in missing.stderr


def test_passphrase_key_seals_and_a_wrong_passphrase_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    """RECONCILER_STATE_PASSPHRASE derives the key (salt stored beside the state); another passphrase cannot
    open the tokens and changes nothing; no key file is generated."""
    _sandbox, directory, write, _browser = setup
    env = {**ENV, "RECONCILER_STATE_PASSPHRASE": "correct horse battery staple"}
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, env).exit_code == 0
    assert (directory / "state" / "default.kdf.json").exists()
    assert not (directory / "state" / "default.key").exists()
    write(installation("acme", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    before = all_text_under(directory / "state")
    wrong = run(APPLY, {**ENV, "RECONCILER_STATE_PASSPHRASE": "wrong"})
    assert wrong.exit_code == 1 and "sealed with key id" in wrong.stderr
    assert all_text_under(directory / "state") == before
    assert run(APPLY, env).exit_code == 0


@pytest.mark.parametrize(("value", "message"), [("bm90LWJhc2U2NA", "not valid base64"), ("c2hvcnQ=", "32 bytes")])
def test_malformed_state_key_is_a_clear_error(setup, value: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """A malformed RECONCILER_STATE_KEY is a one-line error before any authorization."""
    _sandbox, _directory, write, browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    result = run(APPLY, {**ENV, "RECONCILER_STATE_KEY": value})
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert browser.opened == []


def test_wrong_key_is_refused_before_any_authorization(setup) -> None:  # type: ignore[no-untyped-def]
    """With sealed credentials present, another key is refused before a new installation is authorized or written."""
    _sandbox, directory, write, browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, ENV).exit_code == 0
    write(
        installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
        + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"])
    )
    before = all_text_under(directory / "state")
    result = run(APPLY, {**ENV, "RECONCILER_STATE_PASSPHRASE": "a typo"})
    assert result.exit_code == 1 and "credentials are sealed with key id" in result.stderr
    assert "internal error" not in result.stderr
    assert all_text_under(directory / "state") == before and len(browser.opened) == 1


def test_lost_key_file_is_not_silently_replaced(setup) -> None:  # type: ignore[no-untyped-def]
    """If the generated key file disappears, apply refuses instead of generating a new key over sealed tokens."""
    _sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    (directory / "state" / "default.key").unlink()
    write(installation("acme", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1 and "there is no state key" in result.stderr
    assert not (directory / "state" / "default.key").exists()


def test_key_file_is_git_ignored_even_with_an_existing_gitignore(setup) -> None:  # type: ignore[no-untyped-def]
    """A state directory's own .gitignore gains `*.key` (and `*.key.*`, a rotation's) when the key file is generated."""
    _sandbox, directory, write, _browser = setup
    (directory / "state").mkdir()
    (directory / "state" / ".gitignore").write_text("*.backup\n")
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 0 and "created the state key" in result.stderr
    assert (directory / "state" / ".gitignore").read_text().splitlines() == ["*.backup", "*.key", "*.key.*"]


def test_crash_between_staged_tokens_and_document_keeps_working_tokens(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A re-authorization to a new client that dies after staging its tokens but before the document write leaves
    the old tokens usable; one that dies after the document but before promotion uses the staged tokens."""
    from reconciler.state.local import LocalBackend

    sandbox, directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    real_write = LocalBackend.write

    def dying_write(self, doc, *, expected_serial):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(LocalBackend, "write", dying_write)
    assert run(APPLY, ENV).exit_code == 1
    monkeypatch.setattr(LocalBackend, "write", real_write)
    record = _state(directory)["resources"]["installation.acme.ado"]
    assert record["partner"] == "legacy"  # the document still names the old client
    write(installation("acme", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0  # an update opens the old tokens

    from reconciler.tokens.store import LocalCredentialStore

    write(installation("acme", "ado", "entra", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    real_put = LocalCredentialStore.put
    calls = []

    def put_then_die(self, address, tokens, pending, *, expected_generation, staged=None):  # type: ignore[no-untyped-def]
        calls.append(staged is not None)
        if len(calls) == 2:  # the promotion after the document write
            raise KeyboardInterrupt
        return real_put(self, address, tokens, pending, expected_generation=expected_generation, staged=staged)

    monkeypatch.setattr(LocalCredentialStore, "put", put_then_die)
    assert run(APPLY, ENV).exit_code == 1
    monkeypatch.setattr(LocalCredentialStore, "put", real_put)
    assert _state(directory)["resources"]["installation.acme.ado"]["client_id"] == "22222222-3333-4444-8555-entraapp0001"
    sandbox.provider.expire()
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr  # the staged tokens open with the new client, and refresh works


def test_revoked_token_on_update_says_sign_in_again(setup) -> None:  # type: ignore[no-untyped-def]
    """A revoked grant: the update's check fails, the refresh is rejected, and the error says to re-authorize."""
    sandbox, _directory, write, _browser = setup
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    sandbox.provider.revoke()
    write(installation("acme", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    result = run(APPLY, ENV)
    assert result.exit_code == 1
    assert "refresh token was rejected" in result.stderr and "--replace installation.acme.ado" in result.stderr
