"""The `service:` section: from YAML to the `ServiceSettings` the service runs with, partners' redirect URI on the
service's callback, secrets by reference (unchecked where not needed, never shown), and environment overlays. Each
bad input's exact error line is a golden case: tests/cases/config/service-*."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.config.desired import ServiceSettings
from reconciler.config.loader import load_root
from reconciler.config.partners import url_problem
from reconciler.config.schema import RootFile
from reconciler.errors import ConfigError
from tests.conftest import run
from tests.test_config_cyclr import ENV as CYCLR_ENV
from tests.test_config_cyclr import PLATFORM

API_KEY, WEBHOOK_SECRET = "api-key-value-5e1d9c", "webhook-secret-value-a07b31"
ENV = {
    "ADO_CLIENT_ID": "11111111-aaaa-4bbb-8ccc-000000000001",
    "ADO_CLIENT_SECRET": "ado-secret-77c1",
    "RECONCILER_API_KEY_EU": API_KEY,
    "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
SERVICE = """\
service:
  public_url: https://connect.example.com/reconciler/
  link_lifetime: 12h
  api_keys:
    - name: runtime-eu
      key: ${env:RECONCILER_API_KEY_EU}
      tenants: ["eu-*", acme]
  webhooks:
    - url: https://hooks.example.com/reconciler
      secret: ${env:RECONCILER_WEBHOOK_SECRET}
  trusted_proxies: [10.0.0.0/8, 192.0.2.7, "::1"]
"""
PARTNER = """\
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: ${env:ADO_CLIENT_ID}
    client_secret: ${env:ADO_CLIENT_SECRET}
"""
TENANTS = """\
tenants:
  acme:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {organization: acme, project: Platform}
        scopes: [vso.work_full]
"""
CALLBACK = "https://connect.example.com/reconciler/connector/callback"


def _write(directory: Path, text: str) -> Path:
    (directory / "reconciler.yaml").write_text(text)
    return directory


def test_the_issue_example_gives_the_service_settings(tmp_path: Path) -> None:
    """The section becomes `ServiceSettings`: the public URL without its trailing slash (a path prefix kept), the
    lifetime parsed, keys and secrets resolved from their references, an address as a network of one."""
    _write(tmp_path, "version: 1\n" + SERVICE + PARTNER + TENANTS)
    service = load_config(tmp_path, environ=ENV).desired.service
    assert service is not None
    assert service.public_url == "https://connect.example.com/reconciler"
    assert service.callback_url == CALLBACK
    assert service.link_lifetime == dt.timedelta(hours=12)
    [key] = service.api_keys
    assert (key.name, key.key_ref, key.tenants) == ("runtime-eu", "${env:RECONCILER_API_KEY_EU}", ("eu-*", "acme"))
    assert key.key.get_secret_value() == API_KEY
    [hook] = service.webhooks
    assert (hook.url, hook.secret_ref) == ("https://hooks.example.com/reconciler", "${env:RECONCILER_WEBHOOK_SECRET}")
    assert hook.secret.get_secret_value() == WEBHOOK_SECRET
    assert service.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("::1/128"),
    )


def test_defaults_and_no_section(tmp_path: Path) -> None:
    """Only public_url is required (links live 7 days by default); without the section there are no settings."""
    _write(tmp_path, "version: 1\nservice: {public_url: 'https://connect.example.com'}\n" + PARTNER)
    assert load_config(tmp_path, environ=ENV).desired.service == ServiceSettings(public_url="https://connect.example.com")
    _write(tmp_path, "version: 1\nplatform: {service_domain: app-h.cyclr.com}\n" + PARTNER)
    assert load_config(tmp_path, environ=ENV).desired.service is None


def test_partners_redirect_to_the_service_on_the_local_platform(tmp_path: Path) -> None:
    """With a `service:`, the local platform needs no service_domain (even with `platform: {type: local}`), and
    a partner's redirect URI is the service's callback; a service_domain beside it does not move it."""
    for platform in ("", "platform: {type: local}\n", "platform: {service_domain: app-h.cyclr.com}\n"):
        _write(tmp_path, "version: 1\n" + platform + SERVICE + PARTNER + TENANTS)
        desired = load_config(tmp_path, environ=ENV).desired
        assert desired.partners["partner.microsoft-azure-devops"].declared.redirect_uri == CALLBACK
        assert desired.installations["installation.acme.ado"].declared.redirect_uri == CALLBACK
        assert isinstance(load_root(tmp_path), RootFile)  # the root alone validates in the same context


CYCLR = PLATFORM + """\
partners:
  microsoft-azure-devops: {auth: azure-devops-oauth}
  ours:
    connector: microsoft-azure-devops
    auth: azure-devops-oauth
    auth_via: reconciler
    client_id: ${env:ADO_CLIENT_ID}
    client_secret: ${env:ADO_CLIENT_SECRET}
"""


def test_on_cyclr_only_partners_that_sign_in_through_us_use_the_service(tmp_path: Path) -> None:
    """On the Cyclr platform a partner whose installations sign in through the platform keeps Cyclr's callback;
    one with `auth_via: reconciler` redirects to the service."""
    env = {**ENV, **CYCLR_ENV}
    _write(tmp_path, CYCLR + SERVICE)
    partners = load_config(tmp_path, environ=env).desired.partners
    assert partners["partner.microsoft-azure-devops"].declared.redirect_uri == "https://app-h.cyclr.com/connector/callback"
    assert partners["partner.ours"].declared.redirect_uri == CALLBACK


def test_an_unset_key_is_unchecked_where_no_value_is_needed(tmp_path: Path) -> None:
    """validate and plan list an unset key or webhook secret as unchecked (left empty, no empty value to redact);
    a command that needs the values refuses it."""
    _write(tmp_path, "version: 1\n" + SERVICE + PARTNER)
    env = {k: v for k, v in ENV.items() if not k.startswith("RECONCILER_")}
    loaded = load_config(tmp_path, environ=env, unchecked_secrets=True)
    assert [u.reference for u in loaded.unchecked] == ["${env:RECONCILER_API_KEY_EU}", "${env:RECONCILER_WEBHOOK_SECRET}"]
    assert loaded.desired.service is not None
    assert loaded.desired.service.api_keys[0].key.get_secret_value() == ""
    assert "" not in loaded.desired.secret_values()
    with pytest.raises(ConfigError, match="RECONCILER_API_KEY_EU is not set"):
        load_config(tmp_path, environ=env)


def test_service_secrets_are_redacted_and_never_shown(tmp_path: Path) -> None:
    """The key and the webhook secret are among the values redacted, absent from every repr, and `validate` and
    `plan` print neither."""
    _write(tmp_path, "version: 1\n" + SERVICE + PARTNER + TENANTS)
    desired = load_config(tmp_path, environ=ENV).desired
    assert {API_KEY, WEBHOOK_SECRET} <= desired.secret_values()
    assert API_KEY not in repr(desired.service) and WEBHOOK_SECRET not in repr(desired.service)
    for args in (["validate"], ["plan"], ["plan", "--format", "json"]):
        result = run(["-C", str(tmp_path), *args], env=ENV)
        assert result.exit_code in (0, 2), result.output
        assert API_KEY not in result.output and WEBHOOK_SECRET not in result.output


def test_an_environment_overrides_the_section(tmp_path: Path) -> None:
    """An overlay merges into `service:` like any root key: mappings by key, lists replaced."""
    _write(tmp_path, "version: 1\n" + SERVICE + PARTNER)
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "prod.yaml").write_text(
        "service:\n  public_url: https://connect.prod.example.com\n  trusted_proxies: [172.16.0.0/12]\n"
    )
    service = load_config(tmp_path, environ=ENV, environment="prod").desired.service
    assert service is not None
    assert service.public_url == "https://connect.prod.example.com"
    assert service.trusted_proxies == (ipaddress.ip_network("172.16.0.0/12"),)
    assert [k.name for k in service.api_keys] == ["runtime-eu"]  # not overridden: the base's


def test_the_schema_describes_the_section() -> None:
    """`reconciler schema` documents the section's keys, and a key of the service by reference."""
    schema = RootFile.model_json_schema()
    service = schema["$defs"]["ServiceSpec"]
    assert set(service["properties"]) == {"public_url", "link_lifetime", "api_keys", "webhooks", "trusted_proxies"}
    assert service["required"] == ["public_url"]
    assert "${env:NAME}" in schema["$defs"]["ApiKeySpec"]["properties"]["key"]["description"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.0.0.5", True),
        ("http://[::1]:8080/x", True),
        ("http://localhost", True),
        ("http://128.0.0.1", False),
        ("http://localhost.example.com", False),
        ("http://[::2]", False),
    ],
)
def test_plain_http_only_on_a_loopback_host(url: str, allowed: bool) -> None:
    """Plain http is accepted for localhost and the loopback networks (127.0.0.0/8, ::1) only."""
    assert (url_problem(url, allow_http_loopback=True) is None) is allowed
