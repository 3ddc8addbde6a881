"""Preflight of an Entra ID app: what Microsoft tells us about it before any person is asked to sign in.

With the partner's own client credentials (an app-only token from its tenant, `client_credentials`), and
Microsoft Graph where the app may read it:
- the app's tenant against `tenant_id`: a client id unknown in that directory (AADSTS700016), a tenant that does not
  exist (AADSTS90002), a rejected client secret;
- the declared scopes that are not on the app registration (`requiredResourceAccess` for Azure DevOps);
- the declared scopes only an administrator may consent to (the permission's type `Admin` on Azure DevOps's service
  principal), which then need an admin consent in each tenant's directory before its users can sign in.

A partner with `tenant_id: organizations` (or `common`) has no directory to ask for an app-only token: it is
reported as not checked. An answer that is not the app's (unreachable, 5xx, Graph without the permission to read
applications) is a note, never a problem: preflight only stops what the provider said will fail.

Owns: the requests, the reading of their answers and the words of each finding. Must not: decide which partners
or tenants are checked (`app/preflight.py`), print, or read files; secrets are only sent, never echoed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from reconciler.auth.errors import scrubbed

__all__ = ["ADO_RESOURCE_ID", "MULTI_TENANT", "Preflight", "admin_consent_url", "check_app", "graph_url"]

ADO_RESOURCE_ID = "499b84ac-1321-427f-aa17-267ca6975798"
MULTI_TENANT = frozenset({"organizations", "common", "consumers"})
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Each Microsoft cloud's sign-in host and its Graph; any other authority (a private or test one) serves the Graph
# reads on its own origin.
_GRAPH_OF = {
    "login.microsoftonline.com": "https://graph.microsoft.com",
    "login.microsoftonline.us": "https://graph.microsoft.us",
    "login.chinacloudapi.cn": "https://microsoftgraph.chinacloudapi.cn",
}


@dataclass(frozen=True)
class Preflight:
    """What the provider said about one partner's app. `problems` will fail every sign-in (stop before asking
    anyone); `warnings` may (a person should look: nothing is stopped); `admin_only` are declared scopes only an
    administrator may consent to; `notes` say what could not be checked and why."""

    partner: str
    checked: bool
    problems: tuple[str, ...] = ()
    admin_only: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def graph_url(token_url: str) -> str:
    """Microsoft Graph of the cloud whose token endpoint is `token_url`."""
    parts = urlsplit(token_url)
    return _GRAPH_OF.get(parts.hostname or "", f"{parts.scheme}://{parts.netloc}")


def admin_consent_url(authorize_url: str, client_id: str, scopes: Collection[str], redirect_uri: str, state: str) -> str:
    """The admin-consent URL (`/{tenant}/v2.0/adminconsent`) on the authority of `authorize_url`: an administrator
    who opens it consents once for every user of their directory."""
    base = authorize_url.split("?", 1)[0].removesuffix("/oauth2/v2.0/authorize")
    scope = " ".join(f"{ADO_RESOURCE_ID}/{s}" for s in sorted(scopes))
    query = urlencode({"client_id": client_id, "scope": scope, "redirect_uri": redirect_uri, "state": state},
                      quote_via=quote)
    return f"{base}/v2.0/adminconsent?{query}"


def check_app(
    client: httpx.Client,
    *,
    partner: str,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    token_url: str,
    scopes: Collection[str],
    app_tenant: str | None = None,
) -> Preflight:
    """Preflight of the app `client_id` for the declared `scopes` (their `vso.*` names); `app_tenant`: the directory
    the app is registered in, when it is not `tenant_id` (a multi-tenant app)."""
    directory = app_tenant or tenant_id
    if directory.lower() in MULTI_TENANT:
        return Preflight(partner, False, notes=(
            (f"not checked: tenant_id {tenant_id} names no directory to ask for the app's registration (declare "
            "app_tenant_id, the directory the app is registered in, to check it)"),
        ))
    token, kind, finding = _app_token(
        client, directory, client_id, client_secret, _in_tenant(token_url, tenant_id, directory), app_tenant is None
    )
    if token is None:
        said = (scrubbed(finding, [client_secret]),)
        return Preflight(partner, kind != "note", problems=said if kind == "problem" else (),
                         warnings=said if kind == "warning" else (), notes=said if kind == "note" else ())
    base = graph_url(token_url)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    app, note = _graph(client, f"{base}/v1.0/applications(appId='{quote(client_id)}')"
                       "?$select=appId,signInAudience,requiredResourceAccess", headers)
    resource, note2 = _graph(client, f"{base}/v1.0/servicePrincipals(appId='{ADO_RESOURCE_ID}')"
                             "?$select=appId,oauth2PermissionScopes", headers)
    if app is None or resource is None:
        return Preflight(partner, True, notes=tuple(n for n in (note or note2,) if n))
    permissions = {
        str(p.get("id")): p for p in resource.get("oauth2PermissionScopes") or [] if isinstance(p, dict)
    }
    registered = {
        str(permissions[str(access.get("id"))].get("value"))
        for entry in app.get("requiredResourceAccess") or []
        if isinstance(entry, dict) and entry.get("resourceAppId") == ADO_RESOURCE_ID
        for access in entry.get("resourceAccess") or []
        if isinstance(access, dict) and access.get("type") == "Scope" and str(access.get("id")) in permissions
    }
    missing = sorted(set(scopes) - registered)
    problems = [
        (f"scopes not on the app registration of {client_id}: {', '.join(missing)} (add them under API permissions, "
        "Azure DevOps, delegated)")
    ] if missing else []
    audience = str(app.get("signInAudience") or "")
    if audience == "AzureADMyOrg" and (tenant_id.lower() in MULTI_TENANT or tenant_id.lower() != directory.lower()):
        problems.append(
            f"the app {client_id} accepts only users of its own directory {directory} (signInAudience AzureADMyOrg), "
            f"but tenant_id is {tenant_id}: sign-ins there fail (AADSTS50194 / AADSTS700016); make the app "
            "multi-tenant (AzureADMultipleOrgs) or set tenant_id to its directory"
        )
    admin = {str(p.get("value")) for p in permissions.values() if p.get("type") == "Admin"}
    return Preflight(partner, True, problems=tuple(problems), admin_only=tuple(sorted(set(scopes) & admin)))


def _in_tenant(token_url: str, tenant_id: str, directory: str) -> str:
    """`token_url` with its tenant segment naming `directory` (unchanged when it names no `tenant_id` segment)."""
    parts = urlsplit(token_url)
    segment = f"/{tenant_id}/"
    if directory == tenant_id or segment not in parts.path:
        return token_url
    return parts._replace(path=parts.path.replace(segment, f"/{directory}/", 1)).geturl()


def _app_token(
    client: httpx.Client, tenant_id: str, client_id: str, client_secret: str, token_url: str, declared_here: bool
) -> tuple[str | None, str, str]:
    """(token, kind, finding): an app-only Graph token from the app's directory `tenant_id` (`declared_here`: it is
    the partner's tenant_id, not its app_tenant_id), or what was found instead — a `problem`, a `warning` or a
    `note`."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret,
            "scope": GRAPH_SCOPE}
    try:
        answer = client.post(token_url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        return None, "note", f"not checked: the token endpoint could not be reached ({type(exc).__name__})"
    data = _json(answer)
    if answer.status_code == 200 and isinstance(data.get("access_token"), str):
        return data["access_token"], "", ""
    codes = {int(c) for c in data.get("error_codes") or [] if isinstance(c, int)}
    text = str(data.get("error_description") or "").splitlines()[0:1]
    detail = text[0] if text else f"HTTP {answer.status_code}"
    key = "tenant_id" if declared_here else "app_tenant_id"
    if 700016 in codes or "AADSTS700016" in detail:
        if not declared_here:
            return None, "problem", f"the app {client_id} is not registered in tenant {tenant_id} (AADSTS700016): check app_tenant_id"
        # A multi-tenant app registered elsewhere is not known in a tenant until someone there consents to it
        return None, "warning", (
            f"the app {client_id} is not known in tenant {tenant_id} (AADSTS700016): unless it is a multi-tenant app "
            "that tenant has yet to consent to, every sign-in will fail; set tenant_id to the directory the app is "
            "registered in, or name that directory in app_tenant_id to have it checked there"
        )
    if 90002 in codes or "AADSTS90002" in detail:
        return None, "problem", f"tenant {tenant_id} does not exist (AADSTS90002): check {key}"
    if data.get("error") == "invalid_client" or codes & {7000215, 7000222}:
        return None, "problem", (f"the provider rejected the partner's client credentials ({data.get('error')}): "
                                 "check client_id and client_secret")
    return None, "note", f"not checked: the token endpoint answered HTTP {answer.status_code} ({detail[:200]})"


def _graph(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    try:
        answer = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"the app registration was not read: Microsoft Graph could not be reached ({type(exc).__name__})"
    if answer.status_code == 200:
        data = _json(answer)
        return (data, None) if data else (None, "the app registration was not read: Graph answered no JSON object")
    if answer.status_code == 403:
        return None, ("the app registration was not read: Microsoft Graph refused (grant the app Application.Read.All "
                      "to check its scopes and admin-only permissions ahead)")
    return None, f"the app registration was not read: Microsoft Graph answered HTTP {answer.status_code}"


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
