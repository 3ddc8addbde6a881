"""Support for end-to-end tests against the sandbox provider over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from reconciler.state.model import PartnerRecord

LEGACY_ID = "11111111-2222-4333-8444-legacyapp001"
ENTRA_ID = "22222222-3333-4444-8555-entraapp0001"
LEGACY_SECRET = "legacy-secret-3c1d9e7a5b-UNIQUE"
ENTRA_SECRET = "entra-secret-8f2b6d4c1a-UNIQUE"
ENV = {"LEGACY_SECRET": LEGACY_SECRET, "ENTRA_SECRET": ENTRA_SECRET}
APPLY = ["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"]


# A partner record as state holds it, for backend tests.
PARTNER = PartnerRecord(
    name="ado",
    connector="microsoft-azure-devops",
    auth="azure-devops-oauth",
    client_id="app",
    client_secret_ref="${env:S}",
    redirect_uri="https://x.example/connector/callback",
    authorize_url="https://a.example/authorize",
    token_url="https://a.example/token",
    api_url="https://dev.azure.com",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def partners_yaml(sandbox_url: str, redirect_uri: str | None) -> str:
    """The `partners:` section: the legacy and the Entra partner at the sandbox (`redirect_uri` None: left out)."""
    redirect = f"    redirect_uri: {redirect_uri}\n" if redirect_uri else ""
    return f"""\
partners:
  legacy:
    connector: microsoft-azure-devops
    auth: azure-devops-oauth
    client_id: {LEGACY_ID}
    client_secret: ${{env:LEGACY_SECRET}}
{redirect}    endpoints:
      authorize_url: {sandbox_url}/oauth2/authorize
      token_url: {sandbox_url}/oauth2/token
      api_url: {sandbox_url}
  entra:
    connector: microsoft-azure-devops
    auth: entra-id
    tenant_id: organizations
    client_id: {ENTRA_ID}
    client_secret: ${{env:ENTRA_SECRET}}
{redirect}    endpoints:
      authorize_url: {sandbox_url}/organizations/oauth2/v2.0/authorize
      token_url: {sandbox_url}/organizations/oauth2/v2.0/token
      api_url: {sandbox_url}
"""


def config_text(sandbox_url: str, callback_port: int, installations: str, *, flavour: str = "legacy") -> str:
    """A reconciler.yaml with both partners pointed at the sandbox and `installations` (YAML, tenant level)."""
    partners = partners_yaml(sandbox_url, f"http://127.0.0.1:{callback_port}/callback")
    return f"version: 1\nplatform: {{service_domain: app-h.cyclr.com}}\n{partners}tenants:\n{installations}"


def installation(tenant: str, name: str, partner: str, organization: str, project: str, scopes: list[str]) -> str:
    return (
        f"  {tenant}:\n    installations:\n      {name}:\n        partner: {partner}\n"
        f"        parameters: {{organization: {organization}, project: {project}}}\n"
        f"        scopes: [{', '.join(scopes)}]\n"
    )


def register(server: SandboxServer, callback_port: int) -> None:
    provider = server.provider
    redirect = f"http://127.0.0.1:{callback_port}/callback"
    provider.register_app(
        {"client_id": LEGACY_ID, "client_secret": LEGACY_SECRET, "flavour": "azure-devops-oauth", "redirect_uris": [redirect]}
    )
    provider.register_app(
        {"client_id": ENTRA_ID, "client_secret": ENTRA_SECRET, "flavour": "entra-id", "redirect_uris": [redirect]}
    )
    provider.register_org("acme-org", ["Platform", "Web"])
    provider.register_org("globex", ["Operations"])


class ScriptedBrowser:
    """Stands in for `webbrowser.open`: answers the sandbox consent page like a user, counting what it did."""

    def __init__(self, approve: bool = True) -> None:
        self.approve = approve
        self.opened: list[str] = []
        self.errors: list[BaseException] = []

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        try:
            answer_consent(url, approve=self.approve)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        return True


@contextmanager
def in_thread(target, *args):  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(10)


def all_text_under(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())
