"""Rough edges a newcomer met in the first hour (issue 12, items 8 and 9), through the CLI in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run

ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "pS3cr3t-7f1e9c2a-partner-VALUE"}
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
"""
STAGING = """\
tenants:
  staging-only:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {organization: stg, project: P}
        scopes: [vso.work_full]
"""
COMMANDS = [["plan"], ["apply", "--auto-approve", "--auth-mode", "defer"], ["validate"], ["state", "list"],
            ["state", "show", "installation.acme.ado"]]


@pytest.fixture
def config_dir(write_config, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A configuration with an environment `staging`; the working directory is elsewhere (so -C matters)."""
    directory = write_config({"reconciler/reconciler.yaml": CONFIG, "reconciler/environments/staging.yaml": STAGING})
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    return directory / "reconciler"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_env_after_the_subcommand_is_read(config_dir: Path, command: list[str]) -> None:
    """--env after the subcommand is accepted and used (an unknown one is named in the error)."""
    result = run(["-C", str(config_dir), *command, "--env", "nosuch"], ENV)
    assert result.exit_code == 1
    assert "No such option" not in result.stderr
    assert "unknown environment 'nosuch'" in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_chdir_after_the_subcommand_is_read(config_dir: Path, command: list[str]) -> None:
    """-C after the subcommand is accepted and wins over the one before it."""
    before = run(["-C", str(config_dir), *command], ENV)
    after = run(["-C", "/nonexistent", *command, "-C", str(config_dir)], ENV)
    assert "No such option" not in after.stderr
    assert after.exit_code == before.exit_code, after.stderr
    assert "nonexistent" not in after.stdout + after.stderr
    missing = run([*command, "-C", "/nonexistent"], ENV)
    assert missing.exit_code == 1 and "/nonexistent" in missing.stderr


def test_the_value_after_the_subcommand_wins(config_dir: Path) -> None:
    """A global option given on both sides: the value after the subcommand is the one used."""
    result = run(["--env", "nosuch", "validate", "-C", str(config_dir), "--env", "staging"], ENV)
    assert result.exit_code == 0, result.stderr
    assert "2 tenants" in result.stdout
    result = run(["--env", "staging", "-C", str(config_dir), "validate", "--env", "nosuch"], ENV)
    assert "unknown environment 'nosuch'" in result.stderr


def test_env_before_and_after_plan_agree(config_dir: Path) -> None:
    """`plan --env staging` plans the staging overlay, as `--env staging plan` does."""
    before = run(["-C", str(config_dir), "--env", "staging", "plan"], ENV)
    after = run(["plan", "--env", "staging", "-C", str(config_dir)], ENV)
    assert before.exit_code == after.exit_code == 0, after.stderr
    assert "installation.staging-only.ado" in after.stdout
    assert after.stdout == before.stdout


@pytest.mark.parametrize("side", ["before", "after"])
def test_color_on_either_side(config_dir: Path, side: str) -> None:
    """--color / --no-color work before and after the subcommand."""
    for flag, coloured in (("--color", True), ("--no-color", False)):
        args = [flag, "plan"] if side == "before" else ["plan", flag]
        result = run(["-C", str(config_dir), *args], ENV)
        assert result.exit_code == 0, result.stderr
        assert ("\x1b[" in result.stdout) is coloured


@pytest.mark.parametrize("side", ["before", "after"])
def test_no_cache_on_either_side(config_dir: Path, side: str, tmp_path: Path) -> None:
    """--no-cache before or after the subcommand leaves the parse cache directory empty."""
    cache = tmp_path / "cache"
    args = ["--no-cache", "validate"] if side == "before" else ["validate", "--no-cache"]
    result = run(["-C", str(config_dir), *args], {**ENV, "RECONCILER_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.stderr
    assert not cache.exists() or not any(cache.rglob("*"))
    run(["-C", str(config_dir), "validate"], {**ENV, "RECONCILER_CACHE_DIR": str(cache)})
    assert any(p.is_file() for p in cache.rglob("*"))  # the check above could fail


@pytest.mark.parametrize("command", [["plan"], ["apply"], ["state", "list"], ["state", "show"], ["validate"]])
def test_subcommand_help_lists_the_global_options(command: list[str]) -> None:
    """Every subcommand's --help lists the global options."""
    result = run([*command, "--help"])
    assert result.exit_code == 0
    for option in ("-C, --chdir", "--env", "--color / --no-color", "--no-cache"):
        assert option in result.stdout, option


# -- item 9: authorize ---------------------------------------------------------------------------------------------


def test_authorize_with_nothing_pending_says_so(config_dir: Path) -> None:
    """authorize with no pending authorization prints "No pending authorizations." and exits 0."""
    result = run(["-C", str(config_dir), "authorize"], ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "No pending authorizations.\n"
    applied = run(["-C", str(config_dir), "apply", "--auto-approve", "--auth-mode", "defer"], ENV)
    assert applied.exit_code == 3
    assert run(["-C", str(config_dir), "authorize", "--reissue"], ENV).exit_code == 3


def test_authorize_names_addresses_that_match_nothing(config_dir: Path) -> None:
    """authorize ADDRESS... that match no pending authorization: an error naming them."""
    result = run(["-C", str(config_dir), "authorize", "installation.nope.*"], ENV)
    assert result.exit_code == 1
    assert "installation.nope.*" in result.stderr


def test_authorize_does_not_offer_defer(config_dir: Path) -> None:
    """authorize --help offers browser and paste only; defer is refused by the option itself."""
    help_text = run(["authorize", "--help"]).stdout
    assert "--auth-mode [browser|paste]" in help_text and "defer (" not in help_text
    result = run(["-C", str(config_dir), "authorize", "--auth-mode", "defer"], ENV)
    assert result.exit_code == 1 and "'defer' is not one of" in result.stderr


def test_authorize_summary_says_authorization(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """authorize ends with "Authorization complete: N completed", not "Apply complete"."""
    from tests.sandbox_support import ENV as SANDBOX_ENV
    from tests.sandbox_support import installation

    write = sandbox_config[2]
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], SANDBOX_ENV).exit_code == 3
    done = run(["-C", ".", "authorize", "--auth-mode", "browser", "--auth-timeout", "20"], SANDBOX_ENV)
    assert done.exit_code == 0, done.stderr
    assert "Authorization complete: 1 completed" in done.stdout
    assert "Apply" not in done.stdout + done.stderr


# -- item 9: state list --json, state show --format -----------------------------------------------------------------


def _deferred(config_dir: Path) -> None:
    """Apply with --auth-mode defer: the partner recorded, installation.acme.ado pending."""
    assert run(["-C", str(config_dir), "apply", "--auto-approve", "--auth-mode", "defer"], ENV).exit_code == 3


def test_state_list_json(config_dir: Path) -> None:
    """state list --json prints an array of {address, kind, status, ...} with no token or secret in it."""
    import json

    _deferred(config_dir)
    result = run(["-C", str(config_dir), "state", "list", "--json"], ENV)
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [(e["address"], e["kind"], e["status"]) for e in entries] == [
        ("installation.acme.ado", "installation", "pending"),
        ("partner.microsoft-azure-devops", "partner", "recorded"),
    ]
    assert entries[0]["pending"] is True and entries[0]["protected"] is False
    assert ENV["ADO_CLIENT_SECRET"] not in result.stdout and "token" not in result.stdout
    empty = run(["-C", str(config_dir), "--env", "staging", "state", "list", "--json"], ENV)
    assert json.loads(empty.stdout) == []


def test_state_show_format_json_and_the_json_alias(config_dir: Path) -> None:
    """state show --format json prints the record; --json stays as a hidden alias of it."""
    import json

    _deferred(config_dir)
    base = ["-C", str(config_dir), "state", "show", "installation.acme.ado"]
    as_format = run([*base, "--format", "json"], ENV)
    assert as_format.exit_code == 0, as_format.stderr
    assert json.loads(as_format.stdout)["address"] == "installation.acme.ado"
    assert run([*base, "--json"], ENV).stdout == as_format.stdout
    assert run([*base, "--format", "text"], ENV).stdout.startswith("# installation.acme.ado\n")
    help_text = run(["state", "show", "--help"]).stdout
    assert "--format [text|json]" in help_text and "--json" not in help_text


def test_text_plan_lists_pending_links_like_markdown(config_dir: Path) -> None:
    """The text plan shows each pending authorization's link, as the Markdown plan does."""
    import re

    _deferred(config_dir)
    markdown = run(["-C", str(config_dir), "plan", "--format", "markdown"], ENV).stdout
    links = re.findall(r"https://\S+?/authorize\?[^)\s|]+", markdown)
    assert links, markdown
    text = run(["-C", str(config_dir), "plan"], ENV)
    assert text.exit_code == 0, text.stderr
    for link in links:
        assert link in text.stdout


def test_exclude_summary_counts_only_what_remains(config_dir: Path) -> None:
    """With --exclude, "N resources match the configuration" counts only the addresses left in the plan."""
    _deferred(config_dir)
    base = ["-C", str(config_dir), "plan"]
    everything = run(base, ENV).stdout
    assert "No changes. 2 resources match the configuration.\n" in everything
    text = run([*base, "--exclude", "installation.*"], ENV).stdout
    assert "No changes. 1 resource matches the configuration. 1 left out by --target/--exclude.\n" in text
    markdown = run([*base, "--format", "markdown", "--target", "partner.*"], ENV).stdout
    assert "1 resource matches the configuration. 1 left out by --target/--exclude." in markdown


# -- item 9: --target/--exclude everywhere, state rm of a protected installation ------------------------------------

PROTECTED = CONFIG + (
    "        protect: true\n      board:\n        connector: microsoft-azure-devops\n"
    "        parameters: {organization: acme, project: B}\n        scopes: [vso.work_full]\n"
)


def _pending_protected(config_dir: Path) -> None:
    """installation.acme.ado (protected) and installation.acme.board recorded as pending."""
    import json

    (config_dir / "reconciler.yaml").write_text(PROTECTED)
    _deferred(config_dir)
    listed = json.loads(run(["-C", str(config_dir), "state", "list", "--json"], ENV).stdout)
    assert {e["address"]: e.get("protected") for e in listed} == {
        "installation.acme.ado": True, "installation.acme.board": False, "partner.microsoft-azure-devops": None,
    }


def _addresses(config_dir: Path) -> list[str]:
    return [line.split("\t")[0] for line in run(["-C", str(config_dir), "state", "list"], ENV).stdout.splitlines()]


def test_state_rm_of_a_protected_installation_needs_allow_delete(config_dir: Path) -> None:
    """state rm refuses a protected installation (naming it, removing nothing) unless --allow-delete names it."""
    _pending_protected(config_dir)
    before = _addresses(config_dir)
    refused = run(["-C", str(config_dir), "state", "rm", "installation.acme.*"], ENV)
    assert refused.exit_code == 1
    assert "protected installation: installation.acme.ado" in refused.stderr and "--allow-delete" in refused.stderr
    assert _addresses(config_dir) == before
    allowed = run(["-C", str(config_dir), "state", "rm", "installation.acme.ado",
                   "--allow-delete", "installation.acme.ado"], ENV)
    assert allowed.exit_code == 0, allowed.stderr
    assert _addresses(config_dir) == ["installation.acme.board", "partner.microsoft-azure-devops"]


def test_state_rm_takes_target_and_exclude(config_dir: Path) -> None:
    """state rm --target/--exclude select like plan's; positional globs stay accepted; neither is an error."""
    _pending_protected(config_dir)
    result = run(["-C", str(config_dir), "state", "rm", "--target", "installation.acme.*",
                  "--exclude", "installation.acme.ado"], ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Removed installation.acme.board\n"
    nothing = run(["-C", str(config_dir), "state", "rm"], ENV)
    assert nothing.exit_code == 1 and "--target" in nothing.stderr


def test_authorize_takes_target_and_exclude(config_dir: Path) -> None:
    """authorize --target/--exclude select pending authorizations like ADDRESS arguments (here: --reissue)."""
    _pending_protected(config_dir)
    result = run(["-C", str(config_dir), "authorize", "--reissue", "--target", "installation.acme.*",
                  "--exclude", "installation.acme.board"], ENV)
    assert result.exit_code == 3, result.stderr
    assert "installation.acme.ado" in result.stdout and "installation.acme.board" not in result.stdout
    unmatched = run(["-C", str(config_dir), "authorize", "--target", "installation.nope.*"], ENV)
    assert unmatched.exit_code == 1 and "installation.nope.*" in unmatched.stderr


# -- item 9: force-unlock of a live PostgreSQL holder -----------------------------------------------------------------


def test_postgres_force_unlock_of_a_live_holder_needs_force(config_dir: Path, pg_database: str) -> None:
    """force-unlock of a PostgreSQL lock whose holder's session is alive: refused without a terminal and without
    --force (the lock stays held); with --force the session is ended and the lock released."""
    import contextlib

    from reconciler.errors import StateLockedError
    from reconciler.state.postgres import PostgresBackend

    (config_dir / "reconciler.yaml").write_text(CONFIG + "backend:\n  type: postgres\n  dsn: ${env:PG_DSN}\n")
    env = {**ENV, "PG_DSN": pg_database}
    held = PostgresBackend(pg_database, "default").lock("apply")
    info = held.__enter__()
    refused = run(["-C", str(config_dir), "force-unlock", info.id], env)
    assert refused.exit_code == 1
    assert "session is alive" in refused.stderr and "--force" in refused.stderr
    with pytest.raises(StateLockedError), PostgresBackend(pg_database, "default").lock("check"):  # still held
        pass
    forced = run(["-C", str(config_dir), "force-unlock", info.id, "--force"], env)
    assert forced.exit_code == 0, forced.stderr
    assert forced.stdout.startswith("Released the lock")
    with contextlib.suppress(Exception):  # the holder's session was ended under it
        held.__exit__(None, None, None)
    with PostgresBackend(pg_database, "default").lock("check"):  # free now
        pass


@pytest.mark.parametrize("answer", ["n", "y"])
def test_postgres_force_unlock_of_a_live_holder_asks_on_a_terminal(
    config_dir: Path, pg_database: str, answer: str
) -> None:
    """On a terminal, force-unlock of a live PostgreSQL holder says who holds it and asks: no keeps the lock held
    (exit 1, nothing changed), yes ends the holder's session and releases it."""
    import contextlib
    import os
    import shlex
    import sys

    from reconciler.errors import StateLockedError
    from reconciler.state.postgres import PostgresBackend
    from tests.terminal import run_in_terminal

    (config_dir / "reconciler.yaml").write_text(CONFIG + "backend:\n  type: postgres\n  dsn: ${env:PG_DSN}\n")
    env = {**os.environ, **ENV, "PG_DSN": pg_database, "NO_COLOR": "1"}
    held = PostgresBackend(pg_database, "default").lock("apply")
    info = held.__enter__()
    try:
        command = shlex.join([sys.executable, "-m", "reconciler", "-C", str(config_dir), "force-unlock", info.id])
        code, output = run_in_terminal(command, config_dir, env, {"Do you really want to force-unlock? [y/N]:": answer})
        assert "session is still alive: it may be mid-write" in output, output
        if answer == "n":
            assert code == 1, output
            with pytest.raises(StateLockedError), PostgresBackend(pg_database, "default").lock("check"):
                pass
        else:
            assert code == 0, output
            assert "Released the lock held by pid" in output and info.id in output, output
    finally:
        with contextlib.suppress(Exception):  # ended under it when the answer was yes
            held.__exit__(None, None, None)
    with PostgresBackend(pg_database, "default").lock("check"):  # free once the holder is gone either way
        pass


# -- item 9: a missed browser sign-in during apply ---------------------------------------------------------------


def _two_installations_first_sign_in_missed(sandbox_config, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Two installations; the browser ignores the first consent page (a sign-in never made) and answers the rest."""
    import webbrowser

    from tests.sandbox_support import installation

    _, directory, write, browser = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
          + installation("globex", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    opened: list[str] = []

    def first_ignored(url: str) -> bool:
        opened.append(url)
        return True if len(opened) == 1 else browser(url)

    monkeypatch.setattr(webbrowser, "open", first_ignored)
    return directory


def test_missed_sign_in_is_left_pending_with_the_flag(sandbox_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--leave-missed-pending: a timed-out sign-in becomes a pending authorization, the others go on, exit 3."""
    import json

    from tests.sandbox_support import ENV as SANDBOX_ENV

    directory = _two_installations_first_sign_in_missed(sandbox_config, monkeypatch)
    result = run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "1",
                  "--leave-missed-pending"], SANDBOX_ENV)
    assert result.exit_code == 3, result.stderr
    resources = json.loads((directory / "state" / "default.json").read_text())["resources"]
    statuses = {a: r["status"] for a, r in resources.items() if a.startswith("installation.")}
    assert sorted(statuses.values()) == ["authorized", "pending_authorization"]
    assert "1 pending authorization" in result.stdout and "no authorization arrived" in result.stderr


def test_missed_sign_in_without_the_flag_stops_the_run(sandbox_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Without a terminal and without --leave-missed-pending, a timed-out sign-in stops the apply (exit 1)."""
    from tests.sandbox_support import ENV as SANDBOX_ENV

    _two_installations_first_sign_in_missed(sandbox_config, monkeypatch)
    result = run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "1"], SANDBOX_ENV)
    assert result.exit_code == 1
    assert "Apply stopped" in result.stderr and "no authorization arrived within 1 s" in result.stderr


# -- item 9: the JSON schema ---------------------------------------------------------------------------------------


def _schema(*args: str) -> dict:  # type: ignore[type-arg]
    import json

    result = run(["schema", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_schema_for_included_files_requires_no_version() -> None:
    """`schema --include-file` describes a tenant include file: partners and tenants, no required `version`."""
    included = _schema("--include-file")
    assert "version" not in included.get("required", []) and "version" not in included["properties"]
    assert {"partners", "tenants"} <= set(included["properties"])
    assert _schema()["required"] == ["version"]


def test_schema_lists_the_catalog_scopes() -> None:
    """Installation scopes are an enum of the catalog's scopes: an unknown scope fails in an editor too."""
    from reconciler.catalog.files import load_catalog

    for document in (_schema(), _schema("--include-file")):
        scopes = document["$defs"]["InstallationSpec"]["properties"]["scopes"]["items"]["enum"]
        assert "vso.work_full" in scopes and "vso.bogus" not in scopes
        assert set(scopes) == {scope for c in load_catalog().connectors.values() for scope in c.scopes}


def test_schema_secret_fields_take_references_only() -> None:
    """client_secret (partner and installation credentials) and the DSN match ${env:...}/${file:...} only."""
    import re

    defs = _schema()["$defs"]
    patterns = [
        defs["PartnerSpec"]["properties"]["client_secret"]["anyOf"][0]["pattern"],
        defs["CredentialsSpec"]["properties"]["client_secret"]["pattern"],
        defs["PostgresBackendSpec"]["properties"]["dsn"]["pattern"],
    ]
    for pattern in patterns:
        assert re.match(pattern, "${env:ADO_CLIENT_SECRET}") and re.match(pattern, "${file:secrets/initech}")
        assert not re.match(pattern, "literal-s3cr3t") and not re.match(pattern, "${vault:x}")
