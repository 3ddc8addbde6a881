"""The declaration table: every declared attribute has one effect, and an in-place update records exactly the
attributes whose effect is an update."""

from __future__ import annotations

import datetime as dt

from reconciler.declared import INSTALLATION_FIELDS, DeclaredInstallation, Effect, declared_reasons
from reconciler.placement import Placement
from reconciler.state.records import installation_record, updated_installation_record

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BASE = DeclaredInstallation(
    tenant="acme", name="ado", connector="microsoft-azure-devops", partner="ado", auth="azure-devops-oauth",
    parameters={"organization": "acme-org"}, scopes=("vso.work_full",), client_id="c", client_secret_ref="${env:S}",
    redirect_uri="https://x.example/cb", token_url="https://t.example/token", api_url="https://dev.azure.com",
)
CHANGED = {
    "connector": "other", "partner": "renamed", "auth": "entra-id", "parameters": {"organization": "other"},
    "scopes": ("vso.code",), "client_id": "d", "client_secret_ref": "${env:T}", "credentials_source": "installation",
    "redirect_uri": "https://y.example/cb", "token_url": "https://u.example/token", "api_url": "https://api.example",
    "protected": True, "revoke_url": "https://t.example/revoke", "placement": Placement(account="acme"),
}


def test_every_declared_attribute_has_one_rule() -> None:
    """The table names each attribute of the declaration once."""
    fields = [rule.field for rule in INSTALLATION_FIELDS]
    assert sorted(fields) == sorted(DeclaredInstallation.model_fields) and len(set(fields)) == len(fields)
    assert {f for f in fields if f not in CHANGED} == {"tenant", "name"}


def test_an_update_records_exactly_the_update_attributes() -> None:
    """Each attribute changed alone: an update-effect one is recorded in place, any other keeps the recorded value."""
    record = installation_record(BASE, granted=BASE.scopes, authorized_at=NOW)
    effects = {rule.field: rule.effect for rule in INSTALLATION_FIELDS}
    for field, value in CHANGED.items():
        want = BASE.model_copy(update={field: value})
        updated = updated_installation_record(record, want)
        assert (getattr(updated, field) == value) == (effects[field] is Effect.UPDATE), field


def test_each_changed_attribute_gives_a_reason_of_its_effect() -> None:
    """A change of one attribute explains itself under its own effect and nowhere else (the API is judged by the
    planner's binding rule, with the recorded partner's API standing in)."""
    for rule in INSTALLATION_FIELDS:
        if rule.field not in CHANGED or rule.reasons is None:
            continue
        want = BASE.model_copy(update={rule.field: CHANGED[rule.field]})
        others = {Effect.UPDATE, Effect.REAUTHORIZE} - {rule.effect}
        # guarded: a partner's secret reference is the partner's change; a new source is reported for one client
        if rule.field not in ("client_secret_ref", "credentials_source"):
            assert declared_reasons(rule.effect, want, BASE), rule.field
        assert not any(declared_reasons(effect, want, BASE) for effect in others), rule.field


def test_a_placement_change_names_what_moved() -> None:
    """Another account or another party holding the tokens is a re-authorization that says which."""
    on_cyclr = BASE.model_copy(update={"placement": Placement(account="acme")})
    moved = on_cyclr.model_copy(update={"placement": Placement(account="acme-2", auth_via="reconciler")})
    assert declared_reasons(Effect.REAUTHORIZE, on_cyclr, BASE) == ["moves to the cyclr platform"]
    assert declared_reasons(Effect.REAUTHORIZE, BASE, on_cyclr) == ["moves to local state"]
    assert declared_reasons(Effect.REAUTHORIZE, moved, on_cyclr) == [
        'account changed: "acme" -> "acme-2"',
        'auth_via changed: "platform" -> "reconciler"',
    ]
