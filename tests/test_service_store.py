"""The service store contract (sign-in attempts taken exactly once, the audit log), run against every backend:
local files, a real PostgreSQL 15, and the in-memory fake of the unit tests."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import StateError
from reconciler.state.local import LocalBackend
from reconciler.state.postgres import PostgresBackend
from reconciler.state.service_store import Attempt, AuditEntry, CheckResult, ServiceStore
from tests.fakes import MemoryBackend

T0 = dt.datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=dt.UTC)
BLOB = {"v": "1", "nonce": "bm9uY2U=", "ct": "c2VhbGVk"}

Factory = Callable[..., Any]


@pytest.fixture(params=["local", "postgres", "memory"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory of backends for one and the same state (each call: a new client, as another process would)."""
    if request.param == "memory":
        backends: dict[str, MemoryBackend] = {}
        return lambda env="default": backends.setdefault(env, MemoryBackend(env))
    if request.param == "local":
        return lambda env="default": LocalBackend(tmp_path / "state", env)
    dsn = request.getfixturevalue("pg_database")
    return lambda env="default": PostgresBackend(dsn, env)


def _key(n: int) -> str:
    return f"{n:064x}"


def _attempt(n: int, *, created: dt.datetime = T0, lifetime: dt.timedelta = dt.timedelta(minutes=10)) -> Attempt:
    return Attempt(_key(n), f"installation.eu-{n}.ado", f"p{n}", BLOB, created, created + lifetime)


def _entry(minutes: int, kind: str = "token.read", actor: str = "runtime-eu") -> AuditEntry:
    return AuditEntry(T0 + dt.timedelta(minutes=minutes), kind, actor, "installation.eu-a.ado", f"d{minutes}")  # type: ignore[arg-type]


def test_an_attempt_is_taken_once(make_backend: Factory) -> None:
    """A recorded attempt comes back whole (blob and exact times) to the first taker, and to nobody after."""
    attempt = _attempt(1)
    make_backend().service_store().put_attempt(attempt)
    store = make_backend().service_store()
    assert store.take_attempt(attempt.key, T0) == attempt
    assert store.take_attempt(attempt.key, T0) is None
    assert make_backend().service_store().take_attempt(attempt.key, T0) is None


def test_times_come_back_in_utc_to_the_microsecond(make_backend: Factory) -> None:
    """An aware time in another zone is kept as the same instant and read back in UTC; a naive one is refused."""
    paris = dt.timezone(dt.timedelta(hours=1))
    attempt = _attempt(2, created=T0.astimezone(paris))
    store = make_backend().service_store()
    store.put_attempt(attempt)
    taken = store.take_attempt(attempt.key, T0)
    assert taken is not None
    assert (taken.created_at, taken.expires_at) == (T0, T0 + dt.timedelta(minutes=10))
    assert taken.created_at.utcoffset() == dt.timedelta(0)
    with pytest.raises(StateError, match="timezone-aware"):
        store.put_attempt(_attempt(3, created=T0.replace(tzinfo=None)))


def test_unknown_and_malformed_keys_find_nothing(make_backend: Factory) -> None:
    """Taking a key never recorded, or one that is no hex digest, finds nothing; recording such a key is refused."""
    store = make_backend().service_store()
    assert store.take_attempt(_key(99), T0) is None
    for bad in ("../../default", "ABCDEF0123456789", "0123", "g" * 64, _key(1) + "/x"):
        assert store.take_attempt(bad, T0) is None
        with pytest.raises(StateError, match="hex digest"):
            store.put_attempt(Attempt(bad, "installation.a.b", "p", BLOB, T0, T0))


def test_an_expired_attempt_is_not_handed_out(make_backend: Factory) -> None:
    """An attempt taken after its expiry is None, and it is gone; up to its expiry it is still handed out."""
    store = make_backend().service_store()
    store.put_attempt(_attempt(4))
    store.put_attempt(_attempt(5))
    assert store.take_attempt(_key(4), T0 + dt.timedelta(minutes=10, microseconds=1)) is None
    assert store.take_attempt(_key(4), T0) is None  # removed when found expired
    assert store.take_attempt(_key(5), T0 + dt.timedelta(minutes=10)) == _attempt(5)


def test_expired_attempts_are_pruned_when_another_is_recorded(make_backend: Factory) -> None:
    """Recording an attempt removes those that expired before it was created, and keeps the others."""
    store = make_backend().service_store()
    store.put_attempt(_attempt(6, lifetime=dt.timedelta(minutes=1)))
    store.put_attempt(_attempt(7, lifetime=dt.timedelta(hours=1)))
    store.put_attempt(_attempt(8, created=T0 + dt.timedelta(minutes=30)))
    assert store.take_attempt(_key(6), T0) is None  # would still be valid at T0 had it not been pruned
    assert store.take_attempt(_key(7), T0) == _attempt(7, lifetime=dt.timedelta(hours=1))


def test_environments_keep_their_own_attempts_and_log(make_backend: Factory) -> None:
    """An attempt or audit entry of one environment is invisible to another."""
    make_backend("default").service_store().put_attempt(_attempt(9))
    make_backend("default").service_store().append_audit(_entry(0))
    other = make_backend("prod").service_store()
    assert other.take_attempt(_key(9), T0) is None
    assert other.audit() == []
    assert make_backend("default").service_store().take_attempt(_key(9), T0) == _attempt(9)


def test_taking_is_exactly_once_under_racing_threads(make_backend: Factory) -> None:
    """Eight threads (each its own client) try to take the same 40 attempts: every one is taken exactly once."""
    keys = [_key(n) for n in range(100, 140)]
    writer = make_backend().service_store()
    for n in range(100, 140):
        writer.put_attempt(_attempt(n))
    stores = [make_backend().service_store() for _ in range(8)]
    start = threading.Barrier(len(stores))
    taken: list[list[str]] = [[] for _ in stores]

    def take_all(i: int) -> None:
        start.wait()
        order = keys if i % 2 else list(reversed(keys))
        taken[i].extend(k for k in order if stores[i].take_attempt(k, T0) is not None)

    threads = [threading.Thread(target=take_all, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [k for got in taken for k in got]
    assert sorted(every) == keys  # none lost, none handed out twice


def test_one_store_is_shared_by_threads(make_backend: Factory) -> None:
    """One store used by many threads at once (as the service does) records and takes each attempt once."""
    store = make_backend().service_store()

    def cycle(n: int) -> bool:
        store.put_attempt(_attempt(n))
        store.append_audit(_entry(n))
        return store.take_attempt(_key(n), T0) == _attempt(n) and store.take_attempt(_key(n), T0) is None

    results: list[bool] = []
    threads = [threading.Thread(target=lambda n=n: results.append(cycle(n))) for n in range(200, 232)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 32
    assert len(store.audit()) == 32


def _take_in_process(kind: str, where: str, keys: list[str], start: Any, out: Any) -> None:
    """In a child process: wait for the other racer, then try to take every key; report what was taken."""
    backend = LocalBackend(Path(where), "default") if kind == "local" else PostgresBackend(where, "default")
    store: ServiceStore = backend.service_store()
    start.wait()
    out.put([k for k in keys if store.take_attempt(k, T0) is not None])


def test_taking_is_exactly_once_across_processes(make_backend: Factory, tmp_path: Path) -> None:
    """Two processes race to take the same 60 attempts: together they take each exactly once."""
    backend = make_backend()
    if isinstance(backend, MemoryBackend):
        pytest.skip("a store in memory is one process's")
    where = str(backend.directory) if isinstance(backend, LocalBackend) else backend._dsn
    kind = "local" if isinstance(backend, LocalBackend) else "postgres"
    keys = [_key(n) for n in range(300, 360)]
    for n in range(300, 360):
        backend.service_store().put_attempt(_attempt(n))
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(2), context.Queue()
    racers = [context.Process(target=_take_in_process, args=(kind, where, keys, start, out)) for _ in range(2)]
    for racer in racers:
        racer.start()
    got = [out.get(timeout=120), out.get(timeout=120)]
    for racer in racers:
        racer.join(timeout=60)
    assert sorted(got[0] + got[1]) == keys
    assert [racer.exitcode for racer in racers] == [0, 0]


def test_audit_is_appended_and_read_oldest_first(make_backend: Factory) -> None:
    """Entries come back whole, oldest first; `since` keeps those at or after it; no log reads as empty."""
    store = make_backend().service_store()
    assert store.audit() == []
    entries = [_entry(5, "authorization.completed", "cli:ops@host"), _entry(0), _entry(10, "authorization.failed")]
    for entry in entries:
        store.append_audit(entry)
    reader = make_backend().service_store()
    assert reader.audit() == [entries[1], entries[0], entries[2]]
    assert reader.audit(since=T0 + dt.timedelta(minutes=5)) == [entries[0], entries[2]]
    assert reader.audit(since=T0 + dt.timedelta(minutes=11)) == []


def test_a_take_while_the_state_lock_is_held_stands_alone(make_backend: Factory) -> None:
    """The store works while the same backend holds the state lock, outside the lock holder's work."""
    backend = make_backend()
    store = backend.service_store()
    store.put_attempt(_attempt(400))
    with backend.lock("apply"):
        assert store.take_attempt(_key(400), T0) == _attempt(400)
    assert make_backend().service_store().take_attempt(_key(400), T0) is None


def test_local_files_are_private_and_torn_audit_lines_are_skipped(tmp_path: Path) -> None:
    """Attempt and audit files are 0600; a torn audit line (a crash mid-append) is skipped, the rest read."""
    store = LocalBackend(tmp_path / "state", "default").service_store()
    store.put_attempt(_attempt(500))
    store.append_audit(_entry(1))
    attempt_file = tmp_path / "state" / "default.service" / "attempts" / f"{_key(500)}.json"
    audit_file = tmp_path / "state" / "default.audit.jsonl"
    for path in (attempt_file, audit_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (tmp_path / "state" / "default.service" / ".gitignore").read_text() == "*\n"  # attempts stay out of git
    with open(audit_file, "ab") as handle:
        handle.write(b'{"at":"2026-12-04T10:09:00.000000Z","kind":"token.re')
    store.append_audit(_entry(2))  # lands after the torn line, on its own line
    assert [entry.detail for entry in store.audit()] == ["d1", "d2"]
    assert store.take_attempt(_key(500), T0) == _attempt(500)
    assert not attempt_file.exists()
    assert list(attempt_file.parent.iterdir()) == []  # no claimed leftovers


def test_the_latest_check_of_each_address_is_kept(make_backend: Factory) -> None:
    """A check replaces an earlier one of its address, never a later one; another environment keeps its own;
    times come back in UTC."""
    store = make_backend().service_store()
    assert store.checks() == {}
    later = T0 + dt.timedelta(hours=1)
    store.record_checks([CheckResult("installation.eu-a.ado", T0, "ok"),
                         CheckResult("installation.eu-b.ado", T0, "partner", "client secret rejected")])
    store.record_checks([CheckResult("installation.eu-a.ado", later, "provider", "HTTP 503"),
                         CheckResult("installation.eu-b.ado", T0 - dt.timedelta(hours=1), "ok")])
    make_backend("staging").service_store().record_checks([CheckResult("installation.eu-a.ado", later, "ok")])
    checks = make_backend().service_store().checks()
    assert checks["installation.eu-a.ado"] == CheckResult("installation.eu-a.ado", later, "provider", "HTTP 503")
    assert checks["installation.eu-b.ado"].outcome == "partner" and checks["installation.eu-b.ado"].failed
    assert checks["installation.eu-a.ado"].at.tzinfo is not None and len(checks) == 2
