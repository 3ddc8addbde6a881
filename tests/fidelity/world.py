"""The world one fidelity history runs in: its sandbox apps, its configuration model rendered as YAML, a consent
agent, and snapshots of what state records (read through the state APIs, never by parsing files by hand).

Pure test support: no assertions here (see `oracle`), no hypothesis (see `test_plan_fidelity`).
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reconciler.catalog.files import load_catalog
from reconciler.crypto import load_state_key
from reconciler.sandbox import SandboxServer
from reconciler.state.local import LocalBackend
from reconciler.tokens.model import SealedRecord, TokenSet
from reconciler.tokens.store import LocalCredentialStore
from reconciler.tokens.vault import Vault

STATE_KEY = base64.b64encode(b"fidelity-state-key-0123456789abc").decode()
FLAVOURS = {"legacy": "azure-devops-oauth", "entra": "entra-id"}  # app pool -> auth flavour
# partner -> the pool of apps its client id comes from; two partners on one pool make a partner switch that keeps
# the client (an in-place update) possible
POOL = {"legacy": "legacy", "legacy-b": "legacy", "entra": "entra"}
PARTNERS = tuple(POOL)
APPS_PER_POOL = 2
TENANTS = ("t0", "t1")
NAMES = ("i0", "i1")
SCOPES = ("vso.work_full", "vso.project", "vso.code", "vso.work", "vso.build")
PLACES = (("acme-org", "Platform"), ("acme-org", "Web"), ("globex", "Operations"))
ORGANIZATIONS = {"acme-org": ["Platform", "Web"], "globex": ["Operations"]}
CONNECTOR = load_catalog().connectors["microsoft-azure-devops"]


def app_id(uid: str, pool: str, index: int) -> str:
    """A client id of one history's app: unique across histories, so histories never share a sandbox app."""
    return f"{uid}-{pool}-app{index}"


@dataclass
class Installation:
    partner: str
    place: tuple[str, str]
    scopes: list[str]  # as written: order and duplicates are part of the history
    own: int | None = None  # None: the partner's credentials; else the index of the app it brings itself

    def declared_scopes(self) -> list[str]:
        return sorted(set(self.scopes))


@dataclass
class Partner:
    app: int  # which of its flavour's apps the partner's client id names
    migrate_to: str | None = None  # a migration campaign: every installation of it moves to that partner


@dataclass
class Model:
    """What the configuration declares, and the secret references in force."""

    uid: str
    sandbox_url: str
    port: int
    partners: dict[str, Partner] = field(default_factory=lambda: {p: Partner(0) for p in PARTNERS})
    tenants: dict[str, dict[str, Installation]] = field(default_factory=dict)
    refs: dict[tuple[str, int], str] = field(
        default_factory=dict
    )  # (pool, index) -> the variable with its secret
    env: dict[str, str] = field(default_factory=dict)  # environment variables (secrets and the state key)

    def copy(self) -> Model:
        return copy.deepcopy(self)

    def installations(self) -> dict[str, Installation]:
        return {f"installation.{t}.{n}": i for t, items in self.tenants.items() for n, i in items.items()}

    def effective_partner(self, inst: Installation) -> str:
        """The partner state records the installation on after a converging apply: the one it names (or the
        default), or where its partner's migration campaign moves it."""
        if inst.own is None and self.partners[inst.partner].migrate_to is not None:
            return self.partners[inst.partner].migrate_to
        return inst.partner

    def client_id(self, inst: Installation) -> str:
        if inst.own is not None:
            return app_id(self.uid, POOL[inst.partner], inst.own)
        return self.client_id_of_partner(self.effective_partner(inst))

    def follow_campaigns(self) -> None:
        """What the product asks of an installation with its own credentials whose partner migrates (a
        configuration error otherwise): name the partner it moves to, its own credentials then being for that
        partner's app (README: "name its new `partner:` with its Entra app's credentials")."""
        for inst in self.installations().values():
            target = self.partners[inst.partner].migrate_to
            if inst.own is not None and target is not None:
                inst.partner = target

    def client_id_of_partner(self, name: str) -> str:
        return app_id(self.uid, POOL[name], self.partners[name].app)

    def secret_ref(self, pool: str, index: int) -> str:
        return "${env:" + self.refs[(pool, index)] + "}"

    def environ(self) -> dict[str, str]:
        return {**self.env, "RECONCILER_STATE_KEY": STATE_KEY}

    def render(self) -> str:
        redirect = f"http://127.0.0.1:{self.port}/callback"
        url = self.sandbox_url
        endpoints = {
            "legacy": (f"{url}/oauth2/authorize", f"{url}/oauth2/token"),
            "entra": (f"{url}/organizations/oauth2/v2.0/authorize", f"{url}/organizations/oauth2/v2.0/token"),
        }
        lines = ["version: 1", "platform: {service_domain: app-h.cyclr.com}", "partners:"]
        for name in PARTNERS:
            partner, pool = self.partners[name], POOL[name]
            authorize, token = endpoints[pool]
            lines += [
                f"  {name}:",
                "    connector: microsoft-azure-devops",
                *([f"    migrate_to: {partner.migrate_to}"] if partner.migrate_to else []),
                f"    auth: {FLAVOURS[pool]}",
                *(["    tenant_id: organizations"] if pool == "entra" else []),
                f"    client_id: {app_id(self.uid, pool, partner.app)}",
                f"    client_secret: {self.secret_ref(pool, partner.app)}",
                f"    redirect_uri: {redirect}",
                f"    endpoints: {{authorize_url: {authorize}, token_url: {token}, api_url: {url}}}",
            ]
        if not self.tenants:
            lines.append("tenants: {}")
        else:
            lines.append("tenants:")
        for tenant, items in self.tenants.items():
            if not items:
                lines.append(f"  {tenant}: {{installations: {{}}}}")
                continue
            lines += [f"  {tenant}:", "    installations:"]
            for name, inst in items.items():
                organization, project = inst.place
                lines += [
                    f"      {name}:",
                    f"        partner: {inst.partner}",
                    f"        parameters: {{organization: {organization}, project: {project}}}",
                    f"        scopes: [{', '.join(inst.scopes)}]",
                ]
                if inst.own is not None:
                    lines.append(
                        f"        credentials: {{client_id: {app_id(self.uid, POOL[inst.partner], inst.own)}, "
                        f"client_secret: '{self.secret_ref(POOL[inst.partner], inst.own)}'}}"
                    )
        return "\n".join(lines) + "\n"


# -- the consent agent --------------------------------------------------------------------------------------------

_CONSENT_ID = re.compile(r'name="consent" value="([^"]+)"')


class ConsentAgent:
    """Stands in for `webbrowser.open` like tests/sandbox_support.ScriptedBrowser (Approve, follow the redirect to
    the loopback receiver), over one reused HTTP client: a new client per consent costs more than the consent."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=10.0, follow_redirects=False)
        self.opened = 0
        self.errors: list[str] = []

    def __call__(self, url: str) -> bool:
        self.opened += 1
        try:
            page = self.client.get(url)
            match = _CONSENT_ID.search(page.text)
            if page.status_code != 200 or match is None:
                raise RuntimeError(f"no consent form (HTTP {page.status_code})")
            base = f"{page.url.scheme}://{page.url.netloc.decode()}"
            answer = self.client.post(
                f"{base}/oauth2/consent", data={"consent": match.group(1), "decision": "approve"}
            )
            location = answer.headers.get("Location")
            if answer.status_code != 302 or not location:
                raise RuntimeError(f"consent not accepted (HTTP {answer.status_code})")
            self.client.get(location)
        except Exception as exc:  # noqa: BLE001 - reported by the oracle
            self.errors.append(f"{type(exc).__name__}: {exc}")
        return True

    def close(self) -> None:
        self.client.close()


# -- snapshots of state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """State as recorded: the document (JSON form, or None) and each address's sealed credential record."""

    doc: dict[str, Any] | None
    credentials: dict[str, dict[str, Any]]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.doc["resources"] if self.doc else {}

    @property
    def serial(self) -> int | None:
        return self.doc["serial"] if self.doc else None


def snapshot(config_dir: Path) -> Snapshot:
    backend = LocalBackend(config_dir / "state", "default")
    doc = backend.read()
    store = LocalCredentialStore(config_dir / "state", "default")
    credentials = {}
    for address in store.addresses():
        record = store.get(address)
        if record is not None:
            credentials[address] = record.model_dump(mode="json", exclude_none=True)
    return Snapshot(doc.model_dump(mode="json", exclude_none=True) if doc else None, credentials)


def _vault(config_dir: Path, snap: Snapshot) -> Vault:
    assert snap.doc is not None
    key = load_state_key(
        {"RECONCILER_STATE_KEY": STATE_KEY},
        key_file=Path("/nonexistent"),
        salt_file=Path("/nonexistent"),
        create=False,
    )
    assert key is not None
    store = LocalCredentialStore(config_dir / "state", "default")
    return Vault(store, key, lineage=snap.doc["lineage"], environment="default")


def open_tokens(config_dir: Path, snap: Snapshot, address: str) -> TokenSet:
    """The tokens the snapshot holds for `address`, opened with the history's state key."""
    data = snap.credentials.get(address)
    assert data is not None, f"{address}: no sealed credentials"
    sealed = SealedRecord.model_validate(data)
    return _vault(config_dir, snap).current_tokens(address, snap.resources[address]["client_id"], sealed)


def open_pending_ok(config_dir: Path, snap: Snapshot, address: str) -> bool:
    """Whether the snapshot's sealed pending authorization of `address` opens for the client id its record names."""
    data = snap.credentials.get(address)
    marker = snap.resources[address].get("pending")
    if data is None or data.get("pending") is None or marker is None:
        return False
    pending = _vault(config_dir, snap).open_pending(address, marker["client_id"], data["pending"])
    return sorted(pending.scopes) == sorted(marker["requested_scopes"])


def register_world(sandbox: SandboxServer, uid: str, port: int) -> dict[tuple[str, int], str]:
    """Register one history's apps at the sandbox; returns each app's first secret."""
    provider = sandbox.provider
    secrets = {}
    for pool, flavour in FLAVOURS.items():
        for index in range(APPS_PER_POOL):
            secret = f"{uid}-{pool}-secret{index}-v0"
            provider.register_app(
                {
                    "client_id": app_id(uid, pool, index),
                    "client_secret": secret,
                    "flavour": flavour,
                    "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
                }
            )
            secrets[(pool, index)] = secret
    return secrets
