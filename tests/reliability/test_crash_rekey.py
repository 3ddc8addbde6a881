"""Key rotation killed with SIGKILL at every point where it changes a file (local state) or a row (PostgreSQL):
each record opens with the old or the new key, no token is ever on disk in plain, other commands refuse the
half-done state, and running the command again finishes it. Deterministic: the process kills itself just before
or after its N-th change, for N = 1, 2, ... until a run is not killed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run
from tests.rekey_support import (
    NEW_KEY,
    OLD_KEY,
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
from tests.reliability.support_b import counted, figures
from tests.sandbox_support import ENV, all_text_under

AREA = "crash"


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    return apply_three(sandbox_config)


@pytest.fixture
def on_postgres(sandbox_config, pg_database: str):  # type: ignore[no-untyped-def]
    return apply_three_on_postgres(sandbox_config, pg_database)


DRIVER = """
import os, signal, sys
from reconciler.state.postgres_credentials import PostgresCredentialStore
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


def _killed_run(
    directory: Path, args: list[str], env: dict[str, str], kill_at: int
) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that SIGKILLs itself just before or after its `kill_at`-th change (0: never)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "ENTRA_", "RECONCILER_"))}
    full = {
        **base,
        **env,
        "KILL_AT": str(kill_at),
        "RECONCILER_CACHE_DIR": os.environ["RECONCILER_CACHE_DIR"],
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        cwd=directory,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _kill_everywhere(directory: Path, args: list[str], env: dict[str, str], check) -> int:  # type: ignore[no-untyped-def]
    """For kill points 1, 2, ...: a copy of the state before the rotation, the rotation killed there, `check`
    (the invariants), then the command run again to finish; until a run is not killed. Returns the kills."""
    pristine = Path(tempfile.mkdtemp(prefix="rekey-pristine-")) / "state"
    shutil.copytree(directory / "state", pristine)
    for kills, kill_at in enumerate(range(1, 100)):
        shutil.rmtree(directory / "state")
        shutil.copytree(pristine, directory / "state")  # modes kept
        killed = _killed_run(directory, args, env, kill_at)
        if killed.returncode == 0:
            shutil.rmtree(pristine.parent)
            figures.add(AREA, rekey_kills=kills)
            return kills
        assert killed.returncode == -9, killed.stderr
        check(killed, finished=False)
        finished = _killed_run(directory, args, env, 0)
        assert finished.returncode == 0, (kill_at, finished.stderr)
        assert "Rotation complete" in finished.stdout or "Nothing to re-key" in finished.stdout, (
            finished.stdout
        )
        check(finished, finished=True)
    shutil.rmtree(pristine.parent)
    raise AssertionError("the rotation never finished")


@pytest.mark.parametrize("mode", ["key file", "variable"])
@counted(AREA)
def test_kill_9_during_a_local_rotation_at_every_point(applied, mode: str) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL before and after each file change of a rotation (the new key file, each record, the old key's copy,
    the switch): every record opens with the old or the new key, no token is on disk in plain, and a rerun
    finishes — after which the new key opens everything and every token still works."""
    sandbox, directory, _ = applied
    state = directory / "state"
    old = file_key(state / "default.key")
    args, env = (
        (["-C", ".", "state", "rekey"], dict(ENV))
        if mode == "key file"
        else (["-C", ".", "state", "rekey", "--new-key-env", "N"], {**ENV, "N": NEW_KEY})
    )

    def check(process: subprocess.CompletedProcess[str], *, finished: bool) -> None:
        new = (
            NEW_KEY
            if mode == "variable"
            else (
                file_key(state / "default.key.new")
                if (state / "default.key.new").exists()
                else file_key(state / "default.key")
            )
        )
        kids = {key_of(old).key_id, key_of(new).key_id}
        for address, found in record_kids(directory).items():
            assert len(found) == 1 and found <= kids, (address, found)
        for key in {old, new}:  # each record opens with the key its id names
            vault_key = key_of(key)
            records = {a for a, k in record_kids(directory).items() if k == {vault_key.key_id}}
            assert tokens_under(directory, vault_key, records).keys() == records
        assert not any(token in all_text_under(directory) for token in sandbox.provider.issued)
        no_secrets(sandbox, process.stdout, process.stderr, extra=(old, new))
        if not finished and (
            (state / "default.key.new").exists()
            or len(set(map(frozenset, record_kids(directory).values()))) == 2
        ):
            one_line_error(run(["-C", str(directory), "refresh"], ENV), "a key rotation is unfinished")
        if finished:
            assert all(k == {key_of(new).key_id} for k in record_kids(directory).values())
            assert all(works(sandbox, t) for t in tokens_under(directory, key_of(new)).values())
            assert len(tokens_under(directory, key_of(new))) == 3

    kills = _kill_everywhere(directory, args, env, check)
    assert kills >= 8  # at least before and after: the new key (file mode), three records, the switch


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


@counted(AREA)
def test_kill_9_during_a_postgres_rotation_at_every_point(on_postgres) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL before and after each row's re-sealing: the rows open with the old or the new key, other commands
    refuse the half-done state, and a rerun finishes it."""
    sandbox, directory, env, dsn = on_postgres
    args = ["-C", ".", "state", "rekey", "--new-key-env", "N"]
    keyed = {**env, "RECONCILER_STATE_KEY": OLD_KEY, "N": NEW_KEY}
    kids = {key_of(OLD_KEY).key_id, key_of(NEW_KEY).key_id}
    kills = 0
    for kill_at in range(1, 100):
        killed = _killed_run(directory, args, keyed, kill_at)
        if killed.returncode == 0:
            break
        assert killed.returncode == -9, killed.stderr
        kills += 1
        found = pg_kids(dsn)
        assert len(found) == 3 and all(len(k) == 1 and k <= kids for k in found.values()), found
        if len({next(iter(k)) for k in found.values()}) == 2:
            mid = run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": OLD_KEY})
            one_line_error(mid, "a key rotation is unfinished")
        finished = _killed_run(directory, args, keyed, 0)
        assert finished.returncode == 0, finished.stderr
        assert set(map(frozenset, pg_kids(dsn).values())) == {frozenset({key_of(NEW_KEY).key_id})}
        no_secrets(sandbox, killed.stdout, killed.stderr, finished.stdout, finished.stderr, extra=(dsn,))
        # back to the old key for the next kill point: rotate back, finishing as the user would
        back = _killed_run(directory, args, {**env, "RECONCILER_STATE_KEY": NEW_KEY, "N": OLD_KEY}, 0)
        assert back.returncode == 0, back.stderr
    figures.add(AREA, rekey_kills=kills)
    assert kills >= 6
    done = run(["-C", ".", "refresh"], {**env, "RECONCILER_STATE_KEY": NEW_KEY})
    assert done.exit_code == 0, done.stderr
