"""A catalog of bad inputs: each must fail cleanly, name the right file:line (or key), and write nothing.

Every case writes a few files into a fresh configuration directory (and, for state and plan-file cases, lays down
state or a saved plan first), runs the CLI from that directory with `-C .` (so locations print as
`reconciler.yaml:LINE:COLUMN`), and checks: exit code 1, one `error:` line on stderr that starts with the expected
location and contains the expected message (for command-line mistakes, click's usage error), no traceback
anywhere, nothing on stdout, and the whole tree — the configuration directory with its hidden files, state, keys
and plan files, and the parse cache directory (`RECONCILER_CACHE_DIR`) — byte-for-byte unchanged, no file or
directory created or removed.

The parse cache starts empty, so a failing load that cached what it had parsed would show. Cases whose
configuration is valid (they fail on state, a saved plan or an argument) run once with `validate` first, as any
earlier run would have: the cache then already holds the parsed files, and the failing command must add nothing.

The YAML is written one line per Python line with the line number in a comment, so the expected line of each
case can be checked by eye. Most root files start from `HEADER` (lines 1-7) and `INSTALLATION` (lines 8-11),
and the case's own lines continue from there.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run

ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "s3cr3t-partner-value"}
VALIDATE = ["-C", ".", "validate"]
PLAN = ["-C", ".", "plan"]
PLAN_JSON = ["-C", ".", "plan", "--format", "json"]
# A secret's value is needed only where it is used: validate and plan note an unset one as not checked.
APPLY_DEFER = ["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"]

# Lines 1-3 of a root file whose partners follow from line 4.
PARTNERS = (
    "version: 1\n"  # 1
    "platform: {service_domain: app-h.cyclr.com}\n"  # 2
    "partners:\n"  # 3
)
# Lines 1-7: one Azure DevOps partner whose credentials are references.
HEADER = PARTNERS + (
    "  microsoft-azure-devops:\n"  # 4
    "    auth: azure-devops-oauth\n"  # 5
    "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
    "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 7
)
# Four lines that open the installation acme/ado (lines 8-11 after HEADER); its keys follow.
INSTALLATION = (
    "tenants:\n"  # 8
    "  acme:\n"  # 9
    "    installations:\n"  # 10
    "      ado:\n"  # 11
)
# Three lines of a valid installation body (lines 12-14 after HEADER + INSTALLATION).
BODY = (
    "        connector: microsoft-azure-devops\n"  # 12
    "        parameters: {organization: acme, project: P}\n"  # 13
    "        scopes: [vso.work_full]\n"  # 14
)
VALID = HEADER + INSTALLATION + BODY
# VALID without its first line, `version: 1`: prefix a replacement to get line 1 right.
AFTER_VERSION = VALID.removeprefix("version: 1\n")


Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One row of the catalog: files to write, an optional setup run in the directory after them (state, saved
    plans), the command, and the error line expected (`where` None: a command-line usage error)."""

    files: Mapping[str, str | bytes]
    env: Mapping[str, str]
    args: list[str]
    where: str | None
    message: str
    setup: Setup | None = None
    warm: bool = False


def case(
    name: str,
    files: str | bytes | Mapping[str, str | bytes],
    where: str | None,
    message: str,
    *,
    args: list[str] = VALIDATE,
    env: Mapping[str, str] = ENV,
    setup: Setup | None = None,
    warm: bool = False,
) -> Any:
    """One row of the catalog; `files` as text or bytes is reconciler.yaml alone; `warm`: the configuration is
    valid, so the parse cache is warmed first (see the module docstring)."""
    if isinstance(files, (str, bytes)):
        files = {"reconciler.yaml": files}
    return pytest.param(Case(files, dict(env), list(args), where, message, setup, warm), id=name)


CASES = [
    # -- the file itself: encoding, YAML syntax, top-level shape ---------------------------------------------
    case(
        "yaml-syntax-error",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: azure-devops-oauth: legacy\n"  # 5  a second ': ' inside a plain value
        ),
        "reconciler.yaml:5:",
        "invalid YAML: mapping values are not allowed",
    ),
    case(
        "yaml-unclosed-flow-mapping",
        (
            "version: 1\n"  # 1
            "platform: {service_domain: app-h.cyclr.com\n"  # 2  no closing brace
            "partners: {}\n"  # 3  where the parser notices
        ),
        "reconciler.yaml:3:",
        "invalid YAML: did not find expected ',' or '}'",
    ),
    case(
        "tab-indentation",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "\tauth: azure-devops-oauth\n"  # 5
        ),
        "reconciler.yaml:5:1:",
        "tab used for indentation",
    ),
    case(
        "duplicate-key",
        VALID + "        scopes: [vso.code]\n",  # 15
        "reconciler.yaml:15:9:",
        "duplicate key 'scopes'",
    ),
    case(
        "empty-root-file",
        "",
        "reconciler.yaml: ",  # an empty file has no line to point at
        "file is empty; expected version: 1",
    ),
    case(
        "root-is-a-list",
        (
            "- version: 1\n"  # 1
            "- partners: {}\n"  # 2
        ),
        "reconciler.yaml:1:1:",
        "expected a mapping at the top level, got a list",
    ),
    case(
        "not-utf8",
        (HEADER + "tenants:\n").encode() + b"  caf\xe9:\n    installations: {}\n",  # 9: Latin-1 e-acute
        "reconciler.yaml:9:6:",
        "file is not valid UTF-8",
    ),
    case(
        "control-character",
        HEADER
        + (
            "tenants:\n"  # 8
            "  acme:\n"  # 9
            "    installations: {}\x07\n"  # 10  a BEL character pasted from a terminal
        ),
        "reconciler.yaml:10:",
        "control character #x0007 is not allowed",
    ),
    case(
        "invalid-date",
        HEADER + "    client_secret_expires: 2026-02-30\n" + INSTALLATION + BODY,  # 8
        "reconciler.yaml:8:28:",
        "invalid value: day is out of range for month",
    ),
    case(
        "integer-too-large",
        "version: " + "9" * 5000 + "\n" + AFTER_VERSION,  # 1
        "reconciler.yaml:1:10:",
        "invalid value: Exceeds the limit",
    ),
    case(
        "null-key",
        VALID + "null: true\n",  # 15
        "reconciler.yaml:15:",
        "key 'null' is read as a null, not a name; quote it",
    ),
    # -- schema: unknown keys, wrong types, version ----------------------------------------------------------
    case(
        "unknown-top-level-key",
        HEADER
        + (
            "tennants:\n"  # 8
            "  acme: {}\n"  # 9
        ),
        "reconciler.yaml:8:1:",
        "unknown key 'tennants' (did you mean 'tenants'?)",
    ),
    case(
        "unknown-partner-key",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: azure-devops-oauth\n"  # 5
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
            "    client_secrte: ${env:ADO_CLIENT_SECRET}\n"  # 7
        ),
        "reconciler.yaml:7:5:",
        "unknown key 'client_secrte' (did you mean 'client_secret'?)",
    ),
    case(
        "unknown-installation-key",
        VALID + "        description: main board\n",  # 15
        "reconciler.yaml:15:9:",
        "unknown key 'description'",
        args=PLAN,
    ),
    case(
        "included-file-has-version",
        {
            "reconciler.yaml": HEADER + "include: [tenants/*.yaml]\n",  # 8
            "tenants/acme.yaml": (
                "# Tenant acme\n"  # 1
                "version: 1\n"  # 2  only the root file has a version
                "tenants:\n"  # 3
                "  acme: {}\n"  # 4
            ),
        },
        "tenants/acme.yaml:2:1:",
        "unknown key 'version'",
    ),
    case(
        "scopes-is-a-string",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: {organization: acme, project: P}\n"  # 13
            "        scopes: vso.work_full\n"  # 14
        ),
        "reconciler.yaml:14:17:",
        "got a string",
    ),
    case(
        "parameters-is-a-list",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: [acme, P]\n"  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:13:9:",
        "input should be a mapping, got a list",
        args=PLAN_JSON,
    ),
    case(
        "version-is-a-string",
        'version: "1"\n' + AFTER_VERSION,  # 1
        "reconciler.yaml:1:10:",
        "version: input should be 1",
    ),
    case(
        "version-2",
        "version: 2\n" + AFTER_VERSION,  # 1
        "reconciler.yaml:1:10:",
        "version: input should be 1",
    ),
    case(
        "version-is-a-boolean",
        "version: true\n" + AFTER_VERSION,  # 1
        "reconciler.yaml:1:10:",
        "version: input should be 1",
    ),
    case(
        "missing-version",
        AFTER_VERSION,  # line 1 is now `platform:`
        "reconciler.yaml:1:",
        "missing required key 'version'",
    ),
    case(
        "tenant-name-with-dot",
        HEADER
        + (
            "tenants:\n"  # 8
            "  acme.corp:\n"  # 9
            "    installations: {}\n"  # 10
        ),
        "reconciler.yaml:9:3:",
        "invalid name 'acme.corp'",
    ),
    case(
        "tenant-name-yaml-boolean",
        HEADER
        + (
            "tenants:\n"  # 8
            "  yes:\n"  # 9  YAML 1.1 reads an unquoted yes as true
            "    installations: {}\n"  # 10
        ),
        "reconciler.yaml:9:3:",
        "'yes'",
    ),
    # -- secrets and references ------------------------------------------------------------------------------
    case(
        "literal-client-secret",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: azure-devops-oauth\n"  # 5
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
            "    client_secret: hunter2-literal\n"  # 7
        )
        + INSTALLATION
        + BODY,
        "reconciler.yaml:7:20:",
        "a literal secret is refused: these files live in git",
    ),
    case(
        "literal-installation-secret",
        VALID
        + (
            "        credentials:\n"  # 15
            "          client_id: 22222222-0000-4000-8000-0000000000b2\n"  # 16
            "          client_secret: hunter2-literal\n"  # 17
        ),
        "reconciler.yaml:17:26:",
        "a literal secret is refused: these files live in git",
        args=PLAN,
    ),
    case(
        "env-var-not-set",
        VALID,
        "reconciler.yaml:7:20:",
        "environment variable ADO_CLIENT_SECRET is not set",
        env={"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1"},
        args=APPLY_DEFER,
    ),
    case(
        "env-var-empty",
        VALID,
        "reconciler.yaml:7:20:",
        "environment variable ADO_CLIENT_SECRET is empty",
        env={"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": ""},
        args=APPLY_DEFER,
    ),
    case(
        "secret-file-missing",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"),  # 7
        "reconciler.yaml:7:20:",
        "secret file 'secrets/ado' does not exist",
        args=APPLY_DEFER,
    ),
    case(
        "secret-file-outside-config-dir",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:../outside}"),  # 7
        "reconciler.yaml:7:20:",
        "secret file '../outside' is outside the configuration directory",
    ),
    case(
        "empty-env-reference",
        VALID.replace("${env:ADO_CLIENT_ID}", "${env:}"),  # 6
        "reconciler.yaml:6:16:",
        "invalid environment variable name ''",
    ),
    case(
        "unclosed-reference",
        VALID.replace("${env:ADO_CLIENT_ID}", "${env:ADO_CLIENT_ID"),  # 6
        "reconciler.yaml:6:16:",
        "malformed reference",
    ),
    case(
        "client-id-without-secret",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: azure-devops-oauth\n"  # 5
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
        )
        + INSTALLATION
        + BODY,
        "reconciler.yaml:4:",
        "client_id and client_secret go together: client_secret is missing",
    ),
    case(
        "client-id-without-secret-flow",
        PARTNERS
        + "  microsoft-azure-devops: {auth: azure-devops-oauth, client_id: 11111111-0000-4000-8000-0000000000a1}\n"  # 4
        + INSTALLATION
        + BODY,
        "reconciler.yaml:4:",
        "client_id and client_secret go together: client_secret is missing",
    ),
    # -- partners against the catalog ------------------------------------------------------------------------
    case(
        "unknown-connector-partner-key",
        PARTNERS
        + (
            "  microsoft-azure-devop:\n"  # 4
            "    auth: azure-devops-oauth\n"  # 5
        ),
        "reconciler.yaml:4:3:",
        "unknown connector 'microsoft-azure-devop'",
    ),
    case(
        "unknown-connector-field",
        PARTNERS
        + (
            "  ado-legacy:\n"  # 4
            "    connector: github\n"  # 5
            "    auth: azure-devops-oauth\n"  # 6
        ),
        "reconciler.yaml:5:16:",
        "unknown connector 'github'",
    ),
    case(
        "unknown-auth",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: oauth2\n"  # 5
        ),
        "reconciler.yaml:5:11:",
        "unknown auth 'oauth2' for microsoft-azure-devops; expected one of: azure-devops-oauth, entra-id",
    ),
    case(
        "entra-id-without-tenant-id",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: entra-id\n"  # 5
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 6
            "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 7
        ),
        "reconciler.yaml:4:",
        "auth entra-id needs tenant_id",
    ),
    case(
        "entra-id-without-tenant-id-flow",
        PARTNERS + "  microsoft-azure-devops: {auth: entra-id}\n",  # 4
        "reconciler.yaml:4:",
        "auth entra-id needs tenant_id",
    ),
    case(
        "tenant-id-on-azure-devops-oauth",
        HEADER + "    tenant_id: organizations\n",  # 8
        "reconciler.yaml:8:16:",
        "tenant_id does not apply to auth azure-devops-oauth",
    ),
    case(
        "partner-unknown-scope",
        HEADER + "    scopes: [vso.work_full, vso.cod]\n",  # 8
        "reconciler.yaml:8:29:",
        "unknown scope 'vso.cod' for microsoft-azure-devops (did you mean 'vso.code'?)",
    ),
    case(
        "http-redirect-default-endpoints",
        HEADER + "    redirect_uri: http://localhost:8080/callback\n" + INSTALLATION + BODY,  # 8
        "reconciler.yaml:8:19:",
        "'http://localhost:8080/callback' must use https",
    ),
    case(
        "http-endpoint-not-loopback",
        HEADER
        + (
            "    endpoints:\n"  # 8
            "      token_url: http://proxy.corp.example/token\n"  # 9
        ),
        "reconciler.yaml:9:18:",
        "must use https (http is allowed only for 127.0.0.1 or localhost)",
    ),
    case(
        "redirect-with-fragment",
        HEADER + "    redirect_uri: 'https://app-h.cyclr.com/cb#x'\n",  # 8
        "reconciler.yaml:8:19:",
        "an OAuth endpoint or redirect URI may not contain a fragment (#)",
    ),
    case(
        "no-service-domain-no-redirect-uri",
        (
            "version: 1\n"  # 1
            "partners:\n"  # 2
            "  microsoft-azure-devops:\n"  # 3
            "    auth: azure-devops-oauth\n"  # 4
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 5
            "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 6
        ),
        "reconciler.yaml:3:",
        "no redirect_uri, and no platform.service_domain",
    ),
    case(
        "no-service-domain-no-redirect-uri-flow",
        (
            "version: 1\n"  # 1
            "partners:\n"  # 2
            "  microsoft-azure-devops: {auth: azure-devops-oauth}\n"  # 3
        ),
        "reconciler.yaml:3:",
        "no redirect_uri, and no platform.service_domain",
    ),
    # -- installations ---------------------------------------------------------------------------------------
    case(
        "connector-without-partner",
        (
            "version: 1\n"  # 1
            "platform: {service_domain: app-h.cyclr.com}\n"  # 2
            "tenants:\n"  # 3
            "  acme:\n"  # 4
            "    installations:\n"  # 5
            "      ado:\n"  # 6
            "        connector: microsoft-azure-devops\n"  # 7
            "        parameters: {organization: acme, project: P}\n"  # 8
            "        scopes: [vso.work_full]\n"  # 9
        ),
        "reconciler.yaml:7:20:",
        "connector 'microsoft-azure-devops' has no partner entry",
    ),
    case(
        "installation-unknown-connector",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devop\n"  # 12
            "        parameters: {organization: acme, project: P}\n"  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:12:20:",
        "unknown connector 'microsoft-azure-devop' (did you mean 'microsoft-azure-devops'?)",
    ),
    case(
        "installation-unknown-partner",
        HEADER
        + INSTALLATION
        + (
            "        partner: ado-entra\n"  # 12
            "        parameters: {organization: acme, project: P}\n"  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:12:18:",
        "unknown partner 'ado-entra'",
    ),
    case(
        "two-default-partners-for-a-connector",
        HEADER
        + (
            "    default: true\n"  # 8
            "  ado-entra:\n"  # 9
            "    connector: microsoft-azure-devops\n"  # 10
            "    auth: entra-id\n"  # 11
            "    tenant_id: organizations\n"  # 12
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 13
            "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 14
            "    default: true\n"  # 15
            "tenants:\n"  # 16
            "  acme:\n"  # 17
            "    installations:\n"  # 18
            "      ado:\n"  # 19
            "        connector: microsoft-azure-devops\n"  # 20
            "        parameters: {organization: acme, project: P}\n"  # 21
            "        scopes: [vso.work_full]\n"  # 22
        ),
        "reconciler.yaml:15:14:",
        "partners 'microsoft-azure-devops' and 'ado-entra' both say default: true for connector 'microsoft-azure-devops'",
        args=PLAN,
    ),
    case(
        "blank-partner-no-credentials",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: azure-devops-oauth\n"  # 5
            "tenants:\n"  # 6
            "  acme:\n"  # 7
            "    installations:\n"  # 8
            "      ado:\n"  # 9
            "        connector: microsoft-azure-devops\n"  # 10
            "        parameters: {organization: acme, project: P}\n"  # 11
            "        scopes: [vso.work_full]\n"  # 12
        ),
        "reconciler.yaml:9:",
        "no client credentials: partner 'microsoft-azure-devops' leaves client_id/client_secret blank",
    ),
    case(
        "blank-partner-no-credentials-flow",
        PARTNERS
        + (
            "  microsoft-azure-devops: {auth: azure-devops-oauth}\n"  # 4
            "tenants:\n"  # 5
            "  acme:\n"  # 6
            "    installations:\n"  # 7
            "      ado: {partner: microsoft-azure-devops, scopes: [vso.work_full],"  # 8
            " parameters: {organization: acme, project: P}}\n"  # 8 (continued)
        ),
        "reconciler.yaml:8:",
        "no client credentials: partner 'microsoft-azure-devops' leaves client_id/client_secret blank",
    ),
    case(
        "unknown-scope",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: {organization: acme, project: P}\n"  # 13
            "        scopes: [vso.wrok_full]\n"  # 14
        ),
        "reconciler.yaml:14:18:",
        "unknown scope 'vso.wrok_full' for microsoft-azure-devops (did you mean 'vso.work_full'?)",
        args=PLAN_JSON,
    ),
    case(
        "scope-not-registered-with-partner",
        HEADER
        + "    scopes: [vso.work_full]\n"  # 8
        + (
            "tenants:\n"  # 9
            "  acme:\n"  # 10
            "    installations:\n"  # 11
            "      ado:\n"  # 12
            "        connector: microsoft-azure-devops\n"  # 13
            "        parameters: {organization: acme, project: P}\n"  # 14
            "        scopes: [vso.work_full, vso.code]\n"  # 15
        ),
        "reconciler.yaml:15:33:",
        "scope 'vso.code' is not registered with partner 'microsoft-azure-devops'",
    ),
    case(
        "empty-scopes",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: {organization: acme, project: P}\n"  # 13
            "        scopes: []\n"  # 14
        ),
        "reconciler.yaml:14:9:",
        "must list at least 1 item",
    ),
    case(
        "unknown-parameter",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters:\n"  # 13
            "          organization: acme\n"  # 14
            "          project: P\n"  # 15
            "          team: Core\n"  # 16
            "        scopes: [vso.work_full]\n"  # 17
        ),
        "reconciler.yaml:16:11:",
        "unknown parameter 'team'",
    ),
    case(
        "invalid-organization",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: {organization: -acme, project: P}\n"  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:13:36:",
        'invalid organization "-acme"',
    ),
    case(
        "missing-project-parameter",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            "        parameters: {organization: acme}\n"  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:13:",
        "missing parameter 'project'",
    ),
    case(
        "missing-project-parameter-flow",
        HEADER
        + (
            "tenants:\n"  # 8
            "  acme:\n"  # 9
            "    installations:\n"  # 10
            "      ado: {partner: microsoft-azure-devops, scopes: [vso.work_full],"  # 11
            " parameters: {organization: acme}}\n"  # 11 (continued)
        ),
        "reconciler.yaml:11:",
        "missing parameter 'project'",
    ),
    # -- several files ---------------------------------------------------------------------------------------
    case(
        "duplicate-tenant-across-files",
        {
            "reconciler.yaml": HEADER + "include: [tenants/*.yaml]\n",  # 8
            "tenants/a.yaml": (
                "tenants:\n"  # 1
                "  acme:\n"  # 2
                "    installations: {}\n"  # 3
            ),
            "tenants/b.yaml": (
                "# Copied from a.yaml and not renamed\n"  # 1
                "tenants:\n"  # 2
                "  acme:\n"  # 3
                "    installations: {}\n"  # 4
            ),
        },
        "tenants/b.yaml:3:3:",
        "tenant 'acme' is already declared in tenants/a.yaml",
    ),
    case(
        "include-matches-nothing",
        HEADER
        + (
            "include:\n"  # 8
            "  - tenants/*.yml\n"  # 9
        ),
        "reconciler.yaml:9:5:",
        "include pattern 'tenants/*.yml' matches no file",
        args=PLAN,
    ),
    case(
        "include-cycle",
        {
            "reconciler.yaml": HEADER + "include: [a.yaml]\n",  # 8
            "a.yaml": "include: [b.yaml]\n",  # 1
            "b.yaml": (
                "# b pulls a back in\n"  # 1
                "include:\n"  # 2
                "  - a.yaml\n"  # 3
            ),
        },
        "b.yaml:3:5:",
        "include cycle: reconciler.yaml -> a.yaml -> b.yaml -> a.yaml",
    ),
    case(
        "error-in-included-tenant-file",
        {
            "reconciler.yaml": HEADER + "include: [tenants/*.yaml]\n",  # 8
            "tenants/acme.yaml": (
                "tenants:\n"  # 1
                "  acme:\n"  # 2
                "    installations:\n"  # 3
                "      ado:\n"  # 4
                "        connector: microsoft-azure-devops\n"  # 5
                "        parameters: {organization: acme, project: P}\n"  # 6
                "        scopes: [vso.work_full, vso.buld]\n"  # 7
            ),
        },
        "tenants/acme.yaml:7:33:",
        "unknown scope 'vso.buld' for microsoft-azure-devops (did you mean 'vso.build'?)",
    ),
    # -- command-line arguments ------------------------------------------------------------------------------
    case(
        "unknown-format",
        VALID,
        None,
        "Invalid value for '--format': 'xml' is not one of 'text', 'json', 'markdown'",
        args=["-C", ".", "plan", "--format", "xml"],
        warm=True,
    ),
    case(
        "unknown-command",
        VALID,
        None,
        "No such command 'frobnicate'",
        args=["-C", ".", "frobnicate"],
        warm=True,
    ),
    case(
        "unknown-option",
        VALID,
        None,
        "No such option '--force'",
        args=["-C", ".", "plan", "--force"],
        warm=True,
    ),
    case(
        "chdir-without-reconciler-yaml",
        {"conf/README": "the configuration moved\n"},
        "conf/reconciler.yaml: ",
        "no reconciler.yaml in conf",
        args=["-C", "conf", "validate"],
    ),
    case(
        "chdir-missing-directory",
        VALID,
        "missing: ",
        "no such directory",
        args=["-C", "missing", "plan"],
        warm=True,
    ),
    # -- found in review: references where none are resolved, injection through names, vague messages --------
    case(
        "reference-in-tenant-id",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: entra-id\n"  # 5
            "    tenant_id: ${env:TENANT}\n"  # 6
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 7
            "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 8
        ),
        "reconciler.yaml:6:16:",
        "invalid tenant_id: references",
    ),
    case(
        "reference-in-redirect-uri",
        HEADER + "    redirect_uri: ${env:CALLBACK}\n",  # 8
        "reconciler.yaml:8:19:",
        "resolved only in client_id and client_secret",
    ),
    case(
        "control-character-in-project",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            '        parameters: {organization: acme, project: "P\\n```\\nAll clear"}\n'  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:13:",
        'invalid project "P\\n```\\nAll clear"',
    ),
    case(
        "trailing-newline-in-organization",
        HEADER
        + INSTALLATION
        + (
            "        connector: microsoft-azure-devops\n"  # 12
            '        parameters: {organization: "acme\\n", project: P}\n'  # 13
            "        scopes: [vso.work_full]\n"  # 14
        ),
        "reconciler.yaml:13:",
        "invalid organization",
    ),
    case(
        "service-domain-with-scheme",
        "version: 1\nplatform: {service_domain: 'https://app-h.cyclr.com'}\n",  # 2
        "reconciler.yaml:2:28:",
        "expected a host name such as app-h.cyclr.com",
    ),
    case(
        "partner-scopes-empty",
        HEADER + "    scopes: []\n",  # 8
        "reconciler.yaml:8:",
        "must list at least 1 item",
    ),
    case(
        "null-tenant",
        HEADER + "tenants:\n  acme:\n",  # 8-9
        "reconciler.yaml:9:",
        "input should be a mapping, got null",
    ),
]



# -- more configuration cases: includes, sizes, encodings, YAML features, types, references, environments ----------


def _laughs(last: str) -> str:
    """The "billion laughs": nine levels of nine aliases (9^9 strings) from 11 lines, then `last`."""
    lines = ["version: 1\n", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]  # 1-2
    lines += [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10)]  # 3-11
    return "".join(lines) + last  # 12


def _installation_fanout(count: int) -> str:
    """`count` installations written once, then `count` tenants that all alias them: count^2 installations."""
    lines = [HEADER, "tenants:\n", "  t0:\n", "    installations: &all\n"]  # 1-7, 8, 9, 10
    lines += [
        f"      i{n}: {{connector: microsoft-azure-devops, parameters: {{organization: o, project: p}},"
        f" scopes: [vso.work_full]}}\n"
        for n in range(count)
    ]
    lines += [f"  t{n}: {{installations: *all}}\n" for n in range(1, count)]  # from line 11 + count
    return "".join(lines)


TENANT_FILE = (
    "tenants:\n"  # 1
    "  acme:\n"  # 2
    "    installations:\n"  # 3
    "      ado:\n"  # 4
    "        connector: microsoft-azure-devops\n"  # 5
    "        parameters: {organization: acme, project: P}\n"  # 6
    "        scopes: [vso.work_full]\n"  # 7
)
WITH_INCLUDE = HEADER + "include: [tenants/*.yaml]\n"  # 8
HUGE = 16 * 1024 * 1024 + 1

MORE_CONFIG_CASES = [
    case(
        "include-missing-file",
        HEADER + "include: [tenants/acme.yaml]\n",  # 8
        "reconciler.yaml:8:11:",
        "include pattern 'tenants/acme.yaml' matches no file",
    ),
    case(
        "include-names-a-directory",
        {"reconciler.yaml": HEADER + "include: [tenants]\n", "tenants/acme.yaml": TENANT_FILE},  # 8
        "reconciler.yaml:8:11:",
        "include pattern 'tenants' matches no file",
    ),
    case(
        "include-is-a-string",
        {"reconciler.yaml": HEADER + "include: tenants/*.yaml\n", "tenants/acme.yaml": TENANT_FILE},  # 8
        "reconciler.yaml:8:10:",
        "include: input should be a list, got a string",
    ),
    case(
        "include-empty-pattern",
        HEADER + "include: ['']\n",  # 8
        "reconciler.yaml:8:11:",
        "include[0]: string should have at least 1 character",
    ),
    case(
        "include-self",
        HEADER + "include: [reconciler.yaml]\n",  # 8
        "reconciler.yaml:8:11:",
        "include cycle: reconciler.yaml -> reconciler.yaml",
    ),
    case(
        "include-cycle-through-three-files",
        {
            "reconciler.yaml": HEADER + "include: [a.yaml]\n",  # 8
            "a.yaml": "include: [b.yaml]\n",  # 1
            "b.yaml": "include: [c.yaml]\n",  # 1
            "c.yaml": "include: [a.yaml]\n",  # 1
        },
        "c.yaml:1:11:",
        "include cycle: reconciler.yaml -> a.yaml -> b.yaml -> c.yaml -> a.yaml",
    ),
    case(
        "included-file-missing-further-include",
        {"reconciler.yaml": HEADER + "include: [a.yaml]\n", "a.yaml": "include: [gone/*.yaml]\n"},  # 8 / 1
        "a.yaml:1:11:",
        "include pattern 'gone/*.yaml' matches no file",
    ),
    case(
        "duplicate-partner-across-files",
        {
            "reconciler.yaml": WITH_INCLUDE,
            "tenants/partners.yaml": (
                "partners:\n"  # 1
                "  microsoft-azure-devops:\n"  # 2
                "    auth: azure-devops-oauth\n"  # 3
            ),
        },
        "tenants/partners.yaml:2:3:",
        "partner 'microsoft-azure-devops' is already declared in reconciler.yaml",
    ),
    case(
        "duplicate-tenant-root-and-include",
        {"reconciler.yaml": VALID + "include: [tenants/*.yaml]\n", "tenants/acme.yaml": TENANT_FILE},  # 15
        "tenants/acme.yaml:2:3:",
        "tenant 'acme' is already declared in reconciler.yaml",
    ),
    case(
        "included-file-empty",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": ""},
        "tenants/acme.yaml: ",
        "file is empty; expected partners: or tenants:",
    ),
    case(
        "included-file-only-comments",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": "# acme moves here next week\n"},
        "tenants/acme.yaml: ",
        "file is empty; expected partners: or tenants:",
    ),
    case(
        "included-file-not-utf8",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": b"tenants:\n  acme:\n    # \xff\xfe\n"},
        "tenants/acme.yaml:3:7:",
        "file is not valid UTF-8",
    ),
    case(
        "included-file-tab",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": "tenants:\n\tacme: {}\n"},  # 2
        "tenants/acme.yaml:2:1:",
        "tab used for indentation",
    ),
    case(
        "included-file-is-a-list",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": "- acme\n"},  # 1
        "tenants/acme.yaml:1:1:",
        "expected a mapping at the top level, got a list",
    ),
    case(
        "included-file-platform-key",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": "platform: {service_domain: x.example}\n"},
        "tenants/acme.yaml:1:1:",
        "unknown key 'platform'",
    ),
    case(
        "literal-secret-in-included-file",
        {
            "reconciler.yaml": "version: 1\nplatform: {service_domain: app-h.cyclr.com}\ninclude: [partners/*.yaml]\n",
            "partners/ado.yaml": (
                "partners:\n"  # 1
                "  microsoft-azure-devops:\n"  # 2
                "    auth: azure-devops-oauth\n"  # 3
                "    client_id: 11111111-0000-4000-8000-0000000000a1\n"  # 4
                "    client_secret: hunter2-literal\n"  # 5
            ),
        },
        "partners/ado.yaml:5:20:",
        "a literal secret is refused",
    ),
    case(
        "env-var-missing-in-included-file",
        {
            "reconciler.yaml": "version: 1\nplatform: {service_domain: app-h.cyclr.com}\ninclude: [partners/*.yaml]\n",
            "partners/ado.yaml": (
                "partners:\n"  # 1
                "  microsoft-azure-devops:\n"  # 2
                "    auth: azure-devops-oauth\n"  # 3
                "    client_id: 11111111-0000-4000-8000-0000000000a1\n"  # 4
                "    client_secret: ${env:ADO_OTHER_SECRET}\n"  # 5
            ),
        },
        "partners/ado.yaml:5:20:",
        "environment variable ADO_OTHER_SECRET is not set",
        args=APPLY_DEFER,
    ),
    case(
        "unknown-scope-in-included-file-partner",
        {
            "reconciler.yaml": "version: 1\nplatform: {service_domain: app-h.cyclr.com}\ninclude: [partners/*.yaml]\n",
            "partners/ado.yaml": (
                "partners:\n"  # 1
                "  microsoft-azure-devops:\n"  # 2
                "    auth: azure-devops-oauth\n"  # 3
                "    scopes: [vso.work_ful]\n"  # 4
            ),
        },
        "partners/ado.yaml:4:14:",
        "unknown scope 'vso.work_ful'",
    ),
    case(
        "huge-root-file",
        VALID + "#" * HUGE + "\n",
        "reconciler.yaml: ",
        "bytes; the limit is 16777216",
    ),
    case(
        "huge-included-file",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": TENANT_FILE + "#" * HUGE + "\n"},
        "tenants/acme.yaml: ",
        "the limit is 16777216",
    ),
    case(
        "alias-bomb-billion-laughs",
        _laughs("tenants: *l9\n"),
        "reconciler.yaml:7:12:",  # the alias that takes the expansion past the limit
        "aliases expand to more than",
    ),
    case(
        "alias-bomb-in-include",
        _laughs("include: *l9\n"),
        "reconciler.yaml:7:12:",
        "aliases expand to more than",
    ),
    case(
        "alias-bomb-installations",
        _installation_fanout(200),
        "reconciler.yaml:",
        "aliases expand to more than",
    ),
    case(
        "alias-bomb-in-included-file",
        {"reconciler.yaml": WITH_INCLUDE, "tenants/acme.yaml": _laughs("").removeprefix("version: 1\n")},
        "tenants/acme.yaml:6:12:",
        "aliases expand to more than",
    ),
    case(  # found by fuzzing: a loop through an overlay recursed until Python gave up
        "alias-loop-in-overlay",
        {"reconciler.yaml": VALID, "environments/prod.yaml": "tenants: &t\n  acme: *t\n"},  # 1-2
        "environments/prod.yaml:2:9:",
        "invalid YAML: alias *t is inside the value it names (a loop)",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "alias-loop",
        HEADER + INSTALLATION.removesuffix("      ado:\n") + "      ado: &i {connector: *i}\n",  # 11
        "reconciler.yaml:11:27:",
        "invalid YAML: alias *i is inside the value it names (a loop)",
    ),
    case(  # found by fuzzing: a newline in a key broke the one-line error
        "newline-in-key",
        HEADER + '"tenants\\n": {}\n',  # 8
        "reconciler.yaml:8:1:",
        "unknown key 'tenants\\n'",
    ),
    case(
        "terminal-escape-in-key",
        HEADER + '"\\e[2J\\e[31mtenants": {}\n',  # 8
        "reconciler.yaml:8:1:",
        "unknown key '\\x1b[2J\\x1b[31mtenants'",
    ),
    case(
        "bidi-override-in-name",
        HEADER + 'tenants:\n  "acme\\u202egpj.exe":\n    installations: {}\n',  # 8-10
        "reconciler.yaml:9:3:",
        "invalid name 'acme\\u202egpj.exe'",
    ),
    case(  # found by fuzzing: the backend's type tag showed up as a key (backend.local.path)
        "backend-path-wrong-type",
        VALID + "backend: {path: 3}\n",  # 15
        "reconciler.yaml:15:17:",
        "error: reconciler.yaml:15:17: backend.path: input should be a valid string, got a number",
    ),
    case(  # found by fuzzing: a NUL in a path crashed the resolution of the state directories
        "backend-path-nul",
        VALID + 'backend: {path: "st\\0ate"}\n',  # 15
        "reconciler.yaml:15:17:",
        "backend.path: must not contain control characters",
    ),
    case(
        "include-pattern-control-character",
        VALID + 'include: ["tenants/\\0.yaml"]\n',  # 15
        "reconciler.yaml:15:11:",
        "include[0]: include pattern must not contain control characters",
    ),
    case(
        "secret-file-name-nul",
        VALID.replace("${env:ADO_CLIENT_SECRET}", '"${file:secrets/\\0}"'),  # 7
        "reconciler.yaml:7:20:",
        "the file name in the reference contains a control character",
    ),
    case(  # another environment's state directory is sealed too; its own load reports the NUL
        "other-environment-backend-path-nul",
        {"reconciler.yaml": VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"),
         "environments/prod.yaml": 'backend: {path: "st\\0ate"}\n', "secrets/ado": "x\n"},
        "environments/prod.yaml:1:17:",
        "backend.path: must not contain control characters",
        args=["-C", ".", "validate", "--env", "prod"],
    ),
    case(
        "undefined-alias",
        HEADER + "    scopes: *registered\n",  # 8
        "reconciler.yaml:8:13:",
        "invalid YAML: found undefined alias 'registered'",
    ),
    case(
        "merge-key-of-a-list",
        HEADER + "    <<: [1, 2]\n",  # 8
        "reconciler.yaml:8:",
        "invalid YAML:",
    ),
    case(
        "python-object-tag",
        HEADER + "    client_secret_expires: !!python/object/apply:os.system [echo owned]\n",  # 8
        "reconciler.yaml:8:28:",
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    case(
        "custom-tag",
        HEADER + "    client_secret_expires: !vault secret/ado\n",  # 8
        "reconciler.yaml:8:28:",
        "could not determine a constructor for the tag '!vault'",
    ),
    case(
        "binary-tag",
        HEADER + "    client_secret_expires: !!binary aGVsbG8=\n",  # 8
        "reconciler.yaml:8:28:",
        "client_secret_expires: input should be a valid date",
    ),
    case(
        "two-documents",
        VALID + "---\nversion: 1\n",  # 15-16
        "reconciler.yaml:15:",
        "expected a single document in the stream",
    ),
    case(
        "utf16-file",
        VALID.encode("utf-16"),
        "reconciler.yaml:1:1:",
        "file is not valid UTF-8",
    ),
    case(
        "nul-byte",
        HEADER + "tenants: {}\x00\n",  # 8
        "reconciler.yaml:8:12:",
        "control character #x0000 is not allowed",
    ),
    case(
        "nested-too-deeply",
        VALID + "deep: " + "[" * 20000 + "]" * 20000 + "\n",  # 15
        "reconciler.yaml:15:",
        "invalid YAML: exceeded maximum nesting depth",
    ),
    case(
        "root-is-a-scalar",
        "just some words\n",
        "reconciler.yaml:1:1:",
        "expected a mapping at the top level, got a string",
    ),
    case(
        "key-is-a-list",
        HEADER + "[tenants]: {}\n",  # 8
        "reconciler.yaml:8:1:",
        "a key must be a plain name, not a list or mapping",
    ),
    case(
        "integer-tenant-name",
        HEADER + "tenants:\n  1234:\n    installations: {}\n",  # 8-10
        "reconciler.yaml:9:3:",
        "key '1234' is read as a int, not a name; quote it",
    ),
    case(
        "version-float",
        "version: 1.0\n" + AFTER_VERSION,  # 1
        "reconciler.yaml:1:10:",
        "version: input should be 1",
    ),
    case(
        "version-null",
        "version:\n" + AFTER_VERSION,  # 1
        "reconciler.yaml:1:",
        "version: input should be 1",
    ),
    case(
        "partners-is-a-list",
        "version: 1\npartners:\n  - microsoft-azure-devops\n",  # 2-3
        "reconciler.yaml:2:1:",
        "partners: input should be a mapping, got a list",
    ),
    case(
        "tenants-is-a-string",
        HEADER + "tenants: acme\n",  # 8
        "reconciler.yaml:8:10:",
        "tenants: input should be a mapping, got a string",
    ),
    case(
        "installation-is-a-list",
        HEADER + INSTALLATION.removesuffix("      ado:\n") + "      ado: [a, b]\n",  # 11
        "reconciler.yaml:11:",
        "tenants.acme.installations.ado: input should be a mapping, got a list",
    ),
    case(
        "scope-is-a-number",
        HEADER + INSTALLATION + BODY.replace("[vso.work_full]", "[vso.work_full, 42]"),  # 14
        "reconciler.yaml:14:",
        "scopes[1]: input should be a valid string, got a number (quote the value to make it a string)",
    ),
    case(
        "organization-is-a-number",
        HEADER + INSTALLATION + BODY.replace("organization: acme", "organization: 1234"),  # 13
        "reconciler.yaml:13:",
        "parameters.organization: input should be a valid string, got a number",
    ),
    case(
        "protect-is-a-string",
        VALID + "        protect: 'yes'\n",  # 15
        "reconciler.yaml:15:18:",
        "protect: input should be a valid boolean, got a string",
    ),
    case(
        "client-secret-expires-not-a-date",
        HEADER + "    client_secret_expires: soon\n",  # 8
        "reconciler.yaml:8:28:",
        "client_secret_expires:",
    ),
    case(
        "unknown-key-in-endpoints",
        HEADER + "    endpoints: {authorise_url: 'https://login.example/authorize'}\n",  # 8
        "reconciler.yaml:8:17:",
        "unknown key 'authorise_url' (did you mean 'authorize_url'?)",
    ),
    case(
        "unknown-key-in-credentials",
        VALID + "        credentials: {client_id: 22222222-0000-4000-8000-0000000000b2, client_secret: '${env:S}', tenant: x}\n",  # 15
        "reconciler.yaml:15:",
        "unknown key 'tenant'",
    ),
    case(
        "unknown-backend-type",
        VALID + "backend: {type: s3, bucket: states}\n",  # 15
        "reconciler.yaml:15:",
        "type must be local or postgres",
    ),
    case(
        "unknown-key-in-platform",
        "version: 1\nplatform: {service_domain: app-h.cyclr.com, region: eu}\n" + VALID.split("\n", 2)[2],  # 2
        "reconciler.yaml:2:45:",
        "platform.region: unknown key 'region'",
    ),
    case(
        "name-too-long",
        HEADER + "tenants:\n  " + "a" * 64 + ":\n    installations: {}\n",  # 8-10
        "reconciler.yaml:9:3:",
        "invalid name",
    ),
    case(
        "name-not-ascii",
        HEADER + "tenants:\n  café:\n    installations: {}\n",  # 8-10
        "reconciler.yaml:9:3:",
        "invalid name 'café'",
    ),
    case(
        "invalid-env-variable-name",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${env:1SECRET}"),  # 7
        "reconciler.yaml:7:20:",
        "invalid environment variable name '1SECRET'",
    ),
    case(
        "unknown-reference-kind",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${vault:ado/secret}"),  # 7
        "reconciler.yaml:7:20:",
        "a literal secret is refused",
    ),
    case(
        "secret-file-is-a-directory",
        {"reconciler.yaml": VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets}"), "secrets/ado": "x\n"},
        "reconciler.yaml:7:20:",
        "cannot read secret file 'secrets': Is a directory",
    ),
    case(
        "secret-file-empty",
        {"reconciler.yaml": VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"), "secrets/ado": "\n"},
        "reconciler.yaml:7:20:",
        "secret file 'secrets/ado' is empty",
    ),
    case(
        "secret-file-not-utf8",
        {"reconciler.yaml": VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"), "secrets/ado": b"\xff\xfe"},
        "reconciler.yaml:7:20:",
        "cannot read secret file 'secrets/ado': not readable as UTF-8",
    ),
    case(
        "secret-file-absolute-path",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:/etc/hostname}"),  # 7
        "reconciler.yaml:7:20:",
        "secret file '/etc/hostname' is outside the configuration directory",
    ),
    case(
        "secret-file-symlink-out",
        {"reconciler.yaml": VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"), "secrets/.keep": ""},
        "reconciler.yaml:7:20:",
        "secret file 'secrets/ado' is outside the configuration directory",
        setup=lambda d: (d / "secrets" / "ado").symlink_to("/etc/hostname"),
    ),
    case(
        "client-id-is-the-secret",
        VALID.replace("${env:ADO_CLIENT_ID}", "${env:ADO_CLIENT_SECRET}"),  # 6
        "reconciler.yaml:6:16:",
        "client_id resolves to the same value as a client_secret",
    ),
    case(
        "endpoint-with-credentials",
        HEADER + "    endpoints: {token_url: 'https://user:pw@login.example/token'}\n",  # 8
        "reconciler.yaml:8:",
        "a URL may not carry a user name or password",
    ),
    case(
        "endpoint-with-fragment",
        HEADER + "    endpoints: {token_url: 'https://login.example/token#x'}\n",  # 8
        "reconciler.yaml:8:",
        "endpoints.token_url: an OAuth endpoint or redirect URI may not contain a fragment (#)",
    ),
    case(
        "endpoint-with-space",
        HEADER + "    endpoints: {api_url: 'https://dev.azure.example/a b'}\n",  # 8
        "reconciler.yaml:8:",
        "endpoints.api_url: invalid URL: it contains a space or a control character (percent-encode it)",
    ),
    case(
        "redirect-with-control-character",
        HEADER + '    redirect_uri: "https://app-h.cyclr.com/cb\\x01"\n',  # 8
        "reconciler.yaml:8:19:",
        "redirect_uri: invalid URL: it contains a space or a control character",
    ),
    case(
        "endpoint-bad-port",
        HEADER + "    endpoints: {token_url: 'https://login.example:99999/token'}\n",  # 8
        "reconciler.yaml:8:",
        "invalid URL 'https://login.example:99999/token'",
    ),
    case(
        "endpoint-ftp",
        HEADER + "    endpoints: {api_url: 'ftp://dev.example'}\n",  # 8
        "reconciler.yaml:8:",
        "invalid URL 'ftp://dev.example': expected https://host/...",
    ),
    case(
        "redirect-uri-http-other-host",
        HEADER
        + (
            "    redirect_uri: http://evil.example:8080/callback\n"  # 8
            "    endpoints: {token_url: 'http://127.0.0.1:9/token'}\n"  # 9
        ),
        "reconciler.yaml:8:19:",
        "must use https (http is allowed only for 127.0.0.1 or localhost)",
    ),
    case(
        "invalid-tenant-id",
        PARTNERS
        + (
            "  microsoft-azure-devops:\n"  # 4
            "    auth: entra-id\n"  # 5
            "    tenant_id: not a tenant\n"  # 6
        ),
        "reconciler.yaml:6:16:",
        "invalid tenant_id",
    ),
    case(
        "reference-in-parameter",
        HEADER + INSTALLATION + BODY.replace("project: P", "project: '${env:PROJECT}'"),  # 13
        "reconciler.yaml:13:",
        'invalid project "${env:PROJECT}"',
    ),
    case(
        "postgres-backend-literal-dsn",
        VALID + "backend: {type: postgres, dsn: 'postgresql://u:pw@db.example/state'}\n",  # 15
        "reconciler.yaml:15:32:",
        "backend.dsn: a literal secret is refused",
    ),
    case(
        "postgres-backend-env-missing",
        VALID + "backend: {type: postgres, dsn: '${env:RECONCILER_PG_DSN}'}\n",  # 15
        "reconciler.yaml:15:32:",
        "backend.dsn: environment variable RECONCILER_PG_DSN is not set",
        args=PLAN,
        warm=True,
    ),
    case(
        "environment-unknown",
        VALID,
        "environments: ",
        "unknown environment 'staging': there is no environments/staging.yaml",
        args=["-C", ".", "--env", "staging", "plan"],
    ),
    case(
        "environment-invalid-name",
        {"reconciler.yaml": VALID, "environments/prod.yaml": "tenants: {}\n"},
        "environments: ",
        'invalid environment name "../prod"',
        args=["-C", ".", "--env", "../prod", "plan"],
    ),
    case(
        "environment-overlay-syntax-error",
        {"reconciler.yaml": VALID, "environments/prod.yaml": "tenants: {acme: \n"},
        "environments/prod.yaml:2:",
        "invalid YAML",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "environment-overlay-includes",
        {"reconciler.yaml": VALID, "environments/prod.yaml": "include: [more.yaml]\n"},  # 1
        "environments/prod.yaml:1:1:",
        "an environment overlay cannot include files",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "environment-overlay-unknown-key",
        {"reconciler.yaml": VALID, "environments/prod.yaml": "tennants: {}\n"},  # 1
        "environments/prod.yaml:1:1:",
        "unknown key 'tennants'",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "environment-overlay-removes-required-key",
        {
            "reconciler.yaml": VALID,
            "environments/prod.yaml": "tenants:\n  acme:\n    installations:\n      ado:\n        scopes: null\n",  # 5
        },
        "environments/prod.yaml:5:",
        "missing required key 'scopes'",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "environment-overlay-alias-bomb",
        {"reconciler.yaml": VALID, "environments/prod.yaml": _laughs("").removeprefix("version: 1\n")},
        "environments/prod.yaml:6:12:",
        "aliases expand to more than",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
    case(
        "environment-overlay-not-utf8",
        {"reconciler.yaml": VALID, "environments/prod.yaml": b"tenants: {}\n# \xe9t\xe9\n"},
        "environments/prod.yaml:2:3:",
        "file is not valid UTF-8",
        args=["-C", ".", "--env", "prod", "validate"],
    ),
]

# -- state files ----------------------------------------------------------------------------------------------------

KEY = base64.b64encode(b"K" * 32).decode()
OTHER_KEY = base64.b64encode(b"O" * 32).decode()
KEYED = {**ENV, "RECONCILER_STATE_KEY": KEY}
OTHER_KEYED = {**ENV, "RECONCILER_STATE_KEY": OTHER_KEY}
LINEAGE = "11111111-1111-4111-8111-111111111111"
OTHER_LINEAGE = "22222222-2222-4222-8222-222222222222"
STATE = {"format_version": 1, "lineage": LINEAGE, "serial": 3, "environment": "default", "resources": {}}
PARTNER_RECORD = {
    "kind": "partner",
    "name": "microsoft-azure-devops",
    "connector": "microsoft-azure-devops",
    "auth": "azure-devops-oauth",
    "client_id": "11111111-0000-4000-8000-0000000000a1",
    "client_secret_ref": "${env:ADO_CLIENT_SECRET}",
    "redirect_uri": "https://app-h.cyclr.com/connector/callback",
    "authorize_url": "https://app.vssps.visualstudio.com/oauth2/authorize",
    "token_url": "https://app.vssps.visualstudio.com/oauth2/token",
    "api_url": "https://dev.azure.com",
}
APPLY_PLANFILE = ["-C", ".", "apply", "plan.bin", "--auto-approve", "--auth-mode", "defer"]


def state_text(**changes: Any) -> str:
    return json.dumps({**STATE, **changes}, indent=2) + "\n"


def with_state(text: str | bytes, extra: Mapping[str, str | bytes] | None = None) -> dict[str, str | bytes]:
    """The valid configuration, `text` as its state file, and an (idle) lock file and its gate as any earlier apply
    leaves."""
    idle = {"state/default.lock": "", "state/default.lock-gate": ""}
    return {"reconciler.yaml": VALID, "state/default.json": text, **idle, **(extra or {})}


def sealed_credentials(key: str = KEY) -> str:
    """A credentials record sealed with `key` (what an earlier apply leaves for an installation)."""
    from reconciler.crypto import StateKey, seal

    blob = seal(StateKey(base64.b64decode(key), "test"), b'{"access_token": "x"}', b"aad")
    return json.dumps({"generation": 1, "tokens": blob})


CREDENTIALS = "state/default.credentials/installation.acme.ado.json"
VALID_STATE = state_text()

STATE_CASES = [
    case("state-truncated", with_state(VALID_STATE[:60]), "state/default.json:3:", "state file is not valid JSON", args=PLAN, warm=True),
    case("state-empty", with_state(""), "state/default.json:1:1:", "state file is not valid JSON", args=PLAN, warm=True),
    case(
        "state-format-version-newer",
        with_state(state_text(format_version=2)),
        "state/default.json: ",
        "state format_version 2 is newer than this reconciler reads (1)",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-format-version-zero",
        with_state(state_text(format_version=0)),
        "state/default.json: ",
        "state format_version 0 is not supported",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-format-version-string",
        with_state(state_text(format_version="1")),
        "state/default.json: ",
        "not a reconciler state file (no format_version)",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-is-a-list",
        with_state("[]\n"),
        "state/default.json: ",
        "not a reconciler state file",
        args=["-C", ".", "state", "list"],
    ),
    case(
        "state-other-environment",
        with_state(state_text(environment="prod")),
        "state/default.json: ",
        "holds environment 'prod', expected 'default'",
        args=PLAN_JSON,
        warm=True,
    ),
    case(
        "state-bad-lineage",
        with_state(state_text(lineage="not-a-uuid")),
        "state/default.json: ",
        "invalid state at lineage",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-negative-serial",
        with_state(state_text(serial=-1)),
        "state/default.json: ",
        "invalid state at serial",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-unknown-record-kind",
        with_state(state_text(resources={"bucket.x": {"kind": "bucket"}})),
        "state/default.json: ",
        "invalid state at resources.bucket.x",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-address-mismatch",
        with_state(state_text(resources={"partner.other": PARTNER_RECORD})),
        "state/default.json: ",
        "resource partner.other records partner.microsoft-azure-devops",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-unknown-field",
        with_state(state_text(resources={"partner.microsoft-azure-devops": {**PARTNER_RECORD, "token": "x"}})),
        "state/default.json: ",
        "invalid state at resources.partner.microsoft-azure-devops.partner.token",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-not-utf8",
        with_state(b'{"format_version": 1, "lineage": "\xff"}'),
        "state/default.json: ",
        "state file is not valid UTF-8",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-nested-too-deeply",
        with_state("[" * 100000 + "]" * 100000),
        "state/default.json: ",
        "nested too deeply",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-unreadable",  # a directory where the file should be: unreadable even to root
        {"reconciler.yaml": VALID, "state/default.json/README": "not a file\n"},
        "state/default.json: ",
        "is a directory, not a regular file; it was not changed",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-journal-unreadable",
        with_state(VALID_STATE, {"state/default.journal/README": "not a file\n"}),
        "state/default.journal: ",
        "is a directory, not a regular file; it was not changed",
        args=PLAN,
        warm=True,
    ),
    case(
        "state-truncated-apply",
        with_state(VALID_STATE[:60]),
        "state/default.json:3:",
        "state file is not valid JSON",
        args=["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"],
        env=KEYED,
        warm=True,
    ),
    case(
        "state-truncated-show",
        with_state(VALID_STATE[:60]),
        "state/default.json:3:",
        "state file is not valid JSON",
        args=["-C", ".", "state", "show", "partner.microsoft-azure-devops"],
    ),
    case(
        "state-truncated-refresh",
        with_state(VALID_STATE[:60]),
        "state/default.json:3:",
        "state file is not valid JSON",
        args=["-C", ".", "refresh"],
        warm=True,
    ),
    case(
        "state-truncated-state-rm",
        with_state(VALID_STATE[:60]),
        "state/default.json:3:",
        "state file is not valid JSON",
        args=["-C", ".", "state", "rm", "partner.microsoft-azure-devops"],
    ),
    case(
        "wrong-state-key",
        with_state(VALID_STATE, {CREDENTIALS: sealed_credentials()}),
        "state/default.json: ",
        "credentials are sealed with key id",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env=OTHER_KEYED,
        warm=True,
    ),
    case(
        "wrong-state-key-apply",
        with_state(VALID_STATE, {CREDENTIALS: sealed_credentials()}),
        "state/default.json: ",
        "credentials are sealed with key id",
        args=["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"],
        env=OTHER_KEYED,
        warm=True,
    ),
    case(
        "wrong-state-key-refresh",
        with_state(VALID_STATE, {CREDENTIALS: sealed_credentials()}),
        "state/default.json: ",
        "credentials are sealed with key id",
        args=["-C", ".", "refresh"],
        env=OTHER_KEYED,
        warm=True,
    ),
    case(
        "passphrase-for-key-sealed-state",
        with_state(VALID_STATE, {CREDENTIALS: sealed_credentials()}),
        "state/default.json: ",
        "not with a passphrase",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env={**ENV, "RECONCILER_STATE_PASSPHRASE": "correct horse"},
        warm=True,
    ),
    case(
        "no-key-for-sealed-state",
        with_state(VALID_STATE, {CREDENTIALS: sealed_credentials()}),
        "state/default.json holds sealed credentials, but there is no state key",
        "",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        warm=True,
    ),
    case(
        "state-key-not-base64",
        with_state(VALID_STATE),
        "RECONCILER_STATE_KEY is not valid base64",
        "",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env={**ENV, "RECONCILER_STATE_KEY": "not base64!"},
        warm=True,
    ),
    case(
        "state-key-wrong-length",
        with_state(VALID_STATE),
        "RECONCILER_STATE_KEY must decode to 32 bytes, not 16",
        "",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env={**ENV, "RECONCILER_STATE_KEY": base64.b64encode(b"k" * 16).decode()},
        warm=True,
    ),
    case(
        "key-file-corrupt",
        with_state(VALID_STATE, {"state/default.key": "this is not a key\n"}),
        "state/default.key: ",
        "not a readable state key file",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        warm=True,
    ),
    case(
        "passphrase-salt-corrupt",
        with_state(VALID_STATE, {"state/default.kdf.json": "{salt}\n"}),
        "state/default.kdf.json: ",
        "unreadable passphrase salt",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env={**ENV, "RECONCILER_STATE_PASSPHRASE": "correct horse"},
        warm=True,
    ),
    case(
        "passphrase-salt-nested-too-deeply",
        with_state(VALID_STATE, {"state/default.kdf.json": "[" * 100_000 + "]" * 100_000}),
        "state/default.kdf.json: ",
        "unreadable passphrase salt",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env={**ENV, "RECONCILER_STATE_PASSPHRASE": "correct horse"},
        warm=True,
    ),
    case(
        "credentials-record-corrupt",
        with_state(VALID_STATE, {CREDENTIALS: '{"generation": "one"}'}),
        "state/default.credentials/installation.acme.ado.json: ",
        "unreadable credentials record",
        args=["-C", ".", "plan", "--out", "plan.bin"],
        env=KEYED,
        warm=True,
    ),
]


# -- saved plans ----------------------------------------------------------------------------------------------------


def _plan_out(directory: Path, env: Mapping[str, str] = KEYED, name: str = "plan.bin") -> dict[str, Any]:
    result = run(["-C", ".", "plan", "--out", name], env)
    assert result.exit_code == 0, result.stderr
    return json.loads((directory / name).read_text())  # type: ignore[no-any-return]


def _edit_plan(edit: Callable[[dict[str, Any]], object]) -> Setup:
    """Setup: save a plan against the state, then edit its JSON (as a reviewer's or attacker's editor would)."""

    def setup(directory: Path) -> None:
        payload = _plan_out(directory)
        edit(payload)
        (directory / "plan.bin").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")

    return setup


def _rewrite(path: str, content: str | bytes) -> Callable[[Path], None]:
    """Setup: save a plan, then replace `path` (the state moved, the file was damaged, ...)."""

    def setup(directory: Path) -> None:
        _plan_out(directory)
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def _plan_then(action: Callable[[Path], None]) -> Setup:
    def setup(directory: Path) -> None:
        _plan_out(directory)
        action(directory)

    return setup


def _set_project(payload: dict[str, Any]) -> None:
    payload["desired"]["installations"]["installation.acme.ado"]["parameters"]["project"] = "Evil"


def _set_redirect(payload: dict[str, Any]) -> None:
    payload["desired"]["installations"]["installation.acme.ado"]["redirect_uri"] = "https://evil.example/cb"


def _drop_changes(payload: dict[str, Any]) -> None:
    payload["plan"]["changes"] = []


def _no_state_plan(directory: Path) -> None:
    """A plan made when there was no state; then state appears (another apply ran)."""
    (directory / "state" / "default.json").rename(directory / "state.json.saved")
    _plan_out(directory)
    (directory / "state.json.saved").rename(directory / "state" / "default.json")


PLANFILE_CASES = [
    case(
        "planfile-tampered-value",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the plan file was changed after it was made, or was made with another state key",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_edit_plan(_set_project),
    ),
    case(
        "planfile-tampered-redirect",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the plan file was changed after it was made",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_edit_plan(_set_redirect),
    ),
    case(
        "planfile-tampered-changes",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the plan file was changed after it was made",
        args=["-C", ".", "show", "plan.bin"],
        env=KEYED,
        setup=_edit_plan(_drop_changes),
    ),
    case(
        "planfile-hmac-removed",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the plan file was changed after it was made",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_edit_plan(lambda p: p.pop("hmac")),
    ),
    case(
        "planfile-other-key",
        with_state(VALID_STATE),
        "plan.bin: ",
        "or was made with another state key",
        args=APPLY_PLANFILE,
        env=OTHER_KEYED,
        setup=_plan_then(lambda d: None),
    ),
    case(
        "planfile-no-key",
        with_state(VALID_STATE),
        "plan.bin: ",
        "no state key to check the plan's signature with",
        args=["-C", ".", "show", "plan.bin"],
        env=ENV,
        setup=_plan_then(lambda d: None),
    ),
    case(
        "planfile-other-environment",
        with_state(VALID_STATE, {"environments/staging.yaml": ""}),
        "plan.bin: ",
        "the plan is for environment 'default', not 'staging'",
        args=["-C", ".", "--env", "staging", "apply", "plan.bin", "--auto-approve", "--auth-mode", "defer"],
        env=KEYED,
        setup=_plan_then(lambda d: None),
    ),
    case(
        "planfile-wrong-lineage",
        with_state(VALID_STATE),
        "plan.bin: ",
        f"the state moved since the plan was made (planned against serial 3, now lineage {OTHER_LINEAGE} serial 3)",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_rewrite("state/default.json", state_text(lineage=OTHER_LINEAGE)),
    ),
    case(
        "planfile-stale-serial",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the state moved since the plan was made (planned against serial 3",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_rewrite("state/default.json", state_text(serial=4)),
    ),
    case(
        "planfile-made-without-state",
        with_state(VALID_STATE),
        "plan.bin: ",
        "the plan was made when there was no state, but state/default.json now exists",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_no_state_plan,
    ),
    case(
        "planfile-truncated",
        with_state(VALID_STATE),
        "plan.bin: ",
        "cannot read the plan file (not a plan file)",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_plan_then(lambda d: (d / "plan.bin").write_bytes((d / "plan.bin").read_bytes()[:200])),
    ),
    case(
        "planfile-binary",
        with_state(VALID_STATE, {"plan.bin": bytes(range(256))}),
        "plan.bin: ",
        "cannot read the plan file",
        args=["-C", ".", "show", "plan.bin"],
        env=KEYED,
    ),
    case(  # found while fuzzing the state reader: nesting past the recursion limit was an internal error
        "planfile-nested-too-deeply",
        with_state(VALID_STATE, {"plan.bin": "[" * 100_000 + "]" * 100_000}),
        "plan.bin: ",
        "cannot read the plan file (not a plan file)",
        args=["-C", ".", "show", "plan.bin"],
        env=KEYED,
    ),
    case(
        "planfile-not-a-plan",
        with_state(VALID_STATE, {"plan.bin": VALID_STATE}),
        "plan.bin: ",
        "not a reconciler plan file",
        args=APPLY_PLANFILE,
        env=KEYED,
    ),
    case(
        "planfile-format-newer",
        with_state(VALID_STATE),
        "plan.bin: ",
        "plan file format 2; this reconciler reads 1",
        args=APPLY_PLANFILE,
        env=KEYED,
        setup=_edit_plan(lambda p: p.update(format_version=2)),
    ),
    case(
        "planfile-missing",
        with_state(VALID_STATE),
        "gone.bin: ",
        "cannot read the plan file (No such file or directory)",
        args=["-C", ".", "apply", "gone.bin", "--auto-approve"],
        env=KEYED,
        warm=True,
    ),
    case(
        "planfile-secret-unset",
        with_state(VALID_STATE),
        "plan.bin: ",
        "environment variable ADO_CLIENT_SECRET is not set",
        args=APPLY_PLANFILE,
        env={"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "RECONCILER_STATE_KEY": KEY},
        setup=_plan_then(lambda d: None),
    ),
    case(
        "planfile-with-target",
        with_state(VALID_STATE),
        None,
        "error: a saved plan is applied as it was made",
        args=[*APPLY_PLANFILE, "--target", "installation.acme.*"],
        env=KEYED,
        setup=_plan_then(lambda d: None),
    ),
    case(
        "planfile-out-missing-directory",
        with_state(VALID_STATE),
        "out/plan.bin: ",
        "cannot write the plan file: No such file or directory",
        args=["-C", ".", "plan", "--out", "out/plan.bin"],
        env=KEYED,
        warm=True,
    ),
    case(
        "planfile-out-without-key-missing-directory",  # must not leave a generated key behind
        {"reconciler.yaml": VALID},
        "out/plan.bin: ",
        "cannot write the plan file: No such file or directory",
        args=["-C", ".", "plan", "--out", "out/plan.bin"],
        warm=True,
    ),
]


# -- command-line arguments -----------------------------------------------------------------------------------------

def cli(name: str, message: str, args: list[str], files: str | Mapping[str, str | bytes] = VALID, *,
        warm: bool = True) -> Any:
    """A command-line mistake: click's usage error (or our one-line `error:`) naming it, from the directory."""
    return case(name, files, None, message, args=args, warm=warm)


CLI_CASES = [
    cli("cli-parallelism-zero", "Invalid value for '--parallelism': 0 is not in the range 1<=x<=256",
        ["-C", ".", "refresh", "--parallelism", "0"]),
    cli("cli-parallelism-huge", "Invalid value for '--parallelism'",
        ["-C", ".", "plan", "--refresh", "--parallelism", "100000"]),
    cli("cli-window-negative", "Invalid value for '--window'",
        ["-C", ".", "plan", "--refresh", "--window", "-5"]),
    cli("cli-lock-timeout-not-a-number", "Invalid value for '--lock-timeout': 'soon' is not a valid float",
        ["-C", ".", "apply", "--lock-timeout", "soon"]),
    cli("cli-auth-timeout-zero", "Invalid value for '--auth-timeout'",
        ["-C", ".", "apply", "--auth-timeout", "0"]),
    cli("cli-auth-mode-unknown", "Invalid value for '--auth-mode': 'pigeon' is not one of",
        ["-C", ".", "apply", "--auth-mode", "pigeon"]),
    cli("cli-split-dir-without-markdown", "error: --split-dir writes Markdown parts",
        ["-C", ".", "plan", "--split-dir", "parts"]),
    cli("cli-apply-needs-confirmation", "error: apply needs confirmation, and there is no terminal to ask",
        ["-C", ".", "apply"]),
    cli("cli-authorize-defer", "Invalid value for '--auth-mode': 'defer' is not one of 'browser', 'paste'",
        ["-C", ".", "authorize", "--auth-mode", "defer"]),
    cli("cli-state-show-missing-argument", "Missing argument 'ADDRESS'",
        ["-C", ".", "state", "show"]),
    cli("cli-state-show-not-in-state", "error: installation.acme.nope is not in state",
        ["-C", ".", "state", "show", "installation.acme.nope"]),
    cli("cli-state-rm-without-state", "error: there is no state yet",
        ["-C", ".", "state", "rm", "installation.acme.ado"]),
    cli("cli-state-rm-not-in-state", "error: not in state: installation.acme.nope",
        ["-C", ".", "state", "rm", "installation.acme.nope"], with_state(VALID_STATE)),
    cli("cli-state-mv-bad-address", "error: acme.ado is not an installation address",
        ["-C", ".", "state", "mv", "installation.acme.ado", "acme.ado"], with_state(VALID_STATE)),
    cli("cli-state-mv-without-state", "error: installation.acme.ado is not an installation in state",
        ["-C", ".", "state", "mv", "installation.acme.ado", "installation.acme.new"]),
    cli("cli-state-push-missing-directory", "Directory 'nowhere' does not exist",
        ["-C", ".", "state", "push", "nowhere"]),
    cli("cli-state-pull-without-state", "error: there is no state at state/default.json",
        ["-C", ".", "state", "pull", "backup"]),
    cli("cli-authorize-unmatched-without-state", "error: no pending authorization matches installation.x.y",
        ["-C", ".", "authorize", "installation.x.y", "--auth-mode", "paste"]),
    cli("cli-force-unlock-not-locked", "error: state state/default.json is not locked",
        ["-C", ".", "force-unlock", "0000"]),
    cli("cli-force-unlock-wrong-id", "error: state state/default.json: the lock is not held, not 1234",
        ["-C", ".", "force-unlock", "1234"], with_state(VALID_STATE)),
    cli("cli-force-unlock-lock-info-not-an-object", "error: state state/default.json: the lock is not held, not 1234",
        ["-C", ".", "force-unlock", "1234"], with_state(VALID_STATE, {"state/default.lock": "[" * 2000 + "]" * 2000})),
    cli("cli-show-missing-file", "File 'plan.bin' does not exist",
        ["-C", ".", "show", "plan.bin"]),
    cli("cli-show-directory", "'plans' is a directory",
        ["-C", ".", "show", "plans"], {"reconciler.yaml": VALID, "plans/.keep": ""}),
    cli("cli-plan-out-directory", "'plans' is a directory",
        ["-C", ".", "plan", "--out", "plans"], {"reconciler.yaml": VALID, "plans/.keep": ""}),
    case("cli-chdir-is-a-file", VALID, "reconciler.yaml: ", "is a file, not a directory",
         args=["-C", "reconciler.yaml", "plan"]),
    cli("cli-sandbox-public-host", "error: the sandbox serves loopback only, not 0.0.0.0",
        ["sandbox", "serve", "--host", "0.0.0.0"], warm=False),
    cli("cli-sandbox-port-out-of-range", "Invalid value for '--port'",
        ["sandbox", "serve", "--port", "70000"], warm=False),
    cli("cli-sandbox-seed-missing", "File 'seed.yaml' does not exist",
        ["sandbox", "serve", "--seed", "seed.yaml"], warm=False),
    cli("cli-sandbox-approve-not-a-url", "error: sandbox approve:",
        ["sandbox", "approve", "not a url"], warm=False),
    cli("cli-extra-argument", "Got unexpected extra argument (now)",
        ["-C", ".", "validate", "now"]),
    cli("cli-env-without-name", "Option '--env' requires an argument",
        ["-C", ".", "--env"], warm=False),
    cli("cli-detailed-exitcode-on-validate", "No such option '--detailed-exitcode'",
        ["-C", ".", "validate", "--detailed-exitcode"]),
]


# -- the harness ----------------------------------------------------------------------------------------------------

ALL_CASES = CASES + MORE_CONFIG_CASES + STATE_CASES + PLANFILE_CASES + CLI_CASES


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` — hidden ones too — with its bytes (None for a directory; a link's target)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                out[key] = os.readlink(path).encode()
            elif path.is_dir():
                out[key] = None
            else:
                out[key] = path.read_bytes()
    return out


def bytes_changed(before: Mapping[str, bytes | None], after: Mapping[str, bytes | None]) -> tuple[int, list[str]]:
    """How many bytes differ between two trees (a created or removed path counts all its bytes, at least 1),
    and which paths differ."""
    changed, total = [], 0
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, b"missing"), after.get(key, b"missing")
        if old == new:
            continue
        changed.append(key)
        if key not in before or key not in after or old is None or new is None:
            total += max(len(old or b""), len(new or b""), 1)
        else:
            total += sum(a != b for a, b in zip(old, new, strict=False)) + abs(len(old) - len(new))
    return total, changed


def _warm_args(args: list[str]) -> list[str]:
    """`validate` with the case's global options (-C, --env), to warm the parse cache as an earlier run would."""
    environment = args[args.index("--env") : args.index("--env") + 2] if "--env" in args else []
    return ["-C", ".", *environment, "validate"]


@pytest.mark.parametrize("bad", ALL_CASES)
def test_bad_input_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures, bad: Case) -> None:  # type: ignore[no-untyped-def]
    """A bad input exits 1 with one located error line, no traceback, no output, and no byte written anywhere."""
    figures.goal("bad-input", failures=0, bytes_changed=0)
    directory, cache = tmp_path / "config", tmp_path / "cache"
    for rel, content in bad.files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    cache.mkdir()
    monkeypatch.chdir(directory)
    env = {**bad.env, "RECONCILER_CACHE_DIR": str(cache)}
    if bad.setup is not None:
        bad.setup(directory)
    if bad.warm:
        warmed = run(_warm_args(bad.args), env)
        assert warmed.exit_code == 0, warmed.stderr
    before = tree(tmp_path)

    started = time.monotonic()
    result = run(bad.args, env)
    seconds = time.monotonic() - started

    changed, paths = bytes_changed(before, tree(tmp_path))
    problems = []
    if "Traceback" in result.stdout + result.stderr or "internal error" in result.stderr:
        problems.append("a traceback or internal error")
    if result.exit_code != 1:
        problems.append(f"exit code {result.exit_code}")
    if result.stdout:
        problems.append("output on stdout")
    if bad.where is None:
        if bad.message not in result.stderr:
            problems.append("the expected message is missing")
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        if len(errors) != 1:  # one mistake, one error: no follow-on noise
            problems.append(f"{len(errors)} error lines")
        elif not (errors[0].startswith(f"error: {bad.where}") and bad.message in errors[0]):
            problems.append("the error line does not name the place and problem expected")
    if paths:
        problems.append(f"{changed} bytes changed in {', '.join(paths[:5])}")
    if seconds > 10:
        problems.append(f"took {seconds:.1f} s")
    figures.add("bad-input", cases=1, failures=int(bool(problems)), bytes_changed=changed)
    assert not problems, f"{problems}\nstdout: {result.stdout[:2000]}\nstderr: {result.stderr[:2000]}"


def test_catalog_covers_every_category() -> None:
    """The catalog keeps at least 140 cases with distinct ids, and each kind of input has its share."""
    ids = [param.id for param in ALL_CASES]
    assert len(ids) >= 140
    assert len(set(ids)) == len(ids)
    assert len(STATE_CASES) >= 20 and len(PLANFILE_CASES) >= 12 and len(CLI_CASES) >= 20
    for needle in ("alias-bomb", "include-cycle", "huge", "utf8", "literal", "env-var", "secret-file", "duplicate",
                   "empty", "unknown-connector", "unknown-scope", "tab", "state-truncated", "state-format-version",
                   "planfile-wrong-lineage", "wrong-state-key", "state-unreadable", "planfile-tampered",
                   "planfile-other-environment"):
        assert any(needle in i for i in ids), needle


@pytest.mark.parametrize("args", [VALIDATE, PLAN, PLAN_JSON])
def test_the_valid_base_config_passes(
    write_config,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    """The base that every case breaks is itself valid, so each failure is due to the one change made."""
    directory: Path = write_config({"reconciler.yaml": VALID})
    monkeypatch.chdir(directory)
    before = tree(directory)

    result = run(args, ENV)

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert tree(directory) == before


def test_alias_fanout_below_the_limit_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anchors and aliases used as intended (shared installations for a few tenants) still load."""
    (tmp_path / "reconciler.yaml").write_text(_installation_fanout(20))
    monkeypatch.chdir(tmp_path)
    result = run(VALIDATE, ENV)
    assert result.exit_code == 0, result.stderr
    assert "20 tenants, 400 installations" in result.stdout


def test_alias_bomb_is_refused_before_anything_is_built() -> None:
    """A billion laughs is refused from its events in well under a second, at the alias that crosses the limit."""
    from reconciler.yamlio import YamlSyntaxError, load_yaml_text

    started = time.monotonic()
    with pytest.raises(YamlSyntaxError, match="aliases expand to more than 100,000 values") as info:
        load_yaml_text(_laughs("tenants: *l9\n"))
    assert time.monotonic() - started < 1.0
    assert (info.value.line, info.value.column) == (7, 12)


def _journal(payload: Any) -> str:
    import hashlib

    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return json.dumps({"c": hashlib.sha256(body.encode()).hexdigest(), "p": payload}) + "\n"


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000 + "\n",  # found by fuzzing: recursed past Python's limit
        _journal({"lineage": LINEAGE, "serial": 4, "set": {}, "delete": [["x"]]}),  # found by fuzzing: unhashable
        _journal({"lineage": LINEAGE, "serial": 4, "set": {"partner.other": PARTNER_RECORD}, "delete": []}),
    ],
    ids=["nested-too-deeply", "delete-not-a-name", "record-under-another-address"],
)
def test_damaged_journal_line_is_ignored_like_a_torn_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    """A journal line that is not a well-formed record is dropped (as a torn tail is): the snapshot is read, plan
    works, nothing is written."""
    for rel, content in with_state(VALID_STATE, {"state/default.journal": line}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content if isinstance(content, str) else content.decode())
    monkeypatch.chdir(tmp_path)
    run(VALIDATE, ENV)  # warm the parse cache
    before = tree(tmp_path)
    result = run(PLAN, ENV)
    assert result.exit_code == 0, result.stderr
    assert "state state/default.json (serial 3)" in result.stdout
    assert tree(tmp_path) == before
