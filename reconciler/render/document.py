"""The versioned JSON plan document — the contract for automation, and the input of every other renderer.

Owns: the document's own models (so internal refactors never change the JSON) and `plan -> document`.
Must not: import the executor, the CLI, or anything that performs I/O. Documented in docs/plan-json.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from reconciler import __version__
from reconciler.plan import Plan

__all__ = ["PLAN_FORMAT_VERSION", "AdminConsentDoc", "ChangeDoc", "PlanDocument", "StateDoc", "SummaryDoc", "render_json", "to_document"]

PLAN_FORMAT_VERSION = "1.2"
_M = TypeVar("_M", bound="_Doc")


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StateDoc(_Doc):
    exists: bool
    location: str
    lineage: str | None
    serial: int | None


class ChangeDoc(_Doc):
    address: str
    kind: str
    tenant: str | None
    action: str
    reasons: list[str]
    warnings: list[str]
    pending: bool
    link: str | None = None  # a pending authorization's link: the service's, else the provider's (None: not recorded)
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class SummaryDoc(_Doc):
    create: int
    update: int
    reauthorize: int
    delete: int
    noop: int
    pending: int


class AdminConsentDoc(_Doc):
    """An admin consent a tenant's directory needs before its users sign in (found by the Entra ID preflight)."""

    tenant: str
    partner: str
    scopes: list[str]
    url: str
    installations: list[str]


class PlanDocument(_Doc):
    format_version: str
    reconciler_version: str
    environment: str
    state: StateDoc
    has_changes: bool
    summary: SummaryDoc
    changes: list[ChangeDoc]
    warnings: list[str]
    admin_consents: list[AdminConsentDoc] = []  # from a preflight (apply, plan --refresh); a plain plan asks no one


def to_document(plan: Plan, warnings: list[str] | tuple[str, ...] = ()) -> PlanDocument:
    """The JSON document for `plan`; `warnings` are configuration diagnostics shown with it."""
    return PlanDocument(
        format_version=PLAN_FORMAT_VERSION,
        reconciler_version=__version__,
        environment=plan.environment,
        state=StateDoc(
            exists=plan.state.exists,
            location=plan.state.location,
            lineage=plan.state.lineage,
            serial=plan.state.serial,
        ),
        has_changes=plan.has_changes,
        summary=SummaryDoc(**plan.summary()),
        changes=[
            _built(  # from the planner's own values: no need to validate 10,000 times
                ChangeDoc,
                {
                    "address": c.address,
                    "kind": c.kind,
                    "tenant": c.tenant,
                    "action": c.action.value,
                    "reasons": list(c.reasons),
                    "warnings": list(c.warnings),
                    "pending": c.pending,
                    "link": _link_of(c.before) if c.pending else None,
                    "before": dict(c.before) if c.before is not None else None,
                    "after": dict(c.after) if c.after is not None else None,
                },
            )
            for c in plan.changes
        ],
        warnings=list(warnings),
    )


def by_tenant(changes: list[ChangeDoc]) -> dict[str, list[ChangeDoc]]:
    """`changes` grouped by tenant ("" for partners), tenants in order of first appearance."""
    groups: dict[str, list[ChangeDoc]] = {}
    for change in changes:
        groups.setdefault(change.tenant or "", []).append(change)
    return groups


def _link_of(before: Mapping[str, Any] | None) -> str | None:
    link = (before or {}).get("link") or (before or {}).get("authorization_url")
    return link if isinstance(link, str) else None


_set_attribute = object.__setattr__


def _built(model: type[_M], values: dict[str, Any]) -> _M:
    """`model` holding `values` (every field, already valid) without validation: what `model_construct` does,
    minus its per-field defaults and aliases loop, which costs more than the planning of a change."""
    instance = model.__new__(model)
    _set_attribute(instance, "__dict__", values)
    _set_attribute(instance, "__pydantic_fields_set__", set(values))
    _set_attribute(instance, "__pydantic_extra__", None)
    _set_attribute(instance, "__pydantic_private__", None)
    return instance


def render_json(doc: PlanDocument) -> str:
    return json.dumps(doc.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
