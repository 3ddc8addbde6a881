"""Service rules: the root file's `service:` section made `ServiceSettings` (the authorization service's settings).

Owns: `public_url` (absolute; https, or plain http on a loopback host; no query or fragment; stored without a
trailing slash, a path prefix allowed) and the callback partners derive their redirect URI from (`service_callback`;
`partners` applies it), `link_lifetime` (a duration, at most `MAX_LINK_LIFETIME`), `api_keys` (unique names, keys by
reference only, tenant globs), `webhooks` (an https URL, the signing secret by reference only) and
`trusted_proxies` (IP networks or addresses). Must not: read files, resolve a reference itself (`Values` does), or
look at partners or installations.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from pydantic import SecretStr

from reconciler.config.desired import ApiKey, IPNetwork, ServiceSettings, Webhook
from reconciler.config.located import KeyPath, Report, SourceFile
from reconciler.config.partners import Checks, url_problem
from reconciler.config.schema import ApiKeySpec, RootFile, WebhookSpec
from reconciler.durations import DurationError, format_duration, parse_duration
from reconciler.errors import UsageError, one_line
from reconciler.names import check_address_pattern

__all__ = ["MAX_LINK_LIFETIME", "service_callback", "service_settings"]

MAX_LINK_LIFETIME = dt.timedelta(days=30)  # a link is a bearer credential: whoever holds it signs the tenant in
_PATH: KeyPath = ("service",)


def service_callback(root: RootFile) -> str | None:
    """The redirect URI a `service:` section gives partners, `<public_url>/connector/callback` (None: no section).
    The public URL is not checked here: `service_settings` reports its problems."""
    if root.service is None:
        return None
    return ServiceSettings(public_url=root.service.public_url.rstrip("/")).callback_url


def service_settings(checks: Checks, src: SourceFile, root: RootFile) -> ServiceSettings | None:
    """The service's settings (None: no `service:`, or a problem reported). `src` is the root file. A key or secret
    not available here (a command that needs no secret's value) is left empty, and listed as unchecked by `Values`."""
    spec = root.service
    if spec is None:
        return None
    public_url = _url(checks.report, src, (*_PATH, "public_url"), spec.public_url, query=False)
    lifetime = _link_lifetime(checks.report, src, spec.link_lifetime)
    api_keys = _api_keys(checks, src, spec.api_keys)
    webhooks = [_webhook(checks, src, index, hook) for index, hook in enumerate(spec.webhooks)]
    proxies = _trusted_proxies(checks.report, src, spec.trusted_proxies)
    if public_url is None or lifetime is None or api_keys is None or proxies is None or None in webhooks:
        return None
    return ServiceSettings(
        public_url=public_url.rstrip("/"),
        link_lifetime=lifetime,
        api_keys=api_keys,
        webhooks=tuple(hook for hook in webhooks if hook is not None),
        trusted_proxies=proxies,
    )


def _url(report: Report, src: SourceFile, path: KeyPath, url: str, *, query: bool) -> str | None:
    """`url` when the service may use it: absolute, https or plain http on a loopback host, no fragment (and no
    query unless `query`); None after reporting why not."""
    problem = url_problem(url, allow_http_loopback=True)
    if problem is None and not query and (urlsplit(url).query or url.endswith("?")):
        problem = f"{path[-1]} may not contain a query (?)"
    if problem is not None:
        hint = "plain http reaches only this machine (tests, the sandbox)" if url.startswith("http://") else None
        report.issue(src, path, problem, hint)
        return None
    return url


def _link_lifetime(report: Report, src: SourceFile, text: str) -> dt.timedelta | None:
    """How long a sign-in link is valid: a duration of at most `MAX_LINK_LIFETIME`."""
    path = (*_PATH, "link_lifetime")
    try:
        lifetime = parse_duration(text)
    except DurationError as exc:
        report.issue(src, path, one_line(str(exc)))
        return None
    if lifetime > MAX_LINK_LIFETIME:
        limit = format_duration(MAX_LINK_LIFETIME)
        message = f"{format_duration(lifetime)} is longer than {limit}, the longest a link may be valid"
        report.issue(src, path, message, "a link is a bearer credential: whoever holds it signs the tenant in")
        return None
    return lifetime


def _api_keys(checks: Checks, src: SourceFile, specs: Sequence[ApiKeySpec]) -> tuple[ApiKey, ...] | None:
    """The token API's keys: each name and each key reference once (the audit log names who read a token), each
    key by reference, tenants as globs."""
    out: list[ApiKey] = []
    ok = True
    first: dict[tuple[str, str], int] = {}
    for index, spec in enumerate(specs):
        path = (*_PATH, "api_keys", index)
        for field, written in (("name", spec.name), ("key", spec.key)):
            seen = first.setdefault((field, written), index)
            if seen != index:
                message = f"{field} '{written}' is already the {field} of service.api_keys[{seen}]"
                checks.report.issue(src, (*path, field), message, "each key has a name and a value of its own")
                ok = False
        ok = _tenant_globs_ok(checks.report, src, (*path, "tenants"), spec.tenants) and ok
        key = _secret(checks, src, (*path, "key"), spec.key)
        if key is None:
            ok = False
        else:
            out.append(ApiKey(name=spec.name, key_ref=spec.key, key=key, tenants=tuple(dict.fromkeys(spec.tenants))))
    return tuple(out) if ok else None


def _tenant_globs_ok(report: Report, src: SourceFile, path: KeyPath, globs: Sequence[str]) -> bool:
    """Each glob has the syntax of address globs (`reconciler.names`), over tenant keys."""
    ok = True
    for index, glob in enumerate(globs):
        try:
            check_address_pattern(glob)
        except UsageError:
            hint = "a tenant key, or one with * ? [...] in it: eu-*, acme"
            report.issue(src, (*path, index), f"invalid tenant glob '{one_line(glob[:200])}'", hint)
            ok = False
    return ok


def _webhook(checks: Checks, src: SourceFile, index: int, spec: WebhookSpec) -> Webhook | None:
    """Where events are posted (https), and the secret they are signed with (by reference)."""
    path = (*_PATH, "webhooks", index)
    url = _url(checks.report, src, (*path, "url"), spec.url, query=True)
    secret = _secret(checks, src, (*path, "secret"), spec.secret)
    if url is None or secret is None:
        return None
    return Webhook(url=url, secret_ref=spec.secret, secret=secret)


def _secret(checks: Checks, src: SourceFile, path: KeyPath, written: str) -> SecretStr | None:
    """A secret of the service by reference, resolved (a literal is refused; it may read RECONCILER_* variables but
    key material and the DSN: see `references.refusal`); empty where its value is not available to a command that
    needs none (`Values` lists it as unchecked); None after a problem was reported."""
    value = checks.values.value(src, path, written, secret=True, own=True)
    if value is None and written not in checks.values.unchecked:
        return None
    return SecretStr(value or "")


def _trusted_proxies(report: Report, src: SourceFile, entries: Sequence[str]) -> tuple[IPNetwork, ...] | None:
    """The networks whose X-Forwarded-* headers the service honours (an address is a network of one)."""
    out: list[IPNetwork] = []
    for index, entry in enumerate(entries):
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            message = f"'{one_line(entry[:200])}' is not an IP network or address"
            report.issue(src, (*_PATH, "trusted_proxies", index), message, "e.g. 10.0.0.0/8, 192.0.2.7, ::1, fd00::/8")
    return tuple(out) if len(out) == len(entries) else None
