"""The CLI end to end (in-process through click's runner, and once as a real subprocess)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from reconciler.state.records import installation_record, partner_record
from tests.conftest import run, snapshot

ROOT = Path(__file__).resolve().parent.parent
PARTNER_SECRET = "pS3cr3t-7f1e9c2a-partner-VALUE"
INSTALL_SECRET = "iS3cr3t-0b4d8e6f-install-VALUE"
ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": PARTNER_SECRET, "INITECH_SECRET": INSTALL_SECRET}

CONFIG = """\
version: 1
platform: {service_domain: app-h.cyclr.com}
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: ${env:ADO_CLIENT_ID}
    client_secret: ${env:ADO_CLIENT_SECRET}
tenants:
  acme:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {organization: acme, project: P}
        scopes: [vso.work_full]
  initech:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {organization: initech, project: TPS}
        scopes: [vso.work_full, vso.code]
        credentials: {client_id: 22222222-0000-4000-8000-0000000000b2, client_secret: "${file:secrets/initech}"}
"""


@pytest.fixture
def config_dir(write_config, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    directory = write_config({"reconciler.yaml": CONFIG, "secrets/initech": INSTALL_SECRET + "\n"})
    monkeypatch.chdir(directory)
    return directory


def _apply_everything(directory: Path) -> None:
    """Record the whole configuration as applied (what a successful apply leaves behind)."""
    desired = load_config(directory, environ=ENV).desired
    import datetime as dt

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    resources = {p.address: partner_record(p.declared) for p in desired.partners.values()}
    resources |= {
        i.address: installation_record(i.declared, granted=i.declared.scopes, authorized_at=now)
        for i in desired.installations.values()
    }
    backend = LocalBackend(directory / "state", "default")
    with backend.lock("test"):
        backend.write(StateDocument.new("default").with_resources(resources), expected_serial=None)


def test_validate_reports_counts(config_dir: Path) -> None:
    """validate prints what it found and exits 0."""
    result = run(["-C", ".", "validate"], ENV)
    assert result.exit_code == 0, result.stderr
    assert "1 partner, 2 tenants, 2 installations in 1 file" in result.stdout


def test_plan_without_state_writes_nothing(config_dir: Path) -> None:
    """plan against no state says so, plans creates, and creates no file (not even the state directory)."""
    before = snapshot(config_dir)
    result = run(["-C", ".", "plan"], ENV)
    assert result.exit_code == 0, result.stderr
    assert "no state yet at state/default.json" in result.stdout
    assert "Plan: 3 to create, 0 to update, 0 to reauthorize, 0 to delete." in result.stdout
    assert snapshot(config_dir) == before
    assert not (config_dir / "state").exists()


def test_detailed_exitcode(config_dir: Path) -> None:
    """--detailed-exitcode: 2 with changes, 0 once state matches, 1 on error."""
    assert run(["-C", ".", "plan", "--detailed-exitcode"], ENV).exit_code == 2
    _apply_everything(config_dir)
    result = run(["-C", ".", "plan", "--detailed-exitcode"], ENV)
    assert result.exit_code == 0, result.stdout
    assert "No changes." in result.stdout
    assert run(["-C", ".", "plan", "--detailed-exitcode"], {}).exit_code == 1


def test_json_plan_document(config_dir: Path) -> None:
    """--format json prints the versioned document with one change per address."""
    result = run(["-C", ".", "plan", "--format", "json"], ENV)
    doc = json.loads(result.stdout)
    assert doc["format_version"] == "1.2"
    assert [c["address"] for c in doc["changes"]] == [
        "partner.microsoft-azure-devops",
        "installation.acme.ado",
        "installation.initech.ado",
    ]
    assert doc["summary"]["create"] == 3
    assert doc["state"] == {"exists": False, "location": "state/default.json", "lineage": None, "serial": None}


@pytest.mark.parametrize("args", [["validate"], ["plan"], ["plan", "--format", "json"], ["plan", "--format", "markdown"]])
def test_no_secret_in_any_output(config_dir: Path, args: list[str]) -> None:
    """Secrets from ${env:} and ${file:} never appear in any output, in plain, base64 or URL-encoded form."""
    for setup in (lambda: None, lambda: _apply_everything(config_dir)):
        setup()
        result = run(["-C", ".", *args], ENV)
        assert result.exit_code == 0, result.stderr
        captured = result.stdout + result.stderr
        if (config_dir / "state" / "default.json").exists():
            captured += (config_dir / "state" / "default.json").read_text()
        for secret in (PARTNER_SECRET, INSTALL_SECRET):
            for form in (secret, base64.b64encode(secret.encode()).decode(), urllib.parse.quote(secret)):
                assert form not in captured
    if "json" in args:
        assert '"client_secret": "(sensitive)"' in result.stdout


def test_secret_changes_are_not_visible_only_references(config_dir: Path) -> None:
    """Rotating a secret's value behind the same reference plans nothing and shows nothing."""
    _apply_everything(config_dir)
    result = run(["-C", ".", "plan", "--format", "json"], {**ENV, "ADO_CLIENT_SECRET": "rotated-value-XYZ"})
    assert json.loads(result.stdout)["has_changes"] is False
    assert "rotated-value-XYZ" not in result.stdout


def test_markdown_has_summary_first_and_section_per_tenant(config_dir: Path) -> None:
    """The pull-request comment opens with the summary and holds one collapsible section per tenant."""
    out = run(["-C", ".", "plan", "--format", "markdown"], ENV).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[1].startswith("**Plan: 3 to create")
    assert out.count("<details>") == 3 and "tenant <code>acme</code>" in out and "tenant <code>initech</code>" in out


def test_markdown_warns_on_delete(config_dir: Path) -> None:
    """A plan that deletes shows a warning block naming what goes."""
    _apply_everything(config_dir)
    (config_dir / "reconciler.yaml").write_text(CONFIG.split("  initech:")[0])
    out = run(["-C", ".", "plan", "--format", "markdown"], ENV).stdout
    assert "[!WARNING]" in out and "`installation.initech.ado`" in out


def test_colour_only_when_asked_or_on_a_tty(config_dir: Path) -> None:
    """No ANSI escapes on a pipe; --color forces them."""
    assert "\x1b[" not in run(["-C", ".", "plan"], ENV).stdout
    assert "\x1b[" in run(["-C", ".", "--color", "plan"], ENV).stdout


def test_schema_is_json_schema_of_the_root_file() -> None:
    """`schema` prints a JSON Schema describing reconciler.yaml's keys."""
    result = run(["schema"])
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"version", "partners", "tenants", "include", "platform"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert "version" in schema["required"]


@pytest.mark.parametrize("example", ["quickstart", "many-tenants"])
def test_examples_validate_and_plan(example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped examples are valid and plan cleanly (on a copy, so local demo state cannot interfere)."""
    import shutil

    shutil.copytree(ROOT / "examples" / example, tmp_path / example, ignore=shutil.ignore_patterns("state"))
    monkeypatch.chdir(tmp_path)
    env = {"ADO_CLIENT_ID": "33333333-0000-4000-8000-0000000000c3", "ADO_CLIENT_SECRET": "demo-secret", "ENTRA_CLIENT_SECRET": "entra-demo"}
    before = snapshot(tmp_path)
    assert run(["-C", example, "validate"], env).exit_code == 0
    result = run(["-C", example, "plan"], env)
    assert result.exit_code == 0, result.stderr
    assert "to create" in result.stdout
    assert snapshot(tmp_path) == before


def test_python_dash_m_and_version() -> None:
    """`python -m reconciler --version` runs as a real process."""
    out = subprocess.run([sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("reconciler, version ")


def test_internal_errors_are_reported_as_bugs_without_message(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception prints one 'bug' line (not its message, which could hold a value), exit 1."""
    import reconciler.app.planning

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(PARTNER_SECRET)

    monkeypatch.setattr(reconciler.app.planning, "plan_config", boom)
    result = run(["-C", ".", "plan"], ENV)
    assert result.exit_code == 1
    assert "internal error: RuntimeError" in result.stderr and "bug" in result.stderr
    assert PARTNER_SECRET not in result.stderr + result.stdout


def test_a_secret_in_a_shown_field_is_refused(config_dir: Path) -> None:
    """client_id pointing at the secret's variable is refused before anything could print it."""
    (config_dir / "reconciler.yaml").write_text(CONFIG.replace("${env:ADO_CLIENT_ID}", "${env:ADO_CLIENT_SECRET}"))
    for args in (["validate"], ["plan"], ["plan", "--format", "json"], ["plan", "--format", "markdown"]):
        result = run(["-C", ".", *args], ENV)
        assert result.exit_code == 1
        assert "reconciler.yaml:6:16: partners.microsoft-azure-devops.client_id: client_id resolves to the same" in result.stderr
        assert PARTNER_SECRET not in result.stdout + result.stderr


def test_include_glob_that_also_matches_the_root_file(write_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """`include: ["*.yaml"]` next to reconciler.yaml includes the other files and skips the root itself."""
    root = CONFIG.split("tenants:")[0] + 'include: ["*.yaml"]\n'
    tenant = "tenants:\n" + CONFIG.split("tenants:\n")[1].split("  initech:")[0]
    directory = write_config({"reconciler.yaml": root, "acme.yaml": tenant, "secrets/initech": INSTALL_SECRET})
    monkeypatch.chdir(directory)
    result = run(["-C", ".", "validate"], ENV)
    assert result.exit_code == 0, result.stderr
    assert "1 tenant, 1 installation in 2 files" in result.stdout


def test_output_to_a_full_disk_is_one_line(config_dir: Path) -> None:
    """Writing the plan to a full device is a one-line error, not a bug report."""
    with open("/dev/full", "w") as full:
        out = subprocess.run(
            [sys.executable, "-m", "reconciler", "-C", str(config_dir), "plan"],
            check=False, env={**ENV, "PATH": "/usr/bin:/bin"},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert out.returncode == 1
    assert out.stderr.startswith("error: No space left on device") and "bug" not in out.stderr


def test_parse_cache_is_used_is_safe_to_corrupt_and_can_be_turned_off(config_dir: Path, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """The second plan reads parsed files from the cache; a corrupted entry is parsed again; --no-cache writes
    nothing; the output never differs."""
    cache = tmp_path_factory.mktemp("cache")
    env = {**ENV, "RECONCILER_CACHE_DIR": str(cache)}
    first = run(["-C", ".", "plan", "--format", "json"], env)
    entries = sorted((cache / "parse").rglob("*.marshal"))
    assert len(entries) == 1  # one configuration file
    second = run(["-C", ".", "plan", "--format", "json"], env)
    assert second.stdout == first.stdout
    entries[0].write_bytes(b"\x00garbage")
    third = run(["-C", ".", "plan", "--format", "json"], env)
    assert third.stdout == first.stdout
    fresh = tmp_path_factory.mktemp("unused")
    run(["-C", ".", "--no-cache", "plan"], {**ENV, "RECONCILER_CACHE_DIR": str(fresh)})
    assert not any(fresh.iterdir())
    for entry in (cache / "parse").rglob("*.marshal"):
        assert PARTNER_SECRET.encode() not in entry.read_bytes()  # references, never resolved values
