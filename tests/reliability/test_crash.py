"""Crash safety: kill -9 an `apply` of many installations against the sandbox at seeded random points, and a full
disk during state writes.

After each kill: state loads; no installation is recorded as authorized without tokens that open under the state
key and still work at the provider; every authorization the run reported complete is in state; `plan` shows exactly
the remaining work; a second apply finishes it. The fast variant (3 trials of 20) runs in `make test`; the full one
(20 trials of 200) is marked slow and runs in `make reliability`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox import SandboxServer
from reconciler.state.local import LocalBackend
from tests.conftest import run
from tests.reliability.support_b import (
    ApplyRun,
    addresses_of,
    counted,
    figures,
    many_installations,
    recorded_tokens,
    subprocess_env,
    works_at,
)
from tests.sandbox_support import ENV, config_text, free_port, register

AREA = "crash"
TOKEN = re.compile(r"sbx\.(?:at|rt)\.[A-Za-z0-9_-]+")  # the sandbox's access and refresh tokens
SEED = 20240517


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[SandboxServer, int]]:
    """One sandbox for every trial of the module, and the callback port its apps are registered with."""
    with SandboxServer() as server:
        port = free_port()
        register(server, port)
        yield server, port


def _block(index: int, partner: str = "legacy", project: str = "Platform", per_tenant: int = 10) -> str:
    return (
        f"  t{index // per_tenant:03d}:\n    installations:\n      i{index:03d}:\n        partner: {partner}\n"
        f"        parameters: {{organization: acme-org, project: {project}}}\n"
        "        scopes: [vso.work_full, vso.project]\n"
    )


def _write(config: Path, provider: tuple[SandboxServer, int], tenants: str) -> None:
    server, port = provider
    config.mkdir(parents=True, exist_ok=True)
    (config / "reconciler.yaml").write_text(config_text(server.url, port, tenants))


def _workspace(root: Path, provider: tuple[SandboxServer, int], count: int) -> Path:
    _write(root, provider, many_installations(count))
    return root


def _changed(index: int) -> str:
    """What the second phase does to installation `index`: re-authorize it with another client (a partner switch),
    update it (another project), or delete it."""
    return ("reauthorize", "update", "delete")[index % 3]


def _change_config(count: int) -> str:
    """`count` installations after the second phase's changes, grouped by tenant as in `many_installations`."""
    tenants: dict[int, list[str]] = {}
    for index in range(count):
        change = _changed(index)
        if change != "delete":
            block = _block(
                index,
                "entra" if change == "reauthorize" else "legacy",
                "Web" if change == "update" else "Platform",
            )
            tenants.setdefault(index // 10, []).append(block.split("installations:\n", 1)[1])
    return "".join(
        f"  t{t:03d}:\n    installations:\n" + "".join(items) for t, items in sorted(tenants.items())
    )


def _expected(phase: str, count: int) -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """Per address: the action the phase carries out, and when it counts as done (given the recorded record)."""
    partners = {p: ("create", lambda r: r is not None) for p in ("partner.legacy", "partner.entra")}
    if phase == "create":
        return {**partners, **{a: ("create", lambda r: r is not None) for a in addresses_of(count)}}
    done = {
        "reauthorize": lambda r: r is not None and r.partner == "entra",
        "update": lambda r: r is not None and r.parameters["project"] == "Web",
        "delete": lambda r: r is None,
    }
    out: dict[str, tuple[str, Callable[[Any], bool]]] = {}
    for index in range(count):
        change = _changed(index)
        out[f"installation.t{index // 10:03d}.i{index:03d}"] = (change, done[change])
    return out


def _invariants(config: Path, server: SandboxServer, expected: dict, reported: set[str]) -> list[str]:  # type: ignore[type-arg]
    """What is wrong with the state a killed run left (empty: nothing)."""
    problems: list[str] = []
    try:
        doc = LocalBackend(config / "state", "default").read()
    except Exception as exc:  # noqa: BLE001 - reported as the finding
        return [f"state does not load: {exc}"]
    listed = run(["-C", str(config), "state", "list"])
    if listed.exit_code != 0:
        problems.append(f"state list failed: {listed.stderr.strip()}")
    try:
        tokens = recorded_tokens(config / "state", {})
    except Exception as exc:  # noqa: BLE001
        return [*problems, f"sealed credentials do not open: {exc}"]
    problems += [
        f"{a} is authorized without working tokens ({t})"
        for a, t in tokens.items()
        if not works_at(server.provider, t)
    ]
    resources = doc.resources if doc else {}
    installations = [a for a, r in resources.items() if a.startswith("installation.")]
    problems += [f"{a} is recorded but not authorized" for a in installations if a not in tokens]
    done = {a: check(resources.get(a)) for a, (action, check) in expected.items()}
    problems += [
        f"{a} was reported complete but is not done in state" for a in sorted(reported) if not done.get(a)
    ]
    plan = run(["-C", str(config), "plan", "--format", "json", "--detailed-exitcode"], ENV)
    if plan.exit_code not in (0, 2):
        return [*problems, f"plan failed: {plan.stderr.strip()}"]
    changes = {c["address"]: c["action"] for c in json.loads(plan.stdout)["changes"] if c["action"] != "noop"}
    remaining = {a: action for a, (action, check) in expected.items() if not done[a]}
    if changes != remaining:
        wrong = sorted(set(changes.items()) ^ set(remaining.items()))[:3]
        problems.append(
            f"plan shows {len(changes)} changes, expected the {len(remaining)} not done (e.g. {wrong})"
        )
    if plan.exit_code != (2 if remaining else 0):
        problems.append(f"plan --detailed-exitcode exited {plan.exit_code}")
    return problems


def _killed_apply(config: Path, server: SandboxServer, expected: dict, rng: random.Random) -> dict[str, int]:  # type: ignore[type-arg]
    """Apply killed after a seeded random number of completed steps plus a seeded random fraction of a step (so
    that kills land anywhere in a step: consent, exchange, check, sealing, the state write); the invariants; then a
    second apply that must finish the work."""
    env = subprocess_env(**ENV)
    steps = sum(1 for a in expected if a.startswith("installation."))
    target = rng.randrange(steps)
    first = ApplyRun(config, env)
    assert first.wait_for(target, timeout=600) or target == 0, first.stderr[-5:]
    step = (time.monotonic() - first.started) / target if target else 1.0
    time.sleep(rng.uniform(0, 1.5 * step))
    killed = first.kill()
    first.finish(60)
    reported = set(first.completed)
    problems = _invariants(config, server, expected, reported)
    leaked = TOKEN.findall("\n".join([*first.stderr, first.stdout]))
    figures.add(AREA, secrets_found=len(leaked))
    problems += [f"a token was printed: {t[:12]}..." for t in leaked[:1]]
    second = ApplyRun(config, env)
    code = second.finish(900)
    if code != 0:
        problems.append(f"the second apply exited {code}: {second.stderr[-3:]}")
    problems += [
        f"after the second apply: {p}" for p in _invariants(config, server, expected, set(second.completed))
    ]
    plan = run(["-C", str(config), "plan", "--detailed-exitcode"], ENV)
    if plan.exit_code != 0:
        problems.append("plan after the second apply is not empty")
    assert not problems, f"kill after {len(reported)} reported steps: " + "; ".join(problems[:5])
    return {"kills": int(killed), "completed_before_kill": len(reported)}


def _trials(tmp_path: Path, provider: tuple[SandboxServer, int], trials: int, count: int) -> None:
    """Each trial: an apply creating `count` installations, killed and finished; then one changing them all (a
    third re-authorized with another client, a third updated, a third deleted), killed and finished."""
    server, _ = provider
    rng = random.Random(SEED)
    for number in range(trials):
        config = _workspace(tmp_path / f"trial-{number:02d}", provider, count)
        figures.add(AREA, trials=1)
        for phase in ("create", "change"):
            if phase == "change":
                _write(config, provider, _change_config(count))
            outcome: dict[str, int] = {}
            try:
                outcome = _killed_apply(config, server, _expected(phase, count), rng)
            finally:
                figures.add(AREA, killed_applies=1, steps=count, **outcome)


@counted(AREA)
def test_kill_9_during_apply_fast(tmp_path: Path, provider) -> None:  # type: ignore[no-untyped-def]
    """3 seeded trials of 20 installations (create, then change), each apply killed with SIGKILL: every invariant
    holds after each kill."""
    _trials(tmp_path, provider, trials=3, count=20)
    assert figures.get(AREA)["kills"] >= 3


@pytest.mark.slow
@counted(AREA)
def test_kill_9_during_apply_of_200(tmp_path: Path, provider) -> None:  # type: ignore[no-untyped-def]
    """20 seeded trials of 200 installations (create, then change), each apply killed with SIGKILL: every invariant
    holds after each kill."""
    _trials(tmp_path, provider, trials=20, count=200)
    assert figures.get(AREA)["kills"] >= 20


# -- regressions found by the trials ------------------------------------------------------------------------------


@counted(AREA)
def test_a_record_appended_after_a_torn_journal_tail_is_kept(tmp_path: Path) -> None:
    """Regression: after a torn journal record (a full disk or power loss mid-append), every later record was
    appended behind it and ignored by readers — lost if the writer died before folding the journal."""
    from reconciler.state.model import StateDocument
    from tests.sandbox_support import PARTNER

    backend = LocalBackend(tmp_path, "default")
    with backend.lock("init"):
        backend.write(
            StateDocument.new("default").with_resources({PARTNER.address: PARTNER}), expected_serial=None
        )
    with open(tmp_path / "default.journal", "ab") as journal:
        journal.write(b'{"c": "0f3a", "p": {"lineage": "')  # what a failed append leaves
    other = PARTNER.model_copy(update={"name": "other"})
    with backend.lock("apply"):
        doc = backend.read()
        assert doc is not None
        written = backend.write(
            doc.with_record(other.address, other), expected_serial=doc.serial, changed={other.address}
        )
        seen = LocalBackend(
            tmp_path, "default"
        ).read()  # another reader now, or the next command after a kill -9
        assert seen == written and other.address in seen.resources


@counted(AREA)
def test_kill_9_after_a_torn_journal_tail_keeps_what_was_reported(tmp_path: Path, provider) -> None:  # type: ignore[no-untyped-def]
    """End to end: a journal left torn, then an apply killed after reporting authorizations — they are all in
    state, and the invariants hold."""
    server, _ = provider
    config = _workspace(tmp_path / "torn", provider, 8)
    env = subprocess_env(**ENV)
    first = ApplyRun(config, env, "--target", "installation.t000.i000")
    assert first.finish(120) == 0
    with open(config / "state" / "default.journal", "ab") as journal:
        journal.write(b'{"c": "0f3a", "p": {"lineage": "')
    second = ApplyRun(config, env)
    assert second.wait_for(4, timeout=120)
    assert second.kill()
    second.finish(60)
    problems = _invariants(
        config, server, _expected("create", 8), set(second.completed) | set(first.completed)
    )
    figures.add(AREA, killed_applies=1, steps=8, kills=1)
    assert problems == []


@pytest.mark.parametrize("secret", ["key file", "passphrase salt"])
@pytest.mark.parametrize("dies_at", ["fdopen", "fsync"])
@counted(AREA)
def test_a_crash_while_creating_the_state_key_leaves_no_half_key(
    sandbox_config, secret: str, dies_at: str
) -> None:  # type: ignore[no-untyped-def]
    """Regression: a process killed while writing a new key file (or passphrase salt) left it empty, and every
    later run failed on it; now it is created whole or not at all, and the next run creates it."""
    import os
    import types

    from reconciler import crypto
    from tests.sandbox_support import APPLY, installation

    _sandbox, directory, write, _browser = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    env = {**ENV, "RECONCILER_STATE_PASSPHRASE": "correct horse"} if secret == "passphrase salt" else ENV

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process is killed right here: the file is created, not yet (all) written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crypto, "os", types.SimpleNamespace(**{**vars(os), dies_at: die}))
        assert run(APPLY, env).exit_code == 1
    made = directory / "state" / ("default.key" if secret == "key file" else "default.kdf.json")
    assert not made.exists() or made.stat().st_size > 0
    result = run(APPLY, env)
    assert result.exit_code == 0, result.stderr
    assert made.stat().st_size > 0 and not list((directory / "state").glob(".default*.tmp*"))


# -- a full disk ---------------------------------------------------------------------------------------------------

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, so that the test can fill it. Mounting needs root (or CAP_SYS_ADMIN); without it
    the test fails saying so — a full disk is never simulated by patching the code under test."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        check=False, capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(
            f"the full-disk tests need a small filesystem of their own: `mount -t tmpfs` failed "
            f"({result.stderr.strip() or result.returncode}); run them as root"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _fill(disk: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem of `disk` to the last byte, then free `leave_pages` pages; returns the filler file."""
    import errno
    import os

    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * PAGE)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, (size // PAGE - leave_pages) * PAGE)
    finally:
        os.close(fd)
    return filler


def _files(root: Path) -> dict[str, bytes]:
    """Every state file's bytes (an empty lock file, which a writer may create to lock a record, holds no state)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {name: data for name, data in files.items() if data or not Path(name).name.startswith(".lock-")}


@pytest.fixture
def on_small_disk(small_disk: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A configuration on the small disk with acme and globex applied; `write(installations)` rewrites it."""
    import webbrowser

    from tests.sandbox_support import APPLY, ScriptedBrowser, installation

    port = free_port()
    register(sandbox, port)
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    monkeypatch.chdir(small_disk)
    two = installation(
        "acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]
    ) + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full", "vso.project"])

    def write(extra: str = "") -> None:
        (small_disk / "reconciler.yaml").write_text(config_text(sandbox.url, port, two + extra))

    write()
    assert run(APPLY, ENV).exit_code == 0
    return small_disk, write


FULL_DISK_COMMANDS = {
    # command -> (arguments, what the configuration gains first)
    "apply (a new installation)": (
        ["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"],
        True,
    ),
    "apply (defer: a pending record)": (["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], True),
    "state rm": (["-C", ".", "state", "rm", "installation.globex.ado"], False),
    "state mv": (["-C", ".", "state", "mv", "installation.globex.ado", "installation.globex.renamed"], False),
    "refresh (rotation)": (["-C", ".", "refresh", "--window", "120"], False),
}


@pytest.mark.parametrize("leave_pages", [0, 1], ids=["no page free", "one page free"])
@pytest.mark.parametrize("command", list(FULL_DISK_COMMANDS))
@counted(AREA)
def test_a_full_disk_leaves_the_previous_state_intact(
    on_small_disk, sandbox, command: str, leave_pages: int
) -> None:  # type: ignore[no-untyped-def]
    """A state-writing command on a full disk (completely full, or with room for the lock record only): exit 1, a
    clear message, and every state file byte for byte as before and loadable; no refresh token is rotated that
    could not be stored; once there is room again the same command succeeds."""
    from tests.sandbox_support import installation

    disk, write = on_small_disk
    args, grows = FULL_DISK_COMMANDS[command]
    if grows:
        write(installation("initech", "ado", "legacy", "acme-org", "Web", ["vso.work_full", "vso.project"]))
    before = _files(disk / "state")
    refreshes = {g["id"]: g["refreshes"] for g in sandbox.provider.live_grants()}
    filler = _fill(disk, leave_pages)
    result = run(args, ENV)
    after = _files(disk / "state")
    differing = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    changed = sum(max(len(before.get(name, b"")), len(after.get(name, b""))) for name in differing)
    figures.add(AREA, full_disk_cases=1, state_bytes_changed=changed)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stderr or "bytes free beside the state" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert changed == 0, differing
    assert LocalBackend(disk / "state", "default").read() is not None
    rotated = {g["id"]: g["refreshes"] for g in sandbox.provider.live_grants() if g["id"] in refreshes}
    assert rotated == refreshes  # no refresh token was rotated only to be lost
    filler.unlink()
    again = run(args, ENV)
    assert again.exit_code in (0, 3), again.stderr  # 3: the deferred authorization is pending, as asked
    assert all(works_at(sandbox.provider, t) for t in recorded_tokens(disk / "state", {}).values())


@counted(AREA)
def test_a_state_mv_interrupted_before_its_document_write_can_be_run_again(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """Regression: `state mv` killed after sealing the credentials for the new address but before writing the
    document left them behind, and every later `state mv` to that address failed ("changed meanwhile")."""
    from tests.sandbox_support import APPLY, installation

    sandbox, directory, write, _browser = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"]))
    assert run(APPLY, ENV).exit_code == 0
    before = _files(directory / "state")
    move = ["-C", ".", "state", "mv", "installation.acme.ado", "installation.acme.main"]

    def dies(self, doc, *, expected_serial, changed=None):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # killed before the document names the new address

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalBackend, "write", dies)
        assert run(move, ENV).exit_code == 1
    assert LocalBackend(directory / "state", "default").read().resources.keys() == {  # type: ignore[union-attr]
        "partner.legacy",
        "partner.entra",
        "installation.acme.ado",
    }
    again = run(move, ENV)
    assert again.exit_code == 0, again.stderr
    tokens = recorded_tokens(directory / "state", {})
    assert set(tokens) == {"installation.acme.main"} and works_at(
        sandbox.provider, tokens["installation.acme.main"]
    )
    assert before.keys() - _files(directory / "state").keys() == {
        "default.credentials/installation.acme.ado.json"
    }
