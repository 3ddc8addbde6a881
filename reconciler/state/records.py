"""Building state records from the desired state: what a completed step records.

Owns: the mapping DesiredPartner/DesiredInstallation -> PartnerRecord/InstallationRecord. Must not: do I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from reconciler.config.desired import DesiredInstallation, DesiredPartner
from reconciler.state.model import InstallationRecord, PartnerRecord

__all__ = ["installation_record", "partner_record", "updated_installation_record"]


def partner_record(partner: DesiredPartner) -> PartnerRecord:
    return PartnerRecord(
        name=partner.name,
        connector=partner.connector,
        auth=partner.auth,
        tenant_id=partner.tenant_id,
        client_id=partner.client_id,
        client_secret_ref=partner.client_secret_ref,
        redirect_uri=partner.redirect_uri,
        authorize_url=partner.authorize_url,
        token_url=partner.token_url,
        api_url=partner.api_url,
        scopes=partner.scopes,
        revoke_url=partner.revoke_url,
    )


def installation_record(
    installation: DesiredInstallation,
    *,
    granted: Iterable[str],
    authorized_at: dt.datetime,
    expires_at: dt.datetime | None = None,
    authorized_by: str | None = None,
) -> InstallationRecord:
    """The record of an installation just authorized: declared scopes as requested, `granted` as normalised."""
    return InstallationRecord(
        tenant=installation.tenant,
        name=installation.name,
        connector=installation.connector,
        partner=installation.partner,
        auth=installation.auth,
        parameters=dict(installation.parameters),
        requested_scopes=installation.scopes,
        granted_scopes=tuple(sorted(set(granted))),
        client_id=installation.client_id,
        client_secret_ref=installation.client_secret_ref,
        credentials_source=installation.credentials_source,
        redirect_uri=installation.redirect_uri,
        token_url=installation.token_url,
        api_url=installation.api_url or None,
        authorized_at=authorized_at,
        authorized_by=authorized_by,
        expires_at=expires_at,
        protected=installation.protected,
        revoke_url=installation.revoke_url,
    )


def updated_installation_record(record: InstallationRecord, installation: DesiredInstallation) -> InstallationRecord:
    """The record after an in-place update (no new consent): the declared attributes an `update` may change."""
    return record.model_copy(
        update={
            "partner": installation.partner,
            "parameters": dict(installation.parameters),
            "client_secret_ref": installation.client_secret_ref,
            "credentials_source": installation.credentials_source,
            "protected": installation.protected,
            "revoke_url": updated_revoke_url(record, installation),
        }
    )


def updated_revoke_url(record: InstallationRecord, installation: DesiredInstallation) -> str | None:
    """The revocation endpoint an in-place update records: the declared one while the grant's token endpoint is
    still the declared one (the configuration validated it against that origin), else the recorded one."""
    if installation.token_url != record.token_url:
        return record.revoke_url
    return installation.revoke_url
