"""Protection: `protect: true` on an installation or a tenant, recorded in state, and deletes refused without
`--allow-delete` (the planner's `allow_delete` globs). Unprotecting is an update of its own."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from reconciler.addresses import Globs
from reconciler.catalog.files import load_catalog
from reconciler.config import DesiredState, load_config
from reconciler.errors import ConfigError, PlanError
from reconciler.plan import Action, Plan
from reconciler.planner import make_plan
from reconciler.state.model import StateDocument, decode_state, encode_state
from reconciler.state.records import installation_record, partner_record, updated_installation_record

ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "s3cr3t-partner-value"}
NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
ACME_ADO, ACME_BOARDS, GLOBEX_ADO = "installation.acme.ado", "installation.acme.boards", "installation.globex.ado"
INSTALLATION_PROTECT, TENANT_PROTECT = "        protect: true\n", "  globex:\n    protect: true\n"

CONFIG = (
    "version: 1\n"  # 1
    "platform: {service_domain: app-h.cyclr.com}\n"  # 2
    "partners:\n"  # 3
    "  microsoft-azure-devops:\n"  # 4
    "    auth: azure-devops-oauth\n"  # 5
    "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
    "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 7
    "tenants:\n"  # 8
    "  acme:\n"  # 9
    "    installations:\n"  # 10
    "      ado:\n"  # 11
    "        connector: microsoft-azure-devops\n"  # 12
    "        parameters: {organization: acme, project: P}\n"  # 13
    "        scopes: [vso.work_full]\n"  # 14
    "        protect: true\n"  # 15
    "      boards:\n"  # 16
    "        connector: microsoft-azure-devops\n"  # 17
    "        parameters: {organization: acme, project: B}\n"  # 18
    "        scopes: [vso.work_full]\n"  # 19
    "  globex:\n"  # 20
    "    protect: true\n"  # 21
    "    installations:\n"  # 22
    "      ado:\n"  # 23
    "        connector: microsoft-azure-devops\n"  # 24
    "        parameters: {organization: globex, project: G}\n"  # 25
    "        scopes: [vso.work_full]\n"  # 26
)

# Microsoft's endpoints offer no revocation (no revoke_url declared): a deleted grant's tokens are forgotten.
NOT_REVOKED = "its tokens are forgotten, not revoked: revoke in the user's Azure DevOps profile"


@pytest.fixture
def config(write_config, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Write `text` as reconciler.yaml into a fresh directory, chdir into it and return it."""

    def write(text: str = CONFIG) -> Path:
        directory: Path = write_config({"reconciler.yaml": text})
        monkeypatch.chdir(directory)
        return directory

    return write


def _desired(directory: Path) -> DesiredState:
    return load_config(directory, environ=ENV).desired


def _applied(desired: DesiredState) -> StateDocument:
    """State after everything in `desired` was applied."""
    resources = {p.address: partner_record(p.declared) for p in desired.partners.values()}
    resources |= {
        i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=NOW)
        for i in desired.installations.values()
    }
    return StateDocument.new("default").with_resources(resources)


def _without(desired: DesiredState, *addresses: str, tenants: frozenset[str] | None = None) -> DesiredState:
    installations = {a: i for a, i in desired.installations.items() if a not in addresses}
    protected = desired.protected_tenants if tenants is None else tenants
    return dataclasses.replace(desired, installations=installations, protected_tenants=protected)


def _plan(desired: DesiredState, recorded: StateDocument, allow_delete: frozenset[str] = frozenset()) -> Plan:
    return make_plan(desired, recorded, now=NOW, catalog=load_catalog(), allow_delete=Globs.of(allow_delete))


def _actions(plan: Plan) -> dict[str, str]:
    return {c.address: c.action.value for c in plan.changes if c.action is not Action.NOOP}


# -- configuration and records ----------------------------------------------------------------------------------


def test_protect_on_installation_and_tenant(config) -> None:  # type: ignore[no-untyped-def]
    """`protect: true` protects one installation; on a tenant, every installation of it."""
    desired = _desired(config())
    assert {a: i.declared.protected for a, i in desired.installations.items()} == {
        ACME_ADO: True,
        ACME_BOARDS: False,
        GLOBEX_ADO: True,
    }
    assert desired.protected_tenants == frozenset({"globex"})


def test_installation_cannot_opt_out_of_tenant_protection(config) -> None:  # type: ignore[no-untyped-def]
    """`protect: false` under a protected tenant stays protected, with a located warning saying so."""
    directory = config(CONFIG + "        protect: false\n")  # 27
    loaded = load_config(directory, environ=ENV)
    assert loaded.desired.installations[GLOBEX_ADO].declared.protected
    [warning] = loaded.warnings
    assert str(warning).startswith("reconciler.yaml:27:18: tenants.globex.installations.ado.protect: protect: false")
    assert "tenant 'globex' protects all its installations" in str(warning)


def test_protect_must_be_a_boolean(config) -> None:  # type: ignore[no-untyped-def]
    """`protect: "yes"` (a string) is a located error, not truthy."""
    directory = config(CONFIG.replace(TENANT_PROTECT, '  globex:\n    protect: "yes"\n'))  # 21
    with pytest.raises(ConfigError) as caught:
        load_config(directory, environ=ENV)
    assert [str(i) for i in caught.value.issues] == [
        "reconciler.yaml:21:14: tenants.globex.protect: input should be a valid boolean, got a string"
    ]


def test_records_carry_protection_and_old_state_reads_unprotected() -> None:
    """installation_record records the flag; it round-trips, and state written before it existed reads False."""
    old = Path(__file__).parent / "cases" / "no_changes" / "state" / "default.json"
    doc = decode_state(old.read_bytes(), "default.json")
    installations = [r for r in doc.resources.values() if r.kind == "installation"]
    assert installations and not any(r.protected for r in installations)  # type: ignore[union-attr]
    protected = {a: r.model_copy(update={"protected": True}) for a, r in doc.resources.items()}
    again = decode_state(encode_state(doc.with_resources(protected)), "default.json")
    assert all(getattr(r, "protected", True) for r in again.resources.values())


def test_installation_record_from_desired(config) -> None:  # type: ignore[no-untyped-def]
    """The record of an applied installation says whether it was protected."""
    recorded = _applied(_desired(config()))
    assert {a: getattr(r, "protected", None) for a, r in recorded.resources.items() if a.startswith("installation.")} == {
        ACME_ADO: True,
        ACME_BOARDS: False,
        GLOBEX_ADO: True,
    }


# -- deletes ----------------------------------------------------------------------------------------------------


def test_deleting_a_protected_installation_is_refused(config) -> None:  # type: ignore[no-untyped-def]
    """Removing a protected installation from the configuration cannot be planned; the hint names --allow-delete."""
    desired = _desired(config())
    with pytest.raises(PlanError) as caught:
        _plan(_without(desired, ACME_ADO), _applied(desired))
    assert caught.value.message == f"the plan would delete protected installation: {ACME_ADO}"
    assert caught.value.hint is not None and "pass --allow-delete ADDRESS" in caught.value.hint


def test_every_protected_address_is_named(config) -> None:  # type: ignore[no-untyped-def]
    """When several protected installations would go, the error names each of them (and only them)."""
    desired = _desired(config())
    empty = dataclasses.replace(desired, installations={}, protected_tenants=frozenset())
    with pytest.raises(PlanError) as caught:
        _plan(empty, _applied(desired))
    assert caught.value.message == f"the plan would delete protected installations: {ACME_ADO}, {GLOBEX_ADO}"


def test_record_protection_holds_when_the_configuration_dropped_it(config) -> None:  # type: ignore[no-untyped-def]
    """Removing `protect: true` and the installation in one change is still refused: state says protected."""
    directory = config()
    recorded = _applied(_desired(directory))
    config(CONFIG.replace(INSTALLATION_PROTECT, "").replace(TENANT_PROTECT, "  globex:\n"))
    desired = _desired(directory)
    assert not any(i.declared.protected for i in desired.installations.values())
    with pytest.raises(PlanError, match=f"protected installations: {ACME_ADO}, {GLOBEX_ADO}"):
        _plan(_without(desired, ACME_ADO, GLOBEX_ADO), recorded)


def test_tenant_still_protected_in_configuration_protects_an_unprotected_record(config) -> None:  # type: ignore[no-untyped-def]
    """A record applied before its tenant was protected is protected by the tenant's declaration."""
    desired = _desired(config())
    recorded = _applied(desired)
    recorded = recorded.with_record(GLOBEX_ADO, recorded.resources[GLOBEX_ADO].model_copy(update={"protected": False}))
    with pytest.raises(PlanError, match=f"protected installation: {GLOBEX_ADO}$"):
        _plan(_without(desired, GLOBEX_ADO), recorded)
    plan = _plan(_without(desired, GLOBEX_ADO, tenants=frozenset()), recorded)
    assert _actions(plan) == {GLOBEX_ADO: "delete"}


def test_unprotected_delete_is_planned(config) -> None:  # type: ignore[no-untyped-def]
    """Protection of others does not stop the delete of an unprotected installation."""
    desired = _desired(config())
    plan = _plan(_without(desired, ACME_BOARDS), _applied(desired))
    assert _actions(plan) == {ACME_BOARDS: "delete"}
    [change] = [c for c in plan.changes if c.address == ACME_BOARDS]
    assert change.reasons == ("removed from configuration",)
    assert [w for w in change.warnings if w.startswith(NOT_REVOKED)] == list(change.warnings) != []


@pytest.mark.parametrize("pattern", [ACME_ADO, "installation.acme.*", "installation.*", "*.ado"])
def test_allow_delete_by_address_or_glob(config, pattern: str) -> None:  # type: ignore[no-untyped-def]
    """--allow-delete ADDRESS (or a glob matching it) lets the delete through, and the plan says why."""
    desired = _desired(config())
    plan = _plan(_without(desired, ACME_ADO), _applied(desired), frozenset({pattern}))
    assert _actions(plan) == {ACME_ADO: "delete"}
    [change] = [c for c in plan.changes if c.address == ACME_ADO]
    assert change.reasons == ("removed from configuration", f"protected: deletion allowed by --allow-delete {pattern}")
    assert any(w.startswith(NOT_REVOKED) for w in change.warnings)


@pytest.mark.parametrize("pattern", ["installation.globex.*", "installation.acme", "INSTALLATION.ACME.ADO", "acme"])
def test_allow_delete_that_does_not_match(config, pattern: str) -> None:  # type: ignore[no-untyped-def]
    """A pattern that does not match the whole address (case-sensitively) allows nothing."""
    desired = _desired(config())
    with pytest.raises(PlanError, match=f"protected installation: {ACME_ADO}$"):
        _plan(_without(desired, ACME_ADO), _applied(desired), frozenset({pattern}))


def test_allow_delete_must_cover_every_protected_address(config) -> None:  # type: ignore[no-untyped-def]
    """Allowing one of two protected deletes still refuses the plan, naming only the other."""
    desired = _desired(config())
    with pytest.raises(PlanError, match=f"protected installation: {GLOBEX_ADO}$"):
        _plan(_without(desired, ACME_ADO, GLOBEX_ADO), _applied(desired), frozenset({"installation.acme.*"}))


# -- changing protection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "reason"), [(True, False, "protection removed"), (False, True, "protection added")])
def test_changing_protection_is_an_update(config, before: bool, after: bool, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Turning protection off or on is an in-place update of its own, shown as the `protected` attribute."""
    desired = _desired(config())
    recorded = _applied(desired)
    recorded = recorded.with_record(ACME_ADO, recorded.resources[ACME_ADO].model_copy(update={"protected": before}))
    want = desired.installations[ACME_ADO]
    installation = dataclasses.replace(want, declared=want.declared.model_copy(update={"protected": after}))
    changed = dataclasses.replace(desired, installations={**desired.installations, ACME_ADO: installation})
    plan = _plan(changed, recorded)
    assert _actions(plan) == {ACME_ADO: "update"}
    [change] = [c for c in plan.changes if c.address == ACME_ADO]
    assert change.reasons == (reason,)
    assert change.before is not None and change.after is not None
    assert (change.before.get("protected", False), change.after.get("protected", False)) == (before, after)


def test_unprotect_then_delete(config) -> None:  # type: ignore[no-untyped-def]
    """The usual workflow: one change removes `protect: true` (an update, recorded), the next deletes."""
    directory = config()
    recorded = _applied(_desired(directory))
    config(CONFIG.replace(INSTALLATION_PROTECT, ""))  # step 1: acme/ado unprotected
    step1 = _desired(directory)
    plan = _plan(step1, recorded)
    assert _actions(plan) == {ACME_ADO: "update"}
    record = updated_installation_record(recorded.resources[ACME_ADO], step1.installations[ACME_ADO].declared)  # type: ignore[arg-type]
    recorded = recorded.with_record(ACME_ADO, record)
    assert _actions(_plan(step1, recorded)) == {}
    plan = _plan(_without(step1, ACME_ADO), recorded)  # step 2: acme/ado removed
    assert _actions(plan) == {ACME_ADO: "delete"}
