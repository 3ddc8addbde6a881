"""Review cases of the state layer: `state push`/`state pull` never move a credential back to an older generation
(finding 1), DSN passwords never reach output (finding 3), state files are never opened through a link (finding 4),
and a lock holder is always named (finding 12, more in test_concurrency.py).

Every case runs the real CLI (in-process through `tests.conftest.run`) against the sandbox provider, and the
PostgreSQL cases against a real PostgreSQL 15.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.conftest import run
from tests.sandbox_support import APPLY, ENV, installation

KEY = base64.b64encode(b"review-state-key-0123456789abcde").decode()
TEAM_ENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
TWO = installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]) + installation(
    "globex", "ado", "legacy", "globex", "Operations", ["vso.work_full"]
)
PG = "backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n"
REFRESH = ["-C", ".", "refresh", "--window", "120"]


# -- finding 1: pushing an older copy never moves credentials back ---------------------------------------------


def _generations(directory: Path) -> dict[str, int]:
    return {
        p.name.removesuffix(".json"): json.loads(p.read_text())["generation"]
        for p in (directory / "default.credentials").glob("*.json")
    }


def _refreshed_everything(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "rejected" not in result.stdout + result.stderr


@pytest.mark.finding(1)
@pytest.mark.parametrize("direction", ["local-to-local", "local-to-postgres", "postgres-to-local"])
def test_pushing_an_older_copy_keeps_the_rotated_tokens(sandbox_config, request, direction: str) -> None:  # type: ignore[no-untyped-def]
    """Pull, refresh (tokens rotate, the serial stays), then copy the old credentials back: the newer records are
    kept (and the user told so), and the next refresh still works for every installation."""
    _, directory, write, _ = sandbox_config
    env = dict(TEAM_ENV)
    if direction == "local-to-local":
        write(TWO)
    else:
        env["RECONCILER_PG_DSN"] = request.getfixturevalue("pg_database")
        write(TWO, extra=PG)
    assert run(APPLY, env).exit_code == 0
    pulled = run(["-C", ".", "state", "pull", "copy"], env)
    assert pulled.exit_code == 0, pulled.stderr
    if direction == "postgres-to-local":
        # The copy is worked on as local state (its tokens rotate there), then the older database is pulled over it.
        write(TWO, extra="backend:\n  type: local\n  path: copy\n")
        _refreshed_everything(run(REFRESH, env))
        newer = _generations(directory / "copy")
        write(TWO, extra=PG)
        copied = run(["-C", ".", "state", "pull", "copy"], env)
        assert _generations(directory / "copy") == newer
        write(TWO, extra="backend:\n  type: local\n  path: copy\n")
    else:
        _refreshed_everything(run(REFRESH, env))
        copied = run(["-C", ".", "state", "push", "copy"], env)
    assert copied.exit_code == 0, copied.stderr
    assert "kept 2 newer credential records from the destination" in copied.stdout
    _refreshed_everything(run(REFRESH, env))  # before the fix: "refresh token rejected" for every installation


@pytest.mark.finding(1)
@pytest.mark.parametrize("case", ["same-serial-other-contents", "record-only-in-destination"])
def test_pushing_a_diverged_copy_changes_nothing_it_should_not(sandbox_config, case: str) -> None:  # type: ignore[no-untyped-def]
    """A copy at the destination's serial with other contents is refused with nothing written; a credential record
    the copy lacks is kept in the destination, and the user told so."""
    _, directory, write, _ = sandbox_config
    write(TWO)
    assert run(APPLY, TEAM_ENV).exit_code == 0
    assert run(["-C", ".", "state", "pull", "copy"], TEAM_ENV).exit_code == 0
    copy = directory / "copy"
    if case == "same-serial-other-contents":
        text = (copy / "default.json").read_text()
        (copy / "default.json").write_text(text.replace('"acme-org"', '"evil-org"', 1))
    else:
        (copy / "default.credentials" / "installation.globex.ado.json").unlink()
    before = {p: p.read_bytes() for p in sorted((directory / "state").rglob("*")) if p.is_file()}
    pushed = run(["-C", ".", "state", "push", "copy"], TEAM_ENV)
    after = {p: p.read_bytes() for p in sorted((directory / "state").rglob("*")) if p.is_file()}
    if case == "same-serial-other-contents":
        assert pushed.exit_code == 1 and "with other contents than the copy" in pushed.stderr
        assert "nothing was changed" in pushed.stderr and len(pushed.stderr.strip().splitlines()) <= 2
        assert {p: b for p, b in after.items() if not p.name.endswith(".lock")} == {
            p: b for p, b in before.items() if not p.name.endswith(".lock")
        }
    else:
        assert pushed.exit_code == 0, pushed.stderr
        assert "kept 1 credential record found only in the destination: installation.globex.ado" in pushed.stdout
        assert (directory / "state" / "default.credentials" / "installation.globex.ado.json").exists()
        _refreshed_everything(run(REFRESH, TEAM_ENV))


# -- finding 3: a DSN's password never reaches the output ------------------------------------------------------

SECRET = "hunter2-Ŝecret"  # in every password below; never in any output
UNPARSABLE = [  # (DSN, what the message must say) — none of these parses
    ("postgresql://app:Q%ZZ" + SECRET + "@127.0.0.1:1/db", "percent"),
    ("postgresql://app:" + SECRET + "%x@127.0.0.1:1/db", "percent"),
    ("postgresql://app:pa ss " + SECRET + "@127.0.0.1:1/db", "space"),
    ("postgresql://app@127.0.0.1:1/db?password=Q%ZZ" + SECRET, "percent"),
    ("postgres://app@127.0.0.1:1/db?sslmode=disable&password=a b" + SECRET, "space"),
    ("postgresql://app:" + SECRET + "@[::1/db", "bracket"),
    ("host=127.0.0.1 port=1 password='unterminated " + SECRET, "quote"),
    ("host=127.0.0.1 port=1 " + SECRET, "'='"),
    ("host=127.0.0.1 port=1 password=" + SECRET + " dbname", "'='"),
    ("host=127.0.0.1 port=1 password=" + SECRET + " bogus=x", "unknown key"),
    ("host=127.0.0.1 port=1 password=" + SECRET + " " + SECRET + "=x", "unknown key"),
]
UNREACHABLE = [  # parse, but no connection comes of them
    "postgresql://app:" + SECRET + "@127.0.0.1:1/db",
    "postgresql://app:" + SECRET.replace("-", "%20") + "@127.0.0.1:1/db?connect_timeout=5",
    "postgresql://app:" + SECRET + "@127.0.0.1:notaport/db",
    "host=127.0.0.1 port=1 password='sp ace " + SECRET + "' user=app dbname=x",
    "host=127.0.0.1 port=1 password=" + SECRET.replace("-", "\\ ") + " user=app",
    "host=127.0.0.1 port=x password=" + SECRET,
    "host=127.0.0.1 port=1 password=" + SECRET + " sslmode=bogus",
    "host=127.0.0.1 port=1 password=x" + SECRET + "=y",
    "postgresql://app:sec@" + SECRET + "@127.0.0.1:1/db",
    "postgresql://app:" + SECRET + "/db",
]
DSN_COMMANDS = [
    ["plan"],
    ["state", "list"],
    ["apply", "--auto-approve", "--auth-mode", "defer"],
    ["validate"],
]


def _dsn_workspace(write_config) -> Path:  # type: ignore[no-untyped-def]
    from tests.sandbox_support import config_text

    text = config_text("http://127.0.0.1:9", 9, TWO) + PG
    return write_config({"reconciler.yaml": text})  # type: ignore[no-any-return]


def _assert_no_password(result, dsn: str) -> None:  # type: ignore[no-untyped-def]
    output = result.stdout + result.stderr
    fragments = {SECRET, SECRET.replace("-", " "), SECRET.replace("-", "\\ "), "hunter2", "Ŝecret"}
    assert not [f for f in fragments if f in output], output
    assert dsn not in output


@pytest.mark.finding(3)
@pytest.mark.parametrize(("dsn", "says"), UNPARSABLE, ids=range(len(UNPARSABLE)))
def test_an_unparsable_dsn_is_named_without_its_password(write_config, dsn: str, says: str) -> None:  # type: ignore[no-untyped-def]
    """Every command that reads the configuration fails with one line saying what is wrong with the DSN (which part,
    which key), and never the password."""
    config = _dsn_workspace(write_config)
    for command in DSN_COMMANDS:
        result = run(["-C", str(config), *command], {**TEAM_ENV, "RECONCILER_PG_DSN": dsn})
        _assert_no_password(result, dsn)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) <= 2, (command, result.stdout, result.stderr)  # error, hint
        assert "backend.dsn" in lines[0] and "cannot parse" in lines[0] and says in lines[0], (command, lines)


@pytest.mark.parametrize("dsn", UNREACHABLE, ids=range(len(UNREACHABLE)))
def test_an_unreachable_dsn_is_named_without_its_password(write_config, dsn: str) -> None:  # type: ignore[no-untyped-def]
    """A DSN that parses but does not connect: the commands that need state fail with one line naming where (host,
    port, database, user — never the password); validate, which does not connect, never shows it either."""
    config = _dsn_workspace(write_config)
    for command in DSN_COMMANDS:
        result = run(["-C", str(config), *command], {**TEAM_ENV, "RECONCILER_PG_DSN": dsn})
        _assert_no_password(result, dsn)
        if command == ["validate"]:
            assert result.exit_code in (0, 1), result.stderr
            continue
        assert result.exit_code == 1, (command, result.stdout, result.stderr)
        assert "PostgreSQL" in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr


# -- finding 4: state files are never opened through a link ------------------------------------------------------

VICTIM = b"someone else's file: must never change\n"
STATE_ONLY = ["-C", ".", "state", "rm", "installation.globex.ado"]  # lock, snapshot, journal, backup, credentials
PLANTS = {  # kind: (the name planted in the state directory, the command that meets it)
    "lock": ("default.lock", STATE_ONLY),
    "lock gate": ("default.lock-gate", STATE_ONLY),
    "journal": ("default.journal", STATE_ONLY),
    "snapshot": ("default.json", STATE_ONLY),
    "backup": ("default.json.backup", STATE_ONLY),
    "key file": ("default.key", REFRESH),
    "passphrase salt": ("default.kdf.json", REFRESH),
    "credentials record": ("default.credentials/installation.acme.ado.json", REFRESH),
    "stripe lock": ("default.credentials/.lock-{stripe}", REFRESH),
    "credentials directory": ("default.credentials", REFRESH),
    "gitignore": (".gitignore", APPLY),
}


def _stripe(address: str) -> str:
    import zlib

    from reconciler.tokens.store import LOCK_STRIPES

    return f"{zlib.crc32(address.encode()) % LOCK_STRIPES:02d}"


def _run_cli(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    """The CLI in its own process, so that a FIFO that blocks an open hangs that process only (then: a failure)."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "RECONCILER_", "ENTRA_"))}
    clean["RECONCILER_CACHE_DIR"] = os.environ["RECONCILER_CACHE_DIR"]
    command = [sys.executable, "-m", "reconciler", *args]
    try:
        return subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args} hung on a planted file")


LINKS_ONLY = ("credentials directory", "gitignore", "stripe lock", "backup")  # a directory there is legitimate,
# or the name is only ever replaced (never opened), or nothing there would hang


@pytest.mark.finding(4)
@pytest.mark.parametrize(
    ("kind", "plant"),
    [
        (kind, plant)
        for kind in PLANTS
        for plant in ("symlink", "dangling symlink", "fifo", "directory")
        if (kind not in LINKS_ONLY or "symlink" in plant)
        and (kind, plant) != ("credentials record", "directory")  # refused as unreadable already, before the fix
    ],
)
def test_a_planted_state_file_is_refused_untouched(sandbox_config, tmp_path: Path, kind: str, plant: str) -> None:  # type: ignore[no-untyped-def]
    """A link (to a file, or to where a file could be created), a FIFO or a directory at a state file's name: the
    command exits 1 with a line naming the file and saying it was not changed, and what the link points to is
    neither changed nor created."""
    import os

    _, directory, write, _ = sandbox_config
    env = dict(ENV)
    if kind == "passphrase salt":
        env["RECONCILER_STATE_PASSPHRASE"] = "correct horse battery staple"
    write(TWO)
    name, command = PLANTS[kind]
    name = name.format(stripe=_stripe("installation.acme.ado"))
    state = directory / "state"
    if kind == "gitignore":
        state.mkdir()
    else:
        assert run(APPLY, env).exit_code == 0
        assert run(["-C", ".", "state", "list"], env).exit_code == 0
    planted = state / name
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    if kind == "credentials directory":
        import shutil

        shutil.copytree(planted, outside / "elsewhere")
        victim = outside / "elsewhere"
    elif plant == "symlink" and kind == "credentials record":
        victim.write_bytes(planted.read_bytes())  # a record that opens: read through the link, it would be used
    elif plant == "symlink":
        victim.write_bytes(VICTIM)
    before = {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    if planted.is_dir() and kind == "credentials directory":
        import shutil

        shutil.rmtree(planted)
    else:
        planted.unlink(missing_ok=True)
    if plant == "fifo":
        os.mkfifo(planted)
    elif plant == "directory":
        planted.mkdir()
    else:
        planted.symlink_to(victim)
    if kind == "key file" and plant == "symlink":
        victim.write_bytes(base64.b64encode(b"k" * 32) + b"\n")  # a key someone else knows
        before = {str(victim): victim.read_bytes()}

    result = _run_cli(command, env)

    after = {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    assert after == before  # the link's target is unchanged, and nothing was created through a dangling link
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.stdout, result.stderr)
    named = [line for line in lines if name.rsplit("/", 1)[-1] in line]
    assert named and all("not changed" in line for line in named), lines
    if command != REFRESH:
        assert len(lines) <= 2, lines  # the error and its hint (a refresh reports per installation, then sums up)


# -- finding 12: a lock holder is always named, whenever a loser looks ---------------------------------------------

PAUSE_LOCK = Path(__file__).resolve().parents[1] / "tools" / "pause_lock.py"


def _lock_tool(kind: str, where: str, point: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [sys.executable, str(PAUSE_LOCK), kind, where, point],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root,
    )


def _stopped(process) -> None:  # type: ignore[no-untyped-def]
    """Wait until `process` has stopped itself (SIGSTOP), however long the machine takes to get it there."""
    import os

    _, status = os.waitpid(process.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status


def _try_lock_while_stopped(kind: str, where: str, holder) -> str:  # type: ignore[no-untyped-def]
    """What a writer with no lock timeout reports while `holder` is stopped (given 3 s to give up on its own, as it
    did before), after which the holder goes on."""
    import os
    import signal
    import subprocess

    loser = _lock_tool(kind, where, "try")
    try:
        loser.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass  # still waiting for the holder: the outcome is the same either way
    os.kill(holder.pid, signal.SIGCONT)
    out, _ = loser.communicate(timeout=120)
    return out.strip()


@pytest.fixture(params=["local", "postgres"])
def lock_place(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "local":
        return "local", str(tmp_path / "state")
    return "postgres", request.getfixturevalue("pg_database")


@pytest.mark.finding(12)
def test_a_loser_names_a_holder_stopped_just_after_taking_the_lock(lock_place) -> None:  # type: ignore[no-untyped-def]
    """A holder stopped between taking the lock and anything else: a writer with no lock timeout fails naming it
    (pid and lock id), never "no holder information" (the CI flake under load)."""
    kind, where = lock_place
    holder = _lock_tool(kind, where, "taken")
    try:
        _stopped(holder)
        message = _try_lock_while_stopped(kind, where, holder)
        held = holder.stdout.readline().split()  # type: ignore[union-attr]
        assert held[0] == "held" and int(held[1]) == holder.pid
        assert "is locked: held by pid" in message and f"held by pid {holder.pid} " in message, message
        assert f"lock id {held[2]}" in message, message
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(60)
        holder.stdout.close()  # type: ignore[union-attr]


@pytest.mark.finding(12)
def test_a_loser_takes_the_lock_from_a_holder_stopped_while_letting_go(lock_place) -> None:  # type: ignore[no-untyped-def]
    """A holder stopped in the middle of letting go: a writer with no lock timeout gets the lock once it is free,
    and never reports a lock without a holder."""
    kind, where = lock_place
    holder = _lock_tool(kind, where, "releasing")
    try:
        assert holder.stdout.readline().startswith("held ")  # type: ignore[union-attr]
        holder.stdin.close()  # type: ignore[union-attr]
        _stopped(holder)
        assert _try_lock_while_stopped(kind, where, holder) == "got"
    finally:
        holder.wait(60)
        holder.stdout.close()  # type: ignore[union-attr]


@pytest.mark.finding(4)
def test_a_plan_file_is_never_written_through_a_planted_link(sandbox_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Sibling: `plan --out plan.bin` in a checkout where plan.bin is a link refuses it, and the target keeps its
    bytes (a CI job writing its plan would otherwise overwrite any file the link names)."""
    _, directory, write, _ = sandbox_config
    write(TWO)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (directory / "plan.bin").symlink_to(victim)
    result = run(["-C", ".", "plan", "--out", "plan.bin"], TEAM_ENV)
    assert result.exit_code == 1 and "plan.bin: is a symbolic link" in result.stderr, result.stderr
    assert victim.read_bytes() == VICTIM



def test_split_plan_parts_are_never_written_through_a_planted_link(sandbox_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Guard: `plan --format markdown --split-dir DIR` where DIR/plan-1.md is a link replaces the link with the
    part, and the link's target keeps its bytes."""
    _, directory, write, _ = sandbox_config
    write(TWO)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (directory / "parts").mkdir()
    (directory / "parts" / "plan-1.md").symlink_to(victim)
    result = run(["-C", ".", "plan", "--format", "markdown", "--split-dir", "parts"], TEAM_ENV)
    assert result.exit_code == 0, result.stderr
    part = directory / "parts" / "plan-1.md"
    assert not part.is_symlink() and "installation." in part.read_text()
    assert victim.read_bytes() == VICTIM
