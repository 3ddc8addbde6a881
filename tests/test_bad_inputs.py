"""A catalog of bad inputs: each must fail cleanly, name the right file:line, and write nothing.

Every case writes a few files into a fresh configuration directory, runs the CLI from that directory with
`-C .` (so locations print as `reconciler.yaml:LINE:COLUMN`), and checks: exit code 1, one `error:` line on
stderr that starts with the expected location and contains the expected message (for command-line mistakes,
click's usage error), no traceback anywhere, nothing on stdout, and the directory byte-for-byte unchanged.

The YAML is written one line per Python line with the line number in a comment, so the expected line of each
case can be checked by eye. Most root files start from `HEADER` (lines 1-7) and `INSTALLATION` (lines 8-11),
and the case's own lines continue from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run, snapshot

ENV = {"ADO_CLIENT_ID": "app-1", "ADO_CLIENT_SECRET": "s3cr3t-partner-value"}
VALIDATE = ["-C", ".", "validate"]
PLAN = ["-C", ".", "plan"]
PLAN_JSON = ["-C", ".", "plan", "--format", "json"]

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



def case(
    name: str,
    files: str | bytes | Mapping[str, str | bytes],
    where: str | None,
    message: str,
    *,
    args: list[str] = VALIDATE,
    env: Mapping[str, str] = ENV,
    bug: str | None = None,
) -> Any:
    """One row of the catalog; `files` as text or bytes is reconciler.yaml alone; `bug` marks a known bug."""
    if isinstance(files, (str, bytes)):
        files = {"reconciler.yaml": files}
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(files, dict(env), args, where, message, id=name, marks=marks)


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
            "          client_id: own-app\n"  # 16
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
        env={"ADO_CLIENT_ID": "app-1"},
    ),
    case(
        "env-var-empty",
        VALID,
        "reconciler.yaml:7:20:",
        "environment variable ADO_CLIENT_SECRET is empty",
        env={"ADO_CLIENT_ID": "app-1", "ADO_CLIENT_SECRET": ""},
        args=PLAN_JSON,
    ),
    case(
        "secret-file-missing",
        VALID.replace("${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"),  # 7
        "reconciler.yaml:7:20:",
        "secret file 'secrets/ado' does not exist",
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
        + "  microsoft-azure-devops: {auth: azure-devops-oauth, client_id: app-1}\n"  # 4
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
        "a redirect URI may not contain a fragment",
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
        "two-partners-no-partner-key",
        HEADER
        + (
            "  ado-entra:\n"  # 8
            "    connector: microsoft-azure-devops\n"  # 9
            "    auth: entra-id\n"  # 10
            "    tenant_id: organizations\n"  # 11
            "    client_id: ${env:ADO_CLIENT_ID}\n"  # 12
            "    client_secret: ${env:ADO_CLIENT_SECRET}\n"  # 13
            "tenants:\n"  # 14
            "  acme:\n"  # 15
            "    installations:\n"  # 16
            "      ado:\n"  # 17
            "        connector: microsoft-azure-devops\n"  # 18
            "        parameters: {organization: acme, project: P}\n"  # 19
            "        scopes: [vso.work_full]\n"  # 20
        ),
        "reconciler.yaml:18:20:",
        "several partners use connector 'microsoft-azure-devops' (ado-entra, microsoft-azure-devops)",
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
    ),
    case(
        "unknown-command",
        VALID,
        None,
        "No such command 'frobnicate'",
        args=["-C", ".", "frobnicate"],
    ),
    case(
        "unknown-option",
        VALID,
        None,
        "No such option '--force'",
        args=["-C", ".", "plan", "--force"],
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


@pytest.mark.parametrize(("files", "env", "args", "where", "message"), CASES)
def test_bad_input_fails_cleanly(
    write_config,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    files: Mapping[str, str | bytes],
    env: dict[str, str],
    args: list[str],
    where: str | None,
    message: str,
) -> None:
    """A bad input exits 1 with one located error line, no traceback, no output and no file written."""
    directory: Path = write_config(files)
    monkeypatch.chdir(directory)
    before, paths_before = snapshot(directory), sorted(directory.rglob("*"))

    result = run(args, env)

    assert "Traceback" not in result.stdout + result.stderr
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    if where is None:
        assert message in result.stderr
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr  # one mistake, one error: no follow-on noise
        assert errors[0].startswith(f"error: {where}") and message in errors[0], result.stderr
    assert snapshot(directory) == before
    assert sorted(directory.rglob("*")) == paths_before


def test_catalog_is_large_enough() -> None:
    """The catalog keeps at least 35 cases with distinct ids."""
    ids = [param.id for param in CASES]
    assert len(ids) >= 35
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("args", [VALIDATE, PLAN, PLAN_JSON])
def test_the_valid_base_config_passes(
    write_config,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    """The base that every case breaks is itself valid, so each failure is due to the one change made."""
    directory: Path = write_config({"reconciler.yaml": VALID})
    monkeypatch.chdir(directory)
    before = snapshot(directory)

    result = run(args, ENV)

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(directory) == before
