"""Environments: `environments/<name>.yaml` merged over the configuration before validation, and located errors.

The base configuration is `reconciler.yaml` (tenant initech) plus `tenants/acme.yaml` (tenant acme, included).
Each test writes an overlay and loads with `environment=`; YAML lines carry their line numbers in comments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pytest

from reconciler.catalog.files import load_catalog
from reconciler.config import LoadedConfig, environment_names, load_config
from reconciler.config.loader import load_root
from reconciler.errors import ConfigError, ConfigIssue
from reconciler.planner import make_plan
from reconciler.state.model import StateDocument
from reconciler.state.records import installation_record, partner_record

ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "s3cr3t-partner-value", "STAGING_SECRET": "s3cr3t-staging"}
NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)

BASE = (
    "version: 1\n"  # 1
    "platform: {service_domain: app-h.cyclr.com}\n"  # 2
    "partners:\n"  # 3
    "  microsoft-azure-devops:\n"  # 4
    "    auth: azure-devops-oauth\n"  # 5
    "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
    "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 7
    "include: [tenants/*.yaml]\n"  # 8
    "tenants:\n"  # 9
    "  initech:\n"  # 10
    "    installations:\n"  # 11
    "      ado:\n"  # 12
    "        connector: microsoft-azure-devops\n"  # 13
    "        parameters: {organization: initech, project: TPS}\n"  # 14
    "        scopes: [vso.work_full, vso.code]\n"  # 15
    "      boards:\n"  # 16
    "        connector: microsoft-azure-devops\n"  # 17
    "        parameters: {organization: initech, project: Boards}\n"  # 18
    "        scopes: [vso.work_full]\n"  # 19
)
ACME = (
    "tenants:\n"  # 1
    "  acme:\n"  # 2
    "    installations:\n"  # 3
    "      ado:\n"  # 4
    "        connector: microsoft-azure-devops\n"  # 5
    "        parameters: {organization: acme, project: P}\n"  # 6
    "        scopes: [vso.work_full]\n"  # 7
)
# The first four lines of an overlay that changes initech/ado; its keys follow from line 5.
INITECH_ADO = (
    "tenants:\n"  # 1
    "  initech:\n"  # 2
    "    installations:\n"  # 3
    "      ado:\n"  # 4
)
# The first four lines of an overlay that changes acme/ado (declared in tenants/acme.yaml).
ACME_ADO = INITECH_ADO.replace("initech", "acme")


@pytest.fixture
def config(write_config, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Write the base configuration plus `files` (an overlay as text is environments/staging.yaml), chdir into it."""

    def write(files: str | Mapping[str, str] = "", acme: str = ACME) -> Path:
        if isinstance(files, str):
            files = {"environments/staging.yaml": files}
        directory: Path = write_config({"reconciler.yaml": BASE, "tenants/acme.yaml": acme, **files})
        monkeypatch.chdir(directory)
        return directory

    return write


def _load(directory: Path, environment: str | None = "staging", environ: Mapping[str, str] = ENV) -> LoadedConfig:
    return load_config(directory, environ=environ, environment=environment)


def _error(directory: Path, environment: str | None = "staging", environ: Mapping[str, str] = ENV) -> ConfigIssue:
    with pytest.raises(ConfigError) as caught:
        _load(directory, environment, environ)
    assert len(caught.value.issues) == 1, caught.value.lines()
    return caught.value.issues[0]


# -- merging ----------------------------------------------------------------------------------------------------


def test_maps_merge_by_key(config) -> None:  # type: ignore[no-untyped-def]
    """Mappings merge key by key at every depth: what the overlay does not name is kept from the base."""
    directory = config(
        "platform: {service_domain: app-s.cyclr.com}\n"  # 1
        + INITECH_ADO  # 2-5
        + "        parameters: {project: TPS-staging}\n"  # 6
    )
    desired = _load(directory).desired
    ado = desired.installations["installation.initech.ado"]
    assert dict(ado.declared.parameters) == {"organization": "initech", "project": "TPS-staging"}
    assert ado.declared.scopes == ("vso.code", "vso.work_full")
    assert ado.declared.redirect_uri == "https://app-s.cyclr.com/connector/callback"
    assert ado.declared.client_id == "11111111-0000-4000-8000-0000000000a1"
    assert set(desired.installations) == {
        "installation.acme.ado",
        "installation.initech.ado",
        "installation.initech.boards",
    }
    assert dict(desired.installations["installation.initech.boards"].declared.parameters)["project"] == "Boards"


def test_lists_are_replaced(config) -> None:  # type: ignore[no-untyped-def]
    """A list in the overlay replaces the base list whole (scopes are not appended to)."""
    directory = config(INITECH_ADO + "        scopes: [vso.work_full]\n")
    ado = _load(directory).desired.installations["installation.initech.ado"]
    assert ado.declared.scopes == ("vso.work_full",)


def test_null_removes_an_installation(config) -> None:  # type: ignore[no-untyped-def]
    """`name: null` removes an installation in this environment only, and a plan there deletes its record."""
    directory = config(
        "tenants:\n"  # 1
        "  initech:\n"  # 2
        "    installations:\n"  # 3
        "      boards: null\n"  # 4
    )
    base = _load(directory, environment=None).desired
    staging = _load(directory).desired
    assert "installation.initech.boards" in base.installations
    assert set(staging.installations) == {"installation.acme.ado", "installation.initech.ado"}
    resources = {p.address: partner_record(p.declared) for p in base.partners.values()}
    resources |= {
        i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=NOW)
        for i in base.installations.values()
    }
    recorded = StateDocument.new("staging").with_resources(resources)
    plan = make_plan(staging, recorded, now=NOW, catalog=load_catalog())
    assert {c.address: c.action.value for c in plan.changes if c.action.value != "noop"} == {
        "installation.initech.boards": "delete"
    }


def test_null_removes_a_tenant_of_an_included_file(config) -> None:  # type: ignore[no-untyped-def]
    """A null removes a tenant wherever it is declared, here in tenants/acme.yaml."""
    directory = config("tenants: {acme: null}\n")
    desired = _load(directory).desired
    assert set(desired.installations) == {"installation.initech.ado", "installation.initech.boards"}


def test_null_that_removes_nothing_warns(config) -> None:  # type: ignore[no-untyped-def]
    """A null naming a key the base does not set (a typo) is a located warning, not a silent no-op."""
    directory = config(
        "tenants:\n"  # 1
        "  initech:\n"  # 2
        "    installations:\n"  # 3
        "      bords: null\n"  # 4
    )
    loaded = _load(directory)
    assert len(loaded.desired.installations) == 3
    [warning] = loaded.warnings
    assert str(warning.location) == "environments/staging.yaml:4:7"
    assert "null removes tenants.initech.installations.bords, which the base configuration does not set" in str(warning)


def test_overlay_changes_a_tenant_of_an_included_file(config) -> None:  # type: ignore[no-untyped-def]
    """An overlay changes a tenant that lives in an included file, merging into that file's declaration."""
    directory = config(
        ACME_ADO  # 1-4
        + "        parameters: {project: P-staging}\n"  # 5
        + "        scopes: [vso.work_full, vso.code]\n"  # 6
    )
    loaded = _load(directory)
    acme = loaded.desired.installations["installation.acme.ado"]
    assert dict(acme.declared.parameters) == {"organization": "acme", "project": "P-staging"}
    assert acme.declared.scopes == ("vso.code", "vso.work_full")
    assert loaded.files == ["reconciler.yaml", "tenants/acme.yaml", "environments/staging.yaml"]


def test_overlay_adds_a_tenant_and_switches_a_secret_reference(config) -> None:  # type: ignore[no-untyped-def]
    """A tenant the base lacks is added; a partner's secret reference is swapped for the environment's."""
    directory = config(
        "partners:\n"  # 1
        "  microsoft-azure-devops: {client_secret: '${env:STAGING_SECRET}'}\n"  # 2
        "tenants:\n"  # 3
        "  globex:\n"  # 4
        "    installations:\n"  # 5
        "      ado: {partner: microsoft-azure-devops, parameters: {organization: globex, project: Q},"  # 6
        " scopes: [vso.work_full]}\n"  # 6 (continued)
    )
    desired = _load(directory).desired
    partner = desired.partners["partner.microsoft-azure-devops"]
    assert partner.declared.client_secret_ref == "${env:STAGING_SECRET}"
    assert partner.client_secret is not None and partner.client_secret.get_secret_value() == "s3cr3t-staging"
    assert "installation.globex.ado" in desired.installations


def test_empty_overlay_is_the_base_with_its_own_name(config) -> None:  # type: ignore[no-untyped-def]
    """An overlay with nothing in it (but comments) declares what the base declares, under the environment's name."""
    directory = config("# staging differs only in its state\n")
    base, staging = _load(directory, environment=None).desired, _load(directory).desired
    assert staging.installations == base.installations and staging.partners == base.partners
    assert (base.environment, staging.environment) == ("default", "staging")


def test_environment_names_the_desired_state_and_backend(config) -> None:  # type: ignore[no-untyped-def]
    """The desired state carries the environment's name; its backend (also through load_root) is the overlay's."""
    directory = config(
        {
            "environments/staging.yaml": "backend: {path: state-staging}\n" + ACME_ADO + "        scopes: [vso.code]\n",
            "environments/production.yaml": "",
        }
    )
    assert environment_names(directory) == ["production", "staging"]
    assert _load(directory, environment=None).desired.environment == "default"
    assert _load(directory, environment="default").desired.environment == "default"  # no default.yaml: the base
    assert _load(directory, environment="production").desired.environment == "production"
    staging = _load(directory)
    assert staging.desired.environment == "staging"
    assert staging.root.backend.path == "state-staging"
    assert load_root(directory, environment="staging").backend.path == "state-staging"
    assert load_root(directory).backend.path == "state"


# -- choosing an environment ------------------------------------------------------------------------------------


def test_unknown_environment_lists_the_defined_ones(config) -> None:  # type: ignore[no-untyped-def]
    """An unknown name is an error (never an empty configuration) that lists the environments defined."""
    directory = config({"environments/staging.yaml": "", "environments/production.yaml": ""})
    issue = _error(directory, environment="prod")
    assert str(issue).startswith("environments: unknown environment 'prod': there is no environments/prod.yaml")
    assert "environments defined: production, staging" in str(issue)
    assert "did you mean 'staging'? environments defined: production, staging" in str(_error(directory, environment="stagin"))
    with pytest.raises(ConfigError, match="unknown environment 'prod'"):
        load_root(directory, environment="prod")


def test_unknown_environment_without_any_defined(config) -> None:  # type: ignore[no-untyped-def]
    """With no environments/ at all, the error says how to define one."""
    directory = config({})
    issue = _error(directory, environment="staging")
    assert "unknown environment 'staging'" in str(issue)
    assert "no environment is defined; add environments/staging.yaml" in str(issue)


def test_yml_extension_is_pointed_out(config) -> None:  # type: ignore[no-untyped-def]
    """environments/NAME.yml is not read, and the error says to rename it."""
    directory = config({"environments/staging.yml": ""})
    assert "rename environments/staging.yml to staging.yaml" in str(_error(directory))


@pytest.mark.parametrize("name", ["Staging", "../staging", "-x", "", "a" * 64, "st aging", "prod\n"])
def test_invalid_environment_name(config, name: str) -> None:  # type: ignore[no-untyped-def]
    """Names are lowercase letters, digits, '-' and '_' (they name files and state rows)."""
    directory = config({"environments/staging.yaml": ""})
    assert "invalid environment name" in str(_error(directory, environment=name))


# -- errors are located where the value was written -------------------------------------------------------------


def test_error_in_overlay_value_is_located_in_the_overlay(config) -> None:  # type: ignore[no-untyped-def]
    """A bad value the overlay wrote is reported at its line and column in the overlay file."""
    directory = config(
        "# staging asks for the build scope too\n"  # 1
        + INITECH_ADO  # 2-5
        + "        scopes: [vso.work_full, vso.buld]\n"  # 6
    )
    issue = _error(directory)
    assert str(issue.location) == "environments/staging.yaml:6:33"
    assert issue.key_path == "tenants.initech.installations.ado.scopes[1]"
    assert "unknown scope 'vso.buld'" in issue.message


@pytest.mark.parametrize(
    ("overlay", "where", "message"),
    [
        (INITECH_ADO + "        scope: [vso.work_full]\n", "environments/staging.yaml:5:9", "unknown key 'scope'"),
        ("tennants: {}\n", "environments/staging.yaml:1:1", "unknown key 'tennants' (did you mean 'tenants'?)"),
        ("version: 2\n", "environments/staging.yaml:1:10", "input should be 1"),
        ("include: [more.yaml]\n", "environments/staging.yaml:1:1", "an environment overlay cannot include files"),
        (INITECH_ADO + "        parameters: [initech]\n", "environments/staging.yaml:5:9", "got a list"),
        (INITECH_ADO + "        scopes: null\n", "environments/staging.yaml:5:17", "missing required key 'scopes'"),
        (INITECH_ADO + "        parameters: {project: null}\n", "environments/staging.yaml:5:31", "missing parameter 'project'"),
        ("platform: {service_domain: 'https://x'}\n", "environments/staging.yaml:1:28", "expected a host name"),
        ("partners: {microsoft-azure-devops: {client_secret: literal}}\n", "environments/staging.yaml:1:52", "a literal secret"),
        (
            (
                "tenants:\n  globex:\n    installations:\n"
                "      ado: {partner: microsoft-azure-devops, scopes: [vso.work_full], parameters: {project: Q}}\n"
            ),
            "environments/staging.yaml:4:",
            "missing parameter 'organization'",
        ),
        ("tenants: [acme]\n", "environments/staging.yaml:1:1", "input should be a mapping, got a list"),
        ("- tenants\n", "environments/staging.yaml:1:1", "expected a mapping at the top level"),
        ("tenants: {acme: {\n", "environments/staging.yaml:2:", "invalid YAML"),
    ],
    ids=[
        "unknown-key", "unknown-top-level-key", "version-2", "include-refused", "wrong-type", "null-removes-required",
        "null-removes-parameter", "bad-service-domain", "literal-secret", "new-tenant", "section-not-a-mapping",
        "overlay-is-a-list", "yaml-syntax",
    ],
)
def test_overlay_errors_are_located_in_the_overlay(config, overlay: str, where: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """Each kind of mistake made in the overlay is one error located in the overlay file."""
    issue = _error(config(overlay))
    assert str(issue).startswith(where) and message in str(issue), str(issue)


def test_missing_environment_variable_of_an_overlay_reference(config) -> None:  # type: ignore[no-untyped-def]
    """A reference the overlay wrote that cannot be resolved is reported on the overlay's line."""
    directory = config("partners:\n  microsoft-azure-devops:\n    client_secret: ${env:STAGING_SECRET}\n")
    issue = _error(directory, environ={k: v for k, v in ENV.items() if k != "STAGING_SECRET"})
    assert str(issue).startswith("environments/staging.yaml:3:20: ")
    assert "environment variable STAGING_SECRET is not set" in issue.message


def test_error_in_base_value_stays_located_in_the_base(config) -> None:  # type: ignore[no-untyped-def]
    """With an overlay active, a bad value it did not touch is still reported where the base wrote it."""
    directory = config(
        ACME_ADO + "        parameters: {project: P-staging}\n",  # 5
        acme=ACME.replace("[vso.work_full]", "[vso.work_full, vso.buld]"),  # 7
    )
    issue = _error(directory)
    assert str(issue.location) == "tenants/acme.yaml:7:33"
    assert "unknown scope 'vso.buld'" in issue.message


def test_error_in_a_merged_block_is_located_by_its_parts(config) -> None:  # type: ignore[no-untyped-def]
    """One installation, values from two files: each error points at the file that wrote the offending value."""
    directory = config(
        ACME_ADO + "        parameters: {organization: -acme}\n",  # 5: the overlay breaks the organization
        acme=ACME.replace("[vso.work_full]", "[vso.work_full, vso.buld]"),  # 7: the base breaks a scope
    )
    with pytest.raises(ConfigError) as caught:
        _load(directory)
    located = sorted(str(i.location) for i in caught.value.issues)
    assert located == ["environments/staging.yaml:5:36", "tenants/acme.yaml:7:33"]


def test_another_environments_unusable_state_path_does_not_stop_this_one(config) -> None:  # type: ignore[no-untyped-def]
    """Every environment's state directory is sealed from references; one whose path holds a NUL cannot name a
    directory, so this environment loads (and that environment's own load names the key)."""
    directory = config('backend: {path: "st\\0ate"}\n')
    loaded = load_config(directory, environ=ENV, today=NOW.date())
    assert "acme" in {i.declared.tenant for i in loaded.desired.installations.values()}
    with pytest.raises(ConfigError) as raised:
        load_config(directory, environ=ENV, today=NOW.date(), environment="staging")
    assert "backend.path: must not contain control characters" in str(raised.value)
