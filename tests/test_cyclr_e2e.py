"""The Cyclr platform through the CLI against the sandbox over real HTTP on 127.0.0.1: accounts and account
connectors created, sign-in through the platform (defer + authorize, browser, paste), drift found by a refresh
(deauthenticated, deleted, edited in the console) planned back, import of an existing estate, and no secret in any
output or file (fixtures: tests/cyclr_support.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import webbrowser
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from tests.cyclr_support import (
    ENV,
    LIBRARY_APP,
    LIBRARY_SECRET,
    TENANTS,
    admin,
    assert_no_secret,
    connector_id,
    cyclr_config,
    run_cli,
    state_of,
)
from tests.sandbox_support import ScriptedBrowser, all_text_under


def _signed_in(cyclr_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ScriptedBrowser:
    browser = ScriptedBrowser()
    monkeypatch.setattr(webbrowser, "open", browser)
    result = run_cli("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert result.exit_code == 0, result.output
    assert not browser.errors
    return browser


def test_three_tenants_are_created_signed_in_and_then_up_to_date(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = run_cli("plan")
    assert plan.exit_code == 0 and "Plan: 7 to create" in plan.output  # the partner, 3 accounts, 3 installations
    browser = _signed_in(cyclr_dir, monkeypatch)
    assert len(browser.opened) == 3
    state = state_of(cyclr_dir)
    assert {a for a in state if a.startswith("account.")} == {f"account.{t}" for t in TENANTS}
    assert all(state[f"installation.{t}.ado-main"]["account_connector"]["authenticated"] for t in TENANTS)
    assert cyclr_sandbox.cyclr.accounts["acme"]["Name"] == "Acme Ltd"
    assert "No changes" in run_cli("plan").output
    shown = json.loads(run_cli("state", "show", "installation.acme.ado-main", "--format", "json").output)
    assert shown["platform"] == "cyclr" and shown["account_id"] == "acme" and shown["authenticated"] is True
    assert shown["granted_scopes"] == "held by the platform" and shown["connector_id"] == "310"
    assert shown["authentication_id"] == "31" and shown["status"] == "healthy"
    assert_no_secret(all_text_under(cyclr_dir), cyclr_sandbox)


def test_deferred_sign_ins_are_completed_by_authorize(cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    deferred = run_cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.output
    assert len(cyclr_sandbox.cyclr.account_connectors) == 3  # installed; only the sign-in waits
    again = run_cli("plan")
    assert "sign-in due since" in again.output and "No changes" in again.output  # as a deferred authorization
    assert_no_secret(deferred.output + again.output + all_text_under(cyclr_dir), cyclr_sandbox)
    assert "connectorauth" not in all_text_under(cyclr_dir)  # no link with a one-use token is kept
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    done = run_cli("authorize", "installation.acme.*", "--auth-mode", "browser", "--auth-timeout", "30")
    assert done.exit_code == 0, done.output
    assert state_of(cyclr_dir)["installation.acme.ado-main"]["status"] == "authorized"
    assert state_of(cyclr_dir)["installation.globex.ado-main"]["status"] == "pending_authorization"


def test_a_declined_sign_in_exits_1_and_stays_due(cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser(approve=False))
    declined = run_cli("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert declined.exit_code == 1
    assert state_of(cyclr_dir)["installation.acme.ado-main"]["account_connector"]["authenticated"] is False
    plan = run_cli("plan")
    assert "sign-in not completed" in plan.output and "1 to reauthorize" in plan.output


def test_drift_on_the_platform_is_planned_back(cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _signed_in(cyclr_dir, monkeypatch)
    acme, globex, initech = (connector_id(cyclr_dir, t) for t in TENANTS)
    admin(cyclr_sandbox, f"cyclr/account-connectors/{acme}/deauthenticate")
    admin(cyclr_sandbox, f"cyclr/account-connectors/{globex}/delete")
    admin(cyclr_sandbox, f"cyclr/account-connectors/{initech}/properties", {"Name": "Organization", "Value": "edited"})
    assert "No changes" in run_cli("plan").output  # offline: state does not know yet
    refreshed = run_cli("plan", "--refresh", "--format", "json")
    actions = {c["address"]: c["action"] for c in json.loads(refreshed.output)["changes"]}
    assert actions["installation.acme.ado-main"] == "reauthorize"
    assert actions["installation.globex.ado-main"] == "create"
    assert actions["installation.initech.ado-main"] == "update"
    assert _signed_in_again(cyclr_dir, monkeypatch, cyclr_sandbox) == {"acme": True, "globex": True, "initech": True}
    props = cyclr_sandbox.cyclr.account_connectors[int(initech)].properties
    assert props["Organization"] == "initech-org"
    assert "No changes" in run_cli("plan", "--refresh").output


def _signed_in_again(cyclr_dir: Path, monkeypatch: pytest.MonkeyPatch, cyclr_sandbox: SandboxServer) -> dict[str, bool]:
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    result = run_cli("apply", "--refresh", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert result.exit_code == 0, result.output
    return {t: state_of(cyclr_dir)[f"installation.{t}.ado-main"]["account_connector"]["authenticated"] for t in TENANTS}


def test_paste_mode_shows_the_link_once_and_waits_for_the_platform(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> None:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    command = [sys.executable, "-m", "reconciler", "-C", ".", "apply", "--auto-approve", "--auth-mode", "paste"]
    env = {**os.environ, **ENV}
    with subprocess.Popen(command, cwd=cyclr_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "/connectorauth/" in line:
                answer_consent(line.strip(), approve=True)
                break
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + err
    assert state_of(cyclr_dir)["installation.acme.ado-main"]["account_connector"]["authenticated"] is True
    links = [line for line in seen + err.splitlines() if "connectorauth" in line]
    assert len(links) == 1  # the one place a sign-in token is shown
    assert "connectorauth" not in out + all_text_under(cyclr_dir)
    assert_no_secret(out + all_text_under(cyclr_dir), cyclr_sandbox)


EXISTING = {
    "id": "Globex Corp 01", "name": "Globex Corp", "timezone": "Europe/London",
    "connectors": [
        {"connector": "Microsoft Azure DevOps", "name": "ADO Main", "authentication_id": 31, "authenticated": True,
         "properties": {"Organization": "globex-org", "Project": "Ops", "Scopes": "vso.work_full vso.code",
                        "ClientId": "33333333-4444-4555-8666-777777777777", "ClientSecret": "globex-own-secret-5e2a9c-UNIQUE"}},
        {"connector": "Slack", "name": "Chat", "authentication_id": 41, "authenticated": True,
         "properties": {"Channel": "#ops"}},
    ],
}


def test_an_existing_account_is_imported_and_then_up_to_date(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> None:
    """A pre-existing account with two installs: generated YAML (secrets by reference), recorded as it is, and the
    next plan is "No changes" with no sign-in; the connector's secret is in no output or file."""
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ()).replace("tenants:\n", ""))
    (cyclr_dir / "reconciler.yaml").write_text(  # no partner yet: import declares the one both tenants need
        (cyclr_dir / "reconciler.yaml").read_text().replace("  microsoft-azure-devops: {auth: entra-id, tenant_id: organizations}\n", "").replace("partners:\n", "")
    )
    admin(cyclr_sandbox, "cyclr/accounts", EXISTING)
    admin(cyclr_sandbox, "cyclr/accounts", {"id": "initech", "name": "Initech", "connectors": [
        {"connector": "Microsoft Azure DevOps", "name": "ADO", "authentication_id": 31, "authenticated": True,
         "properties": {"Organization": "initech", "Project": "Ops", "Scopes": "vso.work_full"}}]})
    dry = run_cli("import", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "globex-corp" in dry.output and not (cyclr_dir / "tenants").exists() and not (cyclr_dir / "state").exists()
    done = run_cli("import", "--write", "tenants")
    assert done.exit_code == 0, done.output
    written = (cyclr_dir / "tenants" / "globex-corp.yaml").read_text()
    assert "${env:GLOBEX_CORP_ADO_MAIN_CLIENT_SECRET}" in written and "id: Globex Corp 01" in written
    assert "GLOBEX_CORP_ADO_MAIN_CLIENT_SECRET" in done.output and "- tenants/*.yaml" in done.output
    with (cyclr_dir / "reconciler.yaml").open("a") as root:  # the line import asked for
        root.write("include: [tenants/*.yaml]\n")
    state = state_of(cyclr_dir)
    assert set(state) >= {"account.globex-corp", "installation.globex-corp.ado-main", "installation.globex-corp.chat",
                          "account.initech", "installation.initech.ado"}
    assert (cyclr_dir / "tenants" / "_partners.yaml").exists()
    plan = run_cli("plan")
    assert plan.exit_code == 0 and "No changes" in plan.output, plan.output
    assert_no_secret(dry.output + done.output + plan.output + all_text_under(cyclr_dir), cyclr_sandbox)
    assert "globex-own-secret-5e2a9c-UNIQUE" not in dry.output + done.output + all_text_under(cyclr_dir)
    again = run_cli("import", "--write", "tenants")
    assert again.exit_code == 0 and "nothing to adopt" in again.output


def test_import_names_the_include_line_and_adopts_a_declared_tenant(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> None:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    admin(cyclr_sandbox, "cyclr/accounts", {**EXISTING, "id": "acme", "connectors": []})
    admin(cyclr_sandbox, "cyclr/accounts", {**EXISTING, "id": "other"})
    refused = run_cli("plan")
    assert refused.exit_code == 1 and "reconciler import --tenant acme" in refused.output  # never a silent takeover
    done = run_cli("import", "--tenant", "acme")
    assert done.exit_code == 0, done.output
    assert "account.acme: adopted" in done.output and "other" not in done.output
    plan = run_cli("plan")
    assert "Plan: 2 to create, 1 to update" in plan.output  # partner + install; the account's name as declared


def test_a_tenant_moved_to_another_account_is_installed_there(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> None:
    """Another account id: a new account, the installation installed there and removed from the old one; the old
    account itself is kept (deleting one takes --allow-delete)."""
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    old = connector_id(cyclr_dir, "acme")
    moved = cyclr_config(cyclr_sandbox.url, ("acme",)).replace("account: {name:", "account: {id: acme-2, name:")
    (cyclr_dir / "reconciler.yaml").write_text(moved)
    plan = json.loads(run_cli("plan", "--format", "json").output)
    actions = {c["address"]: c["action"] for c in plan["changes"]}
    assert actions["account.acme"] == "reauthorize" and actions["installation.acme.ado-main"] == "reauthorize"
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    assert set(cyclr_sandbox.cyclr.accounts) == {"acme", "acme-2"}
    installed = cyclr_sandbox.cyclr.account_connectors
    assert int(old) not in installed and [c.account for c in installed.values()] == ["acme-2"]
    assert "No changes" in run_cli("plan").output


def test_auth_via_reconciler_hands_our_tokens_to_the_platform(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler runs the OAuth flow itself, records the sealed tokens and the granted scopes, and puts them
    on the account connector (AuthValue); a refresh that rotates them hands the new ones over too."""
    from tests.sandbox_support import ENTRA_ID, ENTRA_SECRET, free_port

    port = free_port()
    url = cyclr_sandbox.url
    cyclr_sandbox.provider.register_app({"client_id": ENTRA_ID, "client_secret": ENTRA_SECRET, "flavour": "entra-id",
                                         "redirect_uris": [f"http://127.0.0.1:{port}/callback"]})
    cyclr_sandbox.provider.register_org("acme-org", ["Platform"])
    own = (f"  own:\n    connector: microsoft-azure-devops\n    auth: entra-id\n    tenant_id: organizations\n"
           f"    client_id: {ENTRA_ID}\n    client_secret: ${{env:OWN_SECRET}}\n    auth_via: reconciler\n"
           f"    redirect_uri: http://127.0.0.1:{port}/callback\n    endpoints:\n"
           f"      authorize_url: {url}/organizations/oauth2/v2.0/authorize\n"
           f"      token_url: {url}/organizations/oauth2/v2.0/token\n      api_url: {url}\n")
    config = cyclr_config(url, ("acme",)).replace("tenants:\n", own + "tenants:\n", 1)
    config = config.replace("microsoft-azure-devops: {auth: entra-id, tenant_id: organizations}", "")
    (cyclr_dir / "reconciler.yaml").write_text(config.replace("partners:\n\n", "partners:\n"))
    monkeypatch.setenv("OWN_SECRET", ENTRA_SECRET)
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    applied = run_cli("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert applied.exit_code == 0, applied.output
    installed = cyclr_sandbox.cyclr.account_connectors[int(connector_id(cyclr_dir, "acme"))]
    first = json.loads(installed.auth_value or "{}")
    assert installed.authenticated and first["AccessToken"] and first["RefreshToken"]
    shown = json.loads(run_cli("state", "show", "installation.acme.ado-main", "--format", "json").output)
    assert shown["auth_via"] == "reconciler" and shown["granted_scopes"] == ["vso.code", "vso.work_full"]
    assert run_cli("refresh", "--window", "100000").exit_code == 0
    second = json.loads(installed.auth_value or "{}")
    assert second["AccessToken"] != first["AccessToken"]  # the rotated tokens are the platform's too
    assert "No changes" in run_cli("plan").output
    cyclr_sandbox.provider.revoke(client_id=ENTRA_ID)  # the platform still says authenticated: the grant is gone
    run_cli("refresh", "--window", "100000")
    assert state_of(cyclr_dir)["installation.acme.ado-main"].get("drift") in ("revoked", "rejected")
    assert "1 to reauthorize" in run_cli("plan").output


def test_a_plan_without_the_platform_secret_is_made_offline(cyclr_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pull request the platform's secret is not there: the plan is made, and says what it did not check."""
    monkeypatch.delenv("CYCLR_CLIENT_SECRET")
    plan = run_cli("plan")
    assert plan.exit_code == 0 and "Plan: 7 to create" in plan.output
    assert "${env:CYCLR_CLIENT_SECRET}" in plan.output and "not checked" in plan.output


def test_a_new_scope_signs_in_once_and_then_is_up_to_date(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    _signed_in(cyclr_dir, monkeypatch)
    before = connector_id(cyclr_dir, "acme")
    narrower = cyclr_config(cyclr_sandbox.url, ("acme",)).replace("scopes: [vso.work_full, vso.code]", "scopes: [vso.work_full]")
    (cyclr_dir / "reconciler.yaml").write_text(narrower)
    assert "1 to reauthorize" in run_cli("plan").output
    _signed_in(cyclr_dir, monkeypatch)
    assert connector_id(cyclr_dir, "acme") == before  # the same account connector, signed in again
    assert cyclr_sandbox.cyclr.account_connectors[int(before)].properties["Scopes"] == "vso.work_full"
    assert state_of(cyclr_dir)["installation.acme.ado-main"]["scopes"] == ["vso.work_full"]
    assert "No changes" in run_cli("plan").output


def test_a_change_while_a_sign_in_is_due_keeps_it_due_and_completable(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    moved = cyclr_config(cyclr_sandbox.url, ("acme",)).replace("project: Platform", "project: Web")
    (cyclr_dir / "reconciler.yaml").write_text(moved)
    plan = json.loads(run_cli("plan", "--format", "json").output)
    change = next(c for c in plan["changes"] if c["address"] == "installation.acme.ado-main")
    assert change["action"] == "update" and change["pending"] is True
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    done = run_cli("authorize", "--auth-mode", "browser", "--auth-timeout", "30")
    assert done.exit_code == 0, done.output
    assert "No changes" in run_cli("plan").output
def test_a_deferred_re_consent_stays_due_and_a_connector_switch_installs_anew(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account declared without a time zone is not drifted by the platform's default; new scopes deferred stay
    due after a refresh (the account connector still holds its earlier grant); another connector under the same
    name replaces the account connector, signed in (Slack: through the library's app)."""
    config = cyclr_config(cyclr_sandbox.url, ("acme",)).replace(", timezone: Europe/London", "")
    (cyclr_dir / "reconciler.yaml").write_text(config)
    _signed_in(cyclr_dir, monkeypatch)
    assert "No changes" in run_cli("plan", "--refresh").output
    (cyclr_dir / "reconciler.yaml").write_text(config.replace("[vso.work_full, vso.code]", "[vso.work_full]"))
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    for flags in ((), ("--refresh",)):  # the record holds the new scopes: the sign-in is due for them
        changes = json.loads(run_cli("plan", *flags, "--format", "json").output)["changes"]
        assert [(c["action"], c["pending"]) for c in changes if c["kind"] == "installation"] == [("noop", True)]
    slack = config.replace("connector: microsoft-azure-devops", "connector: slack").replace(
        "parameters: {organization: acme-org, project: Platform}", "parameters: {Channel: '#ops'}"
    ).replace("        scopes: [vso.work_full, vso.code]\n", "")
    (cyclr_dir / "reconciler.yaml").write_text(slack)
    admin(cyclr_sandbox, "cyclr/library", {"authentication_id": 41, "client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET})
    _signed_in(cyclr_dir, monkeypatch)
    installed = list(cyclr_sandbox.cyclr.by_account["acme"].values())
    assert [(c.connector["Name"], c.properties, c.authenticated) for c in installed] == [("Slack", {"Channel": "#ops"}, True)]
    assert "No changes" in run_cli("plan", "--refresh").output


def test_a_due_sign_in_whose_account_is_gone_is_installed_again(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sign-in deferred, then the account deleted in the console and a refresh: authorize says the account
    connector is gone (it used to crash), and apply creates the account and installs and signs in again."""
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    cyclr_sandbox.cyclr.delete_account("acme")  # a person deletes the account in the console
    assert run_cli("refresh").exit_code == 0
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    refused = run_cli("authorize", "--auth-mode", "browser", "--auth-timeout", "30")
    assert refused.exit_code == 1 and "its account connector is gone from the platform" in refused.output
    plan = json.loads(run_cli("plan", "--format", "json").output)
    assert {c["address"]: c["action"] for c in plan["changes"] if c["kind"] != "partner"} == {
        "account.acme": "create", "installation.acme.ado-main": "create"}
    _signed_in(cyclr_dir, monkeypatch)
    assert cyclr_sandbox.cyclr.accounts["acme"] and len(cyclr_sandbox.cyclr.by_account["acme"]) == 1


def test_an_account_gone_from_the_platform_is_forgotten_or_created_again(
    cyclr_dir: Path, cyclr_sandbox: SandboxServer
) -> None:
    """Deleted in the console: `plan --refresh` creates it again while its tenant is declared, and forgets it (no
    --allow-delete needed: nothing is left to delete) once the tenant is removed too."""
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme", "globex")))
    assert run_cli("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    cyclr_sandbox.cyclr.delete_account("acme")
    cyclr_sandbox.cyclr.delete_account("globex")
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    plan = json.loads(run_cli("plan", "--refresh", "--format", "json").output)
    actions = {c["address"]: c["action"] for c in plan["changes"] if c["action"] != "noop"}
    assert actions == {"account.acme": "create", "installation.acme.ado-main": "create",
                       "account.globex": "delete", "installation.globex.ado-main": "delete"}
    assert run_cli("apply", "--refresh", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    assert "account.globex" not in state_of(cyclr_dir) and set(cyclr_sandbox.cyclr.accounts) == {"acme"}
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme", "globex")))
    assert "account.globex will be created" in run_cli("plan").output
