"""Key rotation (`reconciler state rekey`): every credential re-sealed under a new key, on local and PostgreSQL
state; wrong, missing or identical keys refused or a no-op with nothing written; an interrupted rotation stays
readable with the two keys, is refused by other commands, and is finished by running the command again (killed
with SIGKILL at every point: tests/reliability/test_crash_rekey.py). Keys, passphrases and tokens never appear in
any output."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reconciler.tokens.store import LocalCredentialStore
from tests.conftest import run, snapshot
from tests.rekey_support import (
    NEW_KEY,
    NEW_PASSPHRASE,
    OLD_KEY,
    OLD_PASSPHRASE,
    OTHER_KEY,
    REKEY,
    THREE,
    apply_three,
    apply_three_on_postgres,
    file_key,
    key_of,
    no_secrets,
    one_line_error,
    pg_kids,
    record_kids,
    tokens_under,
    works,
)
from tests.sandbox_support import APPLY, ENV


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    return apply_three(sandbox_config)


@pytest.fixture
def on_postgres(sandbox_config, pg_database: str):  # type: ignore[no-untyped-def]
    return apply_three_on_postgres(sandbox_config, pg_database)


# -- local state ---------------------------------------------------------------------------------------------------


def test_a_generated_key_file_is_rotated_and_the_old_one_kept(applied) -> None:  # type: ignore[no-untyped-def]
    """Without options, local state keyed by its key file gets a fresh key file; every record is re-sealed under
    it, the old key is kept as default.key.old (git-ignored), and the tokens still work."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = file_key(state / "default.key")
    before = tokens_under(directory, key_of(old))
    result = run(REKEY, ENV)
    assert result.exit_code == 0, result.stderr
    new = file_key(state / "default.key")
    assert (
        new != old and file_key(state / "default.key.old") == old and not (state / "default.key.new").exists()
    )
    assert (state / "default.key").stat().st_mode & 0o777 == 0o600
    assert (state / "default.key.old").stat().st_mode & 0o777 == 0o600
    assert {"*.key", "*.key.*"} <= set((state / ".gitignore").read_text().splitlines())
    new_kid = key_of(new).key_id
    assert len(record_kids(directory)) == 3 and all(k == {new_kid} for k in record_kids(directory).values())
    assert f"Re-sealed 3 credential records under key id {new_kid}." in result.stdout
    assert "Rotation complete" in result.stdout and "default.key.old" in result.stdout
    after = tokens_under(directory, key_of(new))
    assert {a: t.refresh_token for a, t in after.items()} == {a: t.refresh_token for a, t in before.items()}
    assert all(works(sandbox, t) for t in after.values())
    no_secrets(sandbox, result.stdout, result.stderr, extra=(old, new))
    for command in (
        ["-C", ".", "plan", "--detailed-exitcode"],
        ["-C", ".", "refresh"],
        ["-C", ".", "state", "show", "installation.acme.ado"],
    ):
        done = run(command, ENV)
        assert done.exit_code == 0, (command, done.stderr)
        no_secrets(sandbox, done.stdout, done.stderr, extra=(old, new))
    assert re.search(
        r"^status +healthy$",
        run(["-C", ".", "state", "show", "installation.acme.ado"], ENV).stdout,
        re.MULTILINE,
    )


def test_the_old_key_alone_is_a_clear_error_after_the_rotation(applied) -> None:  # type: ignore[no-untyped-def]
    """After a rotation the old key opens nothing: refresh and apply fail naming both key ids, state show reports
    the tokens unreadable and why; nothing is written."""
    sandbox, directory, write = applied
    old = file_key(directory / "state" / "default.key")
    assert run(REKEY, ENV).exit_code == 0
    new_kid = key_of(file_key(directory / "state" / "default.key")).key_id
    before = snapshot(directory / "state")
    with_old = {**ENV, "RECONCILER_STATE_KEY": old}
    one_line_error(run(["-C", ".", "plan", "--refresh"], with_old), f"sealed with key id {new_kid}")
    refreshed = run(["-C", ".", "refresh"], with_old)
    one_line_error(refreshed, f"credentials are sealed with key id {new_kid}, but the current state key")
    assert "state rekey" in refreshed.stderr  # the hint says which key is wanted after a rotation
    write(THREE.replace("Platform", "Web"))
    one_line_error(run(APPLY, with_old), f"sealed with key id {new_kid}")
    shown = run(["-C", ".", "state", "show", "installation.acme.ado"], with_old)
    assert (
        re.search(r"^status +error$", shown.stdout, re.MULTILINE)
        and f"sealed with key id {new_kid}" in shown.stdout
    )
    assert snapshot(directory / "state") == before
    no_secrets(sandbox, refreshed.stderr, shown.stdout, extra=(old,))


def test_moving_from_the_key_file_to_a_team_key(applied) -> None:  # type: ignore[no-untyped-def]
    """--new-key-env re-seals under the key in that variable and retires the key file (kept as default.key.old):
    afterwards RECONCILER_STATE_KEY with the new key is all that is needed, and without it the error says so."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = file_key(state / "default.key")
    result = run([*REKEY, "--new-key-env", "NEW_STATE_KEY"], {**ENV, "NEW_STATE_KEY": NEW_KEY})
    assert result.exit_code == 0, result.stderr
    assert not (state / "default.key").exists() and file_key(state / "default.key.old") == old
    assert "set RECONCILER_STATE_KEY to the value of NEW_STATE_KEY" in result.stdout
    assert all(k == {key_of(NEW_KEY).key_id} for k in record_kids(directory).values())
    team = {**ENV, "RECONCILER_STATE_KEY": NEW_KEY}
    assert run(["-C", ".", "refresh"], team).exit_code == 0
    assert run(["-C", ".", "plan", "--detailed-exitcode"], team).exit_code == 0
    one_line_error(run(["-C", ".", "refresh"], ENV), "holds sealed credentials, but there is no state key")
    assert not (state / "default.key").exists()  # no key was generated over sealed credentials
    no_secrets(sandbox, result.stdout, result.stderr, extra=(old,))


def test_a_passphrase_is_rotated_to_another_passphrase(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """RECONCILER_STATE_PASSPHRASE to --new-passphrase-env: the new passphrase opens everything (same salt), the
    old one is refused."""
    sandbox, _, write, _ = sandbox_config
    write(THREE)
    assert run(APPLY, {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE}).exit_code == 0
    env = {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE, "NEW_PASS": NEW_PASSPHRASE}
    result = run([*REKEY, "--new-passphrase-env", "NEW_PASS"], env)
    assert result.exit_code == 0, result.stderr
    assert "set RECONCILER_STATE_PASSPHRASE to the value of NEW_PASS" in result.stdout
    assert run(["-C", ".", "refresh"], {**ENV, "RECONCILER_STATE_PASSPHRASE": NEW_PASSPHRASE}).exit_code == 0
    one_line_error(
        run(["-C", ".", "refresh"], {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE}),
        "credentials are sealed with key id",
    )
    no_secrets(sandbox, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--new-key-env", "NEW_STATE_KEY"],
            {"RECONCILER_STATE_KEY": OTHER_KEY, "NEW_STATE_KEY": NEW_KEY},
            "which is neither the current key",
        ),
        (["--new-key-env", "NEW_STATE_KEY"], {}, "NEW_STATE_KEY is not set"),
        (
            ["--new-key-env", "NEW_STATE_KEY"],
            {"NEW_STATE_KEY": "not base64!"},
            "NEW_STATE_KEY is not valid base64",
        ),
        (
            ["--new-key-env", "NEW_STATE_KEY"],
            {"NEW_STATE_KEY": base64.b64encode(b"short").decode()},
            "NEW_STATE_KEY must decode to 32 bytes",
        ),
        (["--new-passphrase-env", "NEW_PASS"], {}, "NEW_PASS is not set"),
        (["--new-key-env", "A", "--new-passphrase-env", "B"], {"A": NEW_KEY, "B": "x"}, "not both"),
        (["--new-key-env", NEW_KEY], {}, "takes the name of an environment variable"),
        (["--new-passphrase-env", "hunter2"], {}, "takes the name of an environment variable"),
        (["--new-key-env", ""], {}, "takes the name of an environment variable"),
        ([], {"RECONCILER_STATE_KEY": OTHER_KEY}, "comes from RECONCILER_STATE_KEY, not from a key file"),
        (
            ["--new-key-env", "NEW_STATE_KEY"],
            {"RECONCILER_STATE_KEY": "%%%", "NEW_STATE_KEY": NEW_KEY},
            "RECONCILER_STATE_KEY is not valid base64",
        ),
    ],
    ids=[
        "wrong-current-key",
        "unset",
        "malformed",
        "short",
        "unset-passphrase",
        "both",
        "generate-from-env",
        "malformed-current",
        "value-for-name",
        "passphrase-for-name",
        "empty-name",
    ],
)
def test_a_wrong_or_missing_key_is_one_line_and_writes_nothing(applied, args, env, message) -> None:  # type: ignore[no-untyped-def]
    """Each bad key or option: a one-line error naming the problem (never the value), exit 1, no file changed."""
    sandbox, directory, _ = applied
    before = snapshot(directory)
    result = run([*REKEY, *args], {**ENV, **env})
    one_line_error(result, message)
    assert snapshot(directory) == before
    no_secrets(sandbox, result.stdout, result.stderr, extra=(file_key(directory / "state" / "default.key"), "hunter2"))


def test_rotating_to_the_current_key_is_a_no_op(applied) -> None:  # type: ignore[no-untyped-def]
    """A new key equal to the current one: a message, exit 0, nothing written (the key file is not retired)."""
    sandbox, directory, _ = applied
    current = file_key(directory / "state" / "default.key")
    before = snapshot(directory)
    result = run([*REKEY, "--new-key-env", "SAME"], {**ENV, "SAME": current})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Nothing to re-key: every credential is sealed with key id")
    assert snapshot(directory) == before
    no_secrets(sandbox, result.stdout, result.stderr, extra=(current,))


def test_a_second_rotation_waits_for_the_old_key_file_to_be_removed(applied) -> None:  # type: ignore[no-untyped-def]
    """default.key.old is never overwritten: run again, the rotation says there is nothing to do and that the old
    key file must go first (what a rerun after a kill at the very end also says); a variable's key likewise
    waits; once it is gone a new rotation goes ahead."""
    sandbox, directory, _ = applied
    assert run(REKEY, ENV).exit_code == 0
    before = snapshot(directory)
    again = run(REKEY, ENV)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.startswith("Nothing to re-key") and "default.key.old holds the key" in again.stdout
    one_line_error(
        run([*REKEY, "--new-key-env", "N"], {**ENV, "N": NEW_KEY}), "holds the key retired by an earlier"
    )
    assert snapshot(directory) == before
    (directory / "state" / "default.key.old").unlink()
    assert run(REKEY, ENV).exit_code == 0
    assert all(
        works(sandbox, t)
        for t in tokens_under(directory, key_of(file_key(directory / "state" / "default.key"))).values()
    )


def test_a_pending_authorization_is_re_sealed_too(applied) -> None:  # type: ignore[no-untyped-def]
    """A deferred authorization's sealed verifier moves to the new key and still completes."""
    _, directory, _ = applied
    deferred = run(
        [*APPLY[:3], "--auto-approve", "--auth-mode", "defer", "--replace", "installation.globex.ado"], ENV
    )
    assert deferred.exit_code == 3, deferred.stderr
    assert run(REKEY, ENV).exit_code == 0
    new_kid = key_of(file_key(directory / "state" / "default.key")).key_id
    assert record_kids(directory)["installation.globex.ado"] == {new_kid}
    record = json.loads(
        (directory / "state" / "default.credentials" / "installation.globex.ado.json").read_text()
    )
    assert "pending" in record
    done = run(["-C", ".", "authorize", "--auth-mode", "browser"], ENV)
    assert done.exit_code == 0, done.stderr


# -- an interrupted rotation -----------------------------------------------------------------------------------


def _interrupted(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], after: int) -> None:
    """Run the rotation, stopped (as by Ctrl-C) after `after` records were re-sealed."""
    done = []
    real = LocalCredentialStore.put

    def put(self, *a, **k):  # type: ignore[no-untyped-def]
        if len(done) == after:
            raise KeyboardInterrupt
        done.append(1)
        return real(self, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(LocalCredentialStore, "put", put)
        assert run(args, env).exit_code == 1


@pytest.mark.parametrize("mode", ["key file", "variable"])
def test_an_interrupted_rotation_is_refused_by_other_commands_and_finished_by_a_rerun(
    applied, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:  # type: ignore[no-untyped-def]
    """Stopped after one of three records: the records open with the old or the new key, refresh and apply say
    the rotation is unfinished (nothing written), and the same command run again finishes it."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = file_key(state / "default.key")
    args, env = (
        (REKEY, ENV) if mode == "key file" else ([*REKEY, "--new-key-env", "N"], {**ENV, "N": NEW_KEY})
    )
    _interrupted(monkeypatch, args, env, after=1)
    new = file_key(state / "default.key.new") if mode == "key file" else NEW_KEY
    kids = record_kids(directory)
    assert sorted(len(k) for k in kids.values()) == [1, 1, 1]
    assert {next(iter(k)) for k in kids.values()} == {key_of(old).key_id, key_of(new).key_id}
    before = snapshot(directory)
    refused = run(["-C", ".", "refresh"], ENV)
    one_line_error(refused, "a key rotation is unfinished")
    assert "state rekey" in refused.stderr
    assert snapshot(directory) == before
    finished = run(args, env)
    assert finished.exit_code == 0, finished.stderr
    assert "(1 already were: an interrupted rotation finished)" in finished.stdout
    assert all(k == {key_of(new).key_id} for k in record_kids(directory).values())
    assert all(works(sandbox, t) for t in tokens_under(directory, key_of(new)).values())
    after = {**ENV, "RECONCILER_STATE_KEY": NEW_KEY} if mode == "variable" else ENV
    assert run(["-C", ".", "plan", "--detailed-exitcode"], after).exit_code == 0
    assert run(["-C", ".", "refresh"], after).exit_code == 0


# -- kill -9 at every point where the rotation changes a file or a row ---------------------------------------------

# -- PostgreSQL -----------------------------------------------------------------------------------------------


def test_a_postgres_state_is_rotated_to_a_new_team_key(on_postgres) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL: every row re-sealed under the new key; refresh, plan and state show work with it alone, the
    old key is a clear error; no key file is ever written; a generated key is refused (shared state)."""
    sandbox, directory, env, dsn = on_postgres
    refused = run(REKEY, {**env, "RECONCILER_STATE_KEY": OLD_KEY})
    one_line_error(refused, "shared state keeps no key file")
    result = run(
        [*REKEY, "--new-key-env", "RECONCILER_NEW_STATE_KEY"],
        {**env, "RECONCILER_STATE_KEY": OLD_KEY, "RECONCILER_NEW_STATE_KEY": NEW_KEY},
    )
    assert result.exit_code == 0, result.stderr
    assert (
        f"The old key (id {key_of(OLD_KEY).key_id}, from RECONCILER_STATE_KEY) is no longer needed"
        in result.stdout
    )
    assert set(map(frozenset, pg_kids(dsn).values())) == {frozenset({key_of(NEW_KEY).key_id})}
    assert len(pg_kids(dsn)) == 3
    new = {**env, "RECONCILER_STATE_KEY": NEW_KEY}
    for command in (
        ["-C", ".", "refresh"],
        ["-C", ".", "plan", "--detailed-exitcode"],
        ["-C", ".", "state", "show", "installation.acme.ado"],
    ):
        done = run(command, new)
        assert done.exit_code == 0, (command, done.stderr)
    assert "healthy" in run(["-C", ".", "state", "list"], new).stdout
    one_line_error(
        run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": OLD_KEY}),
        f"credentials are sealed with key id {key_of(NEW_KEY).key_id}",
    )
    again = run(
        [*REKEY, "--new-key-env", "RECONCILER_NEW_STATE_KEY"], {**new, "RECONCILER_NEW_STATE_KEY": NEW_KEY}
    )
    assert again.exit_code == 0 and again.stdout.startswith("Nothing to re-key")
    assert not list(directory.rglob("*.key*"))
    no_secrets(sandbox, result.stdout, result.stderr, refused.stderr, again.stdout, extra=(dsn,))


# -- README: the team setup, as printed ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _team_setup() -> tuple[list[str], str]:
    """README's "Team setup with PostgreSQL" section (with its key rotation): the ```sh blocks in order, and the
    ```yaml block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Team setup with PostgreSQL\n", 1)[1].split("\n## ", 1)[0]
    shell = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    (yaml,) = re.findall(r"^```yaml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    return shell, yaml


def test_the_team_setup_shows_docker_initdb_rekey_dsn_push_and_rotation() -> None:
    """The section has the blocks the next test runs, and the Docker line creates what the DSN names."""
    shell, yaml = _team_setup()
    docker, server, rekey, dsn, push, rotate = shell
    assert docker.startswith("docker run") and all(
        f"-e {name}" in docker for name in ("POSTGRES_USER=reconciler", "POSTGRES_PASSWORD=change-me", "POSTGRES_DB=reconciler")
    )
    assert "127.0.0.1:5432:5432" in docker and "postgresql://reconciler:change-me@127.0.0.1:5432/reconciler" in dsn
    assert "initdb" in server and "state rekey --new-key-env" in rekey and "state push state/" in push
    assert "state rekey" in rotate and "dsn: ${env:RECONCILER_PG_DSN}" in yaml


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15 is not installed")
def test_the_team_setup_in_readme_works_as_printed(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """README's PostgreSQL setup run as printed (only the port moved to a free one): a server started with its
    initdb/pg_ctl/createdb lines, then — on local state sealed with a generated key file — its rekey to a team key,
    the backend switch (its YAML), the DSN, state push, plan, and the rotation of the team key with refresh."""
    from tests.sandbox_support import free_port

    sandbox, directory, write, _ = sandbox_config
    write(THREE)
    assert run(APPLY, ENV).exit_code == 0
    port = free_port()
    _, server, rekey, dsn, push, rotate = (block.replace("5432", str(port)) for block in _team_setup()[0])
    home = Path(tempfile.mkdtemp(prefix="reconciler-pg-home-"))  # outside pytest's root-only directory
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    pg_env = {"HOME": str(home), "PATH": f"{PG_BIN}{os.pathsep}{os.environ['PATH']}", "LANG": "C.UTF-8"}
    started = subprocess.run(_as_postgres(["env", *(f"{k}={v}" for k, v in pg_env.items()), "bash", "-ec", server]),
                             cwd=home, capture_output=True, text=True, timeout=120, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yaml = _team_setup()[1]
        script = "\n".join([rekey, f"cat >> reconciler.yaml <<'YAML'\n{yaml}YAML", dsn, push, rotate])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "ENTRA_", "RECONCILER_"))}
        env |= {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
                "RECONCILER_CACHE_DIR": os.environ["RECONCILER_CACHE_DIR"]}
        done = subprocess.run(["bash", "-ec", script], cwd=directory, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("Rotation complete") == 2 and "Pushed lineage" in done.stdout
        assert "No changes." in done.stdout and f"127.0.0.1:{port}" not in done.stdout
        assert "change-me" not in done.stdout + done.stderr
        assert not (directory / "state" / "default.key").exists() and (directory / "state" / "default.key.old").exists()
        no_secrets(sandbox, done.stdout, done.stderr)
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(home / "reconciler-pg"), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
