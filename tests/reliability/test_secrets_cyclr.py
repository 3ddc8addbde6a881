"""Secrets on the Cyclr platform never leave their home either: the partner's API secret, bearer tokens, one-use
sign-in tokens, connector client secrets (pushed as ClientSecret properties), and the tokens handed to the platform
as AuthValue (`auth_via: reconciler`).

One run against the sandbox over real HTTP drives every command that touches the platform — plan in every format,
a saved plan and `show`, apply deferred then in the browser, `authorize`, `state list/show`, `refresh`,
`plan --refresh` and `apply --refresh` after drift in the console, a rejected partner token (expired bearers), a
Cyclr error that echoes the request, and `import` of an account whose connector has a secret of its own. Then every
artifact (each command's output, every log record, every file under the configuration directory and the cache) is
searched for every secret as plain text, URL-encoded and base64 (see `test_secrets.encodings`).
"""

from __future__ import annotations

import logging
import uuid
import webbrowser
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.sandbox import SandboxServer
from tests.conftest import run
from tests.reliability.test_secrets import ENCODINGS, _SeparateBrowser, find_secrets
from tests.sandbox_support import ENTRA_ID, free_port

LIBRARY_APP = "44444444-5555-4666-8777-888888888888"


def _config(url: str, port: int) -> str:
    return f"""\
version: 1
platform:
  type: cyclr
  endpoints: {{api_url: "{url}", service_url: "{url}"}}
  client_id: partner-client
  client_secret: ${{env:CYCLR_SECRET}}
partners:
  library: {{connector: microsoft-azure-devops, auth: entra-id, tenant_id: organizations, default: true}}
  own:
    connector: microsoft-azure-devops
    auth: entra-id
    tenant_id: organizations
    client_id: {ENTRA_ID}
    client_secret: ${{env:OWN_SECRET}}
    redirect_uri: http://127.0.0.1:{port}/callback
    auth_via: reconciler
    endpoints:
      authorize_url: {url}/organizations/oauth2/v2.0/authorize
      token_url: {url}/organizations/oauth2/v2.0/token
      api_url: {url}
tenants:
  acme:
    installations:
      ado: {{connector: microsoft-azure-devops, parameters: {{organization: acme-org, project: Platform}}, scopes: [vso.work_full]}}
      own: {{partner: own, parameters: {{organization: acme-org, project: Platform}}, scopes: [vso.work_full]}}
  globex:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {{organization: globex, project: Operations}}
        scopes: [vso.work_full]
        credentials: {{client_id: {LIBRARY_APP}, client_secret: "${{env:GLOBEX_SECRET}}"}}
      chat: {{connector: slack, parameters: {{channel: "#ops"}}}}
"""


def _admin(sandbox: SandboxServer, route: str, body: object = None) -> Any:
    answer = httpx.post(f"{sandbox.url}/_sandbox/{route}", json=body or {})
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_no_cyclr_secret_in_any_output_or_file(  # type: ignore[no-untyped-def]
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, figures
) -> None:
    figures.goal("secrets-cyclr", found=0)
    unique = uuid.uuid4().hex[:10]
    secrets = {
        "partner API secret": f"rly-cyclr/{unique}+Secret=value:1",
        "library app secret": f"rly-library/{unique}+Secret=value:2",
        "own app secret": f"rly-own/{unique}+Secret=value:3",
        "globex connector secret": f"rly-globex/{unique}+Secret=value:4",
        "imported connector secret": f"rly-imported/{unique}+Secret=value:5",
    }
    port = free_port()
    provider = sandbox.provider
    for client_id, secret, redirect in (
        (LIBRARY_APP, secrets["library app secret"], sandbox.url + "/connector/callback"),
        (ENTRA_ID, secrets["own app secret"], f"http://127.0.0.1:{port}/callback"),
    ):
        provider.register_app({"client_id": client_id, "client_secret": secret, "flavour": "entra-id",
                               "redirect_uris": [redirect, sandbox.url + "/connector/callback"]})
    provider.register_org("acme-org", ["Platform"])
    provider.register_org("globex", ["Operations"])
    _admin(sandbox, "cyclr/partner", {"client_id": "partner-client", "client_secret": secrets["partner API secret"]})
    for auth in (31, 41):
        _admin(sandbox, "cyclr/library", {"authentication_id": auth, "client_id": LIBRARY_APP,
                                          "client_secret": secrets["library app secret"]})
    env = {"CYCLR_SECRET": secrets["partner API secret"], "OWN_SECRET": secrets["own app secret"],
           "GLOBEX_SECRET": secrets["library app secret"], "RECONCILER_CACHE_DIR": str(tmp_path / "cache")}
    config = tmp_path / "config"
    config.mkdir()
    (config / "reconciler.yaml").write_text(_config(sandbox.url, port))
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

    browser_mode = ["--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"]
    cli("validate")
    for fmt in ("text", "json", "markdown"):
        cli("plan", "--format", fmt)
    cli("plan", "--out", "plan.bin")
    cli("show", "plan.bin", "--format", "json")
    cli("apply", "--auto-approve", "--auth-mode", "defer", expect=3)
    cli("plan", "--format", "markdown")
    cli("authorize", "--auth-mode", "browser", "--auth-timeout", "20")
    cli("state", "list", "--json")
    cli("state", "show", "installation.acme.own", "--json")
    cli("state", "show", "installation.globex.ado", "--json")
    acme = str(_admin(sandbox, "cyclr/accounts", {"id": "scratch", "name": "Scratch"})["accounts"][0]["Id"])
    assert acme == "scratch"
    installed = sandbox.cyclr.account_connectors
    for connector in list(installed.values())[:2]:
        _admin(sandbox, f"cyclr/account-connectors/{connector.id}/deauthenticate")
    cli("refresh")
    cli("plan", "--refresh", "--format", "json")
    cli("apply", "--refresh", *browser_mode)
    _admin(sandbox, "cyclr/expire-bearers")
    cli("plan", "--refresh")
    _admin(sandbox, "faults", {"endpoint": "cyclr", "faults": [
        {"status": 400, "message": f"cannot use {secrets['globex connector secret']}"}]})
    env["GLOBEX_SECRET"] = secrets["globex connector secret"]  # rotated in git: the property is set again
    cli("apply", *browser_mode, expect=(0, 1))
    cli("apply", *browser_mode)
    _admin(sandbox, "cyclr/accounts", {"id": "initech", "name": "Initech", "connectors": [
        {"connector": "Microsoft Azure DevOps", "name": "ADO", "authentication_id": 31, "authenticated": True,
         "properties": {"Organization": "initech", "Project": "Ops", "Scopes": "vso.work_full", "ClientId": LIBRARY_APP,
                        "ClientSecret": secrets["imported connector secret"]}}]})
    cli("import", "--dry-run")
    cli("import", "--write", "tenants")

    issued = httpx.get(f"{sandbox.url}/_sandbox/cyclr/issued").json()
    cyclr_issued = [v for group in (issued.values() if isinstance(issued, dict) else [issued]) for v in group]
    provider_issued = list(dict.fromkeys(provider.issued))
    assert len(cyclr_issued) >= 5 and len(provider_issued) >= 5 and not browser.errors
    secrets |= {f"cyclr issued {n}": v for n, v in enumerate(cyclr_issued)}
    secrets |= {f"provider issued {n}": v for n, v in enumerate(provider_issued)}
    key_file = config / "state" / "default.key"
    secrets["state key"] = key_file.read_text().strip()
    files = {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p != key_file}
    logs = {"log records": "\n".join(r.getMessage() + repr(r.args) for r in caplog.records).encode()}
    artifacts = {**outputs, **files, **logs}
    assert any(name.startswith("config/state/default.credentials/") for name in files)  # auth_via reconciler's
    assert (config / "tenants" / "initech.yaml").exists()
    hits = find_secrets(secrets, artifacts)
    figures.set("secrets-cyclr", secrets=len(secrets), encodings=len(ENCODINGS), artifacts=len(artifacts))
    figures.add("secrets-cyclr", found=len(hits))
    assert hits == [], hits
