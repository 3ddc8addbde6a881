"""Foresight: what will need a person before the next change, as plan warnings with dates.

Owns: the warnings a plan adds from the configuration, the recorded state and the provider's documented lifetimes
(the catalog): a flavour being removed (Azure DevOps OAuth in 2026) and how many installations still use it, the
60-day client secret rule of that flavour when no `client_secret_expires` is declared, single-page-app
registrations whose refresh tokens last 24 hours from the sign-in, and refresh tokens that lapse unused (Entra ID,
90 days: from the sign-in or the last check that found them working). (A declared `client_secret_expires` near or
past is the configuration's own warning, with its file and line.) Must not: read files, the network, the clock
or sealed credentials (`status` reads those): everything is passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.catalog import Catalog
    from reconciler.config.desired import DesiredInstallation, DesiredPartner
    from reconciler.state.model import StateDocument

__all__ = ["AHEAD", "foresight"]

AHEAD = dt.timedelta(days=14)  # how far ahead a lifetime that runs out is a warning


def _day(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).date().isoformat()


def foresight(
    partners: Mapping[str, DesiredPartner],
    installations: Mapping[str, DesiredInstallation],
    recorded: StateDocument | None,
    catalog: Catalog,
    *,
    now: dt.datetime,
    used: Mapping[str, dt.datetime] | None = None,
) -> list[str]:
    """The foresight warnings of a plan, one per partner it concerns, in partner order. `used`: when each
    installation's tokens were last found working at the provider (the checks kept beside the state), for refresh
    tokens that lapse unused."""
    from reconciler.state.model import InstallationRecord

    # A partner's installations: those declared with it and those still recorded with it (a migration campaign
    # declares them with the partner they move to until each wave is applied).
    users: dict[str, set[str]] = {}
    for address, installation in installations.items():
        users.setdefault(installation.declared.partner, set()).add(address)
    signed_in: dict[str, list[dt.datetime]] = {}
    last_used: dict[str, list[dt.datetime]] = {}
    for address, record in (recorded.resources.items() if recorded is not None else ()):
        if isinstance(record, InstallationRecord) and record.partner:
            users.setdefault(record.partner, set()).add(address)
            if record.authorized_at is not None and record.status == "authorized":
                signed_in.setdefault(record.partner, []).append(record.authorized_at)
                if record.drift is None and not record.platform_holds_tokens:
                    checked = (used or {}).get(address)
                    last = max(record.authorized_at, checked) if checked is not None else record.authorized_at
                    last_used.setdefault(record.partner, []).append(last)
    warnings: list[str] = []
    for address, desired in sorted(partners.items()):
        partner = desired.declared
        connector = catalog.get(partner.connector)
        flavour = connector.auth.get(partner.auth) if connector is not None else None
        if flavour is None:
            continue
        count = len(users.get(partner.name, ()))
        if flavour.retiring and count:
            noun = "installation uses" if count == 1 else "installations use"
            warnings.append(f"{address}: {count} {noun} {partner.auth}. {flavour.retiring}")
        if flavour.client_secret_days and partner.client_id and partner.client_secret_expires is None and count:
            warnings.append(
                f"{address}: {partner.auth} client secrets expire {flavour.client_secret_days} days after they are "
                "created, and no client_secret_expires is declared: declare its date so that plan and status warn "
                "before the partner's installations stop refreshing"
            )
        if flavour.refresh_token_unused_days and partner.app_type != "spa" and used is not None:
            warnings += _unused(address, flavour.refresh_token_unused_days, last_used.get(partner.name, []), now)
        if partner.app_type == "spa" and flavour.spa_refresh_token_hours:
            lifetime = dt.timedelta(hours=flavour.spa_refresh_token_hours)
            lapses = sorted(moment + lifetime for moment in signed_in.get(partner.name, ()))
            first = f"; the first lapses {'on' if lapses[0] > now else 'since'} {_day(lapses[0])}" if lapses else ""
            warnings.append(
                f"{address}: a single-page-app registration: its refresh tokens last "
                f"{flavour.spa_refresh_token_hours} hours from the sign-in, so each of its {count} installation(s) "
                f"needs a sign-in every day{first}; register the redirect URI as a web platform to keep them 90 days"
            )
    return warnings


def _unused(address: str, days: int, last_used: list[dt.datetime], now: dt.datetime) -> list[str]:
    """A warning when refresh tokens of `address`'s installations lapse unused within `AHEAD` (their last use: the
    sign-in, or the last check that found them working — a check of a token older than its access token's hour
    uses the refresh token, so this is within an hour of its last use)."""
    lifetime = dt.timedelta(days=days)
    lapses = sorted(moment + lifetime for moment in last_used if moment + lifetime <= now + AHEAD)
    if not lapses:
        return []
    gone = sum(1 for moment in lapses if moment <= now)
    past = (f"; {gone} already lapsed: {'its tenant' if gone == 1 else 'their tenants'} must sign in again"
            if gone else "")
    return [
        (f"{address}: refresh tokens lapse after {days} days unused: {len(lapses)} installation(s) reach that by "
        f"{_day(now + AHEAD)} (the first on {_day(lapses[0])}{past}): run `reconciler refresh` before then, or keep "
        "`reconciler serve` running")
    ]
