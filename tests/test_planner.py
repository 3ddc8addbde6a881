"""Planner rules called directly: the ones the loader normally guards, and purity."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from reconciler.catalog.files import load_catalog
from reconciler.config import load_config
from reconciler.errors import PlanError
from reconciler.planner import make_plan
from reconciler.state.model import StateDocument
from reconciler.state.records import installation_record, partner_record

NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
CASE = Path(__file__).parent / "cases" / "no_changes"
ENV = {"ADO_CLIENT_ID": "11111111-aaaa-4bbb-8ccc-000000000001", "ADO_CLIENT_SECRET": "x"}


def _desired():  # type: ignore[no-untyped-def]
    return load_config(CASE, environ=ENV).desired


def test_partner_removed_while_in_use_is_a_plan_error() -> None:
    """A desired installation whose partner is being deleted cannot be planned (the loader normally stops this)."""
    desired = _desired()
    recorded = StateDocument.new("default").with_resources(
        {p.address: partner_record(p.declared) for p in desired.partners.values()}
    )
    without_partner = dataclasses.replace(desired, partners={})
    with pytest.raises(PlanError, match=r"partner 'microsoft-azure-devops' is removed while installation\.acme"):
        make_plan(without_partner, recorded, now=NOW, catalog=load_catalog())


def test_plan_is_reproducible_and_sorted() -> None:
    """The same inputs give the same plan; partners come first and addresses are sorted."""
    desired = _desired()
    resources = {i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=NOW) for i in desired.installations.values()}
    recorded = StateDocument.new("default").with_resources(resources)
    first = make_plan(desired, recorded, now=NOW, catalog=load_catalog())
    second = make_plan(desired, recorded, now=NOW, catalog=load_catalog())
    assert first == second
    addresses = [c.address for c in first.changes]
    assert addresses[0].startswith("partner.") and addresses[1:] == sorted(addresses[1:])


def test_partner_deletes_come_after_installation_deletes() -> None:
    """Removing everything deletes installations before the partner whose client they were issued to."""
    desired = _desired()
    resources = {p.address: partner_record(p.declared) for p in desired.partners.values()}
    resources |= {i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=NOW) for i in desired.installations.values()}
    empty = dataclasses.replace(desired, partners={}, installations={})
    plan = make_plan(empty, StateDocument.new("default").with_resources(resources), now=NOW, catalog=load_catalog())
    assert [c.action.value for c in plan.changes] == ["delete"] * 3
    assert plan.changes[-1].address == "partner.microsoft-azure-devops"


def test_changed_api_endpoint_reauthorizes_instead_of_sending_tokens_elsewhere() -> None:
    """Tokens are only ever used where they were issued and checked: a new api_url means a new authorization."""
    desired = _desired()
    resources = {i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=NOW) for i in desired.installations.values()}
    recorded = StateDocument.new("default").with_resources(resources)
    moved = dataclasses.replace(
        desired,
        installations={
            a: dataclasses.replace(i, declared=i.declared.model_copy(update={"api_url": "https://proxy.example.net"}))
            for a, i in desired.installations.items()
        },
    )
    plan = make_plan(moved, recorded, now=NOW, catalog=load_catalog())
    assert {c.action.value for c in plan.changes if c.kind == "installation"} == {"reauthorize"}
    assert all("API endpoint changed" in " ".join(c.reasons) for c in plan.changes if c.kind == "installation")
