"""Support for tests of the authorization service: a sandbox with apps registered for the service's callback, a
configuration with a `service:` section, the service itself on 127.0.0.1, and a scripted tenant who opens a link
and answers the sandbox's consent page.

Registered as a pytest plugin (tests/conftest.py): fixtures `service_world`, and `every_status`: the service running
on a state that holds an installation in each status word.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from reconciler.app.workspace import Workspace
from reconciler.auth.transport import Http
from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from reconciler.service.context import ServiceContext
from reconciler.service.server import ServiceServer
from tests.sandbox_support import ENTRA_ID, ENTRA_SECRET, LEGACY_ID, LEGACY_SECRET, free_port, partners_yaml

API_KEY_EU = "api-key-eu-7d1c0b9a4e-UNIQUE"
API_KEY_ALL = "api-key-all-2b8e6f0c3d-UNIQUE"
WEBHOOK_SECRET = "webhook-secret-5a9c2e7b1f-UNIQUE"
STATE_KEY = "c2VydmljZS10ZXN0LXN0YXRlLWtleS0wMTIzNDU2Nzg="  # base64 of 32 bytes
SECRETS = (LEGACY_SECRET, ENTRA_SECRET, API_KEY_EU, API_KEY_ALL, WEBHOOK_SECRET, STATE_KEY)
ENV = {
    "LEGACY_SECRET": LEGACY_SECRET,
    "ENTRA_SECRET": ENTRA_SECRET,
    "RECONCILER_STATE_KEY": STATE_KEY,
    "API_KEY_EU": API_KEY_EU,
    "API_KEY_ALL": API_KEY_ALL,
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
}


def service_config(sandbox_url: str, public_url: str, tenants: str, *, extra_service: str = "") -> str:
    """reconciler.yaml: both partners at the sandbox, redirect URIs left to the service, and `tenants` (YAML)."""
    return f"""\
version: 1
service:
  public_url: {public_url}
  link_lifetime: 7d
  api_keys:
    - name: runtime-eu
      key: ${{env:API_KEY_EU}}
      tenants: ["eu-*"]
    - name: runtime-all
      key: ${{env:API_KEY_ALL}}
      tenants: ["*"]
{extra_service}{partners_yaml(sandbox_url, None)}tenants:
{tenants}"""


def tenants_yaml(count: int, *, prefix: str = "eu") -> str:
    """`count` tenants `<prefix>-0..`, each with one installation `ado` (legacy and Entra alternating)."""
    out = []
    for i in range(count):
        partner = "legacy" if i % 2 == 0 else "entra"
        scopes = "[vso.project, vso.work_full]" if i % 3 else "[vso.code, vso.project]"
        out.append(
            f"  {prefix}-{i}:\n    installations:\n      ado:\n        partner: {partner}\n"
            f"        parameters: {{organization: acme-org, project: Platform}}\n        scopes: {scopes}\n"
        )
    return "".join(out)


@dataclass
class ServiceWorld:
    sandbox: SandboxServer
    directory: Path
    port: int
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    servers: list[ServiceServer] = field(default_factory=list)
    https: list[Http] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))  # what the CLI and the service may see

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now(self) -> dt.datetime:
        """The services' clock: `clock` as it is when asked (a test may move it while they run)."""
        return self.clock()

    def write(self, tenants: str, **kwargs: str) -> None:
        (self.directory / "reconciler.yaml").write_text(service_config(self.sandbox.url, self.public_url, tenants, **kwargs))

    def cli(self, *args: str):  # type: ignore[no-untyped-def]
        from tests.conftest import run  # conftest registers this module as a plugin: imported late

        return run(["-C", str(self.directory), *args], self.env)

    def start(self, port: int | None = None) -> ServiceServer:
        """The service for this directory on `port` (default: the public URL's)."""
        http = Http(timeout=10.0).__enter__()
        self.https.append(http)
        ws = Workspace(self.directory, self.env, clock=self.now)
        ctx = ServiceContext.open(ws, http=http, lock_timeout=120.0)
        server = ServiceServer(ctx, port=port if port is not None else self.port).start()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for http in self.https:
            http.__exit__(None, None, None)
        self.servers.clear()
        self.https.clear()

    def state(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.directory / "state" / "default.json").read_text())


def sign_in(link: str, client: httpx.Client, *, approve: bool = True) -> httpx.Response:
    """A tenant opens `link`, answers the consent page, and lands on the service's callback: its response."""
    opened = client.get(link)
    assert opened.status_code == 302, (opened.status_code, opened.text[:300])
    callback = answer_consent(opened.headers["Location"], approve=approve, follow=False, client=client)
    return client.get(callback)


def links_in(output: str, public_url: str) -> dict[str, str]:
    """address -> link from apply's or authorize --links' output."""
    lines = output.splitlines()
    found = {}
    for i, line in enumerate(lines):
        if "authorization pending" in line and i + 1 < len(lines) and lines[i + 1].strip().startswith(public_url):
            found[line.strip().split(":")[0]] = lines[i + 1].strip()
    return found


@pytest.fixture
def service_world(sandbox: SandboxServer, tmp_path: Path) -> Iterator[ServiceWorld]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/connector/callback"
    provider = sandbox.provider
    provider.register_app(
        {"client_id": LEGACY_ID, "client_secret": LEGACY_SECRET, "flavour": "azure-devops-oauth", "redirect_uris": [callback]}
    )
    provider.register_app({"client_id": ENTRA_ID, "client_secret": ENTRA_SECRET, "flavour": "entra-id", "redirect_uris": [callback]})
    provider.register_org("acme-org", ["Platform", "Web"])
    world = ServiceWorld(sandbox, tmp_path, port)
    try:
        yield world
    finally:
        world.stop()


# Each status word, and the installations `every_status` brings to it (tenants eu-* and us-*, so that a key's globs
# see some of them).
EVERY_STATUS = {
    "healthy": ("installation.eu-acme.ado", "installation.eu-acme.web"),
    "expiring": ("installation.eu-globex.ado",),  # the Entra partner's client secret expires in 5 days
    "needs-reauthorization": ("installation.us-initech.ado",),  # its grant revoked, found by `status --refresh`
    "error": ("installation.us-hooli.ado",),  # its partner's client secret expired yesterday
    "pending": ("installation.eu-umbrella.ado",),  # applied with --auth-mode defer, its link not opened
}


def _every_status_config(text: str, today: dt.date) -> str:
    """`text` (a `service_config`) with the Entra partner's client secret expiring in 5 days, and a partner
    `lapsed`: the legacy app again, with a client secret declared to have expired yesterday."""
    legacy = text[text.index("  legacy:\n"):text.index("  entra:\n")]
    lapsed = legacy.replace("  legacy:\n", "  lapsed:\n") + f"    client_secret_expires: {today - dt.timedelta(days=1)}\n"
    entra = f"  entra:\n    client_secret_expires: {today + dt.timedelta(days=5)}\n"
    return text.replace("  entra:\n", lapsed + entra)


def _installation(name: str, partner: str) -> str:
    return (f"      {name}:\n        partner: {partner}\n"
            "        parameters: {organization: acme-org, project: Platform}\n        scopes: [vso.project, vso.work_full]\n")


def _every_status_tenants(*, umbrella: bool) -> str:
    tenants = {
        "eu-acme": _installation("ado", "legacy") + _installation("web", "legacy"),
        "eu-globex": _installation("ado", "entra"),
        "us-initech": _installation("ado", "legacy"),
        "us-hooli": _installation("ado", "lapsed"),
        **({"eu-umbrella": _installation("ado", "legacy")} if umbrella else {}),
    }
    return "".join(f"  {tenant}:\n    installations:\n{body}" for tenant, body in tenants.items())


@pytest.fixture
def every_status(service_world: ServiceWorld) -> ServiceWorld:
    """The service running on a state with installations in every status word (`EVERY_STATUS`), each brought
    there the real way: sign-ins through the service's links, a revoked grant found by `reconciler status
    --refresh`, an authorization deferred, partners' client secrets declared to expire soon or to have expired."""
    world, provider = service_world, service_world.sandbox.provider
    today = dt.datetime.now(dt.UTC).date()

    def write(*, umbrella: bool) -> None:
        world.write(_every_status_tenants(umbrella=umbrella))
        path = world.directory / "reconciler.yaml"
        path.write_text(_every_status_config(path.read_text(), today))

    write(umbrella=False)
    deferred = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.stdout + deferred.stderr
    links = links_in(deferred.stdout, world.public_url)
    world.start()
    with httpx.Client(timeout=20) as client:
        assert sign_in(links.pop("installation.us-initech.ado"), client).status_code == 200
        assert provider.revoke(client_id=LEGACY_ID) == 1  # initech's grant, the only one so far
        for link in links.values():
            assert sign_in(link, client).status_code == 200
    write(umbrella=True)
    pending = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert pending.exit_code == 3, pending.stdout + pending.stderr
    checked = world.cli("status", "--refresh", "--format", "json")  # records what each check found
    assert checked.exit_code == 2, checked.stdout + checked.stderr
    return world
