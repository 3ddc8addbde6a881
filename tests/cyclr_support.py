"""Support for tests of the Cyclr platform against the sandbox over real HTTP: the sandbox with the partner's API
credentials and the Application Connector Library's app set, a configuration directory of three tenants, and the
CLI run in-process. Registered as a pytest plugin by tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.sandbox import SandboxServer

PARTNER, PARTNER_SECRET = "partner-client", "cyclr-partner-secret-7d1e4b9a-UNIQUE"
LIBRARY_APP, LIBRARY_SECRET = "library-entra-app", "library-app-secret-2c8f5e1d-UNIQUE"
ENV = {"CYCLR_CLIENT_ID": PARTNER, "CYCLR_CLIENT_SECRET": PARTNER_SECRET}
TENANTS = ("acme", "globex", "initech")


def cyclr_config(url: str, tenants: tuple[str, ...] = TENANTS) -> str:
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
def cyclr_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        server.provider.register_app({"client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET, "flavour": "entra-id",
                                      "redirect_uris": [server.url + "/connector/callback"]})
        admin(server, "cyclr/partner", {"client_id": PARTNER, "client_secret": PARTNER_SECRET})
        admin(server, "cyclr/library", {"authentication_id": 31, "client_id": LIBRARY_APP, "client_secret": LIBRARY_SECRET})
        yield server


@pytest.fixture
def cyclr_dir(tmp_path: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url))
    monkeypatch.chdir(tmp_path)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def admin(server: SandboxServer, route: str, body: object = None) -> Any:
    answer = httpx.post(f"{server.url}/_sandbox/{route}", json=body or {})
    assert answer.status_code < 300, answer.text
    return answer.json()


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["-C", ".", *args], catch_exceptions=False)


def state_of(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "state" / "default.json").read_text())["resources"]


def connector_id(workdir: Path, tenant: str) -> str:
    return str(state_of(workdir)[f"installation.{tenant}.ado-main"]["account_connector"]["account_connector_id"])


def issued_secrets(sandbox: SandboxServer) -> list[str]:
    issued = httpx.get(f"{sandbox.url}/_sandbox/cyclr/issued").json()
    values = [v for group in (issued.values() if isinstance(issued, dict) else [issued]) for v in group]
    return [PARTNER_SECRET, LIBRARY_SECRET, *values]


def assert_no_secret(text: str, sandbox: SandboxServer) -> None:
    for secret in issued_secrets(sandbox):
        assert secret not in text


