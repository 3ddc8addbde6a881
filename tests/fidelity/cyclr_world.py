"""The world one Cyclr fidelity history runs in: the configuration model of a `platform: {type: cyclr}` estate
(tenants with their accounts, installations of microsoft-azure-devops and of Slack, a connector outside the
catalog) rendered as YAML, and what the sandbox's Cyclr model shows of one history's accounts.

Pure test support: no assertions here (see `cyclr_oracle`), no hypothesis (see `test_cyclr_fidelity`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from reconciler.sandbox import SandboxServer

PARTNER_ID, PARTNER_SECRET = "fidelity-cyclr-partner", "fidelity-cyclr-partner-secret-0b7e4d1c"
# The Application Connector Library's app of each authentication the histories sign in with (Entra, Slack).
LIBRARY = {31: ("fidelity-library-entra", "fidelity-library-entra-secret-5a1f"),
           41: ("fidelity-library-slack", "fidelity-library-slack-secret-9c2e")}
ADO, SLACK = "microsoft-azure-devops", "slack"
TENANTS = ("t0", "t1")
NAMES = ("i0", "i1")
SCOPES = ("vso.work_full", "vso.project", "vso.code", "vso.work", "vso.build")
PLACES = (("acme-org", "Platform"), ("acme-org", "Web"), ("globex", "Operations"))
CHANNELS = ("#ops", "#dev", "#alerts")
ACCOUNT_NAMES = ("Acme Ltd", "Acme Limited", "Globex Corp")
TIMEZONES = (None, "Europe/London", "America/New_York")
# The platform's property of each declared parameter (the platform's names; the Scopes property is the scopes).
PROPERTY = {"organization": "Organization", "project": "Project", "Channel": "Channel"}


@dataclass
class CInstallation:
    connector: str
    parameters: dict[str, str]  # as declared: organization/project (Azure DevOps) or Channel (Slack)
    scopes: list[str]  # as written (Azure DevOps only)

    def declared_scopes(self) -> list[str]:
        return sorted(set(self.scopes))

    def properties(self) -> dict[str, str]:
        """The account connector's properties this declares (Scopes compared as a set: see `scope_set`)."""
        out = {PROPERTY[k]: v for k, v in self.parameters.items()}
        if self.connector == ADO:
            out["Scopes"] = " ".join(self.declared_scopes())
        return out


@dataclass
class CTenant:
    name: str
    timezone: str | None
    installations: dict[str, CInstallation] = field(default_factory=dict)


@dataclass
class CModel:
    uid: str
    url: str
    tenants: dict[str, CTenant] = field(default_factory=dict)

    def copy(self) -> CModel:
        return copy.deepcopy(self)

    def account_id(self, tenant: str) -> str:
        """Unique across histories: every history shares the sandbox's accounts."""
        return f"{self.uid}-{tenant}"

    def installations(self) -> dict[str, CInstallation]:
        return {f"installation.{t}.{n}": i for t, spec in self.tenants.items() for n, i in spec.installations.items()}

    def render(self) -> str:
        lines = [
            "version: 1",
            "platform:",
            "  type: cyclr",
            f"  endpoints: {{api_url: '{self.url}', service_url: '{self.url}'}}",
            f"  client_id: {PARTNER_ID}",
            "  client_secret: ${env:CYCLR_CLIENT_SECRET}",
            "partners:",
            f"  {ADO}: {{auth: entra-id, tenant_id: organizations}}",
            "tenants:" if self.tenants else "tenants: {}",
        ]
        for tenant, spec in self.tenants.items():
            timezone = f", timezone: {spec.timezone}" if spec.timezone else ""
            lines += [f"  {tenant}:", f"    account: {{id: {self.account_id(tenant)}, name: {spec.name}{timezone}}}"]
            lines.append("    installations:" if spec.installations else "    installations: {}")
            for name, inst in spec.installations.items():
                parameters = ", ".join(f"{k}: '{v}'" for k, v in inst.parameters.items())
                lines += [f"      {name}:", f"        connector: {inst.connector}",
                          f"        parameters: {{{parameters}}}"]
                if inst.connector == ADO:
                    lines.append(f"        scopes: [{', '.join(inst.scopes)}]")
        return "\n".join(lines) + "\n"


def ado(place: tuple[str, str], scopes: list[str]) -> CInstallation:
    return CInstallation(ADO, {"organization": place[0], "project": place[1]}, scopes)


def slack(channel: str) -> CInstallation:
    return CInstallation(SLACK, {"Channel": channel}, [])


def scope_set(value: str) -> list[str]:
    return sorted(set(value.split()))


# -- what the platform shows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """One account connector as the sandbox holds it."""

    id: str
    account: str
    connector: str  # the connector's Name
    properties: dict[str, str]
    authenticated: bool


@dataclass(frozen=True)
class Platform:
    """The sandbox's accounts (id -> name, timezone) and account connectors of one history."""

    accounts: dict[str, tuple[str, str]]
    connectors: dict[str, Connected]


def platform_of(sandbox: SandboxServer, uid: str) -> Platform:
    cyclr = sandbox.cyclr
    mine = f"{uid}-"
    with cyclr.lock:
        accounts = {a: (acc["Name"], acc["Timezone"]) for a, acc in cyclr.accounts.items() if a.startswith(mine)}
        connectors = {
            str(c.id): Connected(str(c.id), c.account, c.connector["Name"], dict(c.properties), c.authenticated)
            for c in cyclr.account_connectors.values()
            if c.account.startswith(mine)
        }
    return Platform(accounts, connectors)


def setup_platform(sandbox: SandboxServer) -> None:
    """The partner's API credentials and the library apps every history signs in with."""
    sandbox.cyclr.set_partner(PARTNER_ID, PARTNER_SECRET)
    for authentication, (client_id, secret) in LIBRARY.items():
        sandbox.provider.register_app({"client_id": client_id, "client_secret": secret, "flavour": "entra-id",
                                       "redirect_uris": [sandbox.url + "/connector/callback"]})
        sandbox.cyclr.set_library(authentication, client_id, secret)


def secrets_of(sandbox: SandboxServer) -> list[str]:
    """Every secret a history's output must not show: the partner's, the library's, and whatever the sandbox
    issued (bearer tokens, sign-in tokens, OAuth codes and tokens)."""
    with sandbox.cyclr.lock:
        issued = list(sandbox.cyclr.issued)
    return [PARTNER_SECRET, *(s for _, s in LIBRARY.values()), *issued, *sandbox.provider.issued]


def record_brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    keep = ("status", "scopes", "parameters", "pending", "drift", "account_connector", "name", "timezone")
    return {k: record[k] for k in keep if k in record}
