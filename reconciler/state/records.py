"""Building state records from declarations: what a completed step records.

Owns: the mapping DeclaredPartner/DeclaredInstallation -> PartnerRecord/InstallationRecord, the in-place update
of a record (by `INSTALLATION_FIELDS`), and the pending marker <-> authorization request conversion of a deferred
authorization. Must not: do I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from reconciler.declared import INSTALLATION_FIELDS, DeclaredInstallation, DeclaredPartner, Effect
from reconciler.state.model import InstallationRecord, PartnerRecord

__all__ = ["installation_record", "partner_record", "updated_installation_record"]


def partner_record(partner: DeclaredPartner) -> PartnerRecord:
    return PartnerRecord(**dict(partner))


def installation_record(
    installation: DeclaredInstallation,
    *,
    granted: Iterable[str],
    authorized_at: dt.datetime | None,
    expires_at: dt.datetime | None = None,
    authorized_by: str | None = None,
) -> InstallationRecord:
    """The record of an installation just authorized: declared scopes as requested, `granted` as normalised."""
    return InstallationRecord(
        **{**dict(installation), "parameters": dict(installation.parameters), "api_url": installation.api_url or None},
        granted_scopes=tuple(sorted(set(granted))),
        authorized_at=authorized_at,
        authorized_by=authorized_by,
        expires_at=expires_at,
    )


_IN_PLACE = tuple(rule for rule in INSTALLATION_FIELDS if rule.effect is Effect.UPDATE)


def updated_installation_record(record: InstallationRecord, installation: DeclaredInstallation) -> InstallationRecord:
    """The record after an in-place update (no new consent): the declared attributes an `update` may change."""
    return record.model_copy(
        update={
            rule.field: getattr(installation, rule.field)
            for rule in _IN_PLACE
            if rule.recorded_in_place(installation, record)
        }
    )
