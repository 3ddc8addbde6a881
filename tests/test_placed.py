"""Plan rules for accounts and installations on a platform, called through the planner with built declarations."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.addresses import NO_GLOBS, Globs, Selection
from reconciler.catalog.files import load_catalog
from reconciler.config.desired import DesiredInstallation, DesiredState
from reconciler.declared import DeclaredInstallation
from reconciler.placed import HELD_BY_PLATFORM
from reconciler.placement import DeclaredAccount, Placement
from reconciler.plan import Action, Plan
from reconciler.planner import make_plan
from reconciler.state.model import AccountConnectorRecord, AccountRecord, Drift, PendingRecord, StateDocument
from reconciler.state.records import installation_record

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
ACME = DeclaredAccount(tenant="acme", id="acme", name="Acme Ltd", timezone="Europe/London")
ADO = DeclaredInstallation(
    tenant="acme", name="ado-main", connector="microsoft-azure-devops", partner="ado", auth="azure-devops-oauth",
    parameters={"organization": "acme-org"}, scopes=("vso.code",), client_id="", client_secret_ref="",
    credentials_source="platform", redirect_uri="https://app-h.cyclr.com/connector/callback",
    token_url="https://app.vssps.visualstudio.com/oauth2/token", placement=Placement(account="acme"),
)
SLACK = DeclaredInstallation(
    tenant="acme", name="chat", connector="slack", partner="", auth="", parameters={}, scopes=(), client_id="",
    client_secret_ref="", credentials_source="platform", redirect_uri="", token_url="", placement=Placement(account="acme"),
)
INSTALLED = AccountConnectorRecord(account_connector_id="1001", connector_id="310", authentication_id="32", authenticated=True)


def _desired(*installations: DeclaredInstallation, accounts: tuple[DeclaredAccount, ...] = (ACME,)) -> DesiredState:
    return DesiredState(
        partners={},
        installations={i.address: DesiredInstallation(i) for i in installations},
        accounts={a.address: a for a in accounts},
    )


def _signed_in(want: DeclaredInstallation, **update: object) -> object:
    record = installation_record(want, granted=(), authorized_at=NOW)
    return record.model_copy(update={"account_connector": INSTALLED, **update})


def _state(*records: object) -> StateDocument:
    return StateDocument.new("default").with_resources({r.address: r for r in records})  # type: ignore[attr-defined]


def _plan(desired: DesiredState, recorded: StateDocument | None, **kwargs: object) -> Plan:
    return make_plan(desired, recorded, now=NOW, catalog=load_catalog(), **kwargs)  # type: ignore[arg-type]


def _actions(plan: Plan) -> dict[str, str]:
    return {c.address: c.action.value for c in plan.changes}


def test_a_new_tenant_creates_its_account_before_its_installations() -> None:
    plan = _plan(_desired(ADO, SLACK), None)
    assert [c.address for c in plan.changes] == ["account.acme", "installation.acme.ado-main", "installation.acme.chat"]
    assert set(_actions(plan).values()) == {"create"}
    assert "installed in account \"acme\", then signed in through the platform" in plan.changes[1].reasons[0]
    assert plan.changes[2].after is not None and "redirect_uri" not in plan.changes[2].after  # a platform connector's own


def test_an_installation_the_platform_holds_is_up_to_date_without_a_grant_of_ours() -> None:
    recorded = _state(AccountRecord(**dict(ACME)), _signed_in(ADO))
    plan = _plan(_desired(ADO), recorded)
    assert not plan.has_changes
    assert plan.changes[1].before is not None and plan.changes[1].before["granted_scopes"] == HELD_BY_PLATFORM


def test_our_own_endpoints_do_not_matter_where_the_platform_signs_in() -> None:
    """The platform runs its own OAuth flow: our declared token endpoint moving changes nothing there."""
    recorded = _state(AccountRecord(**dict(ACME)), _signed_in(ADO))
    moved = ADO.model_copy(update={"token_url": "https://elsewhere.example/token"})
    assert not _plan(_desired(moved), recorded).has_changes


def test_parameters_update_and_scopes_sign_in_again() -> None:
    recorded = _state(AccountRecord(**dict(ACME)), _signed_in(ADO))
    edited = ADO.model_copy(update={"parameters": {"organization": "other"}})
    assert _actions(_plan(_desired(edited), recorded))["installation.acme.ado-main"] == "update"
    rescoped = ADO.model_copy(update={"scopes": ("vso.code", "vso.work")})
    change = _plan(_desired(rescoped), recorded).changes[1]
    assert change.action is Action.REAUTHORIZE and change.reasons[0] == "scopes added: vso.work"


def test_what_a_refresh_finds_on_the_platform_is_planned() -> None:
    """Deauthenticated: signed in again; gone from the platform: installed again."""
    account = AccountRecord(**dict(ACME))
    lapsed = _signed_in(ADO, account_connector=INSTALLED.model_copy(update={"authenticated": False}))
    change = _plan(_desired(ADO), _state(account, lapsed)).changes[1]
    assert change.action is Action.REAUTHORIZE and change.reasons == ("not authenticated on the platform",)
    flagged = _plan(_desired(ADO), _state(account, _signed_in(ADO)), refreshed={ADO.address: Drift.DEAUTHENTICATED})
    assert flagged.changes[1].action is Action.REAUTHORIZE
    gone = _signed_in(ADO, account_connector=None)
    change = _plan(_desired(ADO), _state(account, gone)).changes[1]
    assert change.action is Action.CREATE and change.reasons == ("not found on the platform: installed again",)


def test_a_due_sign_in_waits_until_its_marker_expires() -> None:
    marker = PendingRecord(since=NOW, expires_at=NOW + dt.timedelta(days=7), target_digest="d", client_id="", requested_scopes=())
    due = _signed_in(ADO, status="pending_authorization", pending=marker, account_connector=INSTALLED.model_copy(update={"authenticated": False}))
    change = _plan(_desired(ADO), _state(AccountRecord(**dict(ACME)), due)).changes[1]
    assert change.action is Action.NOOP and change.pending and "reconciler authorize installation.acme.ado-main" in change.reasons[0]
    later = make_plan(_desired(ADO), _state(AccountRecord(**dict(ACME)), due), now=NOW + dt.timedelta(days=8), catalog=load_catalog())
    assert later.changes[1].action is Action.REAUTHORIZE
    moved = ADO.model_copy(update={"parameters": {"organization": "other-org"}})
    change = _plan(_desired(moved), _state(AccountRecord(**dict(ACME)), due)).changes[1]
    assert change.action is Action.UPDATE and change.pending  # set in place; the sign-in stays due (for them)
    assert change.reasons[0] == 'organization changed: "acme-org" -> "other-org"' and "sign-in due" in change.reasons[1]


def test_a_removed_tenant_keeps_its_account_unless_allowed() -> None:
    recorded = _state(AccountRecord(**dict(ACME)), _signed_in(ADO))
    kept = _plan(_desired(accounts=()), recorded)
    assert _actions(kept) == {"account.acme": "noop", "installation.acme.ado-main": "delete"}
    assert "--allow-delete account.acme deletes it" in kept.changes[0].reasons[0]
    gone = _plan(_desired(accounts=()), recorded, allow_delete=Globs.of(["account.acme"]))
    assert [c.address for c in gone.changes] == ["installation.acme.ado-main", "account.acme"]  # the account last
    assert _actions(gone)["account.acme"] == "delete"


def test_an_account_rename_is_an_update() -> None:
    recorded = _state(AccountRecord(**dict(ACME)))
    renamed = ACME.model_copy(update={"name": "Acme Group"})
    change = _plan(_desired(accounts=(renamed,)), recorded).changes[0]
    assert change.action is Action.UPDATE and change.reasons == ("name changed",)


@pytest.mark.parametrize("target", ["installation.acme.ado-main", "installation.acme.*"])
def test_a_targeted_installation_keeps_its_accounts_change(target: str) -> None:
    plan = _plan(_desired(ADO, SLACK), None, selection=Selection.of([target], ()), allow_delete=NO_GLOBS)
    assert _actions(plan)["account.acme"] == "create"
