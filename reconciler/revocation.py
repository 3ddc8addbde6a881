"""Revoking the grant behind recorded tokens (RFC 7009), best effort: at the endpoint state recorded for the
installation (its `revoke_url`, or the flavour's path on its token origin; see `planner.revocation_url`), with the
declared secret of the client that obtained them.

Owns: whether a grant can be revoked, the request, and the warning that says where to revoke by hand when it
cannot. Must not: forget tokens (the custodian does, after), write state, or send a token or a secret anywhere but
the origin of the token endpoint state recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.flows import FlowSettings, revoke_grant
from reconciler.catalog import Catalog
from reconciler.config.desired import DesiredState
from reconciler.planner import revocation_url, revoke_in
from reconciler.state.model import InstallationRecord
from reconciler.tokens.model import TokenSet

__all__ = ["Revocation", "declared_secret", "revoke_recorded"]


@dataclass(frozen=True)
class Revocation:
    """Whether the grant was revoked, and what the user should know when it was not (None: nothing)."""

    revoked: bool
    warning: str | None = None


def declared_secret(desired: DesiredState, address: str, record: InstallationRecord) -> SecretStr | None:
    """The declared secret of the client `record`'s tokens were issued to, at the token endpoint they came from;
    None when the configuration no longer declares that pair (the secret belongs elsewhere)."""
    owner = (
        desired.installations.get(address)
        if record.credentials_source == "installation"
        else desired.partners.get(f"partner.{record.partner}")
    )
    if owner is None or owner.declared.client_id != record.client_id or owner.declared.token_url != record.token_url:
        return None
    return owner.client_secret


def revoke_recorded(
    record: InstallationRecord,
    tokens: TokenSet | None,
    secret: SecretStr | None,
    catalog: Catalog,
    http: httpx.Client,
    retrying: Callable[[Callable[[], bool]], bool],
) -> Revocation:
    """Revoke the grant behind `tokens` with `secret` (see `declared_secret`), transient failures retried. A
    failure is a warning naming where to revoke by hand; the tokens are forgotten either way."""
    if tokens is None:
        return Revocation(False)
    url = revocation_url(record, catalog)
    if url is None:
        return Revocation(False)  # the plan said so: "its tokens are forgotten, not revoked: revoke in ..."
    where = revoke_in(record, catalog)
    if secret is None:
        return Revocation(False, f"not revoked: client {record.client_id} is no longer declared; revoke in {where}")
    connector = catalog.connectors.get(record.connector)
    flavour = connector.auth.get(record.auth) if connector is not None else None
    if flavour is None:  # a flavour this catalog no longer has: its dialect is not known
        return Revocation(False, f"not revoked: auth {record.auth} is not in the catalog; revoke in {where}")
    settings = FlowSettings(flavour, record.client_id, secret, record.redirect_uri, "", record.token_url, ())
    try:
        return Revocation(retrying(lambda: revoke_grant(settings, url, http, tokens)))
    except ProviderError as exc:
        return Revocation(False, f"its grant was not revoked ({exc.message}); its tokens are forgotten: revoke in {where}")
