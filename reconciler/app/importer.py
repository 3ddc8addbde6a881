"""`reconciler import`: adopt what already exists on the platform — accounts and their account connectors — so that
the next plan is "No changes", with no re-authorization.

Owns: choosing what to adopt (accounts state does not record yet: tenants the configuration declares, matched by
account id, and — for `--tenant` globs or everything — accounts it does not declare), the YAML written for those
(one file per tenant, secrets as `${env:...}` references, never values), checking that YAML loads, and recording
each adopted account and installation as the platform shows it. Must not: print, prompt, or know about click.
"""

from __future__ import annotations

import fnmatch
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.addresses import Globs
from reconciler.app.source import config_source
from reconciler.app.workspace import Workspace, open_backend
from reconciler.config.desired import DesiredState
from reconciler.declared import installation_address
from reconciler.errors import ConfigError, UsageError
from reconciler.placement import account_address
from reconciler.state.model import (
    AccountConnectorRecord,
    AccountRecord,
    AnyRecord,
    InstallationRecord,
    StateDocument,
)
from reconciler.state.records import installation_record, partner_record

if TYPE_CHECKING:
    from reconciler.platforms.cyclr.estate import FoundAccount, FoundInstallation

__all__ = ["ImportOutcome", "run_import"]


@dataclass
class ImportOutcome:
    adopted: list[str] = field(default_factory=list)  # addresses recorded (or, dry run, that would be)
    documents: dict[Path, str] = field(default_factory=dict)  # the YAML for tenants not declared yet
    written: list[Path] = field(default_factory=list)
    include_line: str | None = None  # to add to the root file's `include:` when it does not cover the files
    secrets: dict[str, str] = field(default_factory=dict)  # env variable -> the installation whose secret it holds
    notes: list[str] = field(default_factory=list)


def run_import(
    ws: Workspace, *, tenants: Globs, write_dir: Path | None, dry_run: bool, lock_timeout: float
) -> ImportOutcome:
    """Read the platform, write the YAML of undeclared tenants (to `write_dir`), and record what is adopted."""
    from reconciler.app.platform import connector_list, platform_api
    from reconciler.auth.transport import Http
    from reconciler.platforms.cyclr.estate import read_estate

    loaded = config_source(ws, unchecked_secrets=True).load()  # connector secrets are not needed: never read
    desired, settings = loaded.desired, loaded.desired.platform
    if settings is None:
        raise UsageError("import adopts accounts on a platform, and the configuration has none",
                         hint="set platform: {type: cyclr, ...} in reconciler.yaml")
    if not settings.client_secret.get_secret_value():
        raise UsageError(f"the platform's API client secret {settings.client_secret_ref} is not set here",
                         hint="import reads the platform with the partner's API credentials")
    backend = open_backend(ws, loaded.root)
    recorded = backend.read()
    with Http(timeout=ws.http_timeout) as http, ThreadPoolExecutor(max_workers=8) as pool:
        api = platform_api(settings, http, desired.secret_values())
        chosen = _chosen_accounts(api.list_accounts(), desired, recorded, tenants)
        estate = read_estate(api, chosen, connector_list(ws, settings, api), pool.map)
    outcome = ImportOutcome()
    declared_tenants = {a.tenant for a in desired.accounts.values()}
    new = [found for found in estate if found.tenant not in declared_tenants]
    target = write_dir if write_dir is not None else ws.config_dir / "tenants"
    partners: dict[str, Any] = {}  # partners the imported installations need and the configuration lacks
    for found in new:
        outcome.documents[target / f"{found.tenant}.yaml"] = _document(found, desired, outcome.secrets, partners)
    if partners:  # one file for all tenants (a partner is declared once); no tenant key starts with "_"
        head = "# Partners of the installations adopted by `reconciler import` (their clients: the library's).\n"
        outcome.documents[target / "_partners.yaml"] = head + yaml.safe_dump({"partners": partners}, sort_keys=False)
    if dry_run:
        outcome.adopted = _addresses(estate)
        return outcome
    _write(outcome, ws)
    if outcome.written:
        loaded = _checked(ws, outcome)
        outcome.include_line = _include_line(ws, loaded.root.include, outcome.written)
    with backend.lock("import", timeout=lock_timeout):
        _record(backend, backend.read(), estate, loaded.desired, outcome)
    return outcome


def _chosen_accounts(
    accounts: list[dict[str, Any]], desired: DesiredState, recorded: StateDocument | None, tenants: Globs
) -> list[tuple[dict[str, Any], str]]:
    """(account, tenant key) of each account to adopt: not recorded yet; a declared tenant's by its account id."""
    from reconciler.platforms.cyclr.estate import tenant_key

    declared = {a.id: a.tenant for a in desired.accounts.values()}
    have = {r.id for r in (recorded.resources.values() if recorded else ()) if isinstance(r, AccountRecord)}
    taken = {a.tenant for a in desired.accounts.values()}
    chosen = []
    for account in sorted(accounts, key=lambda a: str(a.get("Id"))):
        account_id = str(account.get("Id"))
        if account_id in have:
            continue
        tenant = declared.get(account_id) or tenant_key(account, taken)
        if not tenants or tenants.match(tenant):
            chosen.append((account, tenant))
    return chosen


def _document(found: FoundAccount, desired: DesiredState, secrets: dict[str, str], partners: dict[str, Any]) -> str:
    """The YAML of one tenant not declared yet: its account and installations, secrets by reference (`partners`
    gains those its installations need that the configuration does not declare)."""
    installations = {}
    for item in found.installations:
        spec: dict[str, Any] = {"connector": item.connector}
        partner = _partner_for(item, desired, partners)
        if partner is not None:
            spec["partner"] = partner
        if item.parameters:
            spec["parameters"] = dict(item.parameters)
        if item.scopes:
            spec["scopes"] = list(item.scopes)
        if item.client_id:
            variable = _variable(found.tenant, item.name)
            secrets[variable] = installation_address(found.tenant, item.name)
            spec["credentials"] = {"client_id": item.client_id, "client_secret": f"${{env:{variable}}}"}
        installations[item.name] = spec
    account = {"id": found.id, "name": found.name, **({"timezone": found.timezone} if found.timezone else {})}
    data: dict[str, Any] = {"tenants": {found.tenant: {"account": account, "installations": installations}}}
    head = f"# Adopted from the platform's account {found.id!r} by `reconciler import`.\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _partner_for(item: FoundInstallation, desired: DesiredState, new: dict[str, Any]) -> str | None:
    """The partner of a catalog connector's installation: one declared with its flavour, else one written here."""
    from reconciler.catalog.files import load_catalog

    if item.connector not in load_catalog().connectors or item.flavour is None:
        return None
    for partner in sorted(desired.partners.values(), key=lambda p: p.address):
        if partner.declared.connector == item.connector and partner.declared.auth == item.flavour:
            return partner.declared.name
    name = f"{item.connector}-{item.flavour}"[:63]
    new[name] = {"connector": item.connector, "auth": item.flavour}
    if item.flavour == "entra-id":  # the platform signs in with its own; the catalog asks for one
        new[name]["tenant_id"] = "organizations"
    return name


def _variable(tenant: str, name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in f"{tenant}_{name}_client_secret").upper()


def _write(outcome: ImportOutcome, ws: Workspace) -> None:
    """Write each document; an existing file is never replaced (nothing is written then)."""
    from reconciler.statefiles import atomic_write

    existing = [path for path in outcome.documents if path.exists()]
    if existing:
        raise UsageError(f"{existing[0]} exists already; nothing was written or recorded",
                         hint="move it away, or import into another directory with --write DIR")
    for path, text in outcome.documents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode())
        path.chmod(0o644)  # configuration, kept in git: no secret is in it
        outcome.written.append(path)


def _checked(ws: Workspace, outcome: ImportOutcome) -> Any:
    """The configuration with the written files read as included; a file that does not load is removed again."""
    from reconciler.config import load_config

    try:
        return load_config(ws.config_dir, environ=ws.environ, environment=ws.environment, unchecked_secrets=True,
                           extra=outcome.written)
    except ConfigError:
        for path in outcome.written:
            path.unlink(missing_ok=True)
        outcome.written.clear()
        raise


def _include_line(ws: Workspace, patterns: tuple[str, ...], written: list[Path]) -> str | None:
    """The `include:` entry to add, unless the root file's patterns already cover every written file."""
    relative = [p.resolve().relative_to(ws.config_dir.resolve()).as_posix() for p in written]
    if all(any(fnmatch.fnmatch(r, pattern) for pattern in patterns) for r in relative):
        return None
    folder = Path(relative[0]).parent.as_posix()
    return f"{folder}/*.yaml" if folder != "." else relative[0]


def _addresses(estate: list[FoundAccount]) -> list[str]:
    out = []
    for found in estate:
        out.append(account_address(found.tenant))
        out += [installation_address(found.tenant, i.name) for i in found.installations]
    return out


def _record(
    backend: Any, doc: StateDocument | None, estate: list[FoundAccount], desired: DesiredState, outcome: ImportOutcome
) -> None:
    """Record each adopted account, and each installation the configuration now declares, as the platform shows
    them (a declared installation not found on the platform is left for the plan to create)."""
    doc = doc or StateDocument.new(desired.environment)
    resources: dict[str, AnyRecord] = dict(doc.resources)
    for found in estate:
        address = account_address(found.tenant)
        if address not in desired.accounts or address in resources:
            continue
        declared = desired.accounts[address]
        resources[address] = AccountRecord(**{**dict(declared), "name": found.name, "timezone": found.timezone},
                                           adopted=True)
        outcome.adopted.append(address)
        for item in found.installations:
            address = installation_address(found.tenant, item.name)
            want = desired.installations.get(address)
            if want is None or want.declared.placement is None or address in resources:
                outcome.notes.append(f"{address}: on the platform but not declared; not adopted")
                continue
            resources[address] = _adopted(want.declared, item)
            outcome.adopted.append(address)
            partner = desired.partners.get(f"partner.{want.declared.partner}")
            if partner is not None and partner.address not in resources:  # ours alone: recorded with its user
                resources[partner.address] = partner_record(partner.declared)
    if outcome.adopted:
        backend.write(doc.with_resources(resources), expected_serial=doc.serial or None)


def _adopted(declared: Any, item: FoundInstallation) -> InstallationRecord:
    installed = AccountConnectorRecord(
        account_connector_id=item.account_connector_id, connector_id=item.connector_id,
        connector_version=item.connector_version, authentication_id=item.authentication_id,
        authenticated=item.authenticated,
    )
    from reconciler.platforms.cyclr.connectors import slug

    record = installation_record(declared, granted=(), authorized_at=None)
    observed: dict[str, Any] = {"parameters": {k: item.parameters.get(slug(k), v) for k, v in declared.parameters.items()}}
    if item.scopes and declared.scopes:
        observed["scopes"] = item.scopes
    status = "authorized" if item.authenticated else "pending_authorization"
    return record.model_copy(update={"account_connector": installed, "status": status, **observed})
