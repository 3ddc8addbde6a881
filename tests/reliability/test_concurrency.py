"""Concurrency: two and then eight writer processes on one state, local files and a real PostgreSQL 15.

Exactly one writer holds the lock at a time; the others fail fast naming the holder, or wait when asked to; the
serial strictly increases; no update is lost and no write based on a stale read is accepted. Writers are separate
processes: `tests/reliability/writer_b.py` drives the backend API (and logs when it held the lock), and the CLI
itself (`reconciler apply --auth-mode defer --target ...`) shows the same end to end.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from reconciler.state.postgres import PostgresBackend
from tests.reliability.support_b import counted, figures

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("writer_b.py")
HOLD_LOCK = ROOT / "tests" / "tools" / "hold_lock.py"
AREA = "concurrency"


@pytest.fixture(params=["local", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(kind, where, backend factory) for one state that already exists at serial 1."""
    if request.param == "local":
        where = str(tmp_path / "state")
        factory = lambda: LocalBackend(Path(where), "default")  # noqa: E731
    else:
        where = request.getfixturevalue("pg_database")
        factory = lambda: PostgresBackend(where, "default")  # noqa: E731
    backend = factory()
    with backend.lock("init"):
        assert backend.write(StateDocument.new("default"), expected_serial=None).serial == 1
    return request.param, where, factory


def _spawn(
    kind: str, where: str, name: str, rounds: int, lock_timeout: float, hold: float, stale: bool = False
):  # type: ignore[no-untyped-def]
    args = [sys.executable, str(WRITER), kind, where, name, str(rounds), str(lock_timeout), str(hold)]
    return subprocess.Popen(
        [*args, *(["stale"] if stale else [])],
        stdin=subprocess.PIPE if stale else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _events(processes) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    events = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        events += [json.loads(line) for line in out.splitlines()]
    return events


def _check_history(writes: list[dict], first_serial: int) -> dict[str, int]:  # type: ignore[type-arg]
    """Lock intervals never overlap, and each write is based on the serial the previous write produced."""
    ordered = sorted(writes, key=lambda e: e["acquired"])
    overlaps = sum(1 for a, b in itertools.pairwise(ordered) if b["acquired"] < a["released"])
    stale = 0
    expected = first_serial
    for event in ordered:
        if event["read"] != expected or event["wrote"] != event["read"] + 1:
            stale += 1
        expected = event["wrote"]
    return {"overlapping_holders": overlaps, "stale_writes_accepted": stale}


def _holder(kind: str, where: str) -> subprocess.Popen:  # type: ignore[type-arg]
    process = subprocess.Popen(
        [sys.executable, str(HOLD_LOCK), kind, where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _release(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(10)
    process.stdout.close()


@pytest.mark.parametrize("writers", [2, pytest.param(8, marks=pytest.mark.slow)])
@counted(AREA)
def test_waiting_writers_take_turns_and_lose_nothing(store, writers: int) -> None:  # type: ignore[no-untyped-def]
    """N writers that wait for the lock: one holder at a time, each write based on the latest serial, all arrive."""
    kind, where, factory = store
    rounds = 3
    processes = [_spawn(kind, where, f"w{i}", rounds, 60, 0.02) for i in range(writers)]
    events = _events(processes)
    writes = [e for e in events if e["event"] == "write"]
    history = _check_history(writes, first_serial=1)
    final = factory().read()
    assert final is not None
    expected = {f"partner.w{i}-{r}" for i in range(writers) for r in range(rounds)}
    lost = len(expected - set(final.resources))
    figures.add(AREA, writers=writers, writes=len(writes), lost_updates=lost, **history)
    assert len(writes) == writers * rounds, events
    assert history == {"overlapping_holders": 0, "stale_writes_accepted": 0}
    assert lost == 0 and final.serial == 1 + writers * rounds
    assert sorted(e["wrote"] for e in writes) == list(range(2, 2 + writers * rounds))  # strictly increasing


@pytest.mark.parametrize("writers", [2, pytest.param(8, marks=pytest.mark.slow)])
@counted(AREA)
def test_writers_fail_fast_naming_the_holder(store, writers: int) -> None:  # type: ignore[no-untyped-def]
    """While another process holds the lock, every writer with no lock timeout fails at once naming it; with a
    timeout they wait for it and then proceed."""
    kind, where, factory = store
    holder = _holder(kind, where)
    try:
        events = _events([_spawn(kind, where, f"f{i}", 1, 0, 0) for i in range(writers)])
        waiting = [_spawn(kind, where, f"l{i}", 1, 60, 0) for i in range(writers)]
        time.sleep(1.0)
        assert all(p.poll() is None for p in waiting)  # still waiting for the holder
    finally:
        _release(holder)
    later = _events(waiting)
    locked = [e for e in events if e["event"] == "locked"]
    named = [
        e
        for e in locked
        if f"held by pid {holder.pid} " in e["message"] and "operation: apply" in e["message"]
    ]
    final = factory().read()
    assert final is not None
    figures.add(AREA, writers=2 * writers, failed_fast=len(named), writes=len(later))
    assert len(locked) == len(named) == writers, events  # all failed while the holder held: none waited for it
    assert [e["event"] for e in later] == ["write"] * writers
    assert _check_history(later, first_serial=1) == {"overlapping_holders": 0, "stale_writes_accepted": 0}
    assert set(final.resources) == {f"partner.l{i}-0" for i in range(writers)} and final.serial == 1 + writers


@pytest.mark.parametrize("writers", [2, pytest.param(8, marks=pytest.mark.slow)])
@counted(AREA)
def test_contending_writers_without_timeout_name_each_other(store, writers: int) -> None:  # type: ignore[no-untyped-def]
    """Writers started together with no lock timeout: whoever loses fails naming a writer that held the lock; what
    the winners wrote is all there, and nothing else."""
    kind, where, factory = store
    processes = [_spawn(kind, where, f"c{i}", 2, 0, 0.2) for i in range(writers)]
    events = _events(processes)
    writes = [e for e in events if e["event"] == "write"]
    locked = [e for e in events if e["event"] == "locked"]
    pids = {p.pid for p in processes}
    named = [e for e in locked if int(re.search(r"held by pid (\d+) ", e["message"]).group(1)) in pids]  # type: ignore[union-attr]
    final, history, lost = _outcome(writes, factory)
    figures.add(
        AREA,
        writers=writers,
        writes=len(writes),
        failed_fast=len(named),
        lost_updates=lost,
        **history,
    )
    assert writes and len(writes) + len(locked) == 2 * writers
    assert len(named) == len(locked)
    assert history == {"overlapping_holders": 0, "stale_writes_accepted": 0}
    assert lost == 0 and final.serial == 1 + len(writes)


def _outcome(writes: list[dict], factory):  # type: ignore[no-untyped-def, type-arg]
    """The state the writers left, their serial history checked, and how many accepted writes are not in it (or
    are in it without having been reported)."""
    final = factory().read()
    assert final is not None
    history = _check_history(writes, first_serial=1)
    lost = len({f"partner.{e['writer']}-{e['round']}" for e in writes} ^ set(final.resources))
    return final, history, lost


@pytest.mark.parametrize("writers", [2, pytest.param(8, marks=pytest.mark.slow)])
@counted(AREA)
def test_writes_based_on_a_stale_read_are_refused(store, writers: int) -> None:  # type: ignore[no-untyped-def]
    """Half the writers read before taking the lock, and go on only once the other half wrote (round 1), or once
    all of them read the same serial (round 2): every write based on a serial that moved is refused, exactly one
    of the same-serial readers wins, and every accepted write is based on the latest serial."""
    kind, where, factory = store
    stale = [_spawn(kind, where, f"s{i}", 2, 60, 0, stale=True) for i in range(0, writers, 2)]
    seen: list[dict] = []  # type: ignore[type-arg]
    early = [_until_read(p, seen) for p in stale]
    fresh = _events([_spawn(kind, where, f"s{i}", 2, 60, 0) for i in range(1, writers, 2)])  # the serial moves
    _go(stale)
    again = [_until_read(p, seen) for p in stale]  # round 2: all read before any goes on
    _go(stale)
    events = fresh + seen + _events(stale)
    writes = [e for e in events if e["event"] == "write"]
    refused = [e for e in events if e["event"] == "stale"]
    final, history, lost = _outcome(writes, factory)
    figures.add(
        AREA,
        writers=writers,
        writes=len(writes),
        refused_stale=len(refused),
        lost_updates=lost,
        **history,
    )
    assert {e["serial"] for e in early} == {1} and len({e["serial"] for e in again}) == 1
    assert sorted((e["writer"], e["round"]) for e in refused if e["round"] == 0) == sorted(
        (p, 0) for p in (f"s{i}" for i in range(0, writers, 2))
    )
    assert len([e for e in writes if e["writer"] in {f"s{i}" for i in range(0, writers, 2)}]) == 1
    assert len(writes) + len(refused) == 2 * writers
    assert history == {"overlapping_holders": 0, "stale_writes_accepted": 0}
    assert lost == 0 and final.serial == 1 + len(writes)


def _until_read(process, seen: list[dict]) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The stale writer's next "read" event; the events before it go to `seen`."""
    while True:
        event = json.loads(process.stdout.readline())
        if event["event"] == "read":
            return event  # type: ignore[no-any-return]
        seen.append(event)


def _go(processes) -> None:  # type: ignore[no-untyped-def]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()


# A loser that looks while the holder is between taking the lock and naming itself, or between clearing its name
# and letting go: tests/reliability/test_review_state.py stops a holder at exactly those points (finding 12).


@counted(AREA)
def test_a_dead_sessions_lock_claim_is_not_named_as_the_holder(pg_database: str) -> None:
    """Regression: a lock claim left by a killed PostgreSQL holder was named as the holder of a later lock."""
    import psycopg

    from reconciler.errors import StateLockedError
    from reconciler.state.backend import LockInfo

    backend = PostgresBackend(pg_database, "default")
    with backend.lock("init"):
        pass
    ghost = LockInfo.for_current_process("ghost")
    with psycopg.connect(pg_database, autocommit=True) as conn:  # a claim whose session is gone
        conn.execute(
            "INSERT INTO reconciler_lock_claims (environment, info, backend_pid) VALUES ('default', %s, 999999)",
            (json.dumps(ghost.as_dict()),),
        )
    holder = _holder("postgres", pg_database)
    try:
        with pytest.raises(StateLockedError) as error, PostgresBackend(pg_database, "default").lock("plan"):
            pass
        assert f"held by pid {holder.pid} " in str(error.value) and ghost.id not in str(error.value)
    finally:
        _release(holder)


# -- the CLI: concurrent `reconciler apply` processes ------------------------------------------------------------

STATE_KEY = "Y29uY3VycmVuY3ktdGVzdC1rZXktMDEyMzQ1Njc4OWE="  # base64 of 32 bytes


def _cli_workspace(tmp_path: Path, kind: str, writers: int, dsn: str | None) -> tuple[Path, dict[str, str]]:
    """A configuration with one installation per writer, its partner already applied; the environment to run in."""
    import os

    from tests.sandbox_support import ENV, config_text, installation

    tenants = "".join(
        installation(f"t{i}", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"])
        for i in range(writers)
    )
    text = config_text("http://127.0.0.1:9", 9, tenants)  # deferred authorizations never call the provider
    if kind == "postgres":
        text += "backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n"
    config = tmp_path / "config"
    config.mkdir()
    (config / "reconciler.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "RECONCILER_", "ENTRA_"))}
    env.update(ENV, RECONCILER_STATE_KEY=STATE_KEY, RECONCILER_CACHE_DIR=os.environ["RECONCILER_CACHE_DIR"])
    if dsn:
        env["RECONCILER_PG_DSN"] = dsn
    first = _reconciler(config, env, "--target", "partner.legacy", "--lock-timeout", "0")
    assert first.wait(60) == 0, first.stderr.read()  # type: ignore[union-attr]
    first.stderr.close()  # type: ignore[union-attr]
    first.stdout.close()  # type: ignore[union-attr]
    return config, env


def _reconciler(config: Path, env: dict[str, str], *args: str) -> subprocess.Popen:  # type: ignore[type-arg]
    command = [
        sys.executable,
        "-m",
        "reconciler",
        "-C",
        str(config),
        "apply",
        "--auto-approve",
        "--auth-mode",
        "defer",
    ]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def _cli_state(config: Path, kind: str, dsn: str | None) -> StateDocument:
    backend = (
        PostgresBackend(dsn, "default") if kind == "postgres" else LocalBackend(config / "state", "default")
    )  # type: ignore[arg-type]
    doc = backend.read()
    assert doc is not None
    return doc


@pytest.mark.parametrize("writers", [2, pytest.param(8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["local", "postgres"])
@counted(AREA)
def test_concurrent_cli_applies_fail_fast_or_wait_and_lose_nothing(
    request, tmp_path: Path, kind: str, writers: int
) -> None:  # type: ignore[no-untyped-def]
    """N `reconciler apply` processes, each adding its own installation: with --lock-timeout 0 while another process
    holds the lock, every one fails at once naming it (exit 1, nothing written); with a timeout they wait, and
    every installation arrives, one serial each."""
    dsn = request.getfixturevalue("pg_database") if kind == "postgres" else None
    config, env = _cli_workspace(tmp_path, kind, writers, dsn)
    before = _cli_state(config, kind, dsn)
    holder = _holder(kind, dsn or str(config / "state"))
    try:
        fast = [
            _reconciler(config, env, "--target", f"installation.t{i}.ado", "--lock-timeout", "0")
            for i in range(writers)
        ]
        failed = [(p.wait(60), p.communicate()[1]) for p in fast]
        waiting = [
            _reconciler(config, env, "--target", f"installation.t{i}.ado", "--lock-timeout", "120")
            for i in range(writers)
        ]
        time.sleep(1.0)
        assert all(p.poll() is None for p in waiting)
        unchanged = _cli_state(config, kind, dsn)
    finally:
        _release(holder)
    done = [(p.wait(120), *p.communicate()) for p in waiting]
    after = _cli_state(config, kind, dsn)
    named = [err for code, err in failed if code == 1 and f"is locked: held by pid {holder.pid} " in err]
    pending = {a for a, r in after.resources.items() if getattr(r, "status", None) == "pending_authorization"}
    lost = len({f"installation.t{i}.ado" for i in range(writers)} - pending)
    figures.add(
        AREA,
        writers=2 * writers,
        failed_fast=len(named),
        writes=after.serial - before.serial,
        lost_updates=lost,
    )
    assert len(named) == writers, failed
    assert unchanged == before
    assert [code for code, _, _ in done] == [3] * writers, [err for _, _, err in done]
    assert lost == 0 and after.serial == before.serial + writers
