"""The configuration's platform for a command: its API client, its connector list (cached), the plan-time check of
every installation against that list, and the executor's platform services.

Owns: building those from the desired state's platform settings and the command's HTTP transport. Must not: print,
prompt, read the clock or the environment itself, or know about click.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.app.workspace import Workspace
from reconciler.config.desired import CyclrSettings, DesiredState
from reconciler.errors import PlanError
from reconciler.state.model import AccountRecord, StateDocument

if TYPE_CHECKING:  # HTTP loads only for commands that reach the platform
    from reconciler.auth.signin import PlatformSignIn
    from reconciler.auth.transport import Http
    from reconciler.platform_apply import PlatformServices
    from reconciler.platforms.cyclr.api import CyclrApi

__all__ = ["check_installations", "check_platform", "platform_api", "platform_services"]


def platform_api(settings: CyclrSettings, http: Http, secrets: Iterable[str] = ()) -> CyclrApi:
    """The platform's API client; no error it makes repeats one of `secrets` (the configuration's values)."""
    from reconciler.platforms.cyclr.api import CyclrApi, PartnerApiCredentials

    credentials = PartnerApiCredentials(settings.client_id, settings.client_secret)
    return CyclrApi(settings.api_url, credentials, http.client, secrets=secrets)


def connector_list(ws: Workspace, settings: CyclrSettings, api: CyclrApi) -> Sequence[Mapping[str, Any]]:
    """The platform's connector list, from the cache beside the configuration while it is fresh (an hour), else
    fetched and kept there; `ws.refresh_catalog` fetches it regardless."""
    from reconciler.platforms.cyclr.catalog_cache import CACHE_DIR, cache_key
    from reconciler.platforms.cyclr.catalog_cache import connector_list as cached

    key = cache_key(settings.api_url, settings.client_id)
    return cached(api.list_connectors, ws.config_dir / CACHE_DIR, key, now=ws.clock(), refresh=ws.refresh_catalog)


def check_installations(desired: DesiredState, listed: Sequence[Mapping[str, Any]]) -> None:
    """Every installation on the platform names a connector, authentication and parameters the platform offers:
    a plan error (with a did-you-mean from the platform's own list) names the installation."""
    from reconciler.platforms.cyclr.connectors import CyclrConnector, install_request, resolve_connector

    connectors: dict[str, CyclrConnector] = {}  # resolved once per connector name
    for address, installation in sorted(desired.installations.items()):
        want = installation.declared
        if want.placement is None:
            continue
        try:
            connector = connectors.get(want.connector) or connectors.setdefault(
                want.connector, resolve_connector(want.connector, listed)
            )
            install_request(
                connector, flavour=want.auth or None, parameters=want.parameters, scopes=want.scopes,
                pinned_authentication=want.placement.authentication,
            )
        except PlanError as exc:
            raise PlanError(f"{address}: {exc.message}", hint=exc.hint) from None


def check_platform(ws: Workspace, desired: DesiredState, recorded: StateDocument | None) -> None:
    """`check_installations` against the platform's list (cached; fetched with the partner's API credentials), and
    no account to create that exists already: that one is adopted (`reconciler import`), never taken over. Not
    without the platform's API secret (a plan in a pull request): the plan notes it as not checked."""
    from reconciler.auth.transport import Http

    assert desired.platform is not None
    if not desired.platform.client_secret.get_secret_value():
        return  # a plan without the platform's secret (a pull request): unchecked, as its note says
    have = {a for a, r in (recorded.resources.items() if recorded else ()) if isinstance(r, AccountRecord)}
    new = {a.id: a.tenant for address, a in desired.accounts.items() if address not in have}
    with Http(timeout=ws.http_timeout) as http:
        api = platform_api(desired.platform, http, desired.secret_values())
        check_installations(desired, connector_list(ws, desired.platform, api))
        taken = sorted(new[str(a.get("Id"))] for a in (api.list_accounts() if new else ()) if str(a.get("Id")) in new)
    if taken:
        tenants = ", ".join(taken)
        raise PlanError(
            f"the account of tenant(s) {tenants} exists on the platform already and is not in state",
            hint=f"adopt it: reconciler import --tenant {taken[0]}" + (" (and the others)" if len(taken) > 1 else ""),
        )


def platform_services(ws: Workspace, desired: DesiredState, http: Http, sign_in: PlatformSignIn | None) -> PlatformServices | None:
    """The executor's platform services (None: the local platform)."""
    from reconciler.platform_apply import PlatformServices

    if desired.platform is None:
        return None
    settings = desired.platform
    api = platform_api(settings, http, desired.secret_values())
    listed: list[Sequence[Mapping[str, Any]]] = []

    def connectors() -> Sequence[Mapping[str, Any]]:
        if not listed:
            listed.append(connector_list(ws, settings, api))
        return listed[0]

    return PlatformServices(api=api, connectors=connectors, service_url=desired.platform.service_url, sign_in=sign_in)
