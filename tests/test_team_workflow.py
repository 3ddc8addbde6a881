"""Team workflow end to end: saved plans, targeting, state commands, environments, PostgreSQL-backed state."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run
from tests.sandbox_support import (
    APPLY,
    ENV,
    all_text_under,
    installation,
)

KEY = base64.b64encode(b"team-key-0123456789abcdef0123456").decode()
TEAM_ENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
TWO = installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]) + installation(
    "globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"]
)


@pytest.fixture
def team(sandbox_config):  # type: ignore[no-untyped-def]
    return sandbox_config


def _state(directory: Path, name: str = "default") -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "state" / f"{name}.json").read_text())


def test_saved_plan_applies_exactly_its_changes(team) -> None:  # type: ignore[no-untyped-def]
    """plan --out then apply FILE: exactly the reviewed changes, even if the config changed since."""
    sandbox, directory, write, _browser = team
    write(TWO)
    saved = run(["-C", ".", "plan", "--out", "plan.bin"], TEAM_ENV)
    assert saved.exit_code == 0, saved.stderr
    write(TWO + installation("initech", "ado", "legacy", "acme-org", "Web", ["vso.work_full"]))  # after review
    result = run(["-C", ".", "apply", "plan.bin", "--auto-approve", "--auth-mode", "browser"], TEAM_ENV)
    assert result.exit_code == 0, result.stderr
    assert sorted(_state(directory)["resources"]) == [
        "installation.acme.ado",
        "installation.globex.ado",
        "partner.entra",
        "partner.legacy",
    ]
    plan_bytes = (directory / "plan.bin").read_text()
    for secret in (*sandbox.provider.issued, ENV["LEGACY_SECRET"], ENV["ENTRA_SECRET"]):
        assert secret not in plan_bytes
    shown = run(["-C", ".", "show", "plan.bin", "--format", "json"], TEAM_ENV)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["summary"]["create"] == 4


@pytest.mark.parametrize("case", ["serial-moved", "state-appeared", "tampered", "other-environment"])
def test_stale_or_tampered_saved_plans_are_refused(team, case: str) -> None:  # type: ignore[no-untyped-def]
    """A saved plan is refused, with nothing changed, when the state moved, when state appeared after a plan
    made against none, when the file was edited, or when it belongs to another environment."""
    _sandbox, directory, write, browser = team
    write(TWO)
    if case == "serial-moved":
        assert run(APPLY, TEAM_ENV).exit_code == 0
        write(TWO.replace("Platform", "Web"))
        assert run(["-C", ".", "plan", "--out", "plan.bin"], TEAM_ENV).exit_code == 0
        write(TWO.replace("Operations", "Operations").replace("vso.work_full]\n", "vso.work_full, vso.project]\n", 1))
        assert run(APPLY, TEAM_ENV).exit_code == 0  # someone else applied meanwhile
        message = "the state moved since the plan was made"
    elif case == "state-appeared":
        assert run(["-C", ".", "plan", "--out", "plan.bin"], TEAM_ENV).exit_code == 0
        assert run([*APPLY, "--target", "partner.legacy"], TEAM_ENV).exit_code == 0
        message = "made when there was no state"
    elif case == "tampered":
        assert run(["-C", ".", "plan", "--out", "plan.bin"], TEAM_ENV).exit_code == 0
        text = (directory / "plan.bin").read_text().replace("acme-org", "evil-org")
        (directory / "plan.bin").write_text(text)
        message = "changed after it was made"
    else:
        (directory / "environments").mkdir()
        (directory / "environments" / "staging.yaml").write_text("{}\n")
        assert run(["-C", ".", "--env", "staging", "plan", "--out", "plan.bin"], TEAM_ENV).exit_code == 0
        message = "is for environment 'staging', not 'default'"
    before = all_text_under(directory / "state") if (directory / "state").exists() else ""
    opened = len(browser.opened)
    result = run(["-C", ".", "apply", "plan.bin", "--auto-approve", "--auth-mode", "browser"], TEAM_ENV)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert (all_text_under(directory / "state") if (directory / "state").exists() else "") == before
    assert len(browser.opened) == opened


def test_target_and_exclude(team) -> None:  # type: ignore[no-untyped-def]
    """--target applies only the matching installation (and the partner it needs); --exclude leaves one out."""
    _sandbox, directory, write, _browser = team
    write(TWO)
    result = run([*APPLY, "--target", "installation.acme.*"], TEAM_ENV)
    assert result.exit_code == 0, result.stderr
    assert sorted(_state(directory)["resources"]) == ["installation.acme.ado", "partner.legacy"]
    plan = run(["-C", ".", "plan", "--exclude", "installation.globex.*", "--detailed-exitcode"], TEAM_ENV)
    assert plan.exit_code == 2 and "partner.entra will be created" in plan.stdout
    assert "installation.globex.ado will be created" not in plan.stdout


def test_replace_forces_reauthorization(team) -> None:  # type: ignore[no-untyped-def]
    """--replace re-authorizes an up-to-date installation."""
    _sandbox, _directory, write, browser = team
    write(TWO)
    assert run(APPLY, TEAM_ENV).exit_code == 0
    plan = run(["-C", ".", "plan", "--replace", "installation.acme.ado"], TEAM_ENV)
    assert "installation.acme.ado must be re-authorized" in plan.stdout and "(--replace)" in plan.stdout
    assert run([*APPLY, "--replace", "installation.acme.ado"], TEAM_ENV).exit_code == 0
    assert len(browser.opened) == 3


def test_state_mv_renames_without_reauthorizing_and_rm_forgets(team) -> None:  # type: ignore[no-untyped-def]
    """state mv moves a record and its (re-sealed) tokens; the renamed config plans no change; state rm forgets."""
    _sandbox, directory, write, browser = team
    write(TWO)
    assert run(APPLY, TEAM_ENV).exit_code == 0
    moved = run(["-C", ".", "state", "mv", "installation.acme.ado", "installation.acme.board"], TEAM_ENV)
    assert moved.exit_code == 0, moved.stderr
    write(TWO.replace("      ado:\n        partner: legacy\n        parameters: {organization: acme-org", "      board:\n        partner: legacy\n        parameters: {organization: acme-org"))
    assert run(["-C", ".", "plan", "--detailed-exitcode"], TEAM_ENV).exit_code == 0
    write(TWO.replace("      ado:\n        partner: legacy\n        parameters: {organization: acme-org", "      board:\n        partner: legacy\n        parameters: {organization: acme-org").replace("Platform", "Web"))
    assert run(APPLY, TEAM_ENV).exit_code == 0  # an update opens the re-sealed tokens at the new address
    assert len(browser.opened) == 2
    removed = run(["-C", ".", "state", "rm", "installation.globex.ado"], TEAM_ENV)
    assert removed.exit_code == 0 and "Removed installation.globex.ado" in removed.stdout
    assert "installation.globex.ado" not in _state(directory)["resources"]
    assert not (directory / "state" / "default.credentials" / "installation.globex.ado.json").exists()


def test_environment_has_its_own_state(team) -> None:  # type: ignore[no-untyped-def]
    """--env staging merges environments/staging.yaml and keeps state/staging.json; an unknown env is an error."""
    _sandbox, directory, write, _browser = team
    write(TWO)
    (directory / "environments").mkdir()
    (directory / "environments" / "staging.yaml").write_text("tenants:\n  globex: null\n")
    result = run(["-C", ".", "--env", "staging", *APPLY[2:]], TEAM_ENV)
    assert result.exit_code == 0, result.stderr
    assert "installation.globex.ado" not in _state(directory, "staging")["resources"]
    assert not (directory / "state" / "default.json").exists()
    plan = run(["-C", ".", "plan"], {**TEAM_ENV, "RECONCILER_ENV": "staging"})
    assert "Environment staging" in plan.stdout and "No changes." in plan.stdout
    unknown = run(["-C", ".", "--env", "prod", "plan"], TEAM_ENV)
    assert unknown.exit_code == 1 and "unknown environment 'prod'" in unknown.stderr


def _pg_config(write, dsn_env: str = "RECONCILER_PG_DSN") -> None:  # type: ignore[no-untyped-def]
    write(TWO, extra=f"backend:\n  type: postgres\n  dsn: ${{env:{dsn_env}}}\n")


def test_postgres_backend_end_to_end_and_push_pull(team, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    """apply on PostgreSQL state; plan converges; pull to a directory and push into a fresh database keeps lineage,
    serial and tokens (an update then opens them)."""
    _sandbox, directory, write, _browser = team
    env = {**TEAM_ENV, "RECONCILER_PG_DSN": pg_database}
    _pg_config(write)
    assert run(APPLY, env).exit_code == 0
    assert not (directory / "state").exists()
    assert run(["-C", ".", "plan", "--detailed-exitcode"], env).exit_code == 0
    listed = run(["-C", ".", "state", "list"], env)
    assert "installation.acme.ado\thealthy\t" in listed.stdout
    pulled = run(["-C", ".", "state", "pull", "copy"], env)
    assert pulled.exit_code == 0, pulled.stderr
    copy = json.loads((directory / "copy" / "default.json").read_text())
    assert (directory / "copy" / "default.credentials" / "installation.acme.ado.json").exists()

    import psycopg

    other = pg_database.replace("dbname=", "dbname=x")
    with psycopg.connect(pg_database.rsplit("dbname=", 1)[0] + "dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {other.rsplit('dbname=', 1)[1]}")
    env2 = {**env, "RECONCILER_PG_DSN": other}
    pushed = run(["-C", ".", "state", "push", "copy"], env2)
    assert pushed.exit_code == 0, pushed.stderr
    assert f"lineage {copy['lineage']} serial {copy['serial']}" in pushed.stdout
    assert run(["-C", ".", "plan", "--detailed-exitcode"], env2).exit_code == 0
    write(TWO.replace("Platform", "Web"), extra="backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n")
    assert run(APPLY, env2).exit_code == 0  # tokens came along and open


def test_postgres_backend_refuses_a_generated_key(team, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    """Shared state never uses a key file: without RECONCILER_STATE_KEY/PASSPHRASE apply refuses to start."""
    _sandbox, directory, write, _browser = team
    _pg_config(write)
    result = run(APPLY, {**ENV, "RECONCILER_PG_DSN": pg_database})
    assert result.exit_code == 1 and "needs an explicit key" in result.stderr
    assert not list(directory.rglob("*.key"))


def test_two_concurrent_applies_on_postgres(team, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    """Two apply processes on one PostgreSQL state: one proceeds, the other fails at once naming the holder."""
    _sandbox, directory, write, _browser = team
    _pg_config(write)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") or k == "RECONCILER_CACHE_DIR"},
        **TEAM_ENV,
        "RECONCILER_PG_DSN": pg_database,
        "BROWSER": f"{sys.executable} -c 'import time; time.sleep(3)' %s",
    }
    command = [sys.executable, "-m", "reconciler", "-C", str(directory), "apply", "--auto-approve"]
    command += ["--auth-mode", "browser", "--auth-timeout", "4"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    time.sleep(1.5)  # the first holds the lock while its "browser" sleeps
    second = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=30)
    first.communicate(timeout=30)
    assert second.returncode == 1
    assert f"locked: held by pid {first.pid}" in second.stderr and "operation: apply" in second.stderr
