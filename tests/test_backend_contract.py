"""The state backend contract, run against every backend: local files and a real PostgreSQL 15."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from reconciler.state.postgres import PostgresBackend
from tests.sandbox_support import PARTNER

OTHER = PARTNER.model_copy(update={"name": "ado2"})

Factory = Callable[[], object]
ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "tools"


@pytest.fixture(params=["local", "postgres"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory of backends for one and the same state (each call: a new client, as another process would)."""
    if request.param == "local":
        return lambda env="default": LocalBackend(tmp_path / "state", env)
    dsn = request.getfixturevalue("pg_database")
    return lambda env="default": PostgresBackend(dsn, env)


def _write(backend, doc, expected):  # type: ignore[no-untyped-def]
    with backend.lock("test"):
        return backend.write(doc, expected_serial=expected)


def test_no_state_reads_none(make_backend) -> None:  # type: ignore[no-untyped-def]
    """A backend with nothing stored reads None."""
    assert make_backend().read() is None


def test_write_read_round_trip_and_serial(make_backend) -> None:  # type: ignore[no-untyped-def]
    """Writes bump the serial by one, keep the lineage, and read back equal."""
    backend = make_backend()
    first = _write(backend, StateDocument.new("default"), None)
    second = _write(backend, first.with_resources({PARTNER.address: PARTNER}), first.serial)
    assert (first.serial, second.serial) == (1, 2)
    assert make_backend().read() == second
    assert _write(backend, second, second.serial).serial == 2  # unchanged: no new serial


def test_stale_writes_are_refused(make_backend) -> None:  # type: ignore[no-untyped-def]
    """A write based on an old serial, a different lineage, or no state when state exists, is refused."""
    backend = make_backend()
    first = _write(backend, StateDocument.new("default"), None)
    second = _write(backend, first.with_resources({PARTNER.address: PARTNER}), 1)
    with pytest.raises(StaleStateError):
        _write(backend, first.with_resources({OTHER.address: OTHER}), 1)
    with pytest.raises(StaleStateError):
        _write(backend, StateDocument.new("default").model_copy(update={"serial": 2}), 2)
    with pytest.raises(StaleStateError):
        _write(backend, StateDocument.new("default"), None)
    assert make_backend().read() == second


def test_environments_are_separate(make_backend) -> None:  # type: ignore[no-untyped-def]
    """Each environment has its own state."""
    _write(make_backend("default"), StateDocument.new("default"), None)
    assert make_backend("prod").read() is None


def test_credentials_compare_and_swap(make_backend) -> None:  # type: ignore[no-untyped-def]
    """Credential records move by generation; a stale generation is refused; delete forgets."""
    store = make_backend().credential_store()
    blob = {"alg": "AES-256-GCM", "kid": "k", "nonce": "n", "ciphertext": "c"}
    assert store.put("installation.a.b", blob, None, expected_generation=None) == 1
    assert store.put("installation.a.b", blob, blob, expected_generation=1) == 2
    with pytest.raises(StaleStateError):
        store.put("installation.a.b", blob, None, expected_generation=1)
    record = store.get("installation.a.b")
    assert record is not None and record.generation == 2 and record.pending == blob
    assert store.addresses() == ["installation.a.b"]
    store.delete("installation.a.b")
    assert store.get("installation.a.b") is None


def test_second_writer_fails_fast_naming_the_holder(make_backend) -> None:  # type: ignore[no-untyped-def]
    """While one client holds the lock, another fails at once naming pid, host, user and operation."""
    holder, other = make_backend(), make_backend()
    with holder.lock("apply") as info:
        started = time.monotonic()
        with pytest.raises(StateLockedError) as error, other.lock("plan"):
            pass
        assert time.monotonic() - started < 3
        assert f"pid {os.getpid()}" in str(error.value) and "operation: apply" in str(error.value)
        assert os.uname().nodename in str(error.value)
        assert info.id in str(error.value)
    with other.lock("plan"):
        pass


def _holder(backend):  # type: ignore[no-untyped-def]
    """A separate process holding the lock of `backend`'s state (stdin open: holding; closed: done)."""
    kind, where = ("local", str(backend.directory)) if isinstance(backend, LocalBackend) else ("postgres", backend._dsn)
    process = subprocess.Popen(
        [sys.executable, str(TOOLS / "hold_lock.py"), kind, where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _stop(process) -> None:  # type: ignore[no-untyped-def]
    process.kill()
    process.wait(5)
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            stream.close()


def test_killed_holder_frees_the_lock_at_once(make_backend) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the lock holder: the next writer gets the lock immediately (no stuck lock)."""
    process = _holder(make_backend())
    try:
        with pytest.raises(StateLockedError) as error, make_backend().lock("plan"):
            pass
        assert f"pid {process.pid}" in str(error.value)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        started = time.monotonic()
        with make_backend().lock("apply", timeout=5) as info:
            assert info.operation == "apply"
        assert time.monotonic() - started < 2
    finally:
        _stop(process)


def test_lock_timeout_waits_for_the_holder(make_backend) -> None:  # type: ignore[no-untyped-def]
    """--lock-timeout: a second writer waits and proceeds once the holder is done."""
    process = _holder(make_backend())
    try:
        threading.Timer(0.5, process.stdin.close).start()  # type: ignore[union-attr]
        with make_backend().lock("apply", timeout=20) as info:
            assert info.pid == os.getpid()
    finally:
        _stop(process)


def test_import_document_keeps_serial_and_refuses_to_go_back(make_backend) -> None:  # type: ignore[no-untyped-def]
    """state push stores a document with its own serial; it never replaces a newer or foreign state."""
    backend = make_backend()
    doc = StateDocument.new("default").with_resources({PARTNER.address: PARTNER}).model_copy(update={"serial": 9})
    with backend.lock("push"):
        backend.import_document(doc)
        assert backend.read() == doc
        with pytest.raises(StaleStateError):
            backend.import_document(doc.model_copy(update={"serial": 3}))
        with pytest.raises(StaleStateError):
            backend.import_document(StateDocument.new("default").model_copy(update={"serial": 20}))


def test_write_without_lock_is_refused(make_backend) -> None:  # type: ignore[no-untyped-def]
    """Every backend refuses a write without the lock."""
    with pytest.raises(StateError, match="without holding the lock"):
        make_backend().write(StateDocument.new("default"), expected_serial=None)
