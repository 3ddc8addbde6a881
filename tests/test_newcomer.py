"""A newcomer's first hour: documented YAML loads as written, reviewers validate and plan without production
secrets, and a second partner for a connector leaves existing installations alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.yamlio import YamlSyntaxError, load_yaml_text
from tests.conftest import run

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").rglob("*.md")], key=str
)
FENCED = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)
# An inline snippet presented as YAML: `key: {...}` or `key: [...]` between backticks.
INLINE = re.compile(r"`([a-z_]+: [{\[][^`]*[}\]])`")


def _snippets() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        name = str(document.relative_to(ROOT))
        for match in FENCED.finditer(text):
            found.append((f"{name}:{text.count(chr(10), 0, match.start()) + 1}", match.group(1)))
        for match in INLINE.finditer(text):
            found.append((f"{name}:{text.count(chr(10), 0, match.start()) + 1}", match.group(1) + "\n"))
    for example in sorted((ROOT / "examples").rglob("*.yaml")):
        found.append((str(example.relative_to(ROOT)), example.read_text(encoding="utf-8")))
    return found


SNIPPETS = _snippets()

CONFIG = """\
version: 1
platform:
  service_domain: app-h.cyclr.com
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: 11111111-aaaa-4bbb-8ccc-000000000001
    client_secret: ${env:ADO_CLIENT_SECRET}
tenants:
  acme:
    installations:
      ado-main:
        connector: microsoft-azure-devops
        parameters: {organization: acme-org, project: Platform}
        scopes: [vso.work_full]
"""


def test_the_documents_show_yaml_snippets() -> None:
    """The extraction finds the snippets the documents present (so the next test checks something)."""
    where = {place.split(":")[0] for place, _ in SNIPPETS}
    assert {"README.md", "docs/sandbox.md", "examples/ci/README.md"} <= where
    assert any("dsn:" in text for _, text in SNIPPETS)
    assert any("credentials:" in text for _, text in SNIPPETS)


@pytest.mark.parametrize(("place", "text"), SNIPPETS, ids=[place for place, _ in SNIPPETS])
def test_every_documented_yaml_snippet_is_valid_yaml(place: str, text: str) -> None:
    """Every YAML snippet in README, docs and examples (fenced, inline `key: {...}`, and example files) loads."""
    try:
        load_yaml_text(text)
    except YamlSyntaxError as exc:
        pytest.fail(f"{place}: {exc.message} at line {exc.line}, column {exc.column}:\n{text}")


def test_the_example_workflow_is_yaml() -> None:
    """The GitHub Actions workflow (read by GitHub, whose `on:` key the reconciler's loader would refuse) parses."""
    import yaml

    for workflow in sorted((ROOT / "examples").rglob("*.yml")):
        assert isinstance(yaml.safe_load(workflow.read_text(encoding="utf-8")), dict), workflow


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("backend: {type: postgres, dsn: ${env:RECONCILER_PG_DSN}}\n", 1, 33),
        ("a:\n  credentials: {client_id: x, client_secret: ${env:SECRET}}\n", 2, 47),
        ("scopes: [${env:SCOPE}, vso.code]\n", 1, 11),
    ],
)
def test_an_unquoted_reference_in_flow_style_says_how_to_fix_it(text: str, line: int, column: int) -> None:
    """`{dsn: ${env:X}}` fails at the reference's position with a hint: quote it or use block style."""
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml_text(text)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.hint is not None and "quote the reference" in caught.value.hint
    assert "block style" in caught.value.hint


def test_other_flow_errors_get_no_reference_hint() -> None:
    """An unclosed flow mapping without a reference is not blamed on references."""
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml_text("a: {b: c\n")
    assert caught.value.hint is None


def test_the_cli_shows_the_flow_reference_hint_at_file_line_column(tmp_path: Path) -> None:
    """validate on a flow-style backend with an unquoted DSN reference names file:line:col and the fix."""
    (tmp_path / "reconciler.yaml").write_text(
        CONFIG.replace("platform:", "backend: {type: postgres, dsn: ${env:RECONCILER_PG_DSN}}\nplatform:")
    )
    result = run(["-C", str(tmp_path), "validate"], env={"ADO_CLIENT_SECRET": "s3cret-value"})
    assert result.exit_code == 1
    assert "reconciler.yaml:2:33: invalid YAML" in result.stderr
    assert 'quote the reference ("${env:NAME}") or use block style' in result.stderr
    assert "Traceback" not in result.stderr


def test_the_missing_credentials_hint_is_valid_yaml(tmp_path: Path) -> None:
    """The hint for an installation without credentials shows YAML that loads as written."""
    text = CONFIG.replace("    client_id: 11111111-aaaa-4bbb-8ccc-000000000001\n", "").replace(
        "    client_secret: ${env:ADO_CLIENT_SECRET}\n", ""
    )
    (tmp_path / "reconciler.yaml").write_text(text)
    result = run(["-C", str(tmp_path), "validate"])
    assert result.exit_code == 1
    hint = re.search(r"add (credentials: \{.*\}) to this installation", result.stderr)
    assert hint is not None, result.stderr
    assert load_yaml_text(hint.group(1) + "\n")["credentials"]["client_secret"] == "${env:...}"


# -- a second partner for a connector ------------------------------------------------------------------------------


def _only_partner(text: str, keep: str) -> str:
    """`config_text` with one of its two partners (legacy, entra) left out."""
    drop = "entra" if keep == "legacy" else "legacy"
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.startswith("  ") and not line.startswith("    "):
            skipping = line.strip() == f"{drop}:" and "partners:" in "".join(out) and "tenants:" not in "".join(out)
        elif not line.startswith(" "):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


def _connector_installation(tenant: str, organization: str, project: str) -> str:
    return (
        f"  {tenant}:\n    installations:\n      ado:\n        connector: microsoft-azure-devops\n"
        f"        parameters: {{organization: {organization}, project: {project}}}\n"
        "        scopes: [vso.work_full, vso.project]\n"
    )


def test_adding_a_second_partner_creates_only_it(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """apply with one partner; declare a second one for the connector; plan: only the new partner is created."""
    import json

    from tests.sandbox_support import APPLY, ENV

    _, directory, write, browser = sandbox_config
    write(_connector_installation("acme", "acme-org", "Platform") + _connector_installation("globex", "globex", "Operations"))
    both = (directory / "reconciler.yaml").read_text()
    (directory / "reconciler.yaml").write_text(_only_partner(both, "legacy"))
    first = run(APPLY, ENV)
    assert first.exit_code == 0, first.stderr
    assert len(browser.opened) == 2 and not browser.errors

    (directory / "reconciler.yaml").write_text(both)
    planned = run(["-C", ".", "plan", "--format", "json"], ENV)
    assert planned.exit_code == 0, planned.stderr
    changes = {c["address"]: c for c in json.loads(planned.stdout)["changes"]}
    acting = {address: c["action"] for address, c in changes.items() if c["action"] != "noop"}
    assert acting == {"partner.entra": "create"}
    assert changes["installation.acme.ado"]["after"]["partner"] == "legacy"


ENTRA_PARTNER = """\
  entra:
    connector: microsoft-azure-devops
    auth: entra-id
    tenant_id: organizations
    client_id: 44444444-dddd-4eee-8fff-000000000004
    client_secret: ${env:ENTRA_CLIENT_SECRET}
"""
SECRETS = {"ADO_CLIENT_SECRET": "ado-secret-value-1", "ENTRA_CLIENT_SECRET": "entra-secret-value-2"}


def _partner_of(directory: Path, address: str = "installation.acme.ado-main") -> str:
    import datetime as dt

    from reconciler.config import load_config

    loaded = load_config(directory, environ=SECRETS, today=dt.date(2026, 12, 3))
    return loaded.desired.installations[address].declared.partner


def test_the_first_declared_partner_stays_the_default(write_config) -> None:  # type: ignore[no-untyped-def]
    """With two partners for a connector, an installation naming only the connector keeps the first one."""
    directory = write_config({"reconciler.yaml": CONFIG.replace("tenants:", "  " + ENTRA_PARTNER.strip() + "\ntenants:")})
    assert _partner_of(directory) == "microsoft-azure-devops"


def test_a_partner_in_an_included_file_comes_after_the_root_files(write_config) -> None:  # type: ignore[no-untyped-def]
    """Declaration order: the root file's partners first, then included files in include order."""
    root = CONFIG.replace("tenants:", "include: [partners/*.yaml]\ntenants:")
    entra_first = "partners:\n" + ENTRA_PARTNER
    directory = write_config({"reconciler.yaml": root, "partners/a-entra.yaml": entra_first})
    assert _partner_of(directory) == "microsoft-azure-devops"


def test_default_true_names_the_partner_of_installations_without_one(write_config) -> None:  # type: ignore[no-untyped-def]
    """`default: true` on the second partner moves installations that name only the connector to it."""
    text = CONFIG.replace("tenants:", ENTRA_PARTNER + "    default: true\ntenants:")
    directory = write_config({"reconciler.yaml": text})
    assert _partner_of(directory) == "entra"


def test_two_defaults_for_one_connector_name_both(write_config) -> None:  # type: ignore[no-untyped-def]
    """Two partners of one connector saying default: true is an error naming both, at the second one."""
    text = CONFIG.replace("tenants:", "    default: true\n" + ENTRA_PARTNER + "    default: true\ntenants:")
    directory = write_config({"reconciler.yaml": text})
    result = run(["-C", str(directory), "validate"], env=SECRETS)
    assert result.exit_code == 1
    assert (
        "reconciler.yaml:16:14: partners.entra.default: partners 'microsoft-azure-devops' and 'entra' both say "
        "default: true for connector 'microsoft-azure-devops'" in result.stderr
    )


def test_the_schema_documents_default() -> None:
    """`reconciler schema` describes a partner's `default`."""
    import json

    result = run(["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    partner = schema["$defs"]["PartnerSpec"]["properties"]["default"]
    assert partner["type"] == "boolean" and "declared first" in partner["description"]


# -- reviewing without production secrets ---------------------------------------------------------------------------

REVIEW = """\
version: 1
platform:
  service_domain: app-h.cyclr.com
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: 11111111-aaaa-4bbb-8ccc-000000000001
    client_secret: ${env:ADO_CLIENT_SECRET}
  entra:
    connector: microsoft-azure-devops
    auth: entra-id
    tenant_id: organizations
    client_id: 44444444-dddd-4eee-8fff-000000000004
    client_secret: ${env:ENTRA_CLIENT_SECRET}
  blank:
    connector: microsoft-azure-devops
    auth: azure-devops-oauth
tenants:
  acme:
    installations:
      ado-main:
        connector: microsoft-azure-devops
        parameters: {organization: acme-org, project: Platform}
        scopes: [vso.work_full]
      ado-entra:
        partner: entra
        parameters: {organization: acme-org, project: Web}
        scopes: [vso.work_full]
      ado-own:
        partner: blank
        parameters: {organization: acme-org, project: Own}
        scopes: [vso.work_full]
        credentials:
          client_id: 55555555-eeee-4fff-8aaa-000000000005
          client_secret: ${file:secrets/acme-own}
"""
STATE_KEY = {"RECONCILER_STATE_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
ALL_SECRETS = {**SECRETS}


def _review(write_config, text: str = REVIEW) -> Path:  # type: ignore[no-untyped-def]
    return write_config({"reconciler.yaml": text})


def test_validate_without_secrets_notes_what_was_not_checked(write_config) -> None:  # type: ignore[no-untyped-def]
    """validate with no secret set succeeds and names each unchecked reference at file:line:col."""
    directory = _review(write_config)
    result = run(["-C", str(directory), "validate"])
    assert result.exit_code == 0, result.stderr
    assert "The configuration is valid: 3 partners, 1 tenant, 3 installations" in result.stdout
    note = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(note) == 1, result.stderr
    assert "3 secret references not checked (not set here)" in note[0]
    assert "${env:ADO_CLIENT_SECRET} at " in note[0] and "reconciler.yaml:8:20" in note[0]
    assert "${env:ENTRA_CLIENT_SECRET} at " in note[0] and "reconciler.yaml:14:20" in note[0]
    assert "${file:secrets/acme-own} at " in note[0] and "reconciler.yaml:35:26" in note[0]


def test_validate_with_every_secret_set_has_no_note(write_config) -> None:  # type: ignore[no-untyped-def]
    """With every value available, nothing is noted."""
    directory = _review(write_config)
    (directory / "secrets").mkdir()
    (directory / "secrets" / "acme-own").write_text("own-secret-value-3\n")
    result = run(["-C", str(directory), "validate"], env=SECRETS)
    assert result.exit_code == 0, result.stderr
    assert "note:" not in result.stderr


def test_plan_without_secrets_plans_and_notes(write_config) -> None:  # type: ignore[no-untyped-def]
    """plan needs no secret value: it shows references and (sensitive), and notes the unchecked ones."""
    import json

    directory = _review(write_config)
    result = run(["-C", str(directory), "plan", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert "note: 3 secret references not checked" in result.stderr
    changes = {c["address"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes["partner.entra"]["after"]["client_secret"] == "(sensitive)"
    assert changes["installation.acme.ado-own"]["after"]["client_secret_ref"] == "${file:secrets/acme-own}"
    assert not (directory / "state").exists()


def test_plan_output_is_the_same_with_and_without_secrets(write_config) -> None:  # type: ignore[no-untyped-def]
    """The plan does not depend on secret values: the same stdout with them set or not (memo on or off)."""
    directory = _review(write_config)
    (directory / "secrets").mkdir()
    without = run(["-C", str(directory), "--no-cache", "plan"])
    (directory / "secrets" / "acme-own").write_text("own-secret-value-3\n")
    with_them = run(["-C", str(directory), "plan"], env=SECRETS)
    assert without.exit_code == with_them.exit_code == 0
    assert without.stdout == with_them.stdout
    assert "note:" not in with_them.stderr


def test_plan_notes_again_on_every_run(write_config) -> None:  # type: ignore[no-untyped-def]
    """The plan memo never hides the note: a second run without secrets says the same."""
    directory = _review(write_config)
    first = run(["-C", str(directory), "plan"])
    second = run(["-C", str(directory), "plan"])
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert "note: 3 secret references not checked" in second.stderr


def test_an_installations_unchecked_secret_is_not_its_partners(write_config) -> None:  # type: ignore[no-untyped-def]
    """An installation whose own secret is not available gets no secret, never its partner's."""
    import datetime as dt

    from reconciler.config import load_config

    text = REVIEW.replace("partner: blank\n", "partner: microsoft-azure-devops\n")
    directory = _review(write_config, text)
    loaded = load_config(directory, environ=SECRETS, today=dt.date(2026, 12, 3), unchecked_secrets=True)
    own = loaded.desired.installations["installation.acme.ado-own"]
    assert own.declared.credentials_source == "installation" and own.client_secret is None
    assert loaded.desired.installations["installation.acme.ado-main"].client_secret is not None
    assert [u.reference for u in loaded.unchecked] == ["${file:secrets/acme-own}"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("${env:RECONCILER_STATE_KEY}", "a reference may not read RECONCILER_STATE_KEY"),
        ("${env:NOT A NAME}", "invalid environment variable name 'NOT A NAME'"),
        ("${file:state/default.key}", "is inside a state directory"),
        ("${file:.git/config}", "is inside version-control internals"),
        ("${file:../outside}", "is outside the configuration directory"),
        ("${vault:x}", "a literal secret is refused"),
        ("plain-literal-secret", "a literal secret is refused"),
    ],
)
def test_syntax_and_reach_are_checked_without_values(write_config, reference: str, message: str) -> None:  # type: ignore[no-untyped-def]
    """A malformed reference, a literal, or one reaching what references may not is an error in validate and plan."""
    directory = _review(write_config, REVIEW.replace("${env:ENTRA_CLIENT_SECRET}", reference))
    for command in (["validate"], ["plan"]):
        result = run(["-C", str(directory), *command])
        assert result.exit_code == 1, (command, result.stdout)
        assert "reconciler.yaml:14:20: partners.entra.client_secret: " in result.stderr
        assert message in result.stderr


def test_an_unset_client_id_is_still_an_error(write_config) -> None:  # type: ignore[no-untyped-def]
    """A client id is shown in plans and links: its value is needed, and the hint says it is no secret."""
    text = REVIEW.replace("client_id: 44444444-dddd-4eee-8fff-000000000004", "client_id: ${env:ENTRA_CLIENT_ID}")
    directory = _review(write_config, text)
    for command in (["validate"], ["plan"]):
        result = run(["-C", str(directory), *command], env=SECRETS)
        assert result.exit_code == 1
        assert "reconciler.yaml:13:16: partners.entra.client_id: environment variable ENTRA_CLIENT_ID is not set" in (
            result.stderr
        )
        assert "a client id is no secret" in result.stderr


def test_apply_and_authorize_still_need_the_secrets(write_config) -> None:  # type: ignore[no-untyped-def]
    """apply and authorize fail clearly on an unset secret and write nothing."""
    from tests.conftest import snapshot

    directory = _review(write_config)
    before = snapshot(directory)
    for command in (["apply", "--auto-approve", "--auth-mode", "defer"], ["authorize"], ["refresh"]):
        result = run(["-C", str(directory), *command], env=STATE_KEY)
        assert result.exit_code == 1, command
        assert "partners.microsoft-azure-devops.client_secret: environment variable ADO_CLIENT_SECRET is not set" in (
            result.stderr
        ), command
    assert snapshot(directory) == before


def test_a_saved_plan_made_without_secrets_applies_only_with_them(write_config) -> None:  # type: ignore[no-untyped-def]
    """plan --out without secrets saves references; apply of it fails while a secret is unset, naming it."""
    directory = _review(write_config)
    saved = directory / "plan.bin"
    made = run(["-C", str(directory), "plan", "--out", str(saved)], env=STATE_KEY)
    assert made.exit_code == 0, made.stderr
    assert "note: 3 secret references not checked" in made.stderr
    applied = run(["-C", str(directory), "apply", str(saved), "--auto-approve", "--auth-mode", "defer"], env=STATE_KEY)
    assert applied.exit_code == 1
    assert "is not set" in applied.stderr and "Traceback" not in applied.stderr
    assert not (directory / "state" / "default.json").exists()


def test_a_secret_reused_as_a_client_id_is_still_refused(write_config) -> None:  # type: ignore[no-untyped-def]
    """With values present, a client id that resolves to a client secret's value is still an error."""
    text = REVIEW.replace("client_id: 44444444-dddd-4eee-8fff-000000000004", "client_id: ${env:ENTRA_ID}")
    directory = _review(write_config, text)
    env = {**SECRETS, "ENTRA_ID": SECRETS["ADO_CLIENT_SECRET"]}
    result = run(["-C", str(directory), "plan"], env=env)
    assert result.exit_code == 1
    assert "client_id resolves to the same value as a client_secret" in result.stderr
    assert SECRETS["ADO_CLIENT_SECRET"] not in result.stdout + result.stderr


def test_show_renders_a_saved_plan_without_secrets(write_config) -> None:  # type: ignore[no-untyped-def]
    """show only renders what was reviewed: it needs the state key to check the signature, never a secret."""
    directory = _review(write_config)
    saved = directory / "plan.bin"
    assert run(["-C", str(directory), "plan", "--out", str(saved)], env=STATE_KEY).exit_code == 0
    shown = run(["-C", str(directory), "show", str(saved), "--format", "markdown"], env=STATE_KEY)
    assert shown.exit_code == 0, shown.stderr
    assert "partner.entra" in shown.stdout


def test_an_unchecked_secret_is_located_in_the_file_that_wrote_it(write_config) -> None:  # type: ignore[no-untyped-def]
    """A secret an environment overlay writes is noted at the overlay's line; a reused one is counted."""
    overlay = "partners:\n  microsoft-azure-devops:\n    client_secret: ${env:STAGING_SECRET}\n"
    text = REVIEW.replace("${env:ENTRA_CLIENT_SECRET}", "${env:STAGING_SECRET}")
    directory = write_config({"reconciler.yaml": text, "environments/staging.yaml": overlay})
    result = run(["-C", str(directory), "--env", "staging", "validate"])
    assert result.exit_code == 0, result.stderr
    assert re.search(r"\$\{env:STAGING_SECRET\} at \S*environments/staging\.yaml:3:20 \(used 2 times\)", result.stderr)


def test_the_note_names_five_references_and_counts_the_rest(write_config) -> None:  # type: ignore[no-untyped-def]
    """Many unchecked secrets: the note stays one line, naming the first five and counting the others."""
    tenants = "".join(
        f"  t{n}:\n    installations:\n      ado:\n        partner: blank\n"
        f"        parameters: {{organization: org{n}, project: P}}\n        scopes: [vso.work_full]\n"
        f"        credentials:\n          client_id: 55555555-eeee-4fff-8aaa-00000000000{n}\n"
        f"          client_secret: ${{file:secrets/t{n}}}\n"
        for n in range(8)
    )
    directory = write_config({"reconciler.yaml": REVIEW.split("tenants:")[0] + "tenants:\n" + tenants})
    result = run(["-C", str(directory), "validate"], env=SECRETS)
    assert result.exit_code == 0, result.stderr
    note = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and "note: 8 secret references not checked" in note[0]
    assert "${file:secrets/t4} at " in note[0] and "${file:secrets/t5}" not in note[0]
    assert ", and 3 more;" in note[0]
