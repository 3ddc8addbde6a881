"""Key rotation (`reconciler state rekey`): every credential re-sealed under a new key, on local and PostgreSQL
state; wrong, missing or identical keys refused or a no-op with nothing written; an interrupted rotation — also
one killed with SIGKILL at each point where it changes a file or a row — stays readable with the two keys, is
refused by other commands, and is finished by running the command again. Keys, passphrases and tokens never
appear in any output."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.crypto import StateKey
from reconciler.sandbox import SandboxServer
from reconciler.state import LocalBackend
from reconciler.state.credentials import LocalCredentialStore, TokenSet, Vault
from reconciler.state.model import InstallationRecord
from tests.conftest import run, snapshot
from tests.sandbox_support import APPLY, ENV, all_text_under, installation

OLD_KEY = base64.b64encode(b"old-team-key-0123456789abcdef012").decode()
NEW_KEY = base64.b64encode(b"new-team-key-0123456789abcdef012").decode()
OTHER_KEY = base64.b64encode(b"another-key-0123456789abcdef0123").decode()
OLD_PASSPHRASE = "correct horse battery staple old"
NEW_PASSPHRASE = "tr0ub4dor and 3 more new words"
THREE = (
    installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"])
    + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full", "vso.project"])
    + installation("initech", "ado", "entra", "acme-org", "Web", ["vso.work_full", "vso.project"])
)
REKEY = ["-C", ".", "state", "rekey"]
SECRET_VALUES = [OLD_KEY, NEW_KEY, OTHER_KEY, OLD_PASSPHRASE, NEW_PASSPHRASE]


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """Three authorized installations in local state keyed by a generated key file."""
    sandbox, directory, write, browser = sandbox_config
    write(THREE)
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr
    return sandbox, directory, write


def _key_of(text: str) -> StateKey:
    return StateKey(base64.b64decode(text.strip()), "test")


def _file_key(path: Path) -> str:
    return path.read_text().strip()


def _kids(directory: Path) -> dict[str, set[str]]:
    """Each credential record's key ids (of every blob it holds)."""
    found = {}
    for path in sorted((directory / "state" / "default.credentials").glob("*.json")):
        record = json.loads(path.read_text())
        found[path.stem] = {record[p]["kid"] for p in ("tokens", "pending", "staged") if p in record}
    return found


def _tokens(directory: Path, key: StateKey, only: set[str] | None = None) -> dict[str, TokenSet]:
    """The tokens every authorized installation's record (of those in `only`) opens to under `key`."""
    backend = LocalBackend(directory / "state", "default")
    doc = backend.read()
    assert doc is not None
    vault = Vault(LocalCredentialStore(directory / "state", "default"), key, lineage=doc.lineage, environment="default")
    opened = {}
    for address, record in doc.resources.items():
        if isinstance(record, InstallationRecord) and record.status == "authorized" and (only is None or address in only):
            sealed = vault.record(address)
            assert sealed is not None
            opened[address] = vault.current_tokens(address, record.client_id, sealed)
    return opened


def _works(sandbox: SandboxServer, tokens: TokenSet) -> bool:
    """The sandbox still honours the refresh token (its grant is live)."""
    assert tokens.refresh_token is not None
    with sandbox.provider.lock:
        grant = sandbox.provider.by_refresh.get(tokens.refresh_token.get_secret_value())
    return grant is not None and not grant.revoked


def _no_secrets(sandbox: SandboxServer, *texts: str, extra: tuple[str, ...] = ()) -> None:
    """No key, passphrase or token in `texts` (nor a token in the state files, unsealed)."""
    haystack = "\n".join(texts)
    for value in (*SECRET_VALUES, *extra, *sandbox.provider.issued):
        assert value not in haystack, f"a secret ({value[:6]}...) was printed"


def _one_line_error(result, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stderr


# -- local state ---------------------------------------------------------------------------------------------------


def test_a_generated_key_file_is_rotated_and_the_old_one_kept(applied) -> None:  # type: ignore[no-untyped-def]
    """Without options, local state keyed by its key file gets a fresh key file; every record is re-sealed under
    it, the old key is kept as default.key.old (git-ignored), and the tokens still work."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = _file_key(state / "default.key")
    before = _tokens(directory, _key_of(old))
    result = run(REKEY, ENV)
    assert result.exit_code == 0, result.stderr
    new = _file_key(state / "default.key")
    assert new != old and _file_key(state / "default.key.old") == old and not (state / "default.key.new").exists()
    assert (state / "default.key").stat().st_mode & 0o777 == 0o600
    assert (state / "default.key.old").stat().st_mode & 0o777 == 0o600
    assert {"*.key", "*.key.*"} <= set((state / ".gitignore").read_text().splitlines())
    new_kid = _key_of(new).key_id
    assert len(_kids(directory)) == 3 and all(k == {new_kid} for k in _kids(directory).values())
    assert f"Re-sealed 3 credential records under key id {new_kid}." in result.stdout
    assert "Rotation complete" in result.stdout and "default.key.old" in result.stdout
    after = _tokens(directory, _key_of(new))
    assert {a: t.refresh_token for a, t in after.items()} == {a: t.refresh_token for a, t in before.items()}
    assert all(_works(sandbox, t) for t in after.values())
    _no_secrets(sandbox, result.stdout, result.stderr, extra=(old, new))
    for command in (["-C", ".", "plan", "--detailed-exitcode"], ["-C", ".", "refresh"],
                    ["-C", ".", "state", "show", "installation.acme.ado"]):
        done = run(command, ENV)
        assert done.exit_code == 0, (command, done.stderr)
        _no_secrets(sandbox, done.stdout, done.stderr, extra=(old, new))
    assert re.search(r"^status +healthy$", run(["-C", ".", "state", "show", "installation.acme.ado"], ENV).stdout, re.M)


def test_the_old_key_alone_is_a_clear_error_after_the_rotation(applied) -> None:  # type: ignore[no-untyped-def]
    """After a rotation the old key opens nothing: refresh and apply fail naming both key ids, state show reports
    the tokens unreadable and why; nothing is written."""
    sandbox, directory, write = applied
    old = _file_key(directory / "state" / "default.key")
    assert run(REKEY, ENV).exit_code == 0
    new_kid = _key_of(_file_key(directory / "state" / "default.key")).key_id
    before = snapshot(directory / "state")
    with_old = {**ENV, "RECONCILER_STATE_KEY": old}
    refreshed = run(["-C", ".", "refresh"], with_old)
    _one_line_error(refreshed, f"credentials are sealed with key id {new_kid}, but the current state key")
    assert "state rekey" in refreshed.stderr  # the hint says which key is wanted after a rotation
    write(THREE.replace("Platform", "Web"))
    _one_line_error(run(APPLY, with_old), f"sealed with key id {new_kid}")
    shown = run(["-C", ".", "state", "show", "installation.acme.ado"], with_old)
    assert re.search(r"^status +error$", shown.stdout, re.M) and f"sealed with key id {new_kid}" in shown.stdout
    assert snapshot(directory / "state") == before
    _no_secrets(sandbox, refreshed.stderr, shown.stdout, extra=(old,))


def test_moving_from_the_key_file_to_a_team_key(applied) -> None:  # type: ignore[no-untyped-def]
    """--new-key-env re-seals under the key in that variable and retires the key file (kept as default.key.old):
    afterwards RECONCILER_STATE_KEY with the new key is all that is needed, and without it the error says so."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = _file_key(state / "default.key")
    result = run([*REKEY, "--new-key-env", "NEW_STATE_KEY"], {**ENV, "NEW_STATE_KEY": NEW_KEY})
    assert result.exit_code == 0, result.stderr
    assert not (state / "default.key").exists() and _file_key(state / "default.key.old") == old
    assert "set RECONCILER_STATE_KEY to the value of NEW_STATE_KEY" in result.stdout
    assert all(k == {_key_of(NEW_KEY).key_id} for k in _kids(directory).values())
    team = {**ENV, "RECONCILER_STATE_KEY": NEW_KEY}
    assert run(["-C", ".", "refresh"], team).exit_code == 0
    assert run(["-C", ".", "plan", "--detailed-exitcode"], team).exit_code == 0
    _one_line_error(run(["-C", ".", "refresh"], ENV), "holds sealed credentials, but there is no state key")
    assert not (state / "default.key").exists()  # no key was generated over sealed credentials
    _no_secrets(sandbox, result.stdout, result.stderr, extra=(old,))


def test_a_passphrase_is_rotated_to_another_passphrase(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """RECONCILER_STATE_PASSPHRASE to --new-passphrase-env: the new passphrase opens everything (same salt), the
    old one is refused."""
    sandbox, directory, write, browser = sandbox_config
    write(THREE)
    assert run(APPLY, {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE}).exit_code == 0
    env = {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE, "NEW_PASS": NEW_PASSPHRASE}
    result = run([*REKEY, "--new-passphrase-env", "NEW_PASS"], env)
    assert result.exit_code == 0, result.stderr
    assert "set RECONCILER_STATE_PASSPHRASE to the value of NEW_PASS" in result.stdout
    assert run(["-C", ".", "refresh"], {**ENV, "RECONCILER_STATE_PASSPHRASE": NEW_PASSPHRASE}).exit_code == 0
    _one_line_error(run(["-C", ".", "refresh"], {**ENV, "RECONCILER_STATE_PASSPHRASE": OLD_PASSPHRASE}),
                    "credentials are sealed with key id")
    _no_secrets(sandbox, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--new-key-env", "NEW_STATE_KEY"], {"RECONCILER_STATE_KEY": OTHER_KEY, "NEW_STATE_KEY": NEW_KEY},
         "which is neither the current key"),
        (["--new-key-env", "NEW_STATE_KEY"], {}, "NEW_STATE_KEY is not set"),
        (["--new-key-env", "NEW_STATE_KEY"], {"NEW_STATE_KEY": "not base64!"}, "NEW_STATE_KEY is not valid base64"),
        (["--new-key-env", "NEW_STATE_KEY"], {"NEW_STATE_KEY": base64.b64encode(b"short").decode()},
         "NEW_STATE_KEY must decode to 32 bytes"),
        (["--new-passphrase-env", "NEW_PASS"], {}, "NEW_PASS is not set"),
        (["--new-key-env", "A", "--new-passphrase-env", "B"], {"A": NEW_KEY, "B": "x"}, "not both"),
        ([], {"RECONCILER_STATE_KEY": OTHER_KEY}, "comes from RECONCILER_STATE_KEY, not from a key file"),
        (["--new-key-env", "NEW_STATE_KEY"], {"RECONCILER_STATE_KEY": "%%%", "NEW_STATE_KEY": NEW_KEY},
         "RECONCILER_STATE_KEY is not valid base64"),
    ],
    ids=["wrong-current-key", "unset", "malformed", "short", "unset-passphrase", "both", "generate-from-env",
         "malformed-current"],
)
def test_a_wrong_or_missing_key_is_one_line_and_writes_nothing(applied, args, env, message) -> None:  # type: ignore[no-untyped-def]
    """Each bad key or option: a one-line error naming the problem (never the value), exit 1, no file changed."""
    sandbox, directory, _ = applied
    before = snapshot(directory)
    result = run([*REKEY, *args], {**ENV, **env})
    _one_line_error(result, message)
    assert snapshot(directory) == before
    _no_secrets(sandbox, result.stdout, result.stderr, extra=(_file_key(directory / "state" / "default.key"),))


def test_rotating_to_the_current_key_is_a_no_op(applied) -> None:  # type: ignore[no-untyped-def]
    """A new key equal to the current one: a message, exit 0, nothing written (the key file is not retired)."""
    sandbox, directory, _ = applied
    current = _file_key(directory / "state" / "default.key")
    before = snapshot(directory)
    result = run([*REKEY, "--new-key-env", "SAME"], {**ENV, "SAME": current})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Nothing to re-key: every credential is sealed with key id")
    assert snapshot(directory) == before
    _no_secrets(sandbox, result.stdout, result.stderr, extra=(current,))


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
    _one_line_error(run([*REKEY, "--new-key-env", "N"], {**ENV, "N": NEW_KEY}), "holds the key retired by an earlier")
    assert snapshot(directory) == before
    (directory / "state" / "default.key.old").unlink()
    assert run(REKEY, ENV).exit_code == 0
    assert all(_works(sandbox, t) for t in _tokens(directory, _key_of(_file_key(directory / "state" / "default.key"))).values())


def test_a_pending_authorization_is_re_sealed_too(applied) -> None:  # type: ignore[no-untyped-def]
    """A deferred authorization's sealed verifier moves to the new key and still completes."""
    sandbox, directory, _ = applied
    deferred = run([*APPLY[:3], "--auto-approve", "--auth-mode", "defer", "--replace", "installation.globex.ado"], ENV)
    assert deferred.exit_code == 3, deferred.stderr
    assert run(REKEY, ENV).exit_code == 0
    new_kid = _key_of(_file_key(directory / "state" / "default.key")).key_id
    assert _kids(directory)["installation.globex.ado"] == {new_kid}
    record = json.loads((directory / "state" / "default.credentials" / "installation.globex.ado.json").read_text())
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
    old = _file_key(state / "default.key")
    args, env = (REKEY, ENV) if mode == "key file" else ([*REKEY, "--new-key-env", "N"], {**ENV, "N": NEW_KEY})
    _interrupted(monkeypatch, args, env, after=1)
    new = _file_key(state / "default.key.new") if mode == "key file" else NEW_KEY
    kids = _kids(directory)
    assert sorted(len(k) for k in kids.values()) == [1, 1, 1]
    assert {next(iter(k)) for k in kids.values()} == {_key_of(old).key_id, _key_of(new).key_id}
    before = snapshot(directory)
    refused = run(["-C", ".", "refresh"], ENV)
    _one_line_error(refused, "a key rotation is unfinished")
    assert "state rekey" in refused.stderr
    assert snapshot(directory) == before
    finished = run(args, env)
    assert finished.exit_code == 0, finished.stderr
    assert "(1 already were: an interrupted rotation finished)" in finished.stdout
    assert all(k == {_key_of(new).key_id} for k in _kids(directory).values())
    assert all(_works(sandbox, t) for t in _tokens(directory, _key_of(new)).values())
    after = {**ENV, "RECONCILER_STATE_KEY": NEW_KEY} if mode == "variable" else ENV
    assert run(["-C", ".", "plan", "--detailed-exitcode"], after).exit_code == 0
    assert run(["-C", ".", "refresh"], after).exit_code == 0


# -- kill -9 at every point where the rotation changes a file or a row ---------------------------------------------

DRIVER = """
import os, signal, sys
from reconciler.state.postgres import PostgresCredentialStore
kill_at, seen = int(os.environ["KILL_AT"]), [0]
def point():
    seen[0] += 1
    if seen[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
def around(real):
    def call(*args, **kwargs):
        point()
        result = real(*args, **kwargs)
        point()
        return result
    return call
for name in ("replace", "rename", "link", "unlink"):  # every change a local rotation makes to a file
    setattr(os, name, around(getattr(os, name)))
for name in ("put", "delete"):  # every change a PostgreSQL rotation makes to a row (one statement each)
    setattr(PostgresCredentialStore, name, around(getattr(PostgresCredentialStore, name)))
from reconciler.cli import main
sys.argv = ["reconciler", *sys.argv[1:]]
main()
"""


def _killed_run(directory: Path, args: list[str], env: dict[str, str], kill_at: int) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that SIGKILLs itself just before or after its `kill_at`-th change (0: never)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "ENTRA_", "RECONCILER_"))}
    full = {**base, **env, "KILL_AT": str(kill_at), "RECONCILER_CACHE_DIR": os.environ["RECONCILER_CACHE_DIR"]}
    return subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=directory, env=full, capture_output=True,
                          text=True, timeout=120, check=False)


def _kill_everywhere(directory: Path, args: list[str], env: dict[str, str], check) -> int:  # type: ignore[no-untyped-def]
    """For kill points 1, 2, ...: a copy of the state before the rotation, the rotation killed there, `check`
    (the invariants), then the command run again to finish; until a run is not killed. Returns the kills."""
    pristine = directory.parent / "pristine-state"
    shutil.copytree(directory / "state", pristine)
    kills = 0
    for kill_at in range(1, 100):
        shutil.rmtree(directory / "state")
        shutil.copytree(pristine, directory / "state")  # modes kept
        killed = _killed_run(directory, args, env, kill_at)
        if killed.returncode == 0:
            return kills
        assert killed.returncode == -9, killed.stderr
        kills += 1
        check(killed, finished=False)
        finished = _killed_run(directory, args, env, 0)
        assert finished.returncode == 0, (kill_at, finished.stderr)
        assert "Rotation complete" in finished.stdout or "Nothing to re-key" in finished.stdout, finished.stdout
        check(finished, finished=True)
    raise AssertionError("the rotation never finished")


@pytest.mark.parametrize("mode", ["key file", "variable"])
def test_kill_9_during_a_local_rotation_at_every_point(applied, mode: str) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL before and after each file change of a rotation (the new key file, each record, the old key's copy,
    the switch): every record opens with the old or the new key, no token is on disk in plain, and a rerun
    finishes — after which the new key opens everything and every token still works."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = _file_key(state / "default.key")
    args, env = (["-C", ".", "state", "rekey"], dict(ENV)) if mode == "key file" else (
        ["-C", ".", "state", "rekey", "--new-key-env", "N"], {**ENV, "N": NEW_KEY})

    def check(process: subprocess.CompletedProcess[str], *, finished: bool) -> None:
        new = NEW_KEY if mode == "variable" else (
            _file_key(state / "default.key.new") if (state / "default.key.new").exists() else _file_key(state / "default.key"))
        kids = {_key_of(old).key_id, _key_of(new).key_id}
        for address, found in _kids(directory).items():
            assert len(found) == 1 and found <= kids, (address, found)
        for key in {old, new}:  # each record opens with the key its id names
            vault_key = _key_of(key)
            records = {a for a, k in _kids(directory).items() if k == {vault_key.key_id}}
            assert _tokens(directory, vault_key, records).keys() == records
        assert not any(token in all_text_under(directory) for token in sandbox.provider.issued)
        _no_secrets(sandbox, process.stdout, process.stderr, extra=(old, new))
        if finished:
            assert all(k == {_key_of(new).key_id} for k in _kids(directory).values())
            assert all(_works(sandbox, t) for t in _tokens(directory, _key_of(new)).values())
            assert len(_tokens(directory, _key_of(new))) == 3

    kills = _kill_everywhere(directory, args, env, check)
    assert kills >= 8  # at least before and after: the new key (file mode), three records, the switch


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


def _pg_kids(dsn: str) -> dict[str, set[str]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT address, tokens, pending, staged FROM reconciler_credentials").fetchall()
    return {row[0]: {blob["kid"] for blob in row[1:] if blob} for row in rows}


@pytest.fixture
def on_postgres(sandbox_config, pg_database: str):  # type: ignore[no-untyped-def]
    """Three authorized installations in PostgreSQL state, sealed with OLD_KEY."""
    sandbox, directory, write, browser = sandbox_config
    write(THREE, extra="backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n")
    env = {**ENV, "RECONCILER_PG_DSN": pg_database}
    assert run(APPLY, {**env, "RECONCILER_STATE_KEY": OLD_KEY}).exit_code == 0
    return sandbox, directory, env, pg_database


def test_a_postgres_state_is_rotated_to_a_new_team_key(on_postgres) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL: every row re-sealed under the new key; refresh, plan and state show work with it alone, the
    old key is a clear error; no key file is ever written; a generated key is refused (shared state)."""
    sandbox, directory, env, dsn = on_postgres
    refused = run(REKEY, {**env, "RECONCILER_STATE_KEY": OLD_KEY})
    _one_line_error(refused, "shared state keeps no key file")
    result = run([*REKEY, "--new-key-env", "RECONCILER_NEW_STATE_KEY"],
                 {**env, "RECONCILER_STATE_KEY": OLD_KEY, "RECONCILER_NEW_STATE_KEY": NEW_KEY})
    assert result.exit_code == 0, result.stderr
    assert f"The old key (id {_key_of(OLD_KEY).key_id}, from RECONCILER_STATE_KEY) is no longer needed" in result.stdout
    assert set(map(frozenset, _pg_kids(dsn).values())) == {frozenset({_key_of(NEW_KEY).key_id})}
    assert len(_pg_kids(dsn)) == 3
    new = {**env, "RECONCILER_STATE_KEY": NEW_KEY}
    for command in (["-C", ".", "refresh"], ["-C", ".", "plan", "--detailed-exitcode"],
                    ["-C", ".", "state", "show", "installation.acme.ado"]):
        done = run(command, new)
        assert done.exit_code == 0, (command, done.stderr)
    assert "healthy" in run(["-C", ".", "state", "list"], new).stdout
    _one_line_error(run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": OLD_KEY}),
                    f"credentials are sealed with key id {_key_of(NEW_KEY).key_id}")
    again = run([*REKEY, "--new-key-env", "RECONCILER_NEW_STATE_KEY"], {**new, "RECONCILER_NEW_STATE_KEY": NEW_KEY})
    assert again.exit_code == 0 and again.stdout.startswith("Nothing to re-key")
    assert not list(directory.rglob("*.key*"))
    _no_secrets(sandbox, result.stdout, result.stderr, refused.stderr, again.stdout, extra=(dsn,))


def test_kill_9_during_a_postgres_rotation_at_every_point(on_postgres) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL before and after each row's re-sealing: the rows open with the old or the new key, other commands
    refuse the half-done state, and a rerun finishes it."""
    sandbox, directory, env, dsn = on_postgres
    args = ["-C", ".", "state", "rekey", "--new-key-env", "N"]
    keyed = {**env, "RECONCILER_STATE_KEY": OLD_KEY, "N": NEW_KEY}
    kids = {_key_of(OLD_KEY).key_id, _key_of(NEW_KEY).key_id}
    kills = 0
    for kill_at in range(1, 100):
        killed = _killed_run(directory, args, keyed, kill_at)
        if killed.returncode == 0:
            break
        assert killed.returncode == -9, killed.stderr
        kills += 1
        found = _pg_kids(dsn)
        assert len(found) == 3 and all(len(k) == 1 and k <= kids for k in found.values()), found
        if len({next(iter(k)) for k in found.values()}) == 2:
            mid = run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": OLD_KEY})
            _one_line_error(mid, "a key rotation is unfinished")
        finished = _killed_run(directory, args, keyed, 0)
        assert finished.returncode == 0, finished.stderr
        assert set(map(frozenset, _pg_kids(dsn).values())) == {frozenset({_key_of(NEW_KEY).key_id})}
        _no_secrets(sandbox, killed.stdout, killed.stderr, finished.stdout, finished.stderr, extra=(dsn,))
        # back to the old key for the next kill point: rotate back, finishing as the user would
        back = _killed_run(directory, args, {**env, "RECONCILER_STATE_KEY": NEW_KEY, "N": OLD_KEY}, 0)
        assert back.returncode == 0, back.stderr
    assert kills >= 6
    done = run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": NEW_KEY})
    assert done.exit_code == 0, done.stderr
