"""Building state records from declarations: what a completed step records.

Owns: the mapping DeclaredPartner/DeclaredInstallation -> PartnerRecord/InstallationRecord: a new grant, an
in-place update (by `INSTALLATION_FIELDS`), a deferred authorization's marker. Must not: do I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from reconciler.declared import (
    INSTALLATION_FIELDS,
    DeclaredInstallation,
    DeclaredPartner,
    Effect,
    target_digest,
)
from reconciler.state.model import InstallationRecord, PartnerRecord, PendingRecord

__all__ = [
    "installation_record",
    "migrated_from",
    "partner_record",
    "pending_installation_record",
    "pending_marker",
    "updated_installation_record",
]


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


def migrated_from(old: InstallationRecord | None, installation: DeclaredInstallation, moved_from: str | None) -> str | None:
    """The partner a migration campaign moved `installation` from, for its new grant: `moved_from` (the partner it
    names, whose `migrate_to` moves it) when the configuration moves it now; on the partner it was recorded with,
    what `old` recorded; None otherwise (created there, or moved by hand)."""
    if moved_from is not None:
        return moved_from
    return old.migrated_from if old is not None and old.partner == installation.partner else None


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


def pending_marker(
    installation: DeclaredInstallation, url: str, *, since: dt.datetime, expires_at: dt.datetime
) -> PendingRecord:
    """What the document records of a deferred authorization of `installation` (its secrets are sealed apart)."""
    return PendingRecord(
        since=since,
        expires_at=expires_at,
        target_digest=target_digest(installation),
        client_id=installation.client_id,
        requested_scopes=installation.scopes,
        authorize_url=url,
    )


def pending_installation_record(
    current: InstallationRecord | None, installation: DeclaredInstallation, marker: PendingRecord
) -> InstallationRecord:
    """The record while `marker` waits: an authorized record keeps its grant (in use until the new one is in
    place); anything else becomes a pending record of the declaration."""
    if current is not None and current.status == "authorized":
        return current.model_copy(update={"pending": marker})
    record = installation_record(installation, granted=(), authorized_at=None)
    return record.model_copy(update={"status": "pending_authorization", "pending": marker})
