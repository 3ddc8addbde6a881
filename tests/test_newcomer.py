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
