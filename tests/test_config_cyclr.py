"""The Cyclr platform's configuration: `platform: {type: cyclr}`, tenants' accounts, placements and connectors
outside the catalog, from YAML to the exact `DesiredState` the planner consumes; the local platform unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from reconciler.app.source import AheadParser, CachedParser
from reconciler.config import load_config
from reconciler.config.ahead import parse_includes_ahead
from reconciler.config.cache import ParseCache, catalog_digest
from reconciler.config.desired import CyclrSettings, DesiredState
from reconciler.config.documents import PLAIN
from reconciler.config.loader import load_root
from reconciler.declared import DeclaredInstallation
from reconciler.errors import ConfigError
from reconciler.placement import DeclaredAccount, Placement
from tests.conftest import run

SECRET = "cyclr-api-secret-value-8f3b2a"
ENV = {"CYCLR_CLIENT_ID": "cyclr-client-0001", "CYCLR_CLIENT_SECRET": SECRET, "ADO_CLIENT_SECRET": "ado-secret-77c1"}
PLATFORM = """\
version: 1
platform:
  type: cyclr
  api_domain: api.eu.cyclr.com
  service_domain: app-h.cyclr.com
  client_id: ${env:CYCLR_CLIENT_ID}
  client_secret: ${env:CYCLR_CLIENT_SECRET}
"""
ISSUE_EXAMPLE = PLATFORM + """\
partners:
  microsoft-azure-devops: {auth: azure-devops-oauth}     # blank client: the Application Connector Library's
tenants:
  acme:
    account: {id: acme, name: Acme Ltd, timezone: Europe/London}
    installations:
      ado-main:
        connector: microsoft-azure-devops
        parameters: {organization: acme-org, project: Platform}
        scopes: [vso.work_full, vso.code]
      chat: {connector: slack}
"""


def _load(directory: Path, text: str) -> DesiredState:
    (directory / "reconciler.yaml").write_text(text)
    return load_config(directory, environ=ENV).desired


def test_the_issue_example_gives_platform_settings_accounts_and_placements(tmp_path: Path) -> None:
    """The issue's example: the platform from its domains, the account as declared, a blank partner's installation
    on the platform's own client, and slack with no partner, client, endpoints or scopes."""
    desired = _load(tmp_path, ISSUE_EXAMPLE)

    assert desired.platform == CyclrSettings(  # the secret is not compared: the reference is
        "https://api.eu.cyclr.com", "https://app-h.cyclr.com", "cyclr-client-0001", "${env:CYCLR_CLIENT_SECRET}", SecretStr("")
    )
    assert desired.platform is not None and desired.platform.client_secret.get_secret_value() == SECRET
    assert desired.accounts == {
        "account.acme": DeclaredAccount(tenant="acme", id="acme", name="Acme Ltd", timezone="Europe/London")
    }
    placement = Placement(account="acme", auth_via="platform", authentication=None)
    ado = desired.installations["installation.acme.ado-main"].declared
    assert (ado.partner, ado.auth, ado.client_id, ado.client_secret_ref, ado.credentials_source) == (
        "microsoft-azure-devops", "azure-devops-oauth", "", "", "platform",
    )
    assert ado.redirect_uri == "https://app-h.cyclr.com/connector/callback"
    assert ado.scopes == ("vso.code", "vso.work_full") and ado.placement == placement
    assert desired.installations["installation.acme.chat"].declared == DeclaredInstallation(
        tenant="acme", name="chat", connector="slack", partner="", auth="", parameters={}, scopes=(),
        client_id="", client_secret_ref="", credentials_source="platform", redirect_uri="", token_url="",
        api_url=None, placement=placement,
    )
    assert desired.installations["installation.acme.chat"].client_secret is None
    assert load_root(tmp_path).platform is not None  # the root alone validates as the Cyclr platform's too


def test_accounts_default_to_the_tenant_key_one_per_tenant(tmp_path: Path) -> None:
    """Every declared tenant has an account (with installations or not): id and name default to its key."""
    desired = _load(tmp_path, PLATFORM + "tenants:\n  initech: {}\n  globex:\n    account: {name: Globex Corp}\n")
    assert desired.accounts == {
        "account.initech": DeclaredAccount(tenant="initech", id="initech", name="initech"),
        "account.globex": DeclaredAccount(tenant="globex", id="globex", name="Globex Corp"),
    }


def test_endpoints_override_the_domains_and_give_the_callback(tmp_path: Path) -> None:
    """endpoints.api_url and service_url (plain http on loopback) stand for the domains; the partners' callback
    is on the service endpoint."""
    text = PLATFORM.replace("  api_domain: api.eu.cyclr.com\n  service_domain: app-h.cyclr.com\n", "") + (
        "  endpoints: {api_url: 'http://127.0.0.1:8123/', service_url: 'http://localhost:8124'}\n"
        "partners:\n  microsoft-azure-devops: {auth: entra-id, tenant_id: organizations}\n"
    )
    desired = _load(tmp_path, text)
    assert desired.platform is not None
    assert (desired.platform.api_url, desired.platform.service_url) == ("http://127.0.0.1:8123", "http://localhost:8124")
    partner = desired.partners["partner.microsoft-azure-devops"].declared
    assert partner.redirect_uri == "http://localhost:8124/connector/callback"


def test_slack_takes_its_parameters_unchecked_and_its_own_credentials(tmp_path: Path) -> None:
    """A connector outside the catalog: parameters as written, scopes optional, `credentials:` the installation's."""
    text = PLATFORM + (
        "tenants:\n  acme:\n    installations:\n      chat:\n        connector: slack\n"
        "        parameters: {channel: general, Workspace: acme}\n        scopes: [chat:write, chat:write]\n"
        "        credentials: {client_id: slack-app-1, client_secret: '${env:ADO_CLIENT_SECRET}'}\n"
    )
    installation = _load(tmp_path, text).installations["installation.acme.chat"]
    declared = installation.declared
    assert declared.parameters == {"Workspace": "acme", "channel": "general"}
    assert declared.scopes == ("chat:write",)
    assert (declared.client_id, declared.client_secret_ref, declared.credentials_source) == (
        "slack-app-1", "${env:ADO_CLIENT_SECRET}", "installation",
    )
    assert installation.client_secret is not None and installation.client_secret.get_secret_value() == "ado-secret-77c1"


AUTH_VIA_TEXT = PLATFORM + """\
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: 11111111-aaaa-4bbb-8ccc-000000000001
    client_secret: ${env:ADO_CLIENT_SECRET}
    authentication: Azure DevOps OAuth app
<PARTNER>tenants:
  acme:
    installations:
      ado: {connector: microsoft-azure-devops, parameters: {organization: acme, project: P}, scopes: [vso.work_full]<INSTALLATION>}
"""


@pytest.mark.parametrize(
    ("on_partner", "on_installation", "expected"),
    [
        (None, None, "platform"),
        ("reconciler", None, "reconciler"),
        ("reconciler", "platform", "platform"),
        (None, "reconciler", "reconciler"),
    ],
)
def test_auth_via_defaults_from_installation_to_partner_to_platform(
    tmp_path: Path, on_partner: str | None, on_installation: str | None, expected: str
) -> None:
    """auth_via: the installation's, else its partner's, else `platform`; the partner's pinned authentication is the
    placement's; with the partner's client the credentials are the partner's."""
    text = AUTH_VIA_TEXT.replace("<PARTNER>", f"    auth_via: {on_partner}\n" if on_partner else "").replace(
        "<INSTALLATION>", f", auth_via: {on_installation}" if on_installation else ""
    )
    declared = _load(tmp_path, text).installations["installation.acme.ado"].declared
    assert declared.placement == Placement(account="acme", auth_via=expected, authentication="Azure DevOps OAuth app")
    assert declared.credentials_source == "partner"


def test_the_platform_secret_is_in_no_repr_and_no_error(tmp_path: Path) -> None:
    """The resolved platform secret is redacted from reprs, listed for the output backstop, and absent from
    every error line of a configuration that fails."""
    desired = _load(tmp_path, ISSUE_EXAMPLE)
    assert SECRET not in repr(desired) and SECRET not in repr(desired.platform)
    assert SECRET in desired.secret_values()
    broken = ISSUE_EXAMPLE.replace("chat: {connector: slack}", "chat: {connector: slack, auth_via: reconciler}")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, broken)
    assert "auth_via: reconciler needs a catalog connector" in str(info.value)
    assert SECRET not in "\n".join(info.value.lines())


def test_a_platform_secret_not_available_is_unchecked_for_validate(tmp_path: Path) -> None:
    """Where no secret's value is needed, an unset platform secret is listed as unchecked and left empty, and it
    adds no empty value to the secrets searched for."""
    (tmp_path / "reconciler.yaml").write_text(ISSUE_EXAMPLE)
    env = {k: v for k, v in ENV.items() if k != "CYCLR_CLIENT_SECRET"}
    loaded = load_config(tmp_path, environ=env, unchecked_secrets=True)
    assert loaded.desired.platform is not None
    assert loaded.desired.platform.client_secret.get_secret_value() == ""
    assert [u.reference for u in loaded.unchecked] == ["${env:CYCLR_CLIENT_SECRET}"]
    assert "" not in loaded.desired.secret_values()
    with pytest.raises(ConfigError, match="CYCLR_CLIENT_SECRET is not set"):
        load_config(tmp_path, environ=env)


def test_the_local_platform_has_no_accounts_or_placements(tmp_path: Path) -> None:
    """Without `type: cyclr` nothing changes: no platform settings, no accounts, no placement."""
    text = (
        "version: 1\nplatform: {service_domain: app-h.cyclr.com}\npartners:\n  microsoft-azure-devops:\n"
        "    auth: azure-devops-oauth\n    client_id: 11111111-aaaa-4bbb-8ccc-000000000001\n"
        "    client_secret: ${env:ADO_CLIENT_SECRET}\ntenants:\n  acme:\n    installations:\n      ado:\n"
        "        connector: microsoft-azure-devops\n        parameters: {organization: acme, project: P}\n"
        "        scopes: [vso.work_full]\n"
    )
    desired = _load(tmp_path, text)
    assert desired.platform is None and desired.accounts == {}
    assert desired.installations["installation.acme.ado"].declared.placement is None
    with pytest.raises(ConfigError, match="missing required key 'scopes'"):
        _load(tmp_path, text.replace("        scopes: [vso.work_full]\n", ""))


def test_a_cached_parse_gives_the_same_desired_state_and_keeps_no_secret(tmp_path: Path) -> None:
    """Loading through the parse cache (cold, then warm) gives the same DesiredState — platform settings and
    accounts included — and the cache holds the reference, never the resolved secret."""
    config, cache_dir = tmp_path / "config", tmp_path / "cache"
    config.mkdir()
    (config / "reconciler.yaml").write_text(ISSUE_EXAMPLE)
    plain = load_config(config, environ=ENV).desired
    cached = []
    for _ in range(2):
        cache = ParseCache(cache_dir, catalog_digest())
        cached.append(load_config(config, environ=ENV, parser=CachedParser(cache, PLAIN)).desired)
    entries = list(cache_dir.rglob("*.marshal"))
    assert entries, "nothing was cached"
    for desired in cached:
        assert desired == plain and desired.platform == plain.platform and desired.accounts == plain.accounts
        assert desired.secret_values() == plain.secret_values()
    stored = b"".join(p.read_bytes() for p in entries)
    assert SECRET.encode() not in stored and b"${env:CYCLR_CLIENT_SECRET}" in stored


def test_files_parsed_ahead_give_the_same_desired_state(tmp_path: Path) -> None:
    """Tenant files (scopes optional on cyclr) parsed by the parse-ahead worker validate as the root file's
    platform says, exactly as parsed here."""
    (tmp_path / "tenants").mkdir()
    for index in range(70):
        (tmp_path / "tenants" / f"t{index:02}.yaml").write_text(
            f"tenants:\n  t{index:02}:\n    account: {{name: Tenant {index}}}\n"
            "    installations:\n      chat: {connector: slack}\n"
        )
    (tmp_path / "reconciler.yaml").write_text(PLATFORM + "include: [tenants/*.yaml]\n")
    plain = load_config(tmp_path, environ=ENV).desired
    worker = parse_includes_ahead(tmp_path, None, {})
    try:
        parser = AheadParser(worker, PLAIN) if worker is not None else PLAIN
        ahead = load_config(tmp_path, environ=ENV, parser=parser).desired
    finally:
        if worker is not None:
            worker.close()
    assert len(plain.accounts) == len(plain.installations) == 70
    assert ahead == plain and ahead.accounts == plain.accounts and ahead.platform == plain.platform


def test_the_schema_command_describes_the_new_keys() -> None:
    """`reconciler schema` has the platform type, API domain and client, endpoints, accounts and auth_via, each
    described."""
    result = run(["schema"])
    assert result.exit_code == 0, result.stderr
    defs = json.loads(result.stdout)["$defs"]
    platform = defs["PlatformSpec"]["properties"]
    for key in ("type", "api_domain", "service_domain", "client_id", "client_secret"):
        assert platform[key].get("description"), key
    assert set(defs["PlatformEndpointsSpec"]["properties"]) == {"api_url", "service_url"}
    assert platform["client_secret"]["anyOf"][0]["pattern"] == r"^\$\{(env|file):[^}]+\}$"  # a reference only
    assert all(v.get("description") for v in defs["AccountSpec"]["properties"].values())
    assert defs["InstallationSpec"]["properties"]["auth_via"]["description"]
    assert {"authentication", "auth_via"} <= set(defs["PartnerSpec"]["properties"])
    assert "account" in defs["TenantSpec"]["properties"]
