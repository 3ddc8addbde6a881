"""Pending authorizations: whether one recorded in state still stands for what is declared.

Owns: how long a deferred authorization's link is offered, and the rule that a pending authorization may be kept
(planned as pending) or completed (`reconciler authorize`) only while it is for what the configuration declares —
the same digest, its link on the declared authorization endpoint. Must not: read files, the environment, the
network or the clock, nor import YAML, HTTP, OAuth or CLI libraries.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from reconciler.config.desired import DesiredState
from reconciler.declared import DeclaredInstallation, api_url_of, target_digest
from reconciler.state.model import InstallationRecord, PartnerRecord, PendingRecord, StateDocument

__all__ = ["PENDING_LIFETIME", "link_goes_to", "pending_matches", "pending_target"]

PENDING_LIFETIME = dt.timedelta(days=7)


def pending_matches(
    want: DeclaredInstallation, have: InstallationRecord, authorize_url: str, recorded_partner: PartnerRecord | None
) -> bool:
    """Whether `have`'s pending authorization still stands for `want`: its digest is the one `want` has, and its
    link goes to the declared authorization endpoint. A version 1 digest (which does not cover the API) stands only
    for a record that is itself the pending one, whose recorded API then says where its tokens would go."""
    pending = have.pending
    if pending is None:
        return False
    if pending.target_digest != target_digest(want):
        legacy = pending.target_digest == target_digest(want, version=1)
        recorded_api = api_url_of(have, recorded_partner)
        if not (legacy and have.status == "pending_authorization" and recorded_api == want.api_url):
            return False
    return link_goes_to(pending, authorize_url, recorded_partner)


def pending_target(desired: DesiredState, recorded: StateDocument, address: str) -> DeclaredInstallation | None:
    """The declaration the recorded pending authorization of `address` may still be completed for: what it was
    issued for (client, endpoints, scopes, parameters) is still what is declared (`pending_matches`), so the code,
    the secret and the new tokens go where the authorization was planned to send them. None: it may not."""
    want, have = desired.installations.get(address), recorded.resources.get(address)
    partner = desired.partners.get(f"partner.{want.declared.partner}") if want is not None else None
    if want is None or partner is None or not isinstance(have, InstallationRecord):
        return None
    recorded_partner = recorded.resources.get(f"partner.{have.partner}")
    if not isinstance(recorded_partner, PartnerRecord):
        recorded_partner = None
    matches = pending_matches(want.declared, have, partner.declared.authorize_url, recorded_partner)
    return want.declared if matches else None


def link_goes_to(pending: PendingRecord, authorize_url: str, recorded_partner: PartnerRecord | None) -> bool:
    """Whether a pending authorization's link opens the declared authorization endpoint (scheme, host, path). A
    marker recorded without its link is judged by the recorded partner's endpoint."""
    if pending.authorize_url:
        link = urlsplit(pending.authorize_url)
        endpoint = urlsplit(authorize_url)
        return (link.scheme, link.netloc, link.path) == (endpoint.scheme, endpoint.netloc, endpoint.path)
    return recorded_partner is None or recorded_partner.authorize_url == authorize_url
