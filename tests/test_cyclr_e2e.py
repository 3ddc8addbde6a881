"""The Cyclr platform through the CLI against the sandbox over real HTTP on 127.0.0.1: accounts and account
connectors created, sign-in through the platform (defer + authorize, browser, paste), drift found by a refresh
(deauthenticated, deleted, edited in the console) planned back, and no secret in any output or file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from tests.sandbox_support import ScriptedBrowser, all_text_under

PARTNER, PARTNER_SECRET = "partner-client", "cyclr-partner-secret-7d1e4b9a-UNIQUE"
LIBRARY_APP, LIBRARY_SECRET = "library-entra-app", "library-app-secret-2c8f5e1d-UNIQUE"
ENV = {"CYCLR_CLIENT_ID": PARTNER, "CYCLR_CLIENT_SECRET": PARTNER_SECRET}
TENANTS = ("acme", "globex", "initech")


def _config(url: str, tenants: tuple[str, ...] = TENANTS) -> str:
    blocks = "".join(
        f"  {t}:\n    account: {{name: {t.title()} Ltd, timezone: Europe/London}}\n    installations:\n"
        f"      ado-main:\n        connector: microsoft-azure-devops\n"
        f"        parameters: {{organization: {t}-org, project: Platform}}\n        scopes: [vso.work_full, vso.code]\n"
        for t in tenants
    )
    return f"""\
version: 1
platform:
  type: cyclr
  endpoints: {{api_url: "{url}", service_url: "{url}"}}
  client_id: ${{env:CYCLR_CLIENT_ID}}
  client_secret: ${{env:CYCLR_CLIENT_SECRET}}
partners:
  microsoft-azure-devops: {{auth: entra-id, tenant_id: organizations}}
tenants:
{blocks}"""


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        server.provider.register_app({"client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET, "flavour": "entra-id",
                                      "redirect_uris": [server.url + "/connector/callback"]})
        _admin(server, "cyclr/partner", {"client_id": PARTNER, "client_secret": PARTNER_SECRET})
        _admin(server, "cyclr/library", {"authentication_id": 31, "client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET})
        yield server


@pytest.fixture
def workdir(tmp_path: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "reconciler.yaml").write_text(_config(sandbox.url))
    monkeypatch.chdir(tmp_path)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def _admin(server: SandboxServer, route: str, body: object = None) -> Any:
    answer = httpx.post(f"{server.url}/_sandbox/{route}", json=body or {})
    assert answer.status_code < 300, answer.text
    return answer.json()


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["-C", ".", *args], catch_exceptions=False)


def _state(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "state" / "default.json").read_text())["resources"]


def _connector_id(workdir: Path, tenant: str) -> str:
    return str(_state(workdir)[f"installation.{tenant}.ado-main"]["account_connector"]["account_connector_id"])


def _secrets(sandbox: SandboxServer) -> list[str]:
    issued = httpx.get(f"{sandbox.url}/_sandbox/cyclr/issued").json()
    values = [v for group in (issued.values() if isinstance(issued, dict) else [issued]) for v in group]
    return [PARTNER_SECRET, LIBRARY_SECRET, *values]


def _assert_no_secret(text: str, sandbox: SandboxServer) -> None:
    for secret in _secrets(sandbox):
        assert secret not in text


def _signed_in(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> ScriptedBrowser:
    browser = ScriptedBrowser()
    monkeypatch.setattr(webbrowser, "open", browser)
    result = _run("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert result.exit_code == 0, result.output
    assert not browser.errors
    return browser


def test_three_tenants_are_created_signed_in_and_then_up_to_date(
    workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _run("plan")
    assert plan.exit_code == 0 and "Plan: 7 to create" in plan.output  # the partner, 3 accounts, 3 installations
    browser = _signed_in(workdir, monkeypatch)
    assert len(browser.opened) == 3
    state = _state(workdir)
    assert {a for a in state if a.startswith("account.")} == {f"account.{t}" for t in TENANTS}
    assert all(state[f"installation.{t}.ado-main"]["account_connector"]["authenticated"] for t in TENANTS)
    assert sandbox.cyclr.accounts["acme"]["Name"] == "Acme Ltd"
    assert "No changes" in _run("plan").output
    shown = json.loads(_run("state", "show", "installation.acme.ado-main", "--format", "json").output)
    assert shown["platform"] == "cyclr" and shown["account_id"] == "acme" and shown["authenticated"] is True
    assert shown["granted_scopes"] == "held by the platform" and shown["connector_id"] == "310"
    assert shown["authentication_id"] == "31" and shown["status"] == "healthy"
    _assert_no_secret(all_text_under(workdir), sandbox)


def test_deferred_sign_ins_are_completed_by_authorize(workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    deferred = _run("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.output
    assert len(sandbox.cyclr.account_connectors) == 3  # installed; only the sign-in waits
    again = _run("plan")
    assert "sign-in due since" in again.output and "No changes" in again.output  # as a deferred authorization
    _assert_no_secret(deferred.output + again.output + all_text_under(workdir), sandbox)
    assert "connectorauth" not in all_text_under(workdir)  # no link with a one-use token is kept
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    done = _run("authorize", "installation.acme.*", "--auth-mode", "browser", "--auth-timeout", "30")
    assert done.exit_code == 0, done.output
    assert _state(workdir)["installation.acme.ado-main"]["status"] == "authorized"
    assert _state(workdir)["installation.globex.ado-main"]["status"] == "pending_authorization"


def test_a_declined_sign_in_exits_1_and_stays_due(workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url, ("acme",)))
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser(approve=False))
    declined = _run("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert declined.exit_code == 1
    assert _state(workdir)["installation.acme.ado-main"]["account_connector"]["authenticated"] is False
    plan = _run("plan")
    assert "sign-in not completed" in plan.output and "1 to reauthorize" in plan.output


def test_drift_on_the_platform_is_planned_back(workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _signed_in(workdir, monkeypatch)
    acme, globex, initech = (_connector_id(workdir, t) for t in TENANTS)
    _admin(sandbox, f"cyclr/account-connectors/{acme}/deauthenticate")
    _admin(sandbox, f"cyclr/account-connectors/{globex}/delete")
    _admin(sandbox, f"cyclr/account-connectors/{initech}/properties", {"Name": "Organization", "Value": "edited"})
    assert "No changes" in _run("plan").output  # offline: state does not know yet
    refreshed = _run("plan", "--refresh", "--format", "json")
    actions = {c["address"]: c["action"] for c in json.loads(refreshed.output)["changes"]}
    assert actions["installation.acme.ado-main"] == "reauthorize"
    assert actions["installation.globex.ado-main"] == "create"
    assert actions["installation.initech.ado-main"] == "update"
    assert _signed_in_again(workdir, monkeypatch, sandbox) == {"acme": True, "globex": True, "initech": True}
    props = sandbox.cyclr.account_connectors[int(initech)].properties
    assert props["Organization"] == "initech-org"
    assert "No changes" in _run("plan", "--refresh").output


def _signed_in_again(workdir: Path, monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer) -> dict[str, bool]:
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    result = _run("apply", "--refresh", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert result.exit_code == 0, result.output
    return {t: _state(workdir)[f"installation.{t}.ado-main"]["account_connector"]["authenticated"] for t in TENANTS}


def test_paste_mode_shows_the_link_once_and_waits_for_the_platform(workdir: Path, sandbox: SandboxServer) -> None:
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url, ("acme",)))
    command = [sys.executable, "-m", "reconciler", "-C", ".", "apply", "--auto-approve", "--auth-mode", "paste"]
    env = {**os.environ, **ENV}
    with subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "/connectorauth/" in line:
                answer_consent(line.strip(), approve=True)
                break
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + err
    assert _state(workdir)["installation.acme.ado-main"]["account_connector"]["authenticated"] is True
    links = [line for line in seen + err.splitlines() if "connectorauth" in line]
    assert len(links) == 1  # the one place a sign-in token is shown
    assert "connectorauth" not in out + all_text_under(workdir)
    _assert_no_secret(out + all_text_under(workdir), sandbox)


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


def test_an_existing_account_is_imported_and_then_up_to_date(workdir: Path, sandbox: SandboxServer) -> None:
    """A pre-existing account with two installs: generated YAML (secrets by reference), recorded as it is, and the
    next plan is "No changes" with no sign-in; the connector's secret is in no output or file."""
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url, ()).replace("tenants:\n", ""))
    _admin(sandbox, "cyclr/accounts", EXISTING)
    dry = _run("import", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "globex-corp" in dry.output and not (workdir / "tenants").exists() and not (workdir / "state").exists()
    done = _run("import", "--write", "tenants")
    assert done.exit_code == 0, done.output
    written = (workdir / "tenants" / "globex-corp.yaml").read_text()
    assert "${env:GLOBEX_CORP_ADO_MAIN_CLIENT_SECRET}" in written and "id: Globex Corp 01" in written
    assert "GLOBEX_CORP_ADO_MAIN_CLIENT_SECRET" in done.output and "- tenants/*.yaml" in done.output
    with (workdir / "reconciler.yaml").open("a") as root:  # the line import asked for
        root.write("include: [tenants/*.yaml]\n")
    state = _state(workdir)
    assert set(state) >= {"account.globex-corp", "installation.globex-corp.ado-main", "installation.globex-corp.chat"}
    plan = _run("plan")
    assert plan.exit_code == 0 and "No changes" in plan.output, plan.output
    _assert_no_secret(dry.output + done.output + plan.output + all_text_under(workdir), sandbox)
    assert "globex-own-secret-5e2a9c-UNIQUE" not in dry.output + done.output + all_text_under(workdir)
    again = _run("import", "--write", "tenants")
    assert again.exit_code == 0 and "nothing to adopt" in again.output


def test_import_names_the_include_line_and_adopts_a_declared_tenant(workdir: Path, sandbox: SandboxServer) -> None:
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url, ("acme",)))
    _admin(sandbox, "cyclr/accounts", {**EXISTING, "id": "acme", "connectors": []})
    _admin(sandbox, "cyclr/accounts", {**EXISTING, "id": "other"})
    done = _run("import", "--tenant", "acme")
    assert done.exit_code == 0, done.output
    assert "account.acme: adopted" in done.output and "other" not in done.output
    plan = _run("plan")
    assert "Plan: 2 to create, 1 to update" in plan.output  # partner + install; the account's name as declared


def test_a_deferred_re_consent_stays_due_and_a_connector_switch_installs_anew(
    workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account declared without a time zone is not drifted by the platform's default; new scopes deferred stay
    due after a refresh (the account connector still holds its earlier grant); another connector under the same
    name replaces the account connector, signed in (Slack: through the library's app)."""
    config = _config(sandbox.url, ("acme",)).replace(", timezone: Europe/London", "")
    (workdir / "reconciler.yaml").write_text(config)
    _signed_in(workdir, monkeypatch)
    assert "No changes" in _run("plan", "--refresh").output
    (workdir / "reconciler.yaml").write_text(config.replace("[vso.work_full, vso.code]", "[vso.work_full]"))
    assert _run("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    for flags in ((), ("--refresh",)):  # the record holds the new scopes: the sign-in is due for them
        changes = json.loads(_run("plan", *flags, "--format", "json").output)["changes"]
        assert [(c["action"], c["pending"]) for c in changes if c["kind"] == "installation"] == [("noop", True)]
    slack = config.replace("connector: microsoft-azure-devops", "connector: slack").replace(
        "parameters: {organization: acme-org, project: Platform}", "parameters: {Channel: '#ops'}"
    ).replace("        scopes: [vso.work_full, vso.code]\n", "")
    (workdir / "reconciler.yaml").write_text(slack)
    _admin(sandbox, "cyclr/library", {"authentication_id": 41, "client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET})
    _signed_in(workdir, monkeypatch)
    installed = list(sandbox.cyclr.by_account["acme"].values())
    assert [(c.connector["Name"], c.properties, c.authenticated) for c in installed] == [("Slack", {"Channel": "#ops"}, True)]
    assert "No changes" in _run("plan", "--refresh").output


def test_a_due_sign_in_whose_account_is_gone_is_installed_again(
    workdir: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sign-in deferred, then the account deleted in the console and a refresh: authorize says the account
    connector is gone (it used to crash), and apply creates the account and installs and signs in again."""
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url, ("acme",)))
    assert _run("apply", "--auto-approve", "--auth-mode", "defer").exit_code == 3
    sandbox.cyclr.delete_account("acme")  # a person deletes the account in the console
    assert _run("refresh").exit_code == 0
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    refused = _run("authorize", "--auth-mode", "browser", "--auth-timeout", "30")
    assert refused.exit_code == 1 and "its account connector is gone from the platform" in refused.output
    plan = json.loads(_run("plan", "--format", "json").output)
    assert {c["address"]: c["action"] for c in plan["changes"] if c["kind"] != "partner"} == {
        "account.acme": "create", "installation.acme.ado-main": "create"}
    _signed_in(workdir, monkeypatch)
    assert sandbox.cyclr.accounts["acme"] and len(sandbox.cyclr.by_account["acme"]) == 1
