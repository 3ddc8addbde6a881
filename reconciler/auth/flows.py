"""OAuth flows: Azure DevOps OAuth (assertion flow, plain httpx form posts) and Entra ID (code + PKCE via authlib),
with refresh for both.

Owns: authorization URLs, code exchange and refresh on the exact documented wire formats, normalising the
providers' answers into `TokenSet` (string `expires_in`, `jwt-bearer` token type, capitalised `Error` keys), and
classifying every failure into `ProviderError` (partner fault, grant rejected, transient, ...). Foreign exceptions
(httpx, authlib, JSON) are mapped here and never leak; no message carries a request body, code or token.
"""

from __future__ import annotations

import datetime as dt
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

import authlib.deprecate  # noqa: F401 - installs authlib's own "always" filter first, so ours below wins
import httpx
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError, classify_error, redacted, retry_after_seconds, transient
from reconciler.auth.request import AuthorizationRequest
from reconciler.catalog import AuthFlavour, Catalog
from reconciler.config.desired import same_origin
from reconciler.declared import DeclaredInstallation, DeclaredPartner, api_url_of
from reconciler.tokens.model import TokenSet

with warnings.catch_warnings():  # authlib announces its own move to another HTTP package; not our concern
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.httpx_client import OAuth2Auth, OAuth2ClientAuth, OAuthError
    from authlib.oauth2.client import OAuth2Client as _BaseOAuth2Client
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

__all__ = [
    "Binding",
    "EntraFlow",
    "Flow",
    "FlowSettings",
    "LegacyFlow",
    "bound_settings",
    "declared_binding",
    "installation_settings",
    "make_flow",
    "recorded_binding",
    "revoke_grant",
]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class FlowSettings:
    """Everything a flow needs for one installation (its client, endpoints and scopes)."""

    flavour: AuthFlavour
    client_id: str
    client_secret: SecretStr = field(repr=False)
    redirect_uri: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]


class Flow(Protocol):
    settings: FlowSettings

    def authorization_request(self, *, state: str | None = None, code_verifier: str | None = None) -> AuthorizationRequest:
        """A new authorization request (or the same one again, given its state and verifier)."""

    def exchange(self, code: str, request: AuthorizationRequest) -> TokenSet:
        """Trade an authorization code for tokens."""

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens from the refresh token (which the provider rotates: store the result at once)."""


def installation_settings(
    installation: DeclaredInstallation, secret: SecretStr | None, partner: DeclaredPartner, catalog: Catalog
) -> FlowSettings:
    """The flow settings of one installation: its client (`secret`: its resolved client secret), its partner's
    endpoints, its scopes."""
    if secret is None:
        raise ProviderError(f"{installation.address}: no client secret resolved", category="config")
    return FlowSettings(
        flavour=catalog.connectors[installation.connector].auth[installation.auth],
        client_id=installation.client_id,
        client_secret=secret,
        redirect_uri=installation.redirect_uri,
        authorize_url=partner.authorize_url,
        token_url=installation.token_url,
        scopes=installation.scopes,
    )


@dataclass(frozen=True)
class Binding:
    """What an installation's tokens are bound to: the client that obtained them and the origins that issued them
    (token endpoint) and accept them (API). A token, a refresh token or the client secret is only ever sent to the
    endpoints of the binding recorded in state; a configuration that declares another one plans a re-authorization."""

    client_id: str
    redirect_uri: str
    token_url: str
    api_url: str


def declared_binding(installation: DeclaredInstallation, partner: DeclaredPartner) -> Binding:
    """The binding the configuration declares for `installation` (what an authorization would record)."""
    api_url = api_url_of(installation, partner) or ""
    return Binding(installation.client_id, installation.redirect_uri, installation.token_url, api_url)


def recorded_binding(record: DeclaredInstallation, recorded_partner: DeclaredPartner | None) -> Binding | None:
    """The binding state recorded for an installation (`recorded_partner`: its partner as recorded, if it is);
    None when its API is not known (a record from before the API was kept, whose partner is not recorded either):
    such tokens are sent nowhere until re-authorized."""
    api_url = api_url_of(record, recorded_partner)
    if api_url is None:
        return None
    return Binding(record.client_id, record.redirect_uri, record.token_url, api_url)


def bound_settings(
    binding: Binding,
    installation: DeclaredInstallation,
    secret: SecretStr | None,
    partner: DeclaredPartner,
    catalog: Catalog,
) -> FlowSettings:
    """Flow settings for using recorded tokens: every endpoint and the client id from `binding` (what state
    recorded), only the secret from the configuration — and only when the configuration declares the same binding,
    so that the secret goes to the token endpoint it belongs to and nowhere else."""
    if declared_binding(installation, partner) != binding:
        raise ProviderError(
            f"{installation.address}: the configuration moved its client or endpoints since it was authorized",
            category="config",
            hint="plan and apply: it is re-authorized",
        )
    return installation_settings(installation, secret, partner, catalog)  # its client and endpoints: the binding


def make_flow(settings: FlowSettings, http: httpx.Client, now: Callable[[], dt.datetime]) -> Flow:
    if settings.flavour.flow == "azure-devops-assertion":
        return LegacyFlow(settings, http, now)
    return EntraFlow(settings, http, now)


class LegacyFlow:
    """Azure DevOps OAuth 2.0: response_type=Assertion, the client secret as client_assertion, no PKCE."""

    def __init__(self, settings: FlowSettings, http: httpx.Client, now: Callable[[], dt.datetime]) -> None:
        self.settings, self.http, self.now = settings, http, now

    def authorization_request(self, *, state: str | None = None, code_verifier: str | None = None) -> AuthorizationRequest:
        s = self.settings
        state = state or secrets.token_urlsafe(24)
        query = urlencode(
            {
                "client_id": s.client_id,
                "response_type": "Assertion",
                "state": state,
                "scope": " ".join(s.scopes),
                "redirect_uri": s.redirect_uri,
            }
        )
        url = f"{s.authorize_url}{'&' if '?' in s.authorize_url else '?'}{query}"
        return AuthorizationRequest(url, SecretStr(state), s.redirect_uri, s.client_id, s.scopes)

    def exchange(self, code: str, request: AuthorizationRequest) -> TokenSet:
        return self._post({"grant_type": JWT_BEARER, "assertion": code})

    def refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh_token is None:
            raise ProviderError("no refresh token is recorded", category="grant")
        result = self._post({"grant_type": "refresh_token", "assertion": tokens.refresh_token.get_secret_value()})
        return _kept_refresh_token(result, tokens)  # none issued: the current one stays valid (RFC 6749 6)

    def _post(self, grant: dict[str, str]) -> TokenSet:
        s = self.settings
        form = {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": s.client_secret.get_secret_value(),
            **grant,
            "redirect_uri": s.redirect_uri,
        }
        try:
            response = self.http.post(s.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise transient(f"token endpoint {_origin(s.token_url)}", exc) from None
        return token_answer(response, self.now(), sent=(form["client_assertion"], form["assertion"]))


def revoke_grant(settings: FlowSettings, url: str, http: httpx.Client, tokens: TokenSet) -> bool:
    """Revoke the grant behind `tokens` at the RFC 7009 endpoint `url`, which must share the origin of
    `settings.token_url` (the recorded token endpoint: the client secret and the token go nowhere else; another
    origin is refused before anything is sent). The client authenticates as at the flavour's token endpoint (the
    secret as `client_assertion` for Azure DevOps OAuth, `client_secret` otherwise). A refused or failed request
    raises `ProviderError` (no token or secret in its message)."""
    if not same_origin(url, settings.token_url):
        raise ProviderError(f"revocation endpoint {_origin(url)} is not the token endpoint's origin", category="config")
    token = tokens.refresh_token or tokens.access_token
    hint = "refresh_token" if tokens.refresh_token is not None else "access_token"
    secret = settings.client_secret.get_secret_value()
    if settings.flavour.flow == "azure-devops-assertion":
        client: dict[str, str] = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": secret}
    else:
        client = {"client_secret": secret}
    form = {**client, "client_id": settings.client_id, "token": token.get_secret_value(), "token_type_hint": hint}
    try:
        response = http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise transient(f"revocation endpoint {_origin(url)}", exc) from None
    if response.status_code != 200:
        category: Literal["partner", "transient"] = "partner" if response.status_code == 401 else "transient"
        raise ProviderError(f"revocation endpoint {_origin(url)} answered HTTP {response.status_code}", category=category)
    return True


class _Session:
    """authlib's session: every request goes through the command's client, and each answer is kept for `_fetch`
    to classify (authlib raises on an error answer before the caller could see it)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.responses: list[httpx.Response] = []

    def post(self, url: str, **options: Any) -> httpx.Response:
        response = self.http.post(url, **options)
        self.responses.append(response)
        return response


class _OAuth2Client(_BaseOAuth2Client):
    """authlib's protocol client on a session of ours, its client authentication as an `httpx.Auth`."""

    client_auth_class = OAuth2ClientAuth
    token_auth_class = OAuth2Auth
    oauth_error_class = OAuthError  # type: ignore[assignment]  # authlib raises it on an error answer


class EntraFlow:
    """Microsoft Entra ID: authorization code + PKCE (S256), client_secret_post, rotating refresh tokens."""

    def __init__(self, settings: FlowSettings, http: httpx.Client, now: Callable[[], dt.datetime]) -> None:
        self.settings, self.http, self.now = settings, http, now
        flavour = settings.flavour
        self.scope = " ".join([*(flavour.scope_prefix + scope for scope in settings.scopes), *flavour.extra_scopes])

    def _client(self, session: _Session | None = None) -> Any:
        """authlib's client for this flow, sending through `session` (the command's client)."""
        s = self.settings
        return _OAuth2Client(
            session or _Session(self.http),
            client_id=s.client_id,
            client_secret=s.client_secret.get_secret_value(),
            scope=self.scope,
            redirect_uri=s.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name, not a secret
        )

    def authorization_request(self, *, state: str | None = None, code_verifier: str | None = None) -> AuthorizationRequest:
        s = self.settings
        verifier = code_verifier or secrets.token_urlsafe(64)
        url, state = self._client().create_authorization_url(
            s.authorize_url, state=state or secrets.token_urlsafe(24), code_verifier=verifier, response_mode="query"
        )
        challenge = f"code_challenge={create_s256_code_challenge(verifier)}"
        if challenge not in url or "code_challenge_method=S256" not in url:
            raise ProviderError("could not build a PKCE (S256) authorization URL", category="protocol")
        return AuthorizationRequest(url, SecretStr(state), s.redirect_uri, s.client_id, s.scopes, SecretStr(verifier))

    def exchange(self, code: str, request: AuthorizationRequest) -> TokenSet:
        if request.code_verifier is None:
            raise ProviderError("the Entra ID flow needs a PKCE verifier", category="protocol")
        verifier = request.code_verifier.get_secret_value()
        return self._fetch(
            lambda c: c.fetch_token(self.settings.token_url, code=code, code_verifier=verifier, scope=self.scope),
            sent=(code, verifier),
        )

    def refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh_token is None:
            raise ProviderError("no refresh token is recorded", category="grant")
        token = tokens.refresh_token.get_secret_value()
        result = self._fetch(
            lambda c: c.refresh_token(self.settings.token_url, refresh_token=token, scope=self.scope), sent=(token,)
        )
        return _kept_refresh_token(result, tokens)  # Entra may keep the refresh token; then the old one stays valid

    def _fetch(self, call: Callable[[Any], Any], *, sent: tuple[str, ...]) -> TokenSet:
        session = _Session(self.http)
        try:
            call(self._client(session))
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise transient(f"token endpoint {_origin(self.settings.token_url)}", exc) from None
        except (httpx.HTTPError, AuthlibBaseError, ValueError, KeyError, TypeError, RecursionError):
            pass  # authlib raises on error answers; the answer itself is classified below
        if not session.responses:
            raise ProviderError("the token request could not be made", category="protocol")
        return token_answer(
            session.responses[-1], self.now(), sent=(self.settings.client_secret.get_secret_value(), *sent)
        )


def _kept_refresh_token(result: TokenSet, tokens: TokenSet) -> TokenSet:
    """A refresh's answer that issued no refresh token keeps the current one, and when it was issued."""
    if result.refresh_token is not None:
        return result
    return result.model_copy(
        update={"refresh_token": tokens.refresh_token, "refresh_issued_at": tokens.refresh_issued_at}
    )


def token_answer(response: httpx.Response, now: dt.datetime, *, sent: tuple[str, ...]) -> TokenSet:
    """The TokenSet of a token endpoint's `response`; a failure's description (which may repeat the request)
    with every secret value `sent` redacted."""
    try:
        return normalise_token_response(
            response.status_code,
            response.headers.get("content-type", ""),
            response.content,
            now,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    except ProviderError as exc:
        raise redacted(exc, sent) from None


def normalise_token_response(
    status: int, content_type: str, body: bytes, now: dt.datetime, *, retry_after: float | None = None
) -> TokenSet:
    """One TokenSet from either dialect's token response; any other answer is a classified `ProviderError`."""
    import json

    data: Any = None
    if "json" in content_type or body[:1] in (b"{", b"["):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past what is worth reading
            data = None
    if status != 200 or not isinstance(data, dict) or "access_token" not in data:
        raise classify_error(
            status, data if isinstance(data, dict) else None, html="html" in content_type, retry_after=retry_after
        )
    try:
        expires_in = int(data.get("expires_in", 3600))  # Azure DevOps OAuth sends a string
    except (TypeError, ValueError):
        raise ProviderError("the token response has an invalid expires_in", category="protocol") from None
    token_type = str(data.get("token_type") or "Bearer")
    refresh = data.get("refresh_token")
    return TokenSet(
        access_token=SecretStr(str(data["access_token"])),
        refresh_token=SecretStr(str(refresh)) if refresh else None,
        token_type="Bearer" if token_type.lower() in {"jwt-bearer", "bearer"} else token_type,
        expires_at=now + dt.timedelta(seconds=expires_in),
        scope=tuple(str(data.get("scope") or "").split()),
        refresh_issued_at=now if refresh else None,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
