"""Placement rules: where an installation lives on the Cyclr platform (`Placement`) — its tenant's account, who
runs its sign-in, and the pinned authentication entry.

Owns: `auth_via` (the installation's, else its partner's, else `platform`), the partner's `authentication` pin,
the refusal of those keys on the local platform, and what signing in ourselves (`auth_via: reconciler`) needs: a
connector whose OAuth flow we know (a catalog one) and client credentials we hold (the partner's or the
installation's, not the Application Connector Library's). Must not: read files, resolve a reference, or call the
platform.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.config.located import KeyPath, SourceFile
from reconciler.config.partners import Checks
from reconciler.config.platform import only_on_cyclr
from reconciler.config.schema import InstallationSpec, PartnerSpec
from reconciler.placement import Placement

__all__ = ["check_partner_keys", "installation_placement"]

_PARTNER_KEYS = ("authentication", "auth_via")


def check_partner_keys(checks: Checks, partners: Mapping[str, tuple[SourceFile, PartnerSpec]]) -> None:
    """On the local platform, a partner's `authentication` and `auth_via` are errors (they apply only on Cyclr)."""
    if not checks.cyclr:
        for name, (src, spec) in partners.items():
            only_on_cyclr(checks.report, src, ("partners", name), spec, _PARTNER_KEYS)


def installation_placement(
    checks: Checks,
    src: SourceFile,
    path: KeyPath,
    spec: InstallationSpec,
    partner: tuple[str, PartnerSpec] | None,  # its partner's name and entry; None: a connector outside the catalog
    account: str,
    *,
    holds_client: bool,  # client credentials we hold: the partner's or the installation's own
) -> Placement | None:
    """The installation's placement on the Cyclr platform (None: the local platform, where `auth_via` is refused,
    or a problem reported)."""
    if not checks.cyclr:
        only_on_cyclr(checks.report, src, path, spec, ("auth_via",))
        return None
    partner_spec = partner[1] if partner is not None else None
    inherited = partner_spec.auth_via if partner_spec is not None else None
    auth_via = spec.auth_via or inherited or "platform"
    if auth_via == "reconciler" and (partner is None or not holds_client):
        where = (*path, "auth_via") if spec.auth_via is not None else path
        origin = f" (from partner '{partner[0]}')" if spec.auth_via is None and partner is not None else ""
        if partner is None:
            message = f"auth_via: reconciler needs a catalog connector: the reconciler cannot run {spec.connector}'s sign-in"
            hint = "remove auth_via: Cyclr runs the sign-in, as auth_via: platform"
        else:
            message = f"auth_via: reconciler{origin} needs client credentials: the partner leaves them blank"
            hint = "add credentials: {client_id: ..., client_secret: \"${env:...}\"}, or sign in through Cyclr: auth_via: platform"
        checks.report.issue(src, where, message, hint)
        return None
    pinned = partner_spec.authentication if partner_spec is not None else None
    return Placement(account=account, auth_via=auth_via, authentication=pinned)
